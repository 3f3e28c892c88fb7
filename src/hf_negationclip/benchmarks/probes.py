"""Controlled probes on the scene world (the probes the trainer's evaluator uses).

Every item built here follows the package convention: candidates are shuffled
with a fixed seed (the right answer is never always first) and the right and
wrong candidates differ only in the thing under test.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .. import world as scene_world
from ..io import read_json

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- scene-world probes


@dataclass(frozen=True)
class WorldImage:
    """One image of a written world, with its objects read back from the COCO annotations."""

    image_id: int
    path: Path
    objects: list[dict]
    scene_seed: int
    image_size: int
    background: str = scene_world.DEFAULT_BACKGROUND  # the style name the image record stores
    layout: str = scene_world.DEFAULT_LAYOUT

    def render(self, objects: Sequence[dict]) -> Image.Image:
        """This scene's background with ``objects`` on it: a minimal edit of the image."""
        return scene_world.render_scene(objects, self.image_size, self.scene_seed, self.background)

    def free_spot(self, rng: np.random.Generator, size: str) -> tuple[float, float] | None:
        return scene_world.free_spot(rng, self.objects, size, self.image_size, layout=self.layout)


def load_world_split(world_dir: str | os.PathLike, split: str) -> list[WorldImage]:
    """Images of a world split with their objects (shape, color, size, x, y) from ``instances_{split}.json``."""
    root = Path(world_dir)
    inst = read_json(root / "annotations" / f"instances_{split}.json")
    names = {c["id"]: c["name"] for c in inst["categories"]}
    objects: dict[int, list[dict]] = {}
    for ann in inst["annotations"]:
        x, y = ann["center"]
        objects.setdefault(ann["image_id"], []).append(
            {
                "shape": names[ann["category_id"]],
                "color": ann["attributes"]["color"],
                "size": ann["attributes"]["size"],
                "x": x,
                "y": y,
            }
        )
    manifest = root / "world.json"
    layout = read_json(manifest).get("layout", "random") if manifest.is_file() else scene_world.DEFAULT_LAYOUT
    return [
        WorldImage(
            img["id"],
            root / "images" / split / img["file_name"],
            objects.get(img["id"], []),
            img["scene_seed"],
            img["width"],
            img.get("background", scene_world.DEFAULT_BACKGROUND),
            layout,
        )
        for img in inst["images"]
    ]


@dataclass(frozen=True)
class ChoiceItem:
    """One text scored against candidate images; ``answer`` indexes the right one."""

    text: str
    images: tuple[Image.Image, ...]
    answer: int
    kind: str


def _swap_candidates(
    rng: np.random.Generator, right: Image.Image, wrong: Image.Image
) -> tuple[tuple[Image.Image, ...], int]:
    if rng.integers(2):
        return (wrong, right), 1
    return (right, wrong), 0


def build_negation_probe(images: Sequence[WorldImage], n_items: int = 200, seed: int = 0) -> list[ChoiceItem]:
    """Controlled negation pairs: "a <c1> <s1> with no <c2> <s2>" against two renders of one scene.

    Both images hold the scene's objects; at one free spot the first has
    ``<c2> <s2>`` and the second a different object. Nothing else differs, so
    only reading the negation picks the second. Each negated item has an
    affirmative twin ("... with a <c2> <s2>", right answer the first image)
    showing that the model does see the object. Chance is 0.5 for both.
    """
    rng = np.random.default_rng(seed)
    items: list[ChoiceItem] = []
    pool = [im for im in images if im.objects]
    if not pool:
        raise ValueError("no images with objects to build a negation probe from")
    attempts = 0
    while len(items) < 2 * n_items and attempts < 50 * n_items:
        attempts += 1
        im = pool[int(rng.integers(len(pool)))]
        anchor = im.objects[int(rng.integers(len(im.objects)))]
        target, other = _two_new_objects(rng, im.objects)
        spot = im.free_spot(rng, target["size"])
        if spot is None:
            continue
        target.update(x=spot[0], y=spot[1])
        other.update(x=spot[0], y=spot[1], size=target["size"])
        with_target, with_other = im.render(im.objects + [target]), im.render(im.objects + [other])
        head = f"{scene_world.describe(anchor, 'color')}"
        obj = f"{target['color']} {target['shape']}"
        cands, ans = _swap_candidates(rng, with_other, with_target)
        items.append(ChoiceItem(f"{head} with no {obj}", cands, ans, "negated"))
        cands, ans = _swap_candidates(rng, with_target, with_other)
        items.append(ChoiceItem(f"{head} with {scene_world.article(obj)} {obj}", cands, ans, "affirmative"))
    return items


