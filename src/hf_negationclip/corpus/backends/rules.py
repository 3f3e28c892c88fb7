"""The offline default: a grammar-based proposer and rewriter (no model).

A model trained on few sentence forms transfers poorly to new ones, so the
rewriter varies the construction (14 object-absence constructions, 5 attribute ones),
where the cue sits (prefix, inserted after the first noun phrase, suffix), the
determiner and number ("a", "any", "a single", plurals), and the picture noun.
The original caption is always kept verbatim, so every content word survives.
Every choice comes from the job's own seeded generator: same job, same text.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..vocabulary import Target, Vocabulary, article, pluralize
from .base import Job

PICTURE = ("picture", "image", "photo", "scene")

# Object absence. {x}: "no"-style bare phrase ("red triangle" / "red triangles"), {ax}: "a red triangle" /
# "any red triangles" / "a single red triangle", {xs}: plural, {pic}: picture noun, {c}: the caption.
# Each construction has prefix (front) and suffix (end) variants; "mid" ones go after the first noun phrase.
OBJECT_FORMS: dict[str, dict[str, tuple[str, ...]]] = {
    "no": {
        "front": ("no {x} here: {c}", "no {x}, just {c}", "no {xs} in sight; {c}"),
        "end": ("{c}, and no {x} anywhere", "{c}; no {x} is visible", "{c}, no {xs} at all"),
    },
    "with-no": {"mid": ("{h} with no {x}{t}",), "end": ("{c} with no {x}", "{c}, with no {xs} around")},
    "without": {
        "front": ("without {ax}, {c}",),
        "mid": ("{h} without {ax}{t}",),
        "end": ("{c} without {ax}", "{c}, without any {xs}"),
    },
    "there-is-no": {
        "front": ("there is no {x} in this {pic}: {c}", "there are no {xs} in the {pic}; {c}"),
        "end": ("{c}; there is no {x}", "{c}, and there are no {xs} in the {pic}"),
    },
    "not-but": {"front": ("not {ax} but {c}", "not {ax}, but rather {c}"), "mid": ("{h}, but not {ax},{t}",)},
    "free-of": {"front": ("{apic} free of {xs}: {c}",), "end": ("{c}, free of {xs}", "{c}, entirely free of {xs}")},
    "lacking": {"front": ("lacking {ax}, {c}",), "end": ("{c}, lacking {ax}", "{c} lacking any {xs}")},
    "absent": {
        "front": ("{AX} is absent from this {pic}: {c}",),
        "end": ("{c}; {a1} is absent", "{c}, with {xs} absent"),
    },
    "not-present": {
        "front": ("{AX} is not present here; {c}",),
        "end": ("{c}, but {a1} is not present", "{c}; {a1} is not in the {pic}"),
    },
    "isnt": {
        "front": ("there isn't {ax} here, only {c}",),
        "end": ("{c}, and there isn't {ax}", "{c}; there aren't any {xs}"),
    },
    "does-not-contain": {
        "front": ("this {pic} does not contain {ax}: {c}",),
        "end": ("{c}; the {pic} doesn't contain {ax}", "{c}, which does not include {ax}"),
    },
    "missing": {
        "front": ("{AX} is missing from this {pic} of {c}",),
        "end": ("{c}, with {a1} missing", "{c}; {a1} is missing"),
    },
    "none": {
        "front": ("none of the things here is {a1}: {c}",),
        "end": ("{c}; none of them is {a1}", "{c}, and none of the things is {a1}"),
    },
    "nothing": {"front": ("nothing here is {a1}; {c}",), "end": ("{c}, and nothing in the {pic} is {a1}",)},
}

# Attribute negation. {n}: the noun phrase as written in the caption ("square"), {v}: the negated value.
# "ins" variants are inserted right after the noun phrase; "front"/"end" are clauses around the caption.
ATTRIBUTE_FORMS: dict[str, dict[str, tuple[str, ...]]] = {
    "that-is-not": {"ins": (" that is not {v}", " that's not {v}")},
    "which-isnt": {"ins": (" which isn't {v}", ", which is not {v},")},
    "not-comma": {"ins": (", not {v},", ", though not {v},")},
    "is-not-clause": {
        "front": ("the {cat} is not {v}: {c}", "the {cat} isn't {v}; {c}"),
        "end": ("{c}; the {cat} is not {v}", "{c}, and the {cat} isn't {v}"),
    },
    "no-attribute": {
        "end": ("{c}, with no {v} {cat} in it", "{c}; there is no {v} {cat}"),
        "front": ("no {v} {cat} here: {c}",),
    },
}


def _pick(rng: np.random.Generator, options: Sequence):
    return options[int(rng.integers(len(options)))]


def _strip(caption: str) -> str:
    return caption.strip().rstrip(".").strip()


def _lower_first(text: str) -> str:
    # the caption moves after a prefix; keep "I" and all-caps words as they are
    return text[:1].lower() + text[1:] if text[:1].isupper() and not text[1:2].isupper() else text


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def object_slots(target: Target, rng: np.random.Generator) -> dict[str, str]:
    x = target.phrase
    plural = pluralize(x)
    det = _pick(rng, ("a", "a", "any", "a single"))
    ax = f"{article(x)} {x}" if det == "a" else f"{det} {x}"
    # "any" only where negative polarity licenses it ("without any star"), never as a subject ("any star is absent")
    a1 = f"{article(x)} {x}" if det == "any" else ax
    slots = {
        "x": _pick(rng, (x, x, plural)),
        "xs": plural,
        "ax": ax,
        "a1": a1,
        "AX": _capital(a1),
        "pic": _pick(rng, PICTURE),
    }
    slots["apic"] = f"{article(slots['pic'])} {slots['pic']}"  # "an image free of ...", "a photo free of ..."
    return slots


def rewrite_object(job: Job, rng: np.random.Generator) -> tuple[str, str]:
    """(negated caption, form) stating that ``job.target`` is absent."""
    c = _strip(job.caption)
    first = min(job.mentions, key=lambda m: m.start) if job.mentions else None
    has_tail = first is not None and first.end < len(c) - 3
    form = _pick(rng, list(OBJECT_FORMS))
    variants = OBJECT_FORMS[form]
    slot_names = [p for p in variants if p != "mid" or has_tail]
    place = _pick(rng, slot_names)
    template = _pick(rng, variants[place])
    slots = object_slots(job.target, rng)
    if place == "mid":
        head, tail = c[: first.end], c[first.end :]
        text = template.format(h=head, t=tail if tail.startswith((",", ";")) else tail, **slots)
    else:
        text = template.format(c=_lower_first(c) if place == "front" else c, **slots)
    return _tidy(text), form


def rewrite_attribute(job: Job, rng: np.random.Generator) -> tuple[str, str] | None:
    """(negated caption, form) stating that the caption's ``target.category`` object lacks ``target.value``."""
    c = _strip(job.caption)
    spots = [m for m in job.mentions if m.category == job.target.category]
    if not spots:
        return None
    form = _pick(rng, list(ATTRIBUTE_FORMS))
    variants = ATTRIBUTE_FORMS[form]
    place = _pick(rng, list(variants))
    template = _pick(rng, variants[place])
    v, cat = job.target.value, job.target.category
    if place == "ins":
        m = spots[0]
        text = c[: m.end] + template.format(v=v) + c[m.end :]
    else:
        text = template.format(c=_lower_first(c) if place == "front" else c, v=v, cat=cat)
    return _tidy(text), form


