"""Benchmark data: readers for every benchmark's own file layout, NegRefCOCOg, and scene-world twins.

- :mod:`.refcocog`: RefCOCOg through a restricted unpickler.
- :mod:`.world`: the scene world's controlled probes (used by the trainer's evaluator).
- :mod:`.readers`: VALSE existence, NegBench MCQ, CC-Neg, COCO retrieval and image-folder readers.
- :mod:`.negrefcocog`: NegRefCOCOg from RefCOCOg, from the official JSON, or from the scene world,
  its ``datasets`` builder and the parquet export.
- :mod:`.scene`: the scene twins of every benchmark (plain and controlled), in the real layouts.

Every item built here follows the package convention: candidates are shuffled
with a fixed seed (the right answer is never always first).
"""

from .negrefcocog import (
    NegRefCOCOgSample,
    crop_box,
    export_negrefcocog,
    load_negrefcocog_official,
    negrefcocog_from_refcocog,
)
from .probes import *  # noqa: F401,F403  (new probes added to probes.py are exported without an edit here)
from .probes import (
    ChoiceItem,
    WorldImage,
    _swap_candidates,
    _two_new_objects,
    build_negation_probe,
    load_world_split,
    single_object_images,
)
from .readers import (
    ImageRef,
    ImageTextChoice,
    TextImageChoice,
    load_ccneg,
    load_coco_retrieval,
    load_image_folder,
    load_negbench_mcq,
    load_valse_existence,
)
from .refcocog import RefCOCOg, RestrictedUnpickler, load_refcocog, safe_pickle_load
from .twins import write_scene_benchmarks

__all__ = [
    "ChoiceItem",
    "ImageRef",
    "ImageTextChoice",
    "NegRefCOCOgSample",
    "RefCOCOg",
    "RestrictedUnpickler",
    "TextImageChoice",
    "WorldImage",
    "build_negation_probe",
    "crop_box",
    "export_negrefcocog",
    "load_ccneg",
    "load_coco_retrieval",
    "load_image_folder",
    "load_negbench_mcq",
    "load_negrefcocog_official",
    "load_refcocog",
    "load_valse_existence",
    "load_world_split",
    "negrefcocog_from_refcocog",
    "safe_pickle_load",
    "single_object_images",
    "write_scene_benchmarks",
]
