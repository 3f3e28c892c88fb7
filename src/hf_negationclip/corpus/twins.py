"""Minimal text twins of a negated caption: its affirmative flip and its scope swap.

For "a red circle with no blue star" (caption "a red circle", negated "blue star"):

- the *affirmative flip* takes the negation out and affirms the negated thing:
  "a red circle with a blue star" (false of the image: the star is absent);
- the *scope swap* moves the negation onto an object the caption mentions:
  "a blue star with no red circle" (false too: the circle is there).

Both say the same words as the negated caption but the negation, so they are
its wrong caption options (``mcq_wrong``): an image picks its negated caption
over them only by reading the negation. A twin that cannot be built is None
with a reason, counted by the pipeline.
"""

from __future__ import annotations

import re

from .captions import has_negation
from .validation import validate_flip, validate_scope_swap
from .vocabulary import Mention, Target, Vocabulary, pluralize, singularize


def affirmative_flip(negated_caption: str, caption: str, negated: str | None) -> str | None:
    """The rules' flip (``benchmarks.readers.affirmative_counterpart``), or None when a cue is left over."""
    # lazy: benchmarks reads corpus files (and imports corpus at module level); the function moves next to
    # corpus/backends/rules.py on another branch, then import it from there
    from ..benchmarks.readers import affirmative_counterpart

    return affirmative_counterpart(negated_caption, caption, negated)


def _caption_span(negated_caption: str, caption: str) -> tuple[int, int] | None:
    """Where the original caption sits inside the negated one (the rules keep it verbatim, first letter aside)."""
    core = caption.strip().rstrip(".").strip()
    at = negated_caption.lower().find(core.lower()) if core else -1
    return (at, at + len(core)) if at >= 0 else None


def _is_plural(text: str, category: str) -> bool:
    last = text.lower().split()[-1]
    return last != category.split()[-1].lower() and last == pluralize(category).split()[-1].lower()


def _fix_articles(text: str) -> str:
    return re.sub(
        r"\b([Aa]n?) (?=(\w))",
        lambda m: (("An" if m.group(1)[0] == "A" else "an") if m.group(2).lower() in "aeiou" else m.group(1)[0]) + " ",
        text,
    )


def scope_swap(
    negated_caption: str, caption: str, target: Target | None, vocab: Vocabulary | None
) -> tuple[str | None, str | None]:
    """(the negated caption with the negation moved onto a mentioned object, None) or (None, why not).

    The negated thing and the first object the caption mentions (of another
    kind or with other attributes) trade places, number and articles fixed:
    "no blue stars here: a red circle" -> "no red circles here: a blue star".
    """
    if target is None or target.kind != "object":
        return None, "attribute negation"
    if vocab is None or not vocab.categories:
        return None, "no vocabulary"
    mentions = vocab.mentions(negated_caption)
    span = _caption_span(negated_caption, caption)

    def inside(m: Mention) -> bool:
        return span is not None and span[0] <= m.start and m.end <= span[1]

    negated = [
        m
        for m in mentions
        if m.category == target.category and set(target.attributes) <= set(m.attributes) and not inside(m)
    ]
    if len(negated) != 1:
        return None, "negated phrase not found once"
    neg = negated[0]
    others = [
        m
        for m in mentions
        if m is not neg and (m.category, m.attributes) != (neg.category, neg.attributes) and (span is None or inside(m))
    ]
    if not others:
        return None, "caption names no other object"
    other = others[0]
    neg_text, other_text = negated_caption[neg.start : neg.end], negated_caption[other.start : other.end]
    neg_plural = _is_plural(neg_text, neg.category)
    if _is_plural(other_text, other.category):
        return None, "plural mention"  # the singular of "two circles" / "people" is guesswork
    # each phrase takes the other's number: "no blue stars here: a red circle" -> "no red circles here: a blue star"
    into_other = " ".join(neg_text.split()[:-1] + [neg.category.split()[-1]]) if neg_plural else neg_text
    into_neg = pluralize(other_text) if neg_plural else other_text
    (a, ta), (b, tb) = sorted([((neg.start, neg.end), into_neg), ((other.start, other.end), into_other)])
    text = negated_caption[: a[0]] + ta + negated_caption[a[1] : b[0]] + tb + negated_caption[b[1] :]
    text = _fix_articles(text)
    reason = validate_scope_swap(negated_caption, text)
    return (None, reason) if reason else (text, None)


def text_twins(
    negated_caption: str,
    caption: str,
    target: Target | None,
    vocab: Vocabulary | None,
    model_flip: str | None = None,
) -> dict:
    """The twins of one accepted caption and why any is missing.

    ``model_flip`` is a flip a model backend wrote in the same call as the
    caption: kept when :func:`validation.validate_flip` passes it, else
    rejected with its reason and replaced by the rules' flip. Returns
    ``{"flip", "flip_source", "flip_rejected", "flip_missing", "scope_swap",
    "scope_missing", "mcq_wrong"}``.
    """
    out: dict = {"flip": None, "flip_source": None, "flip_rejected": None, "flip_missing": None}
    if model_flip is not None:
        reason = validate_flip(caption, negated_caption, model_flip, target, vocab)
        if reason is None:
            out.update(flip=model_flip.strip(), flip_source="model")
        else:
            out["flip_rejected"] = reason
    if out["flip"] is None:
        phrase = target.phrase if target is not None and target.kind == "object" else None
        flip = affirmative_flip(negated_caption, caption, phrase)
        reason = "cue left over" if flip is None else validate_flip(caption, negated_caption, flip, target, vocab)
        if reason is None:
            out.update(flip=flip, flip_source="rules")
        else:
            out["flip_missing"] = reason
    out["scope_swap"], out["scope_missing"] = scope_swap(negated_caption, caption, target, vocab)
    out["mcq_wrong"] = [t for t in (out["flip"], out["scope_swap"]) if t]
    return out


