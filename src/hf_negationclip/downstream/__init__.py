"""Downstream consumers of a NegationCLIP text tower (diffusers text-to-image)."""

from .diffusion import (
    T2IEvalConfig,
    T2ITrainConfig,
    detect_colors,
    run_t2i_eval,
    swap_text_encoder,
    t2i_eval_world,
    train_t2i,
    validate_detector,
)

__all__ = [
    "T2IEvalConfig",
    "T2ITrainConfig",
    "detect_colors",
    "run_t2i_eval",
    "swap_text_encoder",
    "t2i_eval_world",
    "train_t2i",
    "validate_detector",
]
