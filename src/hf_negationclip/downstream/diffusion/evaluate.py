"""The negation score of text-to-image generation: the world model with encoders swapped in, or a real pipeline."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ...evaluation.stats import wilson_interval
from .detector import detect_colors, validate_detector
from .text_encoders import _resolve_pipeline, check_pipeline_folder, check_text_width, load_text_tower
from .threads import _restores_torch_threads
from .world_model import PromptEncoder, sample_images

logger = logging.getLogger(__name__)

NEGATED_TEMPLATE = "a {c1} {s1} with no {c2} {s2}"
AFFIRMED_TEMPLATE = "a {c1} {s1} with a {c2} {s2}"
#: objects of the default real-pipeline prompt set (COCO categories that are easy to tell apart)
REAL_OBJECTS = ("dog", "cat", "car", "bicycle", "horse", "bird", "boat", "chair", "cup", "banana", "clock", "umbrella")


def world_prompts(n: int, seed: int = 0) -> list[dict]:
    """``n`` (c1, s1, c2, s2) with c1 != c2 and s1 != s2: the affirmed and the negated object."""
    from ...world.render import COLORS, SHAPES

    rng = np.random.default_rng(seed)
    items = []
    for _ in range(n):
        c1, c2 = rng.choice(len(COLORS), 2, replace=False)
        s1, s2 = rng.choice(len(SHAPES), 2, replace=False)
        items.append({"c1": COLORS[c1], "s1": SHAPES[s1], "c2": COLORS[c2], "s2": SHAPES[s2]})
    return items


def score_world_images(items: list[dict], negated: np.ndarray, affirmed: np.ndarray | None = None) -> dict:
    """Rates (with Wilson intervals) from detections on images generated for the negated (and affirmed) prompts."""
    found_neg = [detect_colors(img) for img in negated]
    rows = {
        "negated_prompt/affirmed_present": [f[it["c1"]] for f, it in zip(found_neg, items)],
        "negated_prompt/negated_absent": [not f[it["c2"]] for f, it in zip(found_neg, items)],
        "negated_prompt/negation_score": [f[it["c1"]] and not f[it["c2"]] for f, it in zip(found_neg, items)],
    }
    if affirmed is not None:
        found_aff = [detect_colors(img) for img in affirmed]
        rows["affirmed_prompt/first_present"] = [f[it["c1"]] for f, it in zip(found_aff, items)]
        rows["affirmed_prompt/second_present"] = [f[it["c2"]] for f, it in zip(found_aff, items)]
        rows["affirmed_prompt/both_present"] = [f[it["c1"]] and f[it["c2"]] for f, it in zip(found_aff, items)]
    return {k: _rate(v) for k, v in rows.items()}


def _rate(flags: list[bool]) -> dict:
    k, n = int(sum(flags)), len(flags)
    return {
        "value": round(k / n, 4) if n else float("nan"),
        "n": n,
        "ci95": [round(x, 4) for x in wilson_interval(k, n)],
    }


@dataclass
class T2IEvalConfig:
    """Negation score of text-to-image generation: the world model with encoders swapped in, or a real pipeline."""

    model_dir: str | None = field(default=None, metadata={"help": "a t2i-train output folder (the scene world)"})
    text_encoder: list[str] = field(
        default_factory=list,
        metadata={"help": "NAME=CKPT (or CKPT) of a text tower to swap in; repeat; default: the one trained with"},
    )
    world_dir: str | None = field(default=None, metadata={"help": "world whose val split validates the detector"})
    pipeline: str | None = field(default=None, metadata={"help": "a real diffusers pipeline folder or Hub id"})
    checker: str | None = field(default=None, metadata={"help": "CLIP checkpoint for the zero-shot checker"})
    output_dir: str = field(default="runs/t2i-eval", metadata={"help": "results.json, results.md, sample grids"})
    n: int = field(default=200, metadata={"help": "prompts per template"})
    guidance: list[float] = field(default_factory=lambda: [4.0], metadata={"help": "guidance scale(s) to sweep"})
    steps: int = field(default=20, metadata={"help": "DDIM (or pipeline) inference steps"})
    affirmed: bool = field(default=True, metadata={"help": "also generate the affirmative twin of each prompt"})
    threads: int = field(default=0, metadata={"help": "torch.set_num_threads (0: leave as is)"})
    seed: int = field(default=0, metadata={"help": "seed of the prompts and of the per-image noise"})


def _named(specs: Sequence[str]) -> dict[str, str]:
    out = {}
    for spec in specs:
        name, _, path = spec.rpartition("=") if "=" in spec else (Path(spec).name, "", spec)
        out[name] = path
    return out


@_restores_torch_threads
def t2i_eval_world(cfg: T2IEvalConfig) -> dict:
    """Generate with each text encoder swapped into the world model and score with the exact detector."""
    from diffusers import UNet2DConditionModel

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model_dir = Path(cfg.model_dir)
    if not (model_dir / "unet" / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} has no unet/config.json (train one with hf-negationclip t2i-train)")
    train_cfg = json.loads((model_dir / "t2i_config.json").read_text())
    unet = UNet2DConditionModel.from_pretrained(model_dir / "unet").eval()
    scheduler_config = json.loads((model_dir / "scheduler" / "scheduler_config.json").read_text())
    encoders = _named(cfg.text_encoder) or {"trained-with": train_cfg["text_encoder"]}
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {"model_dir": str(model_dir), "steps": cfg.steps, "n": cfg.n, "rows": []}
    world_dir = cfg.world_dir or train_cfg["world_dir"]
    result["detector"] = validate_detector(world_dir, "val", unet.config.sample_size)
    logger.info("colour detector on real %s val images: %s", world_dir, result["detector"])
    items = world_prompts(cfg.n, cfg.seed)
    seeds = [cfg.seed * 100_003 + i for i in range(cfg.n)]
    negated = [NEGATED_TEMPLATE.format(**it) for it in items]
    affirmed = [AFFIRMED_TEMPLATE.format(**it) for it in items]
    for name, path in encoders.items():
        text, tokenizer = load_text_tower(path)
        check_text_width(unet.config, text.config.hidden_size, f" of {model_dir}")
        encoder = PromptEncoder(text, tokenizer)
        for g in cfg.guidance:
            t0 = time.time()
            neg = sample_images(unet, encoder, negated, seeds, g, cfg.steps, scheduler_config)
            aff = (
                sample_images(unet, encoder, affirmed, seeds, g, cfg.steps, scheduler_config) if cfg.affirmed else None
            )
            metrics = score_world_images(items, neg, aff)
            result["rows"].append({"encoder": name, "path": path, "guidance": g, "metrics": metrics})
            _save_grid(neg[:32], out / f"samples_{name}_g{g:g}_negated.png")
            logger.info("%s guidance %g: %s (%.0f s)", name, g, _short(metrics), time.time() - t0)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "results.md").write_text(format_t2i_table(result))
    return result


def _short(metrics: dict) -> str:
    return ", ".join(f"{k.split('/')[-1]} {v['value']:.3f}" for k, v in metrics.items())


def format_t2i_table(result: dict) -> str:
    cols = list(result["rows"][0]["metrics"]) if result["rows"] else []
    lines = [
        "| encoder | guidance | " + " | ".join(cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    for row in result["rows"]:
        cells = [f"{m['value']:.3f} [{m['ci95'][0]:.2f}, {m['ci95'][1]:.2f}]" for m in row["metrics"].values()]
        lines.append(f"| {row['encoder']} | {row['guidance']:g} | " + " | ".join(cells) + " |")
    n = result["rows"][0]["metrics"][cols[0]]["n"] if cols else 0
    extra = f"; detector {result['detector']}" if "detector" in result else ""
    return "\n".join(lines) + f"\n\nn = {n} prompts per template, {result['steps']} steps{extra}\n"


def _save_grid(images: np.ndarray, path: Path, cols: int = 8) -> None:
    from PIL import Image

    if not len(images):
        return
    rows = math.ceil(len(images) / cols)
    h, w = images.shape[1:3]
    grid = np.zeros((rows * h, cols * w, 3), np.uint8)
    for i, img in enumerate(images):
        grid[(i // cols) * h : (i // cols + 1) * h, (i % cols) * w : (i % cols + 1) * w] = img
    Image.fromarray(grid).resize((cols * w * 4, rows * h * 4), Image.NEAREST).save(path)


# --------------------------------------------------------------------------- real pipelines


class ClipChecker:
    """Zero-shot presence of a thing in an image with a CLIP checkpoint: present when "a photo of a {thing}."
    scores above "a photo." (the image-text logit of the thing beats the generic caption)."""

    def __init__(self, checkpoint: str | os.PathLike):
        from transformers import CLIPModel, CLIPProcessor

        self.model = CLIPModel.from_pretrained(checkpoint).eval()
        self.processor = CLIPProcessor.from_pretrained(checkpoint)

    @torch.no_grad()
    def present(self, images, things: Sequence[str]) -> np.ndarray:
        """Boolean [len(images), len(things)]."""
        texts = [f"a photo of a {t}." for t in things] + ["a photo."]
        batch = self.processor(text=texts, images=list(images), return_tensors="pt", padding=True)
        logits = self.model(**batch).logits_per_image
        return (logits[:, :-1] > logits[:, -1:]).numpy()


@_restores_torch_threads
def t2i_eval_pipeline(cfg: T2IEvalConfig) -> dict:
    """Negation score of a real diffusers text-to-image pipeline, judged by a zero-shot CLIP checker."""
    from diffusers import DiffusionPipeline

    if not cfg.checker:
        raise ValueError("--pipeline needs --checker CLIP_CHECKPOINT (the zero-shot presence checker)")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    folder = _resolve_pipeline(cfg.pipeline)
    check_pipeline_folder(folder)
    pipe = DiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    checker = ClipChecker(cfg.checker)
    rng = np.random.default_rng(cfg.seed)
    items = []
    for _ in range(cfg.n):
        a, b = rng.choice(len(REAL_OBJECTS), 2, replace=False)
        items.append({"a": REAL_OBJECTS[a], "b": REAL_OBJECTS[b]})
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {"pipeline": str(cfg.pipeline), "checker": cfg.checker, "steps": cfg.steps, "rows": []}
    for g in cfg.guidance:
        flags = {"negated_prompt/affirmed_present": [], "negated_prompt/negated_absent": []}
        for i, it in enumerate(items):
            image = pipe(
                f"a photo of a {it['a']} with no {it['b']}",
                num_inference_steps=cfg.steps,
                guidance_scale=g,
                generator=torch.Generator().manual_seed(cfg.seed * 100_003 + i),
            ).images[0]
            has_a, has_b = checker.present([image], [it["a"], it["b"]])[0]
            flags["negated_prompt/affirmed_present"].append(bool(has_a))
            flags["negated_prompt/negated_absent"].append(not has_b)
        flags["negated_prompt/negation_score"] = [
            a and b for a, b in zip(flags["negated_prompt/affirmed_present"], flags["negated_prompt/negated_absent"])
        ]
        result["rows"].append(
            {"encoder": "pipeline", "guidance": g, "metrics": {k: _rate(v) for k, v in flags.items()}}
        )
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "results.md").write_text(format_t2i_table(result))
    return result
