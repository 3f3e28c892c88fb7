"""NegationCLIP as the text encoder of a diffusion model (diffusers).

- :func:`swap_text_encoder`: a full Stable Diffusion style pipeline folder with our ``text_encoder/`` and
  ``tokenizer/`` in it (sizes checked against ``unet.config.cross_attention_dim``).
- :func:`train_t2i`: a tiny text-conditioned pixel-space diffusion model on the scene world
  (``UNet2DConditionModel``, cross-attention on a frozen CLIP text tower's ``last_hidden_state`` with the
  padding masked out, classifier-free guidance dropout), so a fine-tune's text tower can be swapped in.
- :func:`t2i_eval_world`: the negation score of that model with each encoder swapped in: prompts
  "a {c1} {s1} with no {c2} {s2}", fixed seeds, DDIM + guidance, an exact colour detector
  (:func:`detect_colors`, validated on real world images by :func:`validate_detector`).
- :func:`t2i_eval_pipeline`: the same score for a real diffusers pipeline with a zero-shot CLIP checker.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..evaluation.stats import wilson_interval

logger = logging.getLogger(__name__)


def _restores_torch_threads(fn):
    """``--threads`` changes torch's thread count for the call only (a caller's later float results depend on it)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        threads = torch.get_num_threads()
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    return wrapper


PIPELINE_TEXT_COMPONENTS = ("text_encoder", "tokenizer")
NEGATED_TEMPLATE = "a {c1} {s1} with no {c2} {s2}"
AFFIRMED_TEMPLATE = "a {c1} {s1} with a {c2} {s2}"
#: objects of the default real-pipeline prompt set (COCO categories that are easy to tell apart)
REAL_OBJECTS = ("dog", "cat", "car", "bicycle", "horse", "bird", "boat", "chair", "cup", "banana", "clock", "umbrella")


# --------------------------------------------------------------------------- loading text towers


def load_text_tower(checkpoint: str | os.PathLike):
    """A ``CLIPTextModel`` + its tokenizer from a NegationCLIP / CLIP checkpoint (full model, LoRA adapter
    folder, or an exported ``text_encoder/`` folder or its parent)."""
    from transformers import AutoConfig, CLIPTextModel

    from ..modeling import NegationCLIPModel, load_tokenizer

    path = Path(str(checkpoint))
    if (path / "adapter_config.json").is_file():
        model = NegationCLIPModel.from_pretrained(path)
        return _text_from_clip(model), _tokenizer_of(path, load_tokenizer)
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise OSError(f"cannot read a CLIP checkpoint from {checkpoint}: {err}") from None
    if config.model_type == "clip_text_model":
        text = CLIPTextModel.from_pretrained(path)
        tok_dir = path.parent / "tokenizer" if (path.parent / "tokenizer").is_dir() else path
        return text, _tokenizer_of(tok_dir, load_tokenizer)
    if config.model_type != "clip":
        raise ValueError(f"{checkpoint} is a {config.model_type!r} checkpoint, not CLIP")
    model = NegationCLIPModel.from_pretrained(path)
    return _text_from_clip(model), _tokenizer_of(path, load_tokenizer)


def _text_from_clip(model):
    from transformers import CLIPTextModel

    text = CLIPTextModel(model.config.text_config)
    text.load_state_dict(model.text_model.state_dict())
    return text


def _tokenizer_of(path: Path, fallback):
    from transformers import CLIPTokenizer

    if (path / "tokenizer_config.json").is_file():
        return CLIPTokenizer.from_pretrained(path)
    return fallback()


# --------------------------------------------------------------------------- pipelines


def _resolve_pipeline(pipeline: str | os.PathLike) -> Path:
    path = Path(str(pipeline))
    if path.is_dir():
        return path
    if path.exists() or str(pipeline).count("/") != 1:
        raise FileNotFoundError(f"pipeline {pipeline} is neither a folder nor a Hub id (ORG/NAME)")
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(pipeline), allow_patterns=["*.json", "*.txt", "*.safetensors", "*.model"]))