def _two_new_objects(rng: np.random.Generator, objects: Sequence[dict]) -> tuple[dict, dict]:
    """Two objects of new (colour, shape) to the scene, differing in both colour and shape."""
    present = {(o["color"], o["shape"]) for o in objects}

    def draw(avoid_color=None, avoid_shape=None) -> dict:
        while True:
            c = scene_world.COLORS[int(rng.integers(len(scene_world.COLORS)))]
            s = scene_world.SHAPES[int(rng.integers(len(scene_world.SHAPES)))]
            if (c, s) not in present and c != avoid_color and s != avoid_shape:
                return {"shape": s, "color": c, "size": scene_world.SIZES[int(rng.integers(2))]}

    first = draw()
    return first, draw(first["color"], first["shape"])


def single_object_images(images: Sequence[WorldImage]) -> list[WorldImage]:
    """Images holding exactly one object: their shape and colour are unambiguous zero-shot labels."""
    return [im for im in images if len(im.objects) == 1]


def build_shape_probe(images: Sequence[WorldImage], n_items: int = 200, seed: int = 0) -> list[ChoiceItem]:
    """Shape-controlled affirmative pairs: two renders of one scene that differ only in one object's SHAPE.

    Same colour, size and spot; the text names the object ("a red star"). The
    other objects keep their shapes, so a model that sees colour but not shape,
    or shapes without binding them to colours, is at chance (0.5).
    """
    rng = np.random.default_rng(seed)
    pool = [im for im in images if im.objects]
    if not pool:
        raise ValueError("no images with objects to build a shape probe from")
    items: list[ChoiceItem] = []
    for _ in range(50 * n_items):
        if len(items) == n_items:
            break
        im = pool[int(rng.integers(len(pool)))]
        k = int(rng.integers(len(im.objects)))
        obj = im.objects[k]
        present = {(o["color"], o["shape"]) for o in im.objects}
        shapes = [s for s in scene_world.SHAPES if (obj["color"], s) not in present]
        if not shapes:
            continue
        swapped = dict(obj, shape=shapes[int(rng.integers(len(shapes)))])
        original, edited = im.render(im.objects), im.render(im.objects[:k] + [swapped] + im.objects[k + 1 :])
        named, right, wrong = (obj, original, edited) if rng.integers(2) else (swapped, edited, original)
        cands, ans = _swap_candidates(rng, right, wrong)
        items.append(ChoiceItem(scene_world.describe(named, "color"), cands, ans, "shape"))
    return items


# --------------------------------------------------------------------------- caption-side probes

#: what one candidate caption asserts: ((attributes of a thing, whether the caption says it is there), ...)
Claim = tuple[tuple[tuple[str, str], ...], bool]


@dataclass(frozen=True)
class CaptionChoiceItem:
    """One image scored against candidate captions; ``answer`` indexes the true one.

    ``claims[k]`` is what caption ``k`` asserts about the image (see :data:`Claim`) and
    ``objects`` the image's objects, so a scorer that reads the scene can check every
    candidate; ``form`` names the construction the captions are phrased in.
    """

    image: Image.Image | Path
    texts: tuple[str, ...]
    answer: int
    kind: str
    form: str
    claims: tuple[tuple[Claim, ...], ...]
    objects: tuple[dict, ...]


