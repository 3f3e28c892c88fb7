"""hf-negationclip: teach CLIP to understand negation, the Hugging Face way.

Three lines to use it::

    from hf_negationclip import NegationCLIPModel, load_processor
    model = NegationCLIPModel.from_pretrained("path/or/hub-id")
    processor = load_processor("path/or/hub-id")
"""

from .benchmarks import (
    RestrictedUnpickler,
    build_negation_probe,
    build_shape_probe,
    export_negrefcocog,
    load_refcocog,
    load_world_split,
    safe_pickle_load,
    write_scene_benchmarks,
)
from .corpus import CaptionRecord, CorpusConfig, has_negation, load_coco_captions, negation_cues, run_corpus
from .evaluation import WorldEvaluator, choice_accuracy, embed_images, embed_texts, metric_path, run_harness
from .modeling import (
    PRESETS,
    NegationCLIPModel,
    build_model,
    get_preset,
    load_processor,
    load_tokenizer,
    tiny_clip_config,
)
from .training import FinetuneConfig, PretrainConfig, finetune, pretrain
from .world import COLORS, SHAPES, SIZES, render_scene, sample_scene, write_world

__version__ = "0.1.0"

__all__ = sorted(
    [
        "COLORS",
        "CaptionRecord",
        "CorpusConfig",
        "FinetuneConfig",
        "NegationCLIPModel",
        "PRESETS",
        "PretrainConfig",
        "RestrictedUnpickler",
        "SHAPES",
        "SIZES",
        "WorldEvaluator",
        "build_model",
        "build_negation_probe",
        "build_shape_probe",
        "choice_accuracy",
        "embed_images",
        "embed_texts",
        "export_negrefcocog",
        "finetune",
        "metric_path",
        "run_harness",
        "write_scene_benchmarks",
        "get_preset",
        "has_negation",
        "load_coco_captions",
        "load_processor",
        "load_refcocog",
        "load_tokenizer",
        "load_world_split",
        "negation_cues",
        "pretrain",
        "render_scene",
        "run_corpus",
        "safe_pickle_load",
        "sample_scene",
        "tiny_clip_config",
        "write_world",
    ]
)
