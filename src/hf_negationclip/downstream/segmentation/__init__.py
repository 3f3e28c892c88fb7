"""Referring segmentation with a NegationCLIP text encoder: a ``transformers`` CLIPSeg whose towers are ours.

The paper's downstream protocol (section 5): CLIPSeg's decoder is trained with
a frozen CLIP, then the text tower is swapped for a negation-aware one and the
decoder is *not* retrained; negated referring expressions should gain mIoU.

- :func:`clipseg_from_clip` builds a ``CLIPSegForImageSegmentation`` whose CLIP
  towers are a given CLIP checkpoint (exact: same 110 tensors under ``clip.``),
  with ``extract_layers`` spread over the tower's depth (:func:`extract_layers_for`).
- :func:`swap_text_tower` puts another checkpoint's text tower into a segmenter
  (a real CLIPSeg too), checking that its features fit the decoder.
- :func:`load_referring_samples` reads RefCOCOg-format refs (``refs(umd).p``
  through the restricted unpickler) and their ``instances.json`` masks
  (pycocotools ``annToMask``): the scene world's files or the real RefCOCOg + COCO.
- :func:`train_decoder` trains the decoder only (CLIP frozen, BCE + Dice, text and
  visual prompts mixed as CLIPSeg trains), :func:`score_segmenter` gives each
  expression's IoU and whether the decoder points at its target rather than a
  same-category rival, :func:`summarize` the mIoU (bootstrap interval), precision
  at IoU 0.5 and pointing accuracy (Wilson intervals, chance) on affirmative and
  negated expressions, :func:`text_blind_ious` the reference of a decoder that
  ignores its text.
- :func:`run_segment` (``hf-negationclip segment``) and
  :func:`run_segment_stage` (a cached, resumable stage for the demo) tie it together.

The pieces, each importing only from the ones before it: :mod:`.model` (building and
swapping), :mod:`.data` (referring samples, masks, visual prompts), :mod:`.features`
(the frozen towers' cached outputs), :mod:`.train` (the decoder), :mod:`.scores`
(per-expression scores and their summaries), :mod:`.command` (the command and stage).
"""

from .command import RESULTS_VERSION, SegmentConfig, run_segment, run_segment_stage, segmentation_table
from .data import MaskReader, ReferringSample, load_referring_samples, visual_prompt
from .features import FeatureCache, vision_activations
from .model import (
    clipseg_from_clip,
    extract_layers_for,
    freeze_clip,
    load_clipseg,
    segmentation_processor,
    swap_text_tower,
)
from .scores import SCORES, evaluate_segmenter, paired_delta, score_segmenter, summarize, text_blind_ious
from .train import train_decoder

__all__ = [
    "clipseg_from_clip",
    "extract_layers_for",
    "freeze_clip",
    "load_clipseg",
    "segmentation_processor",
    "swap_text_tower",
    "MaskReader",
    "ReferringSample",
    "load_referring_samples",
    "visual_prompt",
    "FeatureCache",
    "vision_activations",
    "train_decoder",
    "SCORES",
    "evaluate_segmenter",
    "paired_delta",
    "score_segmenter",
    "summarize",
    "text_blind_ious",
    "RESULTS_VERSION",
    "SegmentConfig",
    "run_segment",
    "run_segment_stage",
    "segmentation_table",
]
