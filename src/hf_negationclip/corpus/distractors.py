"""Minimal-pair distractors: images that contain the negated thing and agree with everything else the caption says.

On the scene world they are *rendered*: the negated object takes the place
(and spot) of an object the caption does not mention, or the negated attribute
is given to the caption's object; same object count, same layout, same
background (``scene_world.render_scene`` with the image's ``scene_seed``). When
the caption mentions every object (nothing to replace) and states no count, an
*added pair* is rendered instead: the positive is the image plus a new object Z
at a free spot, the distractor the image plus the negated object X at the same
spot (Z and X differ in both colour and category), so both hold the same number
of objects and the caption is true of the positive only. On
COCO-format photos they are *retrieved*: another image whose instances hold
the negated category and every category the caption mentions; with
``--distractor_clip_model``, when no image does, the images holding the negated
category whose CLIP image embedding is nearest to the caption's image
(:mod:`.embeddings`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .. import world as scene_world
from .backends.base import Job


def keeps_mentions(mentions, before: Sequence[Mapping], after: Sequence[Mapping]) -> bool:
    """No object stops matching a phrase the caption affirms (so counts and relations stay true too)."""
    return all(m.matches(b) for m in mentions for a, b in zip(before, after) if m.matches(a))


def edited_scene(job: Job, image_size: int) -> tuple[list[dict] | None, str]:
    """The job's objects edited so the negated thing is there and every affirmed phrase still holds, or (None, why).

    Object targets take the place of an object the caption does not mention,
    or, when the target shares a category with a mentioned object whose
    attributes the caption leaves open ("a ring" vs "no red ring"), recolour
    that object. Attribute targets set the attribute on the caption's object.
    """
    objects, target = job.objects or [], job.target
    if target.kind == "attribute":
        if target.key is None:
            return None, "free-text attribute"
        edits = [[i for i, o in enumerate(objects) if o["category"] == target.category]]
        change = lambda o: {**o, "attributes": {**o["attributes"], target.key: target.value}}  # noqa: E731
    else:
        rng = np.random.default_rng([job.seed, 3])
        order = [int(i) for i in rng.permutation(len(objects))]
        unmentioned = [[i] for i in order if not any(m.matches(objects[i]) for m in job.mentions)]
        same = [[i] for i in order if objects[i]["category"] == target.category and [i] not in unmentioned]
        edits = unmentioned + same
        change = lambda o: {
            **o,
            "category": target.category,
            "attributes": {**o["attributes"], **dict(target.attributes)},
        }  # noqa: E731
    if not edits or not edits[0]:
        return None, "nothing to edit"
    why = "edit would contradict the caption"
    for idx in edits:
        edited = [change(o) if i in idx else o for i, o in enumerate(objects)]
        if not keeps_mentions(job.mentions, objects, edited):
            continue
        if all(_fits_pixels(edited, i, image_size) for i in idx):
            return edited, ""
        why = "edit would overlap another object"
    return None, why


def to_world_objects(objects: Sequence[Mapping]) -> list[dict]:
    """Scene-world drawing dicts (shape, color, size, x, y) from annotated objects."""
    return [
        {
            "shape": o["category"],
            "color": o["attributes"].get("color"),
            "size": o["attributes"].get("size"),
            "x": o["center"][0],
            "y": o["center"][1],
        }
        for o in objects
    ]


def render_distractor(job: Job, image: Mapping, out_path: Path) -> tuple[list[dict] | None, str]:
    """Render the job's distractor to ``out_path`` (atomically). Returns (its objects, or None and why not)."""
    size = int(image.get("width", scene_world.DEFAULT_IMAGE_SIZE))
    edited, why = edited_scene(job, size)
    if edited is None:
        return None, why
    try:
        picture = scene_world.render_scene(
            to_world_objects(edited),
            size,
            int(image["scene_seed"]),
            image.get("background", scene_world.DEFAULT_BACKGROUND),
        )
    except (ValueError, KeyError, TypeError) as err:
        return None, f"cannot render: {err}"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    picture.save(tmp, format="JPEG", quality=92)
    os.replace(tmp, out_path)
    return edited, ""


_COUNT_WORDS = frozenset({"one", "two", "three", "four", "five", "six", "single", "only", "both", "pair"})


