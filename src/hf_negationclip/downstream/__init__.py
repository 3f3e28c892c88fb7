"""Downstream models that consume CLIP text features, with a NegationCLIP text tower swapped in.

- :mod:`.segmentation`: referring segmentation with ``transformers``' CLIPSeg (``hf-negationclip segment``).
"""

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
    segmentation_processor,
    summarize,
    swap_text_tower,
    train_decoder,
    vision_activations,
    wilson_interval,
)

__all__ = [
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
    "segmentation_processor",
    "summarize",
    "swap_text_tower",
    "train_decoder",
    "vision_activations",
    "wilson_interval",
]