def _tidy(text: str) -> str:
    text = " ".join(text.split()).replace(" ,", ",").replace(",,", ",").replace(",;", ";").replace(", :", ":")
    return text.rstrip(",; ")


class RulesBackend:
    """Grammar-based proposer and rewriter: deterministic per job, no model, thousands of captions per second."""

    name = "rules"

    def __init__(self, cooccurrence: dict[str, dict[str, int]] | None = None, bind_ratio: float = 0.0):
        self.cooccurrence = cooccurrence or {}
        #: share of new-object proposals that borrow an attribute of a mentioned object (a binding negation)
        self.bind_ratio = bind_ratio

    def propose(self, jobs: Sequence[Job], vocab: Vocabulary, proposer: str) -> None:
        for job in jobs:
            rng = np.random.default_rng([job.seed, 1])
            target = self._propose_one(job, vocab, proposer, rng)
            if target is None:
                job.reject("nothing left to propose")
            job.target = target

    def _propose_one(self, job: Job, vocab: Vocabulary, proposer: str, rng: np.random.Generator) -> Target | None:
        mentioned = {m.category for m in job.mentions}
        fresh = [c for c in vocab.categories if c not in mentioned]
        # with attributes, "a red circle ... no blue circle" is the hard case: same category, other colour
        same_kind = [m for m in job.mentions if vocab.attribute_values] if rng.random() < 0.3 else []
        if same_kind:
            key = _pick(rng, sorted(vocab.attribute_values))
            # prefer a mention that leaves this attribute open ("a ring"): "no red ring" then has a minimal pair
            open_ = [m for m in same_kind if key not in dict(m.attributes)]
            m = _pick(rng, open_ or same_kind)
            values = [v for v in vocab.attribute_values[key] if v != dict(m.attributes).get(key)]
            return Target("object", m.category, ((key, _pick(rng, values)),)) if values else None
        if not fresh:
            return None
        if proposer == "plausible" and self.cooccurrence and mentioned:
            weights = np.array([1.0 + sum(self.cooccurrence.get(m, {}).get(c, 0) for m in mentioned) for c in fresh])
            category = fresh[int(rng.choice(len(fresh), p=weights / weights.sum()))]
        else:
            category = _pick(rng, fresh)
        attrs = tuple(
            (k, _pick(rng, vals))
            for k, vals in sorted(vocab.attribute_values.items())
            if k != "size" and rng.random() < 0.5
        )
        # a binding negation: "a blue circle ... no blue star", the attribute is there, on another object; its own
        # generator, so the corpus without it (bind_ratio 0) draws exactly what it always did
        bind = np.random.default_rng([job.seed, 3])
        borrowed = sorted({a for m in job.mentions for a in m.attributes if a[0] != "size"})
        if borrowed and bind.random() < self.bind_ratio:
            key, value = borrowed[int(bind.integers(len(borrowed)))]
            attrs = tuple(sorted({**dict(attrs), key: value}.items()))
        return Target("object", category, attrs)

    def rewrite(self, jobs: Sequence[Job]) -> None:
        for job in jobs:
            if job.target is None:
                job.reject("no target")
                continue
            rng = np.random.default_rng([job.seed, 2])
            out = rewrite_object(job, rng) if job.target.kind == "object" else rewrite_attribute(job, rng)
            if out is None:
                job.reject("rules: no place to attach the negation")
                continue
            job.negated_caption, job.form = out
