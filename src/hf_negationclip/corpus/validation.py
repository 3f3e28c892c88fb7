"""Checks every generated caption passes, whatever backend wrote it. A failure names its reason."""

from __future__ import annotations

import re

from .backends.base import Job
from .captions import has_negation
from .vocabulary import Vocabulary

#: function words that a rewrite may drop or change; every other word of the original must survive
STOPWORDS = frozenset(
    """a an the of on in at to with and or is are was were be been this that these those there
here it its his her their some any one has have having by for from as into onto near next up down
out over under very""".split()
)
#: phrases that only appear when a model echoes its instructions instead of answering
PROMPT_LEAKS = (
    "caption",
    "rewrite",
    "rewritten",
    "negated",
    "negation",
    "original",
    "sentence",
    "assistant",
    "user:",
    "answer:",
    "###",
    "here is the",
    "here's",
    "instruction",
    "output:",
    "<|",
    "[inst]",
)
MAX_WORDS = 60


def content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9']+", text.lower()) if w not in STOPWORDS}


def validate(job: Job, vocab: Vocabulary | None) -> str | None:
    """The reason ``job.negated_caption`` is unusable, or None when it passes every check."""
    new, old = job.negated_caption, job.caption
    if not isinstance(new, str) or not new.strip():
        return "empty output"
    lowered, old_lowered = new.lower(), old.lower()
    if any(leak in lowered and leak not in old_lowered for leak in PROMPT_LEAKS) or "\n" in new.strip():
        return "prompt text leaked"
    if not has_negation(new):
        return "no negation cue"
    n_new, n_old = len(new.split()), len(old.split())
    if n_new <= n_old or n_new > min(2 * n_old + 16, MAX_WORDS):
        return "bad length"
    if not content_words(old) <= content_words(new):
        return "dropped content words"
    if job.target is not None and vocab is not None and not vocab.names(new, job.target):
        return "does not name the negated thing"
    if job.target is not None and vocab is None and not set(job.target.phrase.lower().split()) <= set(lowered.split()):
        return "does not name the negated thing"
    return None
