"""Scoring CLIP models.

- :mod:`.core`: embeddings, tie-aware argmax, zero-shot / retrieval / probe
  metrics and the ``WorldEvaluator`` the trainer calls.
- :mod:`.harness`: the benchmark harness behind ``hf-negationclip evaluate``
  (every task, every checkpoint, ``results.json`` + table + chart).
"""

from .core import *  # noqa: F401,F403  (every public name of core, so new metrics there need no edit here)
from .core import Accuracy, WorldEvaluator, choice_accuracy, embed_images, embed_texts, format_metrics, strict_argmax
from .harness import (
    TASK_KINDS,
    HarnessConfig,
    evaluate_models,
    load_checkpoint,
    metric_path,
    run_harness,
    write_markdown,
    write_plot,
)
