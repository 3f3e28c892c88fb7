"""The diffusion commands: ``swap-text-encoder``, ``t2i-train`` and ``t2i-eval``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .evaluate import T2IEvalConfig, format_t2i_table, t2i_eval_pipeline, t2i_eval_world
from .text_encoders import swap_text_encoder
from .world_model import T2ITrainConfig, _tail_mean, train_t2i


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


def run_t2i_eval(cfg: T2IEvalConfig) -> dict:
    if bool(cfg.model_dir) == bool(cfg.pipeline):
        raise ValueError("give exactly one of --model_dir (a t2i-train folder) and --pipeline (a diffusers pipeline)")
    if cfg.n < 1 or cfg.steps < 1:
        raise ValueError("--n and --steps must be >= 1")
    result = t2i_eval_world(cfg) if cfg.model_dir else t2i_eval_pipeline(cfg)
    print(format_t2i_table(result))
    return result
