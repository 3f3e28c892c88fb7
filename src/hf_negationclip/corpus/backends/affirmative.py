"""Taking the negation back out of a negated caption: the inverse of the rules backend's rewrite.

The rules backend (:mod:`.rules`) writes "no red star here: C" from a caption
C; :func:`affirmative_counterpart` turns such a caption (or a common English
negation) back into the affirmative one ("a red star here: C"), so the pair
differs only in the negation. The benchmark readers use it for the false
option of CC-Neg-style items (``benchmarks.readers`` re-exports it).
"""

from __future__ import annotations

import re

from ..captions import negation_cues
from ..vocabulary import article, pluralize


def _determiner(rest: str, negated: str | None, plural_before: bool) -> str:
    """ "a"/"an" for a singular noun phrase starting ``rest``, "some" for a plural one."""
    if plural_before or (negated and rest.lower().startswith(pluralize(negated.lower()))):
        return "some"
    return article(rest)


# "The negation removed", in order; each rule fires on the cue wherever it is (a rewritten caption has one).
_AFFIRM_RULES: tuple[tuple[str, object], ...] = (
    (r"\b(is|are)n't any\b", r"\1 some"),  # there aren't any Xs -> there are some Xs
    (r"\b(is|are|does|do|was|were|has|have)n't\b", r"\1"),  # isn't -> is, doesn't contain -> does contain
    (r"\bbut not\b", "and"),  # A, but not a X, B -> A, and a X, B
    (r"^not (.+?)(,?) but(?: rather)?\b", r"\1\2 and"),  # not a X but A -> a X and A
    (r"\bnot\s+", ""),  # is not present / that is not red / , not red,
    (r"\b(?:without|lacking) any\b", "with any"),  # (the "any" becomes a / some below)
    (r"\b(?:without|lacking)\b", "with"),
    (r"\bfree of\b", "full of"),
    (r"\b(?:missing|absent) from\b", "present in"),
    (r"\b(?:missing|absent)\b", "present"),
    (r"\bnone of\b", "one of"),
    (r"\bnothing\b", "something"),
)
_NPI = ((r"\banywhere\b", "somewhere"), (r",? at all\b", ""))


def _keep_case(old: str, new: str) -> str:
    return new[:1].upper() + new[1:] if old[:1].isupper() and new else new


def affirmative_counterpart(negated_caption: str, caption: str = "", negated: str | None = None) -> str | None:
    """The negated caption with its negation taken out ("no red star here: C" -> "a red star here: C"), or None.

    The result asserts what the negation denied and says everything else word
    for word, so of a pair (negated caption, counterpart) only the negation
    differs. Rules cover the constructions of the rules backend and the common
    English ones (no, not, n't, without, lacking, free of, missing, absent,
    none of, nothing); None when a cue is left over. ``caption`` (the original,
    kept verbatim inside the negated one) shields its own words from the
    negative-polarity fixes ("anywhere", "at all"); ``negated`` (the negated
    phrase) tells "no red stars" (-> "some") from "no red star" (-> "a").
    """
    text = negated_caption
    for pattern, repl in _AFFIRM_RULES:
        text = re.sub(pattern, lambda m, repl=repl: _keep_case(m.group(0), m.expand(repl)), text, flags=re.IGNORECASE)
    # "no X" (and "any X" left by "without any X", when the caption has no "any") -> "a X" / "some Xs"
    dets = r"no|any" if not re.search(r"\bany\b", caption, re.IGNORECASE) else r"no"
    text = re.sub(
        rf"\b({dets})\s+(?=(\S.*))",
        lambda m: (
            _keep_case(
                m.group(1),
                _determiner(
                    m.group(2), negated, bool(re.search(r"\b(are|were)\s*$", text[: m.start()], re.IGNORECASE))
                ),
            )
            + " "
        ),
        text,
        flags=re.IGNORECASE,
    )
    for pattern, repl in _NPI:
        if not re.search(pattern, caption, re.IGNORECASE):
            text = re.sub(pattern, repl, text, flags=re.IGNORECASE)
    text = " ".join(text.split())
    if negation_cues(text) or text == negated_caption:
        return None
    return text
