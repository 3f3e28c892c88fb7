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

The pieces, each importing only from the ones before it: :mod:`.threads` (``--threads`` for one call),
:mod:`.text_encoders` (loading text towers, pipeline folders), :mod:`.world_model` (the tiny UNet, its
training and sampling), :mod:`.detector` (the colour detector), :mod:`.evaluate` (the negation scores),
:mod:`.command` (the commands).
"""

from .command import SwapTextEncoderConfig, run_swap_text_encoder, run_t2i_eval, run_t2i_train
from .detector import detect_colors, validate_detector
from .evaluate import (
    AFFIRMED_TEMPLATE,
    NEGATED_TEMPLATE,
    REAL_OBJECTS,
    ClipChecker,
    T2IEvalConfig,
    format_t2i_table,
    score_world_images,
    t2i_eval_pipeline,
    t2i_eval_world,
    world_prompts,
)
from .text_encoders import (
    PIPELINE_TEXT_COMPONENTS,
    check_pipeline_folder,
    check_text_width,
    load_text_tower,
    swap_text_encoder,
)
from .world_model import PromptEncoder, T2ITrainConfig, build_unet, load_world_pairs, sample_images, train_t2i

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
