"""Pre-training a CLIP on affirmative captions (the biased baseline), on the one loop of :mod:`.loop`.

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
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..corpus import load_coco_captions
from ..modeling import build_model, load_processor
from .data import ImageTextData
from .loop import plot_history, train_contrastive

logger = logging.getLogger(__name__)

Evaluator = Callable[[torch.nn.Module, object], dict]


@dataclass
class PretrainConfig:
    """Arguments of ``hf-negationclip pretrain`` (also saved as ``training_config.json``)."""

    world_dir: str = field(
        default="runs/world", metadata={"help": "scene world (or COCO root laid out like it) to train on"}
    )
    output_dir: str = field(default="runs/pretrain", metadata={"help": "where the checkpoint, logs and metrics go"})
    preset: str = field(default="tiny", metadata={"help": "model preset name, Hub id or checkpoint folder"})
    split: str = field(default="train", metadata={"help": "world split to train on"})
    captions_file: str | None = field(
        default=None, metadata={"help": "COCO captions JSON (default: <world>/annotations/captions_<split>.json)"}
    )
    image_dir: str | None = field(
        default=None, metadata={"help": "image folder of captions_file (default: <world>/images/<split>)"}
    )
    epochs: int = field(default=16, metadata={"help": "passes over the images (one random caption of each per pass)"})
    max_steps: int = field(default=-1, metadata={"help": "stop after this many optimizer steps (-1: run all epochs)"})
    batch_size: int = field(
        default=128, metadata={"help": "global batch size (images per step, split across processes)"}
    )
    learning_rate: float = field(default=5e-4, metadata={"help": "peak AdamW learning rate"})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay"})
    warmup_ratio: float = field(
        default=0.05, metadata={"help": "fraction of steps with linear warm-up before the cosine decay"}
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm (0: off)"})
    mixed_precision: str = field(default="no", metadata={"help": "no | bf16 | fp16 (fp16 needs a GPU)"})
    seed: int = field(default=0, metadata={"help": "seed of the initial weights and data order"})
    save_steps: int = field(default=100, metadata={"help": "save a resumable training state every N steps (0: never)"})
    resume: bool = field(default=True, metadata={"help": "resume from the latest state in output_dir/checkpoints"})
    cache_images: bool = field(
        default=True, metadata={"help": "preprocess every image once into memory (small datasets)"}
    )
    num_workers: int = field(default=0, metadata={"help": "DataLoader workers when images are not cached"})
    log_steps: int = field(default=10, metadata={"help": "log the loss every N steps"})
    show_progress: bool = field(default=True, metadata={"help": "show progress bars"})
    # loop options shared with fine-tuning
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "batches of batch_size per optimizer step"})
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "recompute activations in backward (less memory)"}
    )
    group_by_length: bool = field(
        default=False,
        metadata={
            "help": "batch texts of similar token counts together (random otherwise): less padding, faster steps"
        },
    )
    eval_steps: int = field(
        default=0,
        metadata={"help": "evaluate every N steps (0: at the end only; needs validation data or an evaluator)"},
    )
    best_metric: str = field(
        default="val_loss",
        metadata={
            "help": "keep the weights that score best on this (names ending in 'loss': lower is better; '' keeps the last)"
        },
    )

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
        if self.gradient_accumulation_steps < 1:
            raise ValueError(f"gradient_accumulation_steps must be >= 1, got {self.gradient_accumulation_steps}")
        for name in ("save_steps", "num_workers", "log_steps", "eval_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")

    @property
    def captions_path(self) -> Path:
        return Path(self.captions_file or Path(self.world_dir) / "annotations" / f"captions_{self.split}.json")

    @property
    def images_path(self) -> Path:
        return Path(self.image_dir or Path(self.world_dir) / "images" / self.split)


def write_card(out: Path) -> None:
    """The model card (README.md) beside every saved checkpoint; a card problem never costs the run."""
    from ..apps.cards import write_model_card

    try:
        write_model_card(out)
    except (ValueError, OSError, KeyError) as err:
        logger.warning("could not write the model card in %s: %s", out, err)


def pretrain(cfg: PretrainConfig, evaluator: Evaluator | None = None) -> dict:
    """Train a model from ``cfg.preset`` on the captions, save it and (optionally) evaluate it.

    Writes to ``cfg.output_dir``: the checkpoint (``model.safetensors``,
    ``config.json``, processor files), ``training_config.json``,
    ``train_log.jsonl``, ``loss.png`` and, with an evaluator, ``metrics.json``.
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
        plot_history(history, out / "loss.png", "pre-training loss")
    metrics = None
    if evaluator is not None:
        metrics = {
            **evaluator(model, processor),
            "train_seconds": round(train_seconds, 1),
            "train_images": len(data),
            "steps": history[-1]["step"] if history else 0,
        }
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    write_card(out)
    return {"output_dir": str(out), "history": history, "metrics": metrics, "train_seconds": train_seconds}
