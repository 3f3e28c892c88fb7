"""Scoring CLIP models.

- :mod:`.core`: tie-aware argmax, choice scores, zero-shot / retrieval / probe
  metrics and the ``WorldEvaluator`` the trainer calls.
- :mod:`.harness`: the benchmark harness behind ``hf-negationclip evaluate``
  (every task, every checkpoint, ``results.json`` + table + chart).
- :mod:`.stats`: ``wilson_interval``, the one interval method.
- :mod:`.tables`: ``markdown_table``, the one table writer (harness and demo report).

Encoding (``encode_texts``, ``encode_images``, ``EmbeddingCache``) and checkpoint
loading (``load_checkpoint``) live in :mod:`hf_negationclip.modeling`.
"""

from ..modeling import load_checkpoint
from .core import *  # noqa: F401,F403  (every public name of core, so new metrics there need no edit here)
from .core import Accuracy, WorldEvaluator, choice_accuracy, embed_images, embed_texts, format_metrics, strict_argmax
from .harness import (
    TASK_KINDS,
    HarnessConfig,
    evaluate_models,
    metric_path,
    run_harness,
    write_markdown,
    write_plot,
)
from .stats import wilson_interval
from .tables import markdown_table
