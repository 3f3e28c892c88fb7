"""Scenes of the embedded world: vocabulary, geometry, masks, rendering and sampling."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

logger = logging.getLogger(__name__)

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "hexagon", "cross", "ring")
COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange", "pink", "cyan")
SIZES: tuple[str, ...] = ("small", "large")
#: background families; each picks one of its styles per scene from the scene seed
BACKGROUND_FAMILIES: dict[str, tuple[str, ...]] = {
    "plain": ("flat", "soft"),
    "textured": ("shaded", "striped", "grainy", "checkered"),
}
BACKGROUNDS: tuple[str, ...] = tuple(s for styles in BACKGROUND_FAMILIES.values() for s in styles)
#: object layouts: ``grid`` centres every object in its own cell of a GRID x GRID grid (cells line up with the
#: tiny preset's patches, so a small ViT sees each shape at fixed pixels); ``random`` places them anywhere
LAYOUTS: tuple[str, ...] = ("grid", "random")
GRID = 3
DEFAULT_LAYOUT = "grid"
DEFAULT_BACKGROUND = "plain"

COLOR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 165, 50),
    "blue": (35, 70, 225),
    "yellow": (240, 215, 30),
    "purple": (135, 45, 180),
    "orange": (245, 130, 20),
    "pink": (250, 125, 195),
    "cyan": (35, 205, 215),
}
#: object radius as a fraction of the image side
SIZE_RADIUS: dict[str, float] = {"small": 0.1, "large": 0.155}  # a large object fills most of a grid cell

DEFAULT_IMAGE_SIZE = 128
DEFAULT_SPLITS: dict[str, float] = {"train": 0.8, "val": 0.1, "test": 0.1}
CAPTIONS_PER_IMAGE = 5
WORLD_FORMAT_VERSION = 2
_SPLIT_ID_STRIDE = 10_000_000  # image ids of split k start at k * stride + 1


# --------------------------------------------------------------------------- geometry


def _radius(size: str, image_size: int) -> float:
    return SIZE_RADIUS[size] * image_size


def _regular(x: float, y: float, r: float, n: int, phase: float) -> list[tuple[float, float]]:
    return [
        (x + r * math.cos(phase + 2 * math.pi * k / n), y + r * math.sin(phase + 2 * math.pi * k / n)) for k in range(n)
    ]


def shape_polygon(shape: str, x: float, y: float, r: float) -> list[tuple[float, float]]:
    """Outline of a shape centred at (x, y) with bounding radius r (circles as 24-gons)."""
    if shape in ("circle", "ring"):
        return _regular(x, y, r, 24, 0.0)
    if shape == "square":
        h = 0.8 * r
        return [(x - h, y - h), (x + h, y - h), (x + h, y + h), (x - h, y + h)]
    if shape == "diamond":
        return _regular(x, y, r, 4, -math.pi / 2)
    if shape == "triangle":
        return _regular(x, y, r, 3, -math.pi / 2)
    if shape == "hexagon":
        return _regular(x, y, r, 6, 0.0)
    if shape == "star":
        outer = _regular(x, y, r, 5, -math.pi / 2)
        inner = _regular(x, y, 0.42 * r, 5, -math.pi / 2 + math.pi / 5)
        return [p for pair in zip(outer, inner) for p in pair]
    if shape == "cross":
        a, w = r * 0.95, r * 0.34
        return [
            (x - w, y - a),
            (x + w, y - a),
            (x + w, y - w),
            (x + a, y - w),
            (x + a, y + w),
            (x + w, y + w),
            (x + w, y + a),
            (x - w, y + a),
            (x - w, y + w),
            (x - a, y + w),
            (x - a, y - w),
            (x - w, y - w),
        ]
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _polygon_area(poly: Sequence[tuple[float, float]]) -> float:
    xs, ys = np.array(poly).T
    return float(0.5 * abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))))


def object_bbox(obj: Mapping, image_size: int) -> list[float]:
    """COCO ``[x, y, w, h]`` of an object, clipped to the image."""
    poly = shape_polygon(obj["shape"], obj["x"], obj["y"], _radius(obj["size"], image_size))
    xs, ys = zip(*poly)
    x0, y0 = max(0.0, min(xs)), max(0.0, min(ys))
    x1, y1 = min(float(image_size), max(xs)), min(float(image_size), max(ys))
    return [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)]


def object_segmentation(obj: Mapping, image_size: int) -> dict:
    """COCO ``segmentation`` + ``area`` of an object.

    Solid shapes: their outline polygon and its area. A ring has a hole, which
    a COCO polygon cannot express, so it gets an uncompressed RLE of its
    rendered pixels and ``area`` = their count (what ``annToMask`` gives back).
    """
    if obj["shape"] == "ring":
        mask = object_mask(obj, image_size)
        return {"segmentation": mask_to_rle(mask), "area": float(mask.sum())}
    poly = shape_polygon(obj["shape"], obj["x"], obj["y"], _radius(obj["size"], image_size))
    return {
        "segmentation": [[round(min(max(c, 0.0), image_size), 2) for p in poly for c in p]],
        "area": round(_polygon_area(poly), 2),
    }


# --------------------------------------------------------------------------- rendering


def _background(
    rng: np.random.Generator, image_size: int, background: str = DEFAULT_BACKGROUND
) -> tuple[np.ndarray, str]:
    """A muted background (never as saturated as an object colour) of a family or a named style.

    The style index is drawn first whatever ``background`` says, so naming the
    style a family picked for this seed reproduces the same pixels.
    """
    if background in BACKGROUND_FAMILIES:
        styles = BACKGROUND_FAMILIES[background]
        style = styles[int(rng.integers(len(styles)))]
    elif background in BACKGROUNDS:
        rng.integers(2)
        style = background
    else:
        raise ValueError(
            f"background must be one of {sorted(BACKGROUND_FAMILIES)} or a style {BACKGROUNDS}, got {background!r}"
        )
    base = rng.uniform(85, 175) + rng.normal(0, 10, size=3)
    yy, xx = np.mgrid[0:image_size, 0:image_size].astype(np.float32) / image_size
    if style == "flat":
        field = np.zeros((image_size, image_size), np.float32)
    elif style in ("soft", "shaded"):
        angle = rng.uniform(0, 2 * np.pi)
        field = (14 if style == "soft" else 40) * ((np.cos(angle) * xx + np.sin(angle) * yy) - 0.5)
    elif style == "striped":
        angle, period = rng.uniform(0, np.pi), rng.uniform(0.06, 0.2)
        field = 16 * np.sign(np.sin(2 * np.pi * (np.cos(angle) * xx + np.sin(angle) * yy) / period))
    elif style == "grainy":
        field = rng.normal(0, 9, size=(image_size, image_size)).astype(np.float32)
    else:  # checkered
        cells = int(rng.integers(4, 9))
        field = 14 * (((xx * cells).astype(int) + (yy * cells).astype(int)) % 2 * 2 - 1).astype(np.float32)
    img = np.clip(base[None, None, :] + field[:, :, None], 0, 255).astype(np.uint8)
    return img, style


@lru_cache(maxsize=256)
def _seeded_background(seed: int, image_size: int, background: str) -> tuple[np.ndarray, str]:
    """``_background`` of a seed, read-only and kept: a scene's distractors and added pairs share its background."""
    img, style = _background(np.random.default_rng(seed), image_size, background)
    img.flags.writeable = False
    return img, style