#: (negated, affirmative) caption templates. {p}: the mentioned objects that are there ("a red circle" or
#: "a red circle and a star"), {x}: the named object, bare ("blue star"), {ax}: with its article.
#: The two sides have the same number of words and differ only in the cue (and at most one word beside it).
CAPTION_FORMS: dict[str, tuple[str, str]] = {
    "with-no": ("{p} with no {x}", "{p} with {ax}"),
    "without": ("{p} without {ax}", "{p} with {ax}"),
    "and-no": ("{p} and no {x}", "{p} and {ax}"),
    "but-no": ("{p}, but no {x}", "{p}, and {ax}"),
    "there-is-no": ("there is no {x} in this picture of {p}", "there is {ax} in this picture of {p}"),
    "not-but": ("not {ax} but {p}", "both {ax} and {p}"),
    "isnt": ("there isn't {ax} beside {p}", "there is {ax} beside {p}"),
    "absent": ("{p}; {ax} is absent", "{p}; {ax} is present"),
    "missing": ("{p}, with {ax} missing", "{p}, with {ax} nearby"),
    "doesnt-contain": ("a picture of {p} that doesn't contain {ax}", "a picture of {p} that does contain {ax}"),
}

#: the caption-side families :func:`build_caption_probes` builds (chance 1/2 each)
CAPTION_FAMILIES: tuple[str, ...] = ("caption_flip", "scope_swap", "present_negation")


