"""Caption corpora: COCO-format readers, the ONE negation-cue detector, and the negated-caption corpus builder.

The builder runs two pipelines (absent objects; VQA "no" answers) through
pluggable backends (``rules`` offline default, ``transformers``, ``openai``),
validates every caption, writes resumable sharded JSONL with minimal-pair
distractors, and exports the interchange file ``negated_captions_<split>.json``
plus a parquet folder that ``datasets.load_dataset`` reads offline.
"""

from .captions import (
    NEGATION_CUES,
    POSITIONS,
    CaptionRecord,
    CorpusFormatError,
    has_negation,
    load_coco_captions,
    negation_cues,
    negation_position,
    read_json,
)
from .export import export_split, form_position_histogram, load_interchange
from .pipeline import CorpusConfig, CorpusStats, question_target, run_corpus, run_split
from .sources import SplitSource, load_split
from .twins import negation_clause, swapped_clause
from .validation import validate
from .vocabulary import Mention, Target, Vocabulary

__all__ = [
    "CaptionRecord",
    "CorpusConfig",
    "CorpusFormatError",
    "CorpusStats",
    "Mention",
    "NEGATION_CUES",
    "POSITIONS",
    "SplitSource",
    "Target",
    "Vocabulary",
    "export_split",
    "form_position_histogram",
    "has_negation",
    "load_coco_captions",
    "load_interchange",
    "load_split",
    "negation_clause",
    "negation_cues",
    "negation_position",
    "question_target",
    "read_json",
    "run_corpus",
    "run_split",
    "swapped_clause",
    "validate",
]