def added_pair(job: Job, image_size: int) -> tuple[list[dict] | None, list[dict] | None, str]:
    """(positive objects, distractor objects, "") for an object target: the scene plus Z / plus X at one free spot."""
    objects, target = job.objects or [], job.target
    if target is None or target.kind != "object":
        return None, None, "not an object negation"
    if _COUNT_WORDS & set(job.caption.lower().replace(",", " ").replace(":", " ").split()):
        return None, None, "caption states a count"
    rng = np.random.default_rng([job.seed, 5])
    attrs = dict(target.attributes)
    color = attrs.get("color") or scene_world.COLORS[int(rng.integers(len(scene_world.COLORS)))]
    size = attrs.get("size") or scene_world.SIZES[int(rng.integers(len(scene_world.SIZES)))]
    present = {(o["category"], o["attributes"].get("color")) for o in objects}
    others = [
        (s, c)
        for s in scene_world.SHAPES
        for c in scene_world.COLORS
        if s != target.category and c != color and (s, c) not in present
    ]
    if not others:
        return None, None, "no new object to add"
    shape_z, color_z = others[int(rng.integers(len(others)))]
    scene_objects = to_world_objects(objects)
    for _ in range(8):
        spot = scene_world.free_spot(rng, scene_objects, size, image_size)
        if spot is None:
            return None, None, "no free spot"
        x = {"category": target.category, "attributes": {"color": color, "size": size}, "center": list(spot)}
        z = {"category": shape_z, "attributes": {"color": color_z, "size": size}, "center": list(spot)}
        if _fits_pixels([*objects, x], len(objects), image_size):
            return [*objects, z], [*objects, x], ""
    return None, None, "added object would overlap another object"


def render_added_pair(
    job: Job, image: Mapping, positive_path: Path, distractor_path: Path
) -> tuple[list[dict] | None, str]:
    """Render an :func:`added_pair` (positive and distractor images). Returns (distractor objects, or None and why)."""
    size = int(image.get("width", scene_world.DEFAULT_IMAGE_SIZE))
    positive, distractor, why = added_pair(job, size)
    if positive is None:
        return None, why
    for objects, path in ((positive, positive_path), (distractor, distractor_path)):
        picture = scene_world.render_scene(
            to_world_objects(objects),
            size,
            int(image["scene_seed"]),
            image.get("background", scene_world.DEFAULT_BACKGROUND),
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        picture.save(tmp, format="JPEG", quality=92)
        os.replace(tmp, path)
    job.positive_objects = positive
    return distractor, ""


def _fits_pixels(objects: Sequence[Mapping], i: int, image_size: int) -> bool:
    me = objects[i]
    r = scene_world.SIZE_RADIUS.get(me["attributes"].get("size"), 0.0) * image_size
    if not (r <= me["center"][0] <= image_size - r and r <= me["center"][1] <= image_size - r):
        return False
    return all(
        math.dist(me["center"], o["center"])
        > r + scene_world.SIZE_RADIUS.get(o["attributes"].get("size"), 0.0) * image_size + 1
        for j, o in enumerate(objects)
        if j != i
    )


class RetrievalIndex:
    """Photos holding the negated category and every mentioned one, looked up in the split's index; optionally,
    when there is none, the holders of the negated category nearest in CLIP image embedding (``neighbours``)."""

    def __init__(self, src, neighbours=None):
        self.src, self.neighbours = src, neighbours

    def find(self, job: Job, k: int = 1) -> tuple[list[int], str, str | None]:
        """(image ids, why none, "annotations" | "clip-neighbour" | None)."""
        if job.target.kind != "object" or job.target.attributes:
            return [], "no attribute annotations to retrieve by", None
        needed = {m.category for m in job.mentions} | {job.target.category}
        ranked = self.src.images_with(needed, exclude=job.image_id)
        if ranked:
            rng = np.random.default_rng([job.seed, 4])
            return (
                [ranked[int(i)] for i in rng.choice(len(ranked), size=min(k, len(ranked)), replace=False)],
                "",
                "annotations",
            )
        if self.neighbours is not None:
            holders = self.src.images_with([job.target.category], exclude=job.image_id)
            if holders:
                return self.neighbours.nearest(job.image_id, holders, k), "", "clip-neighbour"
        return [], "no image holds the negated thing and every mentioned category", None
