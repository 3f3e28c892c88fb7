"""What a caption mentions and what an image holds, in one vocabulary read from COCO instances.

COCO categories ("dog", "traffic light") and the scene world's shapes are both
*categories*; the world's ``attributes`` ({color, size}) are optional
adjectives. A :class:`Target` is the thing a negated caption denies: an absent
object ("no red triangle") or an attribute of a present one ("the square that
is not red"). Everything here is checked against annotations, never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

#: words that name COCO's "person" in captions; other categories match by name and plural
SYNONYMS: dict[str, tuple[str, ...]] = {
    "person": (
        "person",
        "people",
        "man",
        "men",
        "woman",
        "women",
        "boy",
        "boys",
        "girl",
        "girls",
        "child",
        "children",
        "kid",
        "kids",
        "guy",
        "guys",
        "lady",
        "ladies",
        "player",
        "players",
        "persons",
    ),
    "airplane": ("airplane", "airplanes", "plane", "planes", "jet", "jets"),
    "motorcycle": ("motorcycle", "motorcycles", "motorbike", "motorbikes"),
    "tv": ("tv", "tvs", "television", "televisions"),
    "couch": ("couch", "couches", "sofa", "sofas"),
    "bicycle": ("bicycle", "bicycles", "bike", "bikes"),
}
_IRREGULAR = {
    "person": "people",
    "mouse": "mice",
    "knife": "knives",
    "sheep": "sheep",
    "skis": "skis",
    "scissors": "scissors",
    "man": "men",
    "woman": "women",
    "child": "children",
}


def pluralize(noun: str) -> str:
    """English plural of the last word ("traffic light" -> "traffic lights", "cross" -> "crosses")."""
    head, _, last = noun.rpartition(" ")
    if last in _IRREGULAR:
        plural = _IRREGULAR[last]
    elif re.search(r"(s|x|z|ch|sh)$", last):
        plural = last + "es"
    elif re.search(r"[^aeiou]y$", last):
        plural = last[:-1] + "ies"
    else:
        plural = last + "s"
    return f"{head} {plural}".strip()


def singularize(word: str) -> str:
    """The singular of one word that :func:`pluralize` may have made ("crosses" -> "cross"); others unchanged."""
    for singular, plural in _IRREGULAR.items():
        if word == plural:
            return singular
    if re.search(r"(s|x|z|ch|sh)es$", word):
        return word[:-2]
    if re.search(r"[^aeiou]ies$", word):
        return word[:-3] + "y"
    return word[:-1] if word.endswith("s") and not word.endswith("ss") else word


def article(phrase: str) -> str:
    return "an" if phrase[:1].lower() in "aeiou" else "a"


@dataclass(frozen=True)
class Target:
    """The negated thing. ``kind="object"``: nothing matching ``category`` + ``attributes`` is in the image.
    ``kind="attribute"``: the ``category`` object(s) in the image do not have ``value`` (of attribute ``key``;
    ``key`` is None for free-text predicates such as VQA's "wearing a hat")."""

    kind: str
    category: str
    attributes: tuple[tuple[str, str], ...] = ()
    key: str | None = None
    value: str | None = None

    @property
    def phrase(self) -> str:
        """The object phrase ("large red triangle") or, for attributes, the negated value ("red")."""
        if self.kind == "attribute":
            return str(self.value)
        return " ".join([v for _, v in _ordered(self.attributes)] + [self.category])

    def matches(self, obj: Mapping) -> bool:
        """Whether an annotated object is an instance of this (object-kind) target."""
        return obj["category"] == self.category and all(obj["attributes"].get(k) == v for k, v in self.attributes)

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "category": self.category,
            "attributes": dict(self.attributes),
            "key": self.key,
            "value": self.value,
        }

    @classmethod
    def from_json(cls, data: Mapping) -> Target:
        return cls(
            data["kind"],
            data["category"],
            tuple(sorted(data.get("attributes", {}).items())),
            data.get("key"),
            data.get("value"),
        )


