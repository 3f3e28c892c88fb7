"""The world's language: captions (never negated), referring expressions and VQA questions."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np

from .render import COLORS, SHAPES, SIZES

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- language


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def describe(obj: Mapping, detail: str = "full", definite: bool = False) -> str:
    """A noun phrase for one object; ``detail`` in full | color | size | shape."""
    words = {"full": [obj["size"], obj["color"]], "color": [obj["color"]], "size": [obj["size"]], "shape": []}[detail]
    phrase = " ".join(words + [obj["shape"]])
    return ("the " if definite else article(phrase) + " ") + phrase


def join_phrases(phrases: Sequence[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


_NUMBER = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}


def _relation(a: Mapping, b: Mapping) -> str:
    dx, dy = b["x"] - a["x"], b["y"] - a["y"]
    if abs(dx) >= abs(dy):
        return "to the left of" if dx > 0 else "to the right of"
    return "above" if dy > 0 else "below"


#: how often a caption describes objects at each level of detail; shape-only wording is the most common
#: so that matching a caption needs shape, not colour alone (colour is learnt at once, shape is not)
CAPTION_DETAIL_WEIGHTS: dict[str, float] = {"shape": 0.45, "full": 0.2, "color": 0.25, "size": 0.1}


def make_captions(objects: Sequence[Mapping], background: str, rng: np.random.Generator) -> list[str]:
    """Five affirmative captions with varied wording and detail. Never a negation."""
    order = [objects[i] for i in rng.permutation(len(objects))]
    levels, weights = list(CAPTION_DETAIL_WEIGHTS), list(CAPTION_DETAIL_WEIGHTS.values())

    def detail() -> str:
        return levels[int(rng.choice(len(levels), p=weights))]

    def phrases(level: str) -> str:
        return join_phrases([describe(o, level) for o in order])

    n = len(order)
    caps = [f"a photo of {phrases('full')}.", f"{phrases(detail())} on a {background} background"]
    if n == 1:
        caps += [
            f"a single {order[0]['shape']}",
            f"there is {describe(order[0], detail())} in the picture",
            f"{describe(order[0], detail())} on a {background} background",
        ]
    else:
        a, b = order[0], order[1]
        level = detail()
        caps += [
            f"{_NUMBER[n]} shapes: {phrases('shape')}",
            f"{describe(a, level)} with {join_phrases([describe(o, level) for o in order[1:]])}",
            f"{describe(a, detail())} {_relation(a, b)} {describe(b, detail())}",
        ]
    return caps


# --------------------------------------------------------------------------- referring expressions


def _nearest(objects: Sequence[Mapping], i: int) -> int:
    others = [j for j in range(len(objects)) if j != i]
    return min(others, key=lambda j: math.hypot(objects[j]["x"] - objects[i]["x"], objects[j]["y"] - objects[i]["y"]))


def referring_expressions(objects: Sequence[Mapping], i: int) -> list[str]:
    """Expressions that single out ``objects[i]``; negated ones where the scene calls for them."""
    me = objects[i]
    same = [o for j, o in enumerate(objects) if j != i and o["shape"] == me["shape"]]
    exprs: list[str] = []
    if not same:
        exprs += [describe(me, "shape", definite=True), describe(me, "color", definite=True)]
        return exprs
    if all(o["color"] != me["color"] for o in same):
        exprs.append(describe(me, "color", definite=True))
        if len(same) == 1:
            exprs.append(f"the {me['shape']} that is not {same[0]['color']}")
    if all(o["size"] != me["size"] for o in same):
        exprs.append(describe(me, "size", definite=True))
        if len(same) == 1:
            exprs.append(f"the {me['shape']} that is not {same[0]['size']}")
    if len(same) == 1 and len(objects) >= 3:
        twin = objects.index(same[0])
        mine, theirs = objects[_nearest(objects, i)], objects[_nearest(objects, twin)]
        if theirs["shape"] != mine["shape"] and theirs is not me:
            exprs.append(f"the {me['shape']} without {article(theirs['shape'])} {theirs['shape']} next to it")
    if not exprs:
        exprs.append(describe(me, "full", definite=True))
    return exprs


def tokenize_expression(sent: str) -> list[str]:
    return sent.lower().replace(",", " ").split()


# --------------------------------------------------------------------------- VQA


def make_questions(objects: Sequence[Mapping], rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """Yes/no (question, question_type, answer) about presence, colour and size; about half "no"."""
    out = []
    shapes = [o["shape"] for o in objects]
    present = {(o["color"], o["shape"]) for o in objects}
    for _ in range(3):
        kind = ("presence", "color", "size")[int(rng.integers(3))]
        want_yes = bool(rng.integers(2))
        obj = objects[int(rng.integers(len(objects)))]
        if kind != "presence" and shapes.count(obj["shape"]) > 1:
            kind = "presence"  # "is the circle red?" is ambiguous with two circles
        if kind == "presence":
            if want_yes:
                color, shape = obj["color"], obj["shape"]
            else:
                absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present]
                color, shape = absent[int(rng.integers(len(absent)))]
            out.append(
                (
                    f"Is there {article(color)} {color} {shape} in the picture?",
                    "is there a",
                    "yes" if want_yes else "no",
                )
            )
        else:
            values = COLORS if kind == "color" else SIZES
            value = obj[kind] if want_yes else [v for v in values if v != obj[kind]][int(rng.integers(len(values) - 1))]
            out.append((f"Is the {obj['shape']} {value}?", "is the", "yes" if want_yes else "no"))
    return out
