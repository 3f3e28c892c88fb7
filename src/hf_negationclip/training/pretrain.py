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
from .config import SaveHook, TrainingConfig, run_save_hook
from .data import ImageTextData, skip_unreadable
from .loop import plot_history, train_contrastive

logger = logging.getLogger(__name__)

Evaluator = Callable[[torch.nn.Module, object], dict]


@dataclass
class PretrainConfig(TrainingConfig):
    """Arguments of ``hf-negationclip pretrain`` (also saved as ``training_config.json``).

    Pre-training has no validation split: the evaluator (the world probes on ``val``) scores the final model
    once, so there is no ``eval_steps`` / ``best_metric`` (picking weights by the probes would tune on them).
    """

    captions_file: str | None = field(
        default=None, metadata={"help": "COCO captions JSON (default: <world>/annotations/captions_<split>.json)"}
    )

    @property
    def captions_path(self) -> Path:
        return Path(self.captions_file or Path(self.world_dir) / "annotations" / f"captions_{self.split}.json")


def pretrain(cfg: PretrainConfig, evaluator: Evaluator | None = None, on_save: SaveHook | None = None) -> dict:
    """Train a model from ``cfg.preset`` on the captions, save it and (optionally) evaluate it.

    Writes to ``cfg.output_dir``: the checkpoint (``model.safetensors``,
    ``config.json``, processor files), ``training_config.json``,
    ``train_log.jsonl``, ``loss.png``, with an evaluator ``metrics.json``,
    with ``skip_bad_images`` ``skipped_images.json``; then calls
    ``on_save(output_dir)`` (the CLI and demo write the model card there).
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
    if cfg.skip_bad_images:
        records = skip_unreadable(records, out, cfg.show_progress)
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
    run_save_hook(on_save, out)
    return {"output_dir": str(out), "history": history, "metrics": metrics, "train_seconds": train_seconds}