def _ordered(attrs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    # "large red circle", not "red large circle": size words go first in English
    return sorted(attrs, key=lambda kv: (kv[0] != "size", kv[0]))


@dataclass(frozen=True)
class Mention:
    """A noun phrase found in a caption: a category with the attribute words written before it."""

    category: str
    attributes: tuple[tuple[str, str], ...]
    start: int  # character span of the whole phrase (attributes included) in the caption
    end: int

    def matches(self, obj: Mapping) -> bool:
        return obj["category"] == self.category and all(obj["attributes"].get(k) == v for k, v in self.attributes)


@dataclass
class Vocabulary:
    """Categories (with plurals and synonyms) and attribute values, as read from instance annotations."""

    categories: list[str]
    attribute_values: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.term_to_category: dict[str, str] = {}
        for cat in self.categories:
            for term in (cat, pluralize(cat)) + SYNONYMS.get(cat, ()):
                self.term_to_category.setdefault(term.lower(), cat)
        self.value_to_key = {v: k for k, values in self.attribute_values.items() for v in values}
        terms = sorted(self.term_to_category, key=len, reverse=True)
        self._term_re = (
            re.compile(r"(?<![\w-])(" + "|".join(re.escape(t) for t in terms) + r")(?![\w-])", re.IGNORECASE)
            if terms
            else None
        )

    @classmethod
    def from_instances(cls, categories: Sequence[Mapping], annotations: Iterable[Mapping]) -> Vocabulary:
        values: dict[str, set] = {}
        for ann in annotations:
            for key, value in (ann.get("attributes") or {}).items():
                if isinstance(value, str):
                    values.setdefault(key, set()).add(value)
        return cls([c["name"] for c in categories], {k: sorted(v) for k, v in sorted(values.items())})

    def mentions(self, caption: str) -> list[Mention]:
        """Every category named in ``caption``, with the attribute adjectives right before it."""
        if self._term_re is None:
            return []
        found = []
        for match in self._term_re.finditer(caption):
            start, attrs = match.start(), {}
            while True:  # walk back over adjectives: "a large red circle"
                prev = re.search(r"(\w+)\s+$", caption[:start])
                key = self.value_to_key.get(prev.group(1).lower()) if prev else None
                if prev is None or key is None or key in attrs:
                    break
                attrs[key] = prev.group(1).lower()
                start = prev.start()
            found.append(
                Mention(self.term_to_category[match.group(1).lower()], tuple(sorted(attrs.items())), start, match.end())
            )
        return found

    def names(self, text: str, target: Target) -> bool:
        """Whether ``text`` names ``target`` (its category in any form, and every attribute word)."""
        words = set(re.findall(r"[\w'-]+", text.lower()))
        terms = [t for t, c in self.term_to_category.items() if c == target.category] or [target.category.lower()]
        has_category = any(re.search(r"(?<![\w-])" + re.escape(t) + r"(?![\w-])", text, re.IGNORECASE) for t in terms)
        needed = [v for _, v in target.attributes] + ([target.value] if target.kind == "attribute" else [])
        return has_category and all(set(str(v).lower().split()) <= words for v in needed)


def affirmed_hold(mentions: Sequence[Mention], objects: Sequence[Mapping]) -> bool:
    """Every phrase the caption affirms is matched by some object (the caption stays true of ``objects``)."""
    return all(any(m.matches(o) for o in objects) for m in mentions)


def is_absent(target: Target, objects: Sequence[Mapping]) -> bool | None:
    """Checks a target against annotated objects: True = the caption's negation holds, False = it is false,
    None = the annotations cannot tell (unknown category or attribute)."""
    if target.kind == "object":
        return not any(target.matches(o) for o in objects)
    same = [o for o in objects if o["category"] == target.category]
    if not same:
        return False  # "the square that is not red" presupposes a square
    if target.key is None or target.key not in same[0]["attributes"]:
        return None
    return all(o["attributes"].get(target.key) != target.value for o in same)
