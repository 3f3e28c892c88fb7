"""Downstream models that consume CLIP text features, with a NegationCLIP text tower swapped in.

- :mod:`.segmentation`: referring segmentation with ``transformers``' CLIPSeg (``hf-negationclip segment``).
- :mod:`.diffusion`: text-to-image with diffusers (``swap-text-encoder``, ``t2i-train``, ``t2i-eval``).
"""

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
from .segmentation import (
    FeatureCache,
    MaskReader,
    ReferringSample,
    SegmentConfig,
    clipseg_from_clip,
    evaluate_segmenter,
    extract_layers_for,
    load_clipseg,
    load_referring_samples,
    run_segment,
    run_segment_stage,
    score_segmenter,
    segmentation_processor,
    segmentation_table,
    summarize,
    swap_text_tower,
    text_blind_ious,
    train_decoder,
    vision_activations,
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
    "FeatureCache",
    "MaskReader",
    "ReferringSample",
    "SegmentConfig",
    "clipseg_from_clip",
    "evaluate_segmenter",
    "extract_layers_for",
    "load_clipseg",
    "load_referring_samples",
    "run_segment",
    "run_segment_stage",
    "score_segmenter",
    "segmentation_processor",
    "segmentation_table",
    "summarize",
    "swap_text_tower",
    "text_blind_ious",
    "train_decoder",
    "vision_activations",
]