def _draw_object(draw: ImageDraw.ImageDraw, obj: Mapping, image_size: int, fill) -> None:
    r = _radius(obj["size"], image_size)
    x, y = obj["x"], obj["y"]
    if obj["shape"] == "circle":
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
    elif obj["shape"] == "ring":
        draw.ellipse((x - r, y - r, x + r, y + r), outline=fill, width=_ring_width(r))
    else:
        draw.polygon(shape_polygon(obj["shape"], x, y, r), fill=fill)


def _ring_width(r: float) -> int:
    return max(2, round(0.45 * r))


def render_scene(
    objects: Sequence[Mapping],
    image_size: int = DEFAULT_IMAGE_SIZE,
    seed: int = 0,
    background: str = DEFAULT_BACKGROUND,
) -> Image.Image:
    """Draw ``objects`` (dicts with shape, color, size, x, y = centre in pixels) on a background.

    The background is a function of ``seed`` and ``background`` (a family,
    ``plain`` by default, or a style name such as the ``background`` an image
    record stores), so two calls that differ in one object differ only where
    that object is.
    """
    _check_size(image_size)
    bg, _ = _seeded_background(int(seed), image_size, background)
    img = Image.fromarray(bg.copy(), "RGB")
    draw = ImageDraw.Draw(img)
    for obj in objects:
        _check_object(obj)
        _draw_object(draw, obj, image_size, COLOR_RGB[obj["color"]])
    return img


