"""Checks every generated caption passes, whatever backend wrote it. A failure names its reason."""

from __future__ import annotations

import re

from .backends.base import Job
from .captions import NEGATION_CUES, has_negation
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


#: words a flip may add when it takes a negation out ("free of" -> "full of", "absent" -> "present", ...)
AFFIRMING_WORDS = frozenset("full present something somewhere also both does do is are".split())
#: words a flip may drop beside the cue: the cue's own words and negative-polarity items
NEGATION_WORDS = frozenset(
    {w for cue in NEGATION_CUES for w in cue.split()} | set("anywhere all rather lacking lacks free but".split())
)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def validate_flip(caption: str, negated_caption: str, flip, target, vocab: Vocabulary | None) -> str | None:
    """Why ``flip`` is not the affirmative flip of ``negated_caption``, or None when it is.

    A flip differs from the negated caption only in the negation: the cue is
    gone, every content word of the original caption is kept, the negated
    thing is named (now affirmed), and no other content word is added or dropped.
    """
    if not isinstance(flip, str) or not flip.strip():
        return "empty flip"
    lowered = flip.lower()
    if any(leak in lowered and leak not in caption.lower() for leak in PROMPT_LEAKS) or "\n" in flip.strip():
        return "prompt text leaked into the flip"
    if has_negation(flip):
        return "cue left in the flip"
    if flip.strip().lower() == caption.strip().lower():
        return "flip is the original caption"
    if not content_words(caption) <= content_words(flip):
        return "flip dropped content words"
    if target is not None:
        named = (
            vocab.names(flip, target) if vocab is not None else set(target.phrase.lower().split()) <= set(_words(flip))
        )
        if not named:
            return "flip does not name the negated thing"
    added = content_words(flip) - content_words(negated_caption) - AFFIRMING_WORDS
    dropped = content_words(negated_caption) - content_words(flip) - NEGATION_WORDS
    if added or dropped:
        return "flip changes more than the negation"
    if abs(len(_words(flip)) - len(_words(negated_caption))) > 3:
        return "flip changes more than the negation"
    return None


def validate_scope_swap(negated_caption: str, swapped) -> str | None:
    """Why ``swapped`` is not a scope swap of ``negated_caption`` (same words, the cue kept), or None."""
    if not isinstance(swapped, str) or not swapped.strip() or swapped == negated_caption:
        return "empty scope swap"
    if not has_negation(swapped):
        return "cue lost in the scope swap"

    def singular(w: str) -> str:
        if re.search(r"(s|x|z|ch|sh)es$", w):
            return w[:-2]
        return w[:-1] if w.endswith("s") and not w.endswith(("ss", "is", "us")) else w

    def bag(text: str) -> list[str]:
        # number and article move with the phrases: "stars" ~ "star", "an" ~ "a"
        return sorted(singular(w) for w in _words(text) if w not in ("a", "an", "some"))

    if bag(swapped) != bag(negated_caption):
        return "scope swap changes the words"
    return None
