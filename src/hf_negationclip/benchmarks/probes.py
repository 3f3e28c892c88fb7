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
