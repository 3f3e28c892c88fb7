"""Contrastive training of CLIP with Accelerate: one loop, readable top to bottom.

``pretrain`` trains a model from a preset on a COCO-format caption file (by
default the scene world's affirmative captions) and saves a plain
``transformers`` checkpoint (safetensors) plus its processor. The loop saves
its full state every ``save_steps`` and resumes from the latest state after a
kill. Evaluation is passed in as a callable, so this module never depends on
the evaluation code.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image
from tqdm.auto import tqdm

from .corpus import CaptionRecord, load_coco_captions
from .modeling import build_model, load_processor

logger = logging.getLogger(__name__)

Evaluator = Callable[[torch.nn.Module, object], dict]


@dataclass
class PretrainConfig:
    """Arguments of ``hf-negationclip pretrain`` (also saved as ``training_config.json``)."""

    world_dir: str = field(default="runs/world", metadata={"help": "scene world (or COCO root laid out like it) to train on"})
    output_dir: str = field(default="runs/pretrain", metadata={"help": "where the checkpoint, logs and metrics go"})
    preset: str = field(default="tiny", metadata={"help": "model preset name, Hub id or checkpoint folder"})
    split: str = field(default="train", metadata={"help": "world split to train on"})
    captions_file: str | None = field(default=None, metadata={"help": "COCO captions JSON (default: <world>/annotations/captions_<split>.json)"})
    image_dir: str | None = field(default=None, metadata={"help": "image folder of captions_file (default: <world>/images/<split>)"})
    epochs: int = field(default=12, metadata={"help": "passes over the images (one random caption of each per pass)"})
    max_steps: int = field(default=-1, metadata={"help": "stop after this many optimizer steps (-1: run all epochs)"})
    batch_size: int = field(default=128, metadata={"help": "global batch size (images per step, split across processes)"})
    learning_rate: float = field(default=5e-4, metadata={"help": "peak AdamW learning rate"})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay"})
    warmup_ratio: float = field(default=0.05, metadata={"help": "fraction of steps with linear warm-up before the cosine decay"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm (0: off)"})
    mixed_precision: str = field(default="no", metadata={"help": "no | bf16 | fp16 (fp16 needs a GPU)"})
    seed: int = field(default=0, metadata={"help": "seed of the initial weights and data order"})
    save_steps: int = field(default=100, metadata={"help": "save a resumable training state every N steps (0: never)"})
    resume: bool = field(default=True, metadata={"help": "resume from the latest state in output_dir/checkpoints"})
    cache_images: bool = field(default=True, metadata={"help": "preprocess every image once into memory (small datasets)"})
    num_workers: int = field(default=0, metadata={"help": "DataLoader workers when images are not cached"})
    log_steps: int = field(default=10, metadata={"help": "log the loss every N steps"})
    show_progress: bool = field(default=True, metadata={"help": "show progress bars"})

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ValueError("batch_size must be >= 2: the contrastive loss needs negatives in the batch")
        if self.learning_rate <= 0 or not 0 <= self.warmup_ratio < 1:
            raise ValueError("learning_rate must be > 0 and warmup_ratio in [0, 1)")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be no, bf16 or fp16, got {self.mixed_precision!r}")
        for name in ("save_steps", "num_workers", "log_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")

    @property
    def captions_path(self) -> Path:
        return Path(self.captions_file or Path(self.world_dir) / "annotations" / f"captions_{self.split}.json")

    @property
    def images_path(self) -> Path:
        return Path(self.image_dir or Path(self.world_dir) / "images" / self.split)


class ImageTextData:
    """Unique images, each with all its captions; one caption is drawn per image per epoch.

    Drawing per image (not per caption) keeps an image from meeting itself as
    a negative in the same batch.
    """

    def __init__(self, records: Sequence[CaptionRecord], processor, cache_images: bool = True, show_progress: bool = True):
        captions: dict[Path, list[str]] = defaultdict(list)
        for r in records:
            captions[r.image_path].append(r.caption)
        self.paths = sorted(captions)
        self.captions = [captions[p] for p in self.paths]
        self.processor = processor
        self.cache = None
        if cache_images:
            chunks = []
            for start in tqdm(range(0, len(self.paths), 256), desc="preprocessing images", disable=not show_progress):
                chunks.append(self._process(self.paths[start:start + 256]))
            self.cache = torch.cat(chunks)

    def __len__(self) -> int:
        return len(self.paths)

    def _process(self, paths: Sequence[Path]) -> torch.Tensor:
        images = []
        for p in paths:
            try:
                with Image.open(p) as im:
                    images.append(im.convert("RGB"))
            except (OSError, ValueError) as err:
                raise OSError(f"cannot read training image {p}: {err}") from err
        return self.processor(images=images, return_tensors="pt")["pixel_values"]

    def order(self, epoch: int, seed: int) -> torch.Tensor:
        """The image order of an epoch: a function of (seed, epoch), so a resumed run sees the same batches."""
        return torch.randperm(len(self), generator=torch.Generator().manual_seed(seed * 100_003 + epoch))

    def _caption_picks(self, epoch: int, seed: int) -> torch.Tensor:
        """Which caption of each image an epoch uses (drawn once per epoch, kept on the instance)."""
        if getattr(self, "_picks_key", None) != (epoch, seed):
            gen = torch.Generator().manual_seed(seed * 7_919 + epoch)
            self._picks_key, self._picks = (epoch, seed), torch.randint(0, 1 << 30, (len(self),), generator=gen)
        return self._picks

    def batch(self, indices: Sequence[int], epoch: int, seed: int) -> dict:
        picks = self._caption_picks(epoch, seed)
        texts = [self.captions[i][int(picks[i]) % len(self.captions[i])] for i in indices]
        pixels = self.cache[list(indices)] if self.cache is not None else self._process([self.paths[i] for i in indices])
        tok = self.processor.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        return {"pixel_values": pixels, "input_ids": tok["input_ids"], "attention_mask": tok["attention_mask"]}


def _latest_state(checkpoints: Path) -> tuple[Path, int] | None:
    """The newest complete training state (a ``done`` marker is written after each save)."""
    done = sorted((int(p.parent.name.split("_")[1]), p.parent) for p in checkpoints.glob("step_*/done"))
    return (done[-1][1], done[-1][0]) if done else None


def _save_state(accelerator, checkpoints: Path, step: int, keep: int = 2) -> None:
    target = checkpoints / f"step_{step:08d}"
    accelerator.save_state(str(target))
    if accelerator.is_main_process:
        (target / "done").write_text(str(step))
        for old in sorted(checkpoints.glob("step_*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)


def train_contrastive(model, data: ImageTextData, cfg: PretrainConfig) -> list[dict]:
    """Symmetric InfoNCE (CLIP's own loss) over the data; returns the logged losses."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_cosine_schedule_with_warmup

    accelerator = Accelerator(mixed_precision=cfg.mixed_precision)
    set_seed(cfg.seed)
    world, rank = accelerator.num_processes, accelerator.process_index
    per_process = cfg.batch_size // world
    if per_process < 2:
        raise ValueError(f"batch_size {cfg.batch_size} leaves fewer than 2 images per process on {world} processes")
    steps_per_epoch = len(data) // cfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{len(data)} images are fewer than one batch of {cfg.batch_size}")
    total = cfg.epochs * steps_per_epoch if cfg.max_steps < 0 else cfg.max_steps
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(cfg.warmup_ratio * total), total)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    out = Path(cfg.output_dir)
    checkpoints, log_path = out / "checkpoints", out / "train_log.jsonl"
    start, history = 0, []
    latest = _latest_state(checkpoints) if cfg.resume else None
    if latest is not None:
        accelerator.load_state(str(latest[0]))
        start = latest[1]
        rows = [json.loads(line) for line in log_path.read_text().splitlines()] if log_path.exists() else []
        history = [row for row in rows if row["step"] <= start]  # rows after the saved state are redone
        if accelerator.is_main_process:
            log_path.write_text("".join(json.dumps(row) + "\n" for row in history))
        logger.info("resumed from %s (step %d of %d)", latest[0], start, total)
    elif log_path.exists() and accelerator.is_main_process:
        log_path.unlink()

    model.train()
    bar = tqdm(total=total, initial=start, desc="training", unit="step", disable=not (cfg.show_progress and accelerator.is_main_process))
    order, t0 = None, time.time()
    for step in range(start, total):
        epoch, k = divmod(step, steps_per_epoch)
        if k == 0 or order is None:
            order = data.order(epoch, cfg.seed)
        global_batch = order[k * cfg.batch_size:(k + 1) * cfg.batch_size]
        batch = data.batch(global_batch[rank * per_process:(rank + 1) * per_process].tolist(), epoch, cfg.seed)
        batch = {name: t.to(accelerator.device) for name, t in batch.items()}
        with accelerator.autocast():
            loss = model(**batch, return_loss=True).loss
        accelerator.backward(loss)
        if cfg.max_grad_norm > 0:
            accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        bar.update(1)
        if (step + 1) % max(cfg.log_steps, 1) == 0 or step + 1 == total:
            row = {"step": step + 1, "epoch": round((step + 1) / steps_per_epoch, 3), "loss": round(loss.item(), 4),
                   "lr": scheduler.get_last_lr()[0], "seconds": round(time.time() - t0, 1)}
            history.append(row)
            bar.set_postfix(loss=row["loss"])
            if accelerator.is_main_process:
                with log_path.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
        if cfg.save_steps and (step + 1) % cfg.save_steps == 0 and step + 1 < total:
            _save_state(accelerator, checkpoints, step + 1)
    bar.close()
    accelerator.wait_for_everyone()
    return history