def object_mask(obj: Mapping, image_size: int) -> np.ndarray:
    """The pixels ``render_scene`` paints for ``obj`` (a boolean ``image_size x image_size`` array)."""
    canvas = Image.new("L", (image_size, image_size), 0)
    _draw_object(ImageDraw.Draw(canvas), obj, image_size, 1)
    return np.asarray(canvas, dtype=bool)


def mask_to_rle(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE (column-major run lengths, starting with a run of zeros)."""
    flat = np.asarray(mask, dtype=np.uint8).flatten(order="F")
    bounds = np.concatenate([[0], np.flatnonzero(flat[1:] != flat[:-1]) + 1, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0] + counts
    return {"counts": [int(c) for c in counts], "size": [int(mask.shape[0]), int(mask.shape[1])]}


def background_style(seed: int, image_size: int = DEFAULT_IMAGE_SIZE, background: str = DEFAULT_BACKGROUND) -> str:
    """The name of the background style that ``render_scene(..., seed=seed, background=background)`` draws."""
    return _seeded_background(int(seed), image_size, background)[1]


def _check_size(image_size: int) -> None:
    if not isinstance(image_size, int) or image_size < 96:
        raise ValueError(f"image_size must be an integer >= 96, got {image_size!r}")


def _check_object(obj: Mapping) -> None:
    for key, allowed in (("shape", SHAPES), ("color", COLORS), ("size", SIZES)):
        if obj.get(key) not in allowed:
            raise ValueError(f"object {dict(obj)!r}: {key} must be one of {allowed}")


# --------------------------------------------------------------------------- sampling


def grid_cells(image_size: int) -> list[tuple[float, float]]:
    """Centres of the GRID x GRID cells (row by row); with the tiny preset each cell is one ViT patch."""
    step = image_size / GRID
    return [(round((c + 0.5) * step, 2), round((r + 0.5) * step, 2)) for r in range(GRID) for c in range(GRID)]


def free_spot(
    rng: np.random.Generator,
    objects: Sequence[Mapping],
    size: str,
    image_size: int,
    tries: int = 200,
    layout: str = DEFAULT_LAYOUT,
) -> tuple[float, float] | None:
    """A centre where an object of ``size`` fits inside the image without touching ``objects``.

    ``grid``: a random free cell centre; ``random``: any free point.
    """
    if layout == "grid":
        taken = {(round(o["x"], 2), round(o["y"], 2)) for o in objects}
        free = [c for c in grid_cells(image_size) if c not in taken]
        return free[int(rng.integers(len(free)))] if free else None
    if layout != "random":
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    r = _radius(size, image_size)
    lo, hi = r + 2, image_size - r - 2
    for _ in range(tries):
        x, y = float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi))
        if all(math.hypot(x - o["x"], y - o["y"]) > r + _radius(o["size"], image_size) + 3 for o in objects):
            return round(x, 1), round(y, 1)
    return None


def sample_scene(
    rng: np.random.Generator,
    image_size: int = DEFAULT_IMAGE_SIZE,
    min_objects: int = 1,
    max_objects: int = 4,
    layout: str = DEFAULT_LAYOUT,
) -> list[dict]:
    """1..4 distinct, non-overlapping objects (no two share shape, colour and size)."""
    if not 1 <= min_objects <= max_objects <= 6:
        raise ValueError(f"need 1 <= min_objects <= max_objects <= 6, got {min_objects}, {max_objects}")
    n = int(rng.integers(min_objects, max_objects + 1))
    objects: list[dict] = []
    while len(objects) < n:
        obj = {
            "shape": SHAPES[int(rng.integers(len(SHAPES)))],
            "color": COLORS[int(rng.integers(len(COLORS)))],
            "size": SIZES[int(rng.integers(len(SIZES)))],
        }
        if any(all(o[k] == obj[k] for k in ("shape", "color", "size")) for o in objects):
            continue
        spot = free_spot(rng, objects, obj["size"], image_size, layout=layout)
        if spot is None:
            break  # crowded: keep what fits
        obj["x"], obj["y"] = spot
        objects.append(obj)
    return objects