def check_pipeline_folder(folder: Path) -> dict:
    """``model_index.json`` of a diffusers pipeline folder that has a ``unet/`` (one-line errors otherwise)."""
    if not (folder / "unet" / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no unet/config.json: not a text-to-image diffusers pipeline folder")
    index = folder / "model_index.json"
    if not index.is_file():
        raise FileNotFoundError(f"{folder} has no model_index.json: not a diffusers pipeline folder")
    return json.loads(index.read_text())


def check_text_width(unet_config: dict, text_hidden_size: int, where: str = "") -> None:
    """``unet.config.cross_attention_dim`` must equal the text tower's hidden size."""
    cross = unet_config.get("cross_attention_dim")
    if isinstance(cross, (list, tuple)):
        cross = cross[0] if len(set(cross)) == 1 else cross
    if cross != text_hidden_size:
        raise ValueError(
            f"text tower width {text_hidden_size} does not fit the UNet's cross_attention_dim {cross}{where} "
            f"(e.g. a ViT-B text tower (512) into Stable Diffusion 1.x's ViT-L slot (768))"
        )


def swap_text_encoder(pipeline: str | os.PathLike, text_encoder: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write ``out``: the pipeline's components (hard-linked when possible, else copied) with ``text_encoder/``
    and ``tokenizer/`` replaced by the text tower of ``text_encoder`` (a CLIP checkpoint)."""
    src = _resolve_pipeline(pipeline)
    index = check_pipeline_folder(src)
    out = Path(out)
    if out.resolve() == src.resolve():
        raise ValueError("--out must differ from --pipeline")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"output folder {out} is not empty")
    unet_config = json.loads((src / "unet" / "config.json").read_text())
    width = _config_text_width(text_encoder)
    if width is not None:  # fail before loading any weights
        check_text_width(unet_config, width, f" of {src}")
    text, tokenizer = load_text_tower(text_encoder)
    check_text_width(unet_config, text.config.hidden_size, f" of {src}")
    out.mkdir(parents=True, exist_ok=True)
    for entry in sorted(src.iterdir()):
        if entry.name in PIPELINE_TEXT_COMPONENTS or entry.name.startswith("."):
            continue
        if entry.is_dir():
            shutil.copytree(entry, out / entry.name, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry, out / entry.name)
    text.save_pretrained(out / "text_encoder", safe_serialization=True)
    from ..modeling.model import save_tokenizer_with_vocab

    save_tokenizer_with_vocab(tokenizer, out / "tokenizer")
    if index.get("text_encoder") != ["transformers", "CLIPTextModel"] or index.get("tokenizer") != [
        "transformers",
        "CLIPTokenizer",
    ]:
        index.update(text_encoder=["transformers", "CLIPTextModel"], tokenizer=["transformers", "CLIPTokenizer"])
        (out / "model_index.json").unlink(missing_ok=True)
        (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return out


@dataclass
class SwapTextEncoderConfig:
    """Write a diffusers pipeline folder with a NegationCLIP text tower in place of its own."""

    pipeline: str = field(default="", metadata={"help": "diffusers pipeline folder or Hub id (needs unet/)"})
    text_encoder: str = field(default="", metadata={"help": "CLIP / NegationCLIP checkpoint whose text tower goes in"})
    out: str = field(default="runs/pipeline-negationclip", metadata={"help": "output pipeline folder (new or empty)"})


def run_swap_text_encoder(cfg: SwapTextEncoderConfig) -> Path:
    if not cfg.pipeline or not cfg.text_encoder:
        raise ValueError("--pipeline and --text_encoder are required")
    out = swap_text_encoder(cfg.pipeline, cfg.text_encoder, cfg.out)
    print(f"wrote {out} (the pipeline of {cfg.pipeline} with the text tower of {cfg.text_encoder})")
    return out


def run_t2i_train(cfg: T2ITrainConfig) -> dict:
    result = train_t2i(cfg)
    print(
        f"trained {result['steps']} steps in {result['seconds']:.0f} s, loss (mean of last 50) "
        f"{_tail_mean(result['losses']):.4f}; saved to {result['output_dir']}"
    )
    return result


def _config_text_width(checkpoint) -> int | None:
    """The text hidden size a checkpoint's config.json names (None when it names none, e.g. an adapter)."""
    config = Path(str(checkpoint)) / "config.json"
    if not config.is_file():
        return None
    data = json.loads(config.read_text())
    if data.get("model_type") == "clip_text_model":
        return data.get("hidden_size")
    return (data.get("text_config") or {}).get("hidden_size")


def _link_or_copy(src, dst) -> str:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return str(dst)


# --------------------------------------------------------------------------- the scene-world model


@dataclass
class T2ITrainConfig:
    """Train a tiny text-conditioned pixel-space diffusion model on a scene world (frozen CLIP text tower)."""

    world_dir: str = field(default="runs/demo/world", metadata={"help": "scene world folder (its train split)"})
    text_encoder: str = field(default="runs/demo/baseline", metadata={"help": "frozen text tower (CLIP checkpoint)"})
    output_dir: str = field(default="runs/t2i", metadata={"help": "unet/, scheduler/, t2i_config.json, log"})
    resolution: int = field(default=32, metadata={"help": "native pixel resolution the UNet works at"})
    channels: str = field(default="32,64,64", metadata={"help": "UNet block_out_channels (comma-separated)"})
    batch_size: int = field(default=16, metadata={"help": "images per step"})
    learning_rate: float = field(default=6e-4, metadata={"help": "AdamW peak learning rate (warm-up + cosine)"})
    max_steps: int = field(default=2000, metadata={"help": "training steps (the cosine schedule's length)"})
    max_minutes: float = field(
        default=0.0, metadata={"help": "stop after this many minutes (0: no limit); the schedule follows time"}
    )
    cond_dropout: float = field(default=0.1, metadata={"help": "share of empty prompts (classifier-free guidance)"})
    ema_decay: float = field(default=0.999, metadata={"help": "EMA of the weights that is saved (0: no EMA)"})
    max_images: int = field(default=0, metadata={"help": "use only the first N train images (0: all)"})
    save_minutes: float = field(default=3.0, metadata={"help": "save the (EMA) UNet every N minutes"})
    threads: int = field(default=0, metadata={"help": "torch.set_num_threads (0: leave as is)"})
    seed: int = field(default=0, metadata={"help": "seed of init, batches and noise"})


class PromptEncoder:
    """A frozen CLIP text tower that gives ``(last_hidden_state, attention_mask)`` for prompts."""

    def __init__(self, text_model, tokenizer, max_length: int = 77):
        self.text = text_model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.max_length = max_length

    @property
    def width(self) -> int:
        return self.text.config.hidden_size

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer(
            list(prompts), padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        hidden = self.text(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        return hidden, enc["attention_mask"]


def build_unet(cross_attention_dim: int, resolution: int = 32, channels: Sequence[int] = (32, 64, 64)):
    """A native-resolution pixel-space ``UNet2DConditionModel`` with cross-attention below the top level."""
    from diffusers import UNet2DConditionModel

    channels = tuple(int(c) for c in channels)
    if len(channels) < 2 or any(c % 16 for c in channels):
        raise ValueError(f"--channels needs >= 2 multiples of 16, got {channels}")
    if resolution % 2 ** (len(channels) - 1):
        raise ValueError(f"resolution {resolution} must be divisible by {2 ** (len(channels) - 1)}")
    down = ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (len(channels) - 1)
    up = ("CrossAttnUpBlock2D",) * (len(channels) - 1) + ("UpBlock2D",)
    return UNet2DConditionModel(
        sample_size=resolution,
        in_channels=3,
        out_channels=3,
        block_out_channels=channels,
        layers_per_block=1,
        down_block_types=down,
        up_block_types=up,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=16,
        norm_num_groups=16,
    )


def _noise_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=True)


def load_world_pairs(world_dir: str | os.PathLike, split: str, resolution: int, max_images: int = 0):
    """``(images uint8 [N,3,R,R], captions list[list[str]])`` of a world split, images box-resized to R."""
    from PIL import Image

    from ..io import read_json

    root = Path(world_dir)
    inst = read_json(root / "annotations" / f"instances_{split}.json")
    caps = read_json(root / "annotations" / f"captions_{split}.json")
    by_image: dict[int, list[str]] = {}
    for ann in caps["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann["caption"])
    images, captions = [], []
    for img in inst["images"][: max_images or None]:
        if img["id"] not in by_image:
            continue
        path = root / "images" / split / img["file_name"]
        with Image.open(path) as im:
            images.append(np.asarray(im.convert("RGB").resize((resolution, resolution), Image.BOX)))
        captions.append(by_image[img["id"]])
    if not images:
        raise ValueError(f"no captioned images in the {split} split of {root}")
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(), captions


@_restores_torch_threads
def train_t2i(cfg: T2ITrainConfig) -> dict:
    """Train the tiny UNet (epsilon prediction, EMA, warm-up + cosine, time-limited); returns the loss log."""
    from diffusers.training_utils import EMAModel

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.max_steps < 1 or cfg.batch_size < 1:
        raise ValueError("--max_steps and --batch_size must be >= 1")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    text, tokenizer = load_text_tower(cfg.text_encoder)
    encoder = PromptEncoder(text, tokenizer)
    images, captions = load_world_pairs(cfg.world_dir, "train", cfg.resolution, cfg.max_images)
    unet = build_unet(encoder.width, cfg.resolution, [int(c) for c in cfg.channels.split(",")])
    noise_scheduler = _noise_scheduler()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg.learning_rate, weight_decay=0.01)
    ema = EMAModel(unet.parameters(), decay=cfg.ema_decay, use_ema_warmup=True, power=2 / 3) if cfg.ema_decay else None
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "t2i_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    log = (out / "train_log.jsonl").open("w")
    start = last_save = time.time()
    limit = cfg.max_minutes * 60
    warmup = max(1, min(100, cfg.max_steps // 10))
    losses: list[float] = []
    unet.train()
    step = 0
    for step in range(1, cfg.max_steps + 1):
        elapsed = time.time() - start
        progress = max(step / cfg.max_steps, elapsed / limit if limit else 0.0)
        if progress > 1.0:
            break
        lr = cfg.learning_rate * min(step / warmup, 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        idx = rng.integers(len(images), size=cfg.batch_size)
        prompts = [captions[i][int(rng.integers(len(captions[i])))] for i in idx]
        prompts = ["" if rng.random() < cfg.cond_dropout else p for p in prompts]
        hidden, mask = encoder(prompts)
        x0 = images[idx].float() / 127.5 - 1.0
        noise = torch.randn_like(x0)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(idx),))
        xt = noise_scheduler.add_noise(x0, noise, t)
        pred = unet(xt, t, encoder_hidden_states=hidden, encoder_attention_mask=mask).sample
        loss = torch.nn.functional.mse_loss(pred, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        if ema is not None:
            ema.step(unet.parameters())
        losses.append(loss.item())
        log.write(json.dumps({"step": step, "loss": round(losses[-1], 5), "lr": lr, "s": round(elapsed, 1)}) + "\n")
        if step % 50 == 0:
            log.flush()
            logger.info("step %d loss %.4f (mean of last 50: %.4f) %.0f s", step, loss, np.mean(losses[-50:]), elapsed)
        if cfg.save_minutes and time.time() - last_save > cfg.save_minutes * 60:
            _save_unet(unet, ema, noise_scheduler, out)
            last_save = time.time()
    log.close()
    _save_unet(unet, ema, noise_scheduler, out)
    result = {"steps": len(losses), "seconds": round(time.time() - start, 1), "losses": losses, "output_dir": str(out)}
    (out / "train_summary.json").write_text(
        json.dumps({k: v for k, v in result.items() if k != "losses"} | {"final_loss_50": _tail_mean(losses)}) + "\n"
    )
    return result


def _tail_mean(losses: list[float], n: int = 50) -> float:
    return round(float(np.mean(losses[-n:])), 5) if losses else float("nan")


def _save_unet(unet, ema, noise_scheduler, out: Path) -> None:
    if ema is not None:
        ema.store(unet.parameters())
        ema.copy_to(unet.parameters())
    unet.save_pretrained(out / "unet", safe_serialization=True)
    if ema is not None:
        ema.restore(unet.parameters())
    noise_scheduler.save_pretrained(out / "scheduler")


@torch.no_grad()
def sample_images(
    unet,
    encoder: PromptEncoder,
    prompts: Sequence[str],
    seeds: Sequence[int],
    guidance: float = 4.0,
    steps: int = 20,
    scheduler_config: dict | None = None,
    batch_size: int = 50,
) -> np.ndarray:
    """DDIM samples with classifier-free guidance (the empty prompt as the unconditional one); uint8 [N,R,R,3].

    Each image starts from the noise of its own seed, so two encoders get the same starting noise per prompt.
    """
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(scheduler_config or _noise_scheduler().config)
    res = unet.config.sample_size
    unet.eval()
    out = []
    for lo in range(0, len(prompts), batch_size):
        batch, batch_seeds = list(prompts[lo : lo + batch_size]), seeds[lo : lo + batch_size]
        hidden, mask = encoder(batch + [""] * len(batch))
        x = torch.stack(
            [torch.randn(3, res, res, generator=torch.Generator().manual_seed(int(s))) for s in batch_seeds]
        )
        scheduler.set_timesteps(steps)
        for t in scheduler.timesteps:
            eps = unet(torch.cat([x, x]), t, encoder_hidden_states=hidden, encoder_attention_mask=mask).sample
            cond, uncond = eps.chunk(2)
            x = scheduler.step(uncond + guidance * (cond - uncond), t, x).prev_sample
        out.append(((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


# --------------------------------------------------------------------------- the exact colour detector


def detect_colors(image: np.ndarray, tolerance: float = 45.0, min_fraction: float = 3 / 1024) -> dict[str, bool]:
    """Which world colours an image shows: a colour is present when at least ``min_fraction`` of the pixels
    are within ``tolerance`` (RGB distance) of its rendered value and nearer to it than to any other colour.

    The world's backgrounds are muted (never as saturated as an object colour), so a blank or grey image
    shows no colour.
    """
    from ..world.render import COLOR_RGB

    pixels = np.asarray(image, dtype=np.float32).reshape(-1, 3)
    palette = np.asarray(list(COLOR_RGB.values()), dtype=np.float32)
    dist = np.linalg.norm(pixels[:, None, :] - palette[None, :, :], axis=2)
    nearest, best = dist.argmin(axis=1), dist.min(axis=1)
    counts = np.bincount(nearest[best <= tolerance], minlength=len(palette))
    need = max(1, round(min_fraction * len(pixels)))
    return {name: bool(counts[i] >= need) for i, name in enumerate(COLOR_RGB)}


def validate_detector(world_dir: str | os.PathLike, split: str = "val", resolution: int = 32, n: int = 0) -> dict:
    """Accuracy of :func:`detect_colors` on the split's real (rendered, box-resized) images."""
    from ..benchmarks.probes import load_world_split

    world = load_world_split(world_dir, split)[: n or None]
    images, _ = load_world_pairs(world_dir, split, resolution, n)
    decisions = exact = 0
    wrong = 0
    for img, record in zip(images.permute(0, 2, 3, 1).numpy(), world):
        truth = {o["color"] for o in record.objects}
        found = detect_colors(img)
        errors = sum(found[c] != (c in truth) for c in found)
        wrong += errors
        decisions += len(found)
        exact += errors == 0
    return {
        "n_images": len(world),
        "colour_decision_accuracy": round(1 - wrong / decisions, 4),
        "image_exact_accuracy": round(exact / len(world), 4),
        "n_decisions": decisions,
    }


# --------------------------------------------------------------------------- evaluation


def world_prompts(n: int, seed: int = 0) -> list[dict]:
    """``n`` (c1, s1, c2, s2) with c1 != c2 and s1 != s2: the affirmed and the negated object."""
    from ..world.render import COLORS, SHAPES

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


def run_t2i_eval(cfg: T2IEvalConfig) -> dict:
    if bool(cfg.model_dir) == bool(cfg.pipeline):
        raise ValueError("give exactly one of --model_dir (a t2i-train folder) and --pipeline (a diffusers pipeline)")
    if cfg.n < 1 or cfg.steps < 1:
        raise ValueError("--n and --steps must be >= 1")
    result = t2i_eval_world(cfg) if cfg.model_dir else t2i_eval_pipeline(cfg)
    print(format_t2i_table(result))
    return result


__all__ = [
    "ClipChecker",
    "SwapTextEncoderConfig",
    "run_swap_text_encoder",
    "run_t2i_train",
    "PromptEncoder",
    "T2IEvalConfig",
    "T2ITrainConfig",
    "build_unet",
    "check_text_width",
    "detect_colors",
    "load_text_tower",
    "run_t2i_eval",
    "sample_images",
    "swap_text_encoder",
    "t2i_eval_pipeline",
    "t2i_eval_world",
    "train_t2i",
    "validate_detector",
]