def _phrase(obj: dict, level: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """A bare noun phrase for ``obj`` ("small red star") and the attributes it names."""
    keys = {"full": ("size", "color"), "color": ("color",), "shape": ()}[level]
    return " ".join([obj[k] for k in keys] + [obj["shape"]]), tuple((k, obj[k]) for k in keys + ("shape",))


def _with_article(bare: str) -> str:
    return f"{scene_world.article(bare)} {bare}"


def _caption(form: str, negated: bool, head: Sequence[str], named: str) -> str:
    template = CAPTION_FORMS[form][0 if negated else 1]
    p = scene_world.join_phrases([_with_article(h) for h in head])
    return template.format(p=p, x=named, ax=_with_article(named))


def _new_object(rng: np.random.Generator, objects: Sequence[dict], level: str) -> dict:
    """An object that is not in the scene at ``level``: a new (colour, shape), or a new shape for "shape"."""
    if level == "shape":
        shapes = {o["shape"] for o in objects}
        free = [(c, s) for c in scene_world.COLORS for s in scene_world.SHAPES if s not in shapes]
    else:
        present = {(o["color"], o["shape"]) for o in objects}
        free = [(c, s) for c in scene_world.COLORS for s in scene_world.SHAPES if (c, s) not in present]
    c, s = free[int(rng.integers(len(free)))]
    return {"shape": s, "color": c, "size": scene_world.SIZES[int(rng.integers(len(scene_world.SIZES)))]}


def _head_level(rng: np.random.Generator, obj: dict, objects: Sequence[dict], avoid_shapes: set[str]) -> str:
    """How to name a mentioned object: shape alone only when no other object of the scene or the caption shares it."""
    unique = sum(o["shape"] == obj["shape"] for o in objects) == 1 and obj["shape"] not in avoid_shapes
    levels = ("color", "full", "shape") if unique else ("color", "full")
    return levels[int(rng.choice(len(levels), p=(0.5, 0.2, 0.3) if unique else (0.7, 0.3)))]


def _named_level(rng: np.random.Generator) -> str:
    """How to name an absent object: the same mix of levels as a mentioned one, so phrase length tells nothing."""
    return ("color", "full", "shape")[int(rng.choice(3, p=(0.5, 0.2, 0.3)))]


def _pick_objects(rng: np.random.Generator, objects: Sequence[dict], k: int) -> list[dict]:
    return [objects[int(i)] for i in rng.choice(len(objects), size=k, replace=False)]


def _caption_item(
    rng: np.random.Generator,
    im: WorldImage,
    kind: str,
    form: str,
    right: tuple[str, tuple[Claim, ...]],
    wrong: tuple[str, tuple[Claim, ...]],
) -> CaptionChoiceItem:
    order = (right, wrong) if not rng.integers(2) else (wrong, right)
    return CaptionChoiceItem(
        im.path,
        tuple(t for t, _ in order),
        order.index(right),
        kind,
        form,
        tuple(c for _, c in order),
        tuple(im.objects),
    )


def _head(rng: np.random.Generator, objects: Sequence[dict], pool: Sequence[dict], max_k: int, named_shape: str):
    """1 (or, with 3 objects in the caption, 2) mentioned objects that are there: (phrases, claims)."""
    k = 2 if max_k >= 2 and len(pool) >= 2 and rng.random() < 0.35 else 1
    head = _pick_objects(rng, pool, k)
    phrases, claims = [], []
    for obj in head:
        bare, attrs = _phrase(obj, _head_level(rng, obj, objects, {named_shape}))
        phrases.append(bare)
        claims.append((attrs, True))
    return phrases, claims


def _draw_absent(rng: np.random.Generator, pool: Sequence[WorldImage]) -> tuple:
    """One image of ``pool``, a template, a head naming its objects and a new object it lacks:
    ``(image, form, head, head_claims, bare phrase of the absent object, its attributes)``."""
    im = pool[int(rng.integers(len(pool)))]
    form = list(CAPTION_FORMS)[int(rng.integers(len(CAPTION_FORMS)))]
    level = _named_level(rng)
    named = _new_object(rng, im.objects, level)
    head, head_claims = _head(rng, im.objects, im.objects, 2, named["shape"])
    bare, attrs = _phrase(named, level)
    return im, form, head, head_claims, bare, attrs


def build_caption_flip_probe(
    images: Sequence[WorldImage], n_items: int = 200, seed: int = 0
) -> list[CaptionChoiceItem]:
    """Caption choice, negation true: image {P, ...} without A; "P with no A" (true) over "P with A" (false).

    The two captions are one template's negated and affirmative sides (:data:`CAPTION_FORMS`):
    same words but the cue. Its mirror is :func:`build_present_negation_probe` (same
    templates, the named object there), so a text-only preference for the negated side
    wins one family and loses the other. Chance 1/2; a tie counts as wrong.
    """
    rng = np.random.default_rng([seed, 17, 1])
    pool = [im for im in images if im.objects]
    if not pool:
        raise ValueError("no images with objects to build a caption-flip probe from")
    items = []
    for _ in range(n_items):
        im, form, head, head_claims, bare, attrs = _draw_absent(rng, pool)
        right = (_caption(form, True, head, bare), (*head_claims, (attrs, False)))
        wrong = (_caption(form, False, head, bare), (*head_claims, (attrs, True)))
        items.append(_caption_item(rng, im, "caption_flip", form, right, wrong))
    return items


def build_present_negation_probe(
    images: Sequence[WorldImage], n_items: int = 200, seed: int = 0
) -> list[CaptionChoiceItem]:
    """Caption choice, negation false: image {P, Q, ...}; "P with Q" (true) over "P with no Q" (false: Q is there).

    The mirror of :func:`build_caption_flip_probe` (the same templates), on images with
    at least two objects; with three or more, the caption may mention three. Chance 1/2.
    """
    rng = np.random.default_rng([seed, 17, 2])
    pool = [im for im in images if len(im.objects) >= 2]
    if not pool:
        raise ValueError("no images with two objects to build a present-negation probe from")
    items = []
    for _ in range(n_items):
        im = pool[int(rng.integers(len(pool)))]
        form = list(CAPTION_FORMS)[int(rng.integers(len(CAPTION_FORMS)))]
        k = int(rng.integers(len(im.objects)))
        named, others = im.objects[k], im.objects[:k] + im.objects[k + 1 :]
        head, head_claims = _head(rng, im.objects, others, 2, named["shape"])
        level = _head_level(rng, named, im.objects, {o["shape"] for o in others})
        bare, attrs = _phrase(named, level)
        right = (_caption(form, False, head, bare), (*head_claims, (attrs, True)))
        wrong = (_caption(form, True, head, bare), (*head_claims, (attrs, False)))
        items.append(_caption_item(rng, im, "present_negation", form, right, wrong))
    return items


def build_scope_swap_probe(images: Sequence[WorldImage], n_items: int = 200, seed: int = 0) -> list[CaptionChoiceItem]:
    """Caption choice, where the negation sits: image {P, ...} without A; "P with no A" over "A with no P".

    Both captions are the negated side of one template with the same words: the false
    one moves the negation onto the mentioned object that is there (with two mentioned,
    "P and Q with no A" over "A and Q with no P"). Chance 1/2.
    """
    rng = np.random.default_rng([seed, 17, 3])
    pool = [im for im in images if im.objects]
    if not pool:
        raise ValueError("no images with objects to build a scope-swap probe from")
    items = []
    for _ in range(n_items):
        im, form, head, head_claims, bare, attrs = _draw_absent(rng, pool)
        j = int(rng.integers(len(head)))  # the mentioned object the negation moves onto
        swapped = head[:j] + [bare] + head[j + 1 :]
        swapped_claims = [*head_claims[:j], (attrs, True), *head_claims[j + 1 :], (head_claims[j][0], False)]
        right = (_caption(form, True, head, bare), (*head_claims, (attrs, False)))
        wrong = (_caption(form, True, swapped, head[j]), tuple(swapped_claims))
        items.append(_caption_item(rng, im, "scope_swap", form, right, wrong))
    return items


def build_caption_probes(
    images: Sequence[WorldImage], n_items: int = 200, seed: int = 0
) -> dict[str, list[CaptionChoiceItem]]:
    """Every caption-side family of :data:`CAPTION_FAMILIES`, ``n_items`` each (one image, two captions)."""
    return {
        "caption_flip": build_caption_flip_probe(images, n_items, seed),
        "scope_swap": build_scope_swap_probe(images, n_items, seed),
        "present_negation": build_present_negation_probe(images, n_items, seed),
    }


# --------------------------------------------------------------------------- the app's Compare example


def scene_negation_pair(seed: int, image_size: int = scene_world.DEFAULT_IMAGE_SIZE) -> tuple[ChoiceItem, ChoiceItem]:
    """(negated, affirmative) probe items for one random scene: two renders that differ only at one spot.

    Built by :func:`build_negation_probe` on a scene drawn with
    :func:`world.sample_scene`, so the app shows exactly the benchmark's pairs.
    """
    return _scene_negation_pair(seed, image_size)[:2]


def _scene_negation_pair(seed: int, image_size: int) -> tuple[ChoiceItem, ChoiceItem, WorldImage]:
    rng = np.random.default_rng(seed)
    for attempt in range(20):
        objects = scene_world.sample_scene(rng, image_size, max_objects=3)
        scene = WorldImage(seed, Path(), objects, scene_seed=seed * 1000 + attempt, image_size=image_size)
        items = build_negation_probe([scene], n_items=1, seed=seed)
        if len(items) == 2:
            return items[0], items[1], scene
    raise RuntimeError(f"no negation pair fits in the scenes of seed {seed}")  # pragma: no cover - crowded scenes only


def compare_example(seed: int, image_size: int = scene_world.DEFAULT_IMAGE_SIZE) -> tuple[Image.Image, list[str]]:
    """The app's Compare example: a scene and two captions, the true negated one first, then its affirmative twin."""
    negated, affirmative = scene_negation_pair(seed, image_size)
    return negated.images[negated.answer], [negated.text, affirmative.text]


def build_app_compare_probe(seeds: Sequence[int] = range(200), seed: int = 0) -> list[CaptionChoiceItem]:
    """The app's Compare example (:func:`compare_example`) over ``seeds``: the negated caption over its twin.

    Candidate order shuffled with ``seed``; ``objects`` are the scene's objects before the
    edit at the free spot (which holds an object differing from the named one in colour and
    shape), so the claims can be checked on them. Chance 1/2.
    """
    rng = np.random.default_rng([seed, 17, 4])
    items = []
    for s in seeds:
        negated, affirmative, scene = _scene_negation_pair(int(s), scene_world.DEFAULT_IMAGE_SIZE)
        head, obj = negated.text.split(" with no ")
        color, shape = head.split()[1:]
        named_color, named_shape = obj.split()
        head_claim = ((("color", color), ("shape", shape)), True)
        named_attrs = (("color", named_color), ("shape", named_shape))
        right = (negated.text, (head_claim, (named_attrs, False)))
        wrong = (affirmative.text, (head_claim, (named_attrs, True)))
        order = (right, wrong) if not rng.integers(2) else (wrong, right)
        items.append(
            CaptionChoiceItem(
                negated.images[negated.answer],
                tuple(t for t, _ in order),
                order.index(right),
                "app_compare",
                "with-no",
                tuple(c for _, c in order),
                tuple(scene.objects),
            )
        )
    return items
