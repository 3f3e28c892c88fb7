"""The options every training run shares (model, images, the loop), and the save hook.

``PretrainConfig`` and ``FinetuneConfig`` extend :class:`TrainingConfig`;
every field is a CLI flag (``HfArgumentParser``) with its help text, and the
resolved config is saved as ``training_config.json`` in the run folder.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

#: called with the run folder once a checkpoint is saved there (the apps write the model card this way)
SaveHook = Callable[[Path], object]


@dataclass
class TrainingConfig:
    """Options shared by ``hf-negationclip pretrain`` and ``finetune``: model, images and the training loop."""

    world_dir: str = field(
        default="runs/world", metadata={"help": "scene world (or COCO root laid out like it) to train on"}
    )
    output_dir: str = field(default="runs/pretrain", metadata={"help": "where the checkpoint, logs and metrics go"})
    preset: str = field(default="tiny", metadata={"help": "model preset name, Hub id or checkpoint folder"})
    split: str = field(default="train", metadata={"help": "world split to train on"})
    image_dir: str | None = field(
        default=None, metadata={"help": "image folder of the captions (default: <world>/images/<split>)"}
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
    skip_bad_images: bool = field(
        default=False,
        metadata={
            "help": "skip images that cannot be read (counted, logged, listed in output_dir/skipped_images.json) "
            "instead of stopping; every image is decoded once up front"
        },
    )
    log_steps: int = field(default=10, metadata={"help": "log the loss every N steps"})
    show_progress: bool = field(default=True, metadata={"help": "show progress bars"})
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
        for name in ("save_steps", "log_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")

    @property
    def images_path(self) -> Path:
        return Path(self.image_dir or Path(self.world_dir) / "images" / self.split)


def run_save_hook(on_save: SaveHook | None, out: Path) -> None:
    """Call ``on_save(out)``; the checkpoint is already written, so a failing hook is logged, never fatal."""
    if on_save is None:
        return
    try:
        on_save(out)
    except (ValueError, OSError, KeyError) as err:
        logger.warning("the save hook %s failed in %s: %s", getattr(on_save, "__name__", on_save), out, err)