# joints between a negation clause and the caption it is attached to ("no X, just C", "C, and no X")
_FRONT_JOINT = re.compile(r"(?:[\s,;:.\-]|\b(?:just|only|but rather|rather|but|and|of|then)\b)+$", re.IGNORECASE)
_END_JOINT = re.compile(r"^(?:[\s,;:.\-]|\b(?:and|but|which|then)\b)+", re.IGNORECASE)


# a clause starting with these leans on the caption's last noun; words that name nothing on their own
_DANGLING = frozenset("that that's which though is isn't are aren't was wasn't".split())
_NOT_NAMING = frozenset("a an the any some no not n't without".split())


def _clause_of(text: str, caption: str) -> str | None:
    """What ``text`` says beside the caption it keeps verbatim at its front or end, joints trimmed; else None."""
    span = _caption_span(text, caption)
    if span is None:
        return None
    before, after = text[: span[0]], text[span[1] :]
    if before.strip(" .,;:") and after.strip(" .,;:"):
        return None  # the caption is split around the clause ("a red circle with no blue star, left")
    clause = _FRONT_JOINT.sub("", before) if before.strip(" .,;:") else _END_JOINT.sub("", after)
    clause = clause.strip(" .,;:")
    words = clause.lower().split()
    if not words or words[0] in _DANGLING or len([w for w in words if w not in _NOT_NAMING]) < 2:
        return None  # "that is not cyan", "though not small": the clause leans on a noun of the caption
    return clause[:1].upper() + clause[1:]


def negation_clause(negated_caption: str, caption: str, flip: str | None) -> tuple[str, str] | None:
    """The negation alone and its flip alone, without the caption both repeat, or None.

    "no blue star here: a red circle" with flip "a blue star here: a red circle"
    -> ("No blue star here", "A blue star here"). A clause has no head to lean
    on: an image picks "No blue star here" over "A blue star here" only by
    seeing that no blue star is there, where with the head ("a red circle")
    dropping the negated thing would do. None when the caption is not kept
    whole at the front or end, or the two clauses are not a negation and its
    affirmation of the same words.
    """
    if not flip:
        return None
    clause, affirmed = _clause_of(negated_caption, caption), _clause_of(flip, caption)
    if clause is None or affirmed is None or not has_negation(clause) or has_negation(affirmed):
        return None
    return clause, affirmed


_WORDS = re.compile(r"\w+|[^\w\s]+|\s+")
_ARTICLES = frozenset("a an the any some".split())


def _one_edit(x: str, y: str) -> tuple[list[str], list[str]]:
    """The words of ``x`` and of ``y`` between their common prefix and common suffix (word level)."""
    a, b = _WORDS.findall(x.lower()), _WORDS.findall(y.lower())
    p = 0
    while p < min(len(a), len(b)) and a[p] == b[p]:
        p += 1
    s = 0
    while s < min(len(a), len(b)) - p and a[-1 - s] == b[-1 - s]:
        s += 1
    return a[p : len(a) - s], b[p : len(b) - s]


def _content(words: list[str]) -> set[str]:
    """The words that name something (no articles, no punctuation), singular."""
    return {singularize(w) for w in words if w.isalpha() and w not in _ARTICLES}


def swapped_clause(negated_caption: str, caption: str, clause: str, swap: str | None) -> str | None:
    """The negation clause with its negated thing replaced by the object the scope swap negates, or None.

    "No blue star here" of "no blue star here: a red circle" (caption "a red
    circle") with swap "no red circle here: a blue star" -> "No red circle
    here": the negation of an object the image holds, in the clause's words
    (NegBench's wrong options "This image does not feature <a present object>").
    The swap must be the caption and the clause each with one phrase changed,
    the two phrases trading places; None when it is not (or there is no swap).
    """
    span = _caption_span(negated_caption, caption)
    at = negated_caption.lower().find(clause.lower())
    if not swap or span is None or at < 0:
        return None
    front = at < span[0]  # the clause before the caption, else after it
    joint = negated_caption[at + len(clause) : span[0]] if front else negated_caption[span[1] : at]
    if not joint:
        return None
    for k in (m.start() for m in re.finditer(re.escape(joint), swap, re.IGNORECASE)):
        head, tail = swap[:k], swap[k + len(joint) :]
        new_clause, new_caption = (head, tail) if front else (tail, head)
        lost, gained = _one_edit(clause, new_clause)
        moved_out, moved_in = _one_edit(negated_caption[span[0] : span[1]], new_caption)
        # the phrase the clause gained came out of the caption, the one it lost went into it
        traded = _content(gained) <= _content(moved_out) and _content(lost) <= _content(moved_in) | _content(gained)
        if (lost or gained) and traded:
            text = _fix_articles(new_clause.strip(" .,;:"))
            text = text[:1].upper() + text[1:]
            return text if has_negation(text) and text.lower() != clause.lower() else None
    return None