def plot_loss(history: Sequence[dict], path: Path) -> None:
    """Training loss against step, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([h["step"] for h in history], [h["loss"] for h in history])
    ax.set_xlabel("step")
    ax.set_ylabel("contrastive loss")
    ax.set_title("pre-training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _write_card(out: Path) -> None:
    """The model card (README.md) beside every saved checkpoint; a card problem never costs the run."""
    from .cards import write_model_card

    try:
        write_model_card(out)
    except (ValueError, OSError, KeyError) as err:
        logger.warning("could not write the model card in %s: %s", out, err)


def pretrain(cfg: PretrainConfig, evaluator: Evaluator | None = None) -> dict:
    """Train a model from ``cfg.preset`` on the captions, save it and (optionally) evaluate it.

    Writes to ``cfg.output_dir``: the checkpoint (``model.safetensors``,
    ``config.json``, processor files), ``training_config.json``,
    ``train_log.jsonl``, ``loss.png``, ``README.md`` (the model card) and, with an evaluator, ``metrics.json``.
    Returns ``{"output_dir", "history", "metrics", "train_seconds"}``.
    """
    out = Path(cfg.output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(f"cannot create output folder {out}: {err.strerror or err}") from err
    if not os.access(out, os.W_OK):
        raise OSError(f"output folder {out} is not writable")
    records = load_coco_captions(cfg.captions_path, cfg.images_path)
    processor = load_processor(None if cfg.preset == "tiny" else cfg.preset)
    model = build_model(cfg.preset, seed=cfg.seed)
    (out / "training_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    data = ImageTextData(records, processor, cfg.cache_images, cfg.show_progress)
    logger.info("training on %d images / %d captions from %s", len(data), len(records), cfg.captions_path)
    t0 = time.time()
    history = train_contrastive(model, data, cfg)
    train_seconds = time.time() - t0
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    if history:
        plot_loss(history, out / "loss.png")
    metrics = None
    if evaluator is not None:
        metrics = {**evaluator(model, processor), "train_seconds": round(train_seconds, 1),
                   "train_images": len(data), "steps": history[-1]["step"] if history else 0}
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    _write_card(out)
    return {"output_dir": str(out), "history": history, "metrics": metrics, "train_seconds": train_seconds}
