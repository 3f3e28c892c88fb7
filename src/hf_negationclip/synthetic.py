"""The embedded scene world: a procedurally rendered stand-in for COCO, RefCOCOg and VQAv2.

Scenes hold 1 to 4 non-overlapping coloured shapes on a textured, muted
background. :func:`write_world` renders a world and writes it in the real file
formats, so the loaders that read COCO, RefCOCOg and VQAv2 read it unchanged::

    out/images/{split}/000000000001.jpg
    out/annotations/instances_{split}.json     COCO instances (+ color/size attributes)
    out/annotations/captions_{split}.json      COCO captions, 5 per image, never negated
    out/refcocog/refs(umd).p                   RefCOCOg refs (Python pickle, protocol 2)
    out/refcocog/instances.json                COCO instances of every split
    out/vqa/v2_OpenEnded_mscoco_{split}_questions.json
    out/vqa/v2_mscoco_{split}_annotations.json
    out/world.json                             the parameters that made it

The captions reproduce the bias that the NegationCLIP paper blames on web
captions: they describe what *is* in the image and never negate anything.
Negation appears only where it is needed, in referring expressions ("the circle
that is not red") and in "no"-answered VQA questions.

Everything is a function of ``seed``: the same call writes the same bytes.
"""
from __future__ import annotations

import json
import logging
import math
import os
import pickle
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "hexagon", "cross", "ring")
COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange", "pink", "cyan")
SIZES: tuple[str, ...] = ("small", "large")
#: background families; each picks one of its styles per scene from the scene seed
BACKGROUND_FAMILIES: dict[str, tuple[str, ...]] = {"plain": ("flat", "soft"),
                                                   "textured": ("shaded", "striped", "grainy", "checkered")}
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
    return [(x + r * math.cos(phase + 2 * math.pi * k / n), y + r * math.sin(phase + 2 * math.pi * k / n)) for k in range(n)]


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
        return [(x - w, y - a), (x + w, y - a), (x + w, y - w), (x + a, y - w), (x + a, y + w), (x + w, y + w),
                (x + w, y + a), (x - w, y + a), (x - w, y + w), (x - a, y + w), (x - a, y - w), (x - w, y - w)]
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
    return {"segmentation": [[round(min(max(c, 0.0), image_size), 2) for p in poly for c in p]],
            "area": round(_polygon_area(poly), 2)}


# --------------------------------------------------------------------------- rendering


def _background(rng: np.random.Generator, image_size: int, background: str = DEFAULT_BACKGROUND) -> tuple[np.ndarray, str]:
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
        raise ValueError(f"background must be one of {sorted(BACKGROUND_FAMILIES)} or a style {BACKGROUNDS}, got {background!r}")
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


def render_scene(objects: Sequence[Mapping], image_size: int = DEFAULT_IMAGE_SIZE, seed: int = 0,
                 background: str = DEFAULT_BACKGROUND) -> Image.Image:
    """Draw ``objects`` (dicts with shape, color, size, x, y = centre in pixels) on a background.

    The background is a function of ``seed`` and ``background`` (a family,
    ``plain`` by default, or a style name such as the ``background`` an image
    record stores), so two calls that differ in one object differ only where
    that object is.
    """
    _check_size(image_size)
    bg, _ = _background(np.random.default_rng(seed), image_size, background)
    img = Image.fromarray(bg, "RGB")
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
    return _background(np.random.default_rng(seed), image_size, background)[1]


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


def free_spot(rng: np.random.Generator, objects: Sequence[Mapping], size: str, image_size: int,
              tries: int = 200, layout: str = DEFAULT_LAYOUT) -> tuple[float, float] | None:
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


def sample_scene(rng: np.random.Generator, image_size: int = DEFAULT_IMAGE_SIZE, min_objects: int = 1,
                 max_objects: int = 4, layout: str = DEFAULT_LAYOUT) -> list[dict]:
    """1..4 distinct, non-overlapping objects (no two share shape, colour and size)."""
    if not 1 <= min_objects <= max_objects <= 6:
        raise ValueError(f"need 1 <= min_objects <= max_objects <= 6, got {min_objects}, {max_objects}")
    n = int(rng.integers(min_objects, max_objects + 1))
    objects: list[dict] = []
    while len(objects) < n:
        obj = {"shape": SHAPES[int(rng.integers(len(SHAPES)))], "color": COLORS[int(rng.integers(len(COLORS)))],
               "size": SIZES[int(rng.integers(len(SIZES)))]}
        if any(all(o[k] == obj[k] for k in ("shape", "color", "size")) for o in objects):
            continue
        spot = free_spot(rng, objects, obj["size"], image_size, layout=layout)
        if spot is None:
            break  # crowded: keep what fits
        obj["x"], obj["y"] = spot
        objects.append(obj)
    return objects


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
        caps += [f"a single {order[0]['shape']}", f"there is {describe(order[0], detail())} in the picture",
                 f"{describe(order[0], detail())} on a {background} background"]
    else:
        a, b = order[0], order[1]
        level = detail()
        caps += [f"{_NUMBER[n]} shapes: {phrases('shape')}",
                 f"{describe(a, level)} with {join_phrases([describe(o, level) for o in order[1:]])}",
                 f"{describe(a, detail())} {_relation(a, b)} {describe(b, detail())}"]
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
            out.append((f"Is there {article(color)} {color} {shape} in the picture?", "is there a", "yes" if want_yes else "no"))
        else:
            values = COLORS if kind == "color" else SIZES
            value = obj[kind] if want_yes else [v for v in values if v != obj[kind]][int(rng.integers(len(values) - 1))]
            out.append((f"Is the {obj['shape']} {value}?", "is the", "yes" if want_yes else "no"))
    return out


# --------------------------------------------------------------------------- writing a world


def _split_counts(n_images: int, splits: Mapping[str, float]) -> dict[str, int]:
    if not isinstance(n_images, int) or isinstance(n_images, bool) or n_images < 1:
        raise ValueError(f"n_images must be a positive integer, got {n_images!r}")
    if not splits or any((not isinstance(v, (int, float))) or v <= 0 for v in splits.values()):
        raise ValueError(f"splits must map split names to positive fractions, got {dict(splits)!r}")
    total = float(sum(splits.values()))
    names = list(splits)
    counts = {s: int(n_images * splits[s] / total) for s in names}
    counts[names[0]] += n_images - sum(counts.values())
    return counts


def image_file_name(image_id: int) -> str:
    return f"{image_id:012d}.jpg"


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _dump(path: Path, obj) -> None:
    _atomic_write_text(path, json.dumps(obj, separators=(",", ":")))


def _prepare_out_dir(out_dir: Path, params: dict) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise OSError(f"cannot write the world to {out_dir}: {err.strerror or err}") from err
    manifest = out_dir / "world.json"
    if manifest.exists():
        old = json.loads(manifest.read_text())
        if old != params:
            raise FileExistsError(f"{out_dir} already holds a different world ({manifest}); "
                                  "choose an empty folder or delete it first")
    _atomic_write_text(manifest, json.dumps(params, indent=2, sort_keys=True))


def write_world(out_dir: str | os.PathLike, n_images: int, seed: int = 0,
                splits: Mapping[str, float] | None = None, image_size: int = DEFAULT_IMAGE_SIZE,
                show_progress: bool = True, layout: str = DEFAULT_LAYOUT, background: str = DEFAULT_BACKGROUND) -> dict[str, int]:
    """Render ``n_images`` scenes split by ``splits`` fractions and write them in the real formats.

    ``layout`` is ``grid`` (objects centred in cells that line up with the tiny
    preset's ViT patches: the default, learnable in minutes on a CPU) or
    ``random``; ``background`` is ``plain`` (flat or softly shaded) or
    ``textured`` (shaded, striped, grainy, checkered).

    Re-running into the same folder with the same arguments resumes: images
    already on disk are kept (the world is deterministic, so they are the same
    bytes). Returns the number of images per split.
    """
    splits = dict(DEFAULT_SPLITS if splits is None else splits)
    counts = _split_counts(n_images, splits)
    _check_size(image_size)
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if background not in BACKGROUND_FAMILIES:
        raise ValueError(f"background must be one of {tuple(BACKGROUND_FAMILIES)}, got {background!r}")
    out = Path(out_dir)
    params = {"format_version": WORLD_FORMAT_VERSION, "n_images": n_images, "seed": seed, "splits": splits,
              "image_size": image_size, "layout": layout, "background": background}
    _prepare_out_dir(out, params)
    categories = [{"id": k + 1, "name": s, "supercategory": "shape"} for k, s in enumerate(SHAPES)]
    info = {"description": "hf-negationclip scene world", "version": str(WORLD_FORMAT_VERSION), "year": 2026}
    licenses = [{"id": 1, "name": "CC0 1.0", "url": "https://creativecommons.org/publicdomain/zero/1.0/"}]
    refs, ref_images, ref_anns = [], [], []
    ann_id = sent_id = question_id = 0
    bar = tqdm(total=n_images, desc="rendering world", unit="img", disable=not show_progress)
    for split_idx, (split, count) in enumerate(counts.items()):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        images, instances, captions, questions, answers = [], [], [], [], []
        for k in range(count):
            image_id = split_idx * _SPLIT_ID_STRIDE + k + 1
            rng = np.random.default_rng([seed, split_idx, k])
            objects = sample_scene(rng, image_size, layout=layout)
            bg_seed = int(rng.integers(2**31))
            file_name = image_file_name(image_id)
            path = out / "images" / split / file_name
            if not path.exists():
                tmp = path.with_name(path.name + ".tmp")
                render_scene(objects, image_size, bg_seed, background).save(tmp, format="JPEG", quality=92)
                os.replace(tmp, path)
            style = background_style(bg_seed, image_size, background)
            image = {"id": image_id, "file_name": file_name, "height": image_size, "width": image_size,
                     "license": 1, "background": style, "scene_seed": bg_seed}
            images.append(image)
            ref_images.append({**image, "file_name": f"{split}/{file_name}"})
            first_ann = ann_id + 1
            for obj in objects:
                ann_id += 1
                ann = {"id": ann_id, "image_id": image_id, "category_id": SHAPES.index(obj["shape"]) + 1,
                       "bbox": object_bbox(obj, image_size), "iscrowd": 0, **object_segmentation(obj, image_size),
                       "attributes": {"color": obj["color"], "size": obj["size"]}, "center": [obj["x"], obj["y"]]}
                instances.append(ann)
                ref_anns.append(ann)
            for cap in make_captions(objects, style, rng):
                captions.append({"id": len(captions) + 1 + split_idx * _SPLIT_ID_STRIDE * CAPTIONS_PER_IMAGE,
                                 "image_id": image_id, "caption": cap})
            for i in range(len(objects)):
                sents = []
                for expr in referring_expressions(objects, i):
                    sent_id += 1
                    sents.append({"sent_id": sent_id, "raw": expr, "sent": expr.lower(), "tokens": tokenize_expression(expr)})
                refs.append({"ref_id": len(refs), "ann_id": first_ann + i, "category_id": SHAPES.index(objects[i]["shape"]) + 1,
                             "image_id": image_id, "split": split, "sent_ids": [s["sent_id"] for s in sents],
                             "file_name": f"{file_name[:-4]}_{first_ann + i}.jpg", "sentences": sents})
            for question, qtype, answer in make_questions(objects, rng):
                question_id += 1
                questions.append({"image_id": image_id, "question": question, "question_id": question_id})
                answers.append({"question_id": question_id, "image_id": image_id, "question_type": qtype,
                                "answer_type": "yes/no", "multiple_choice_answer": answer,
                                "answers": [{"answer": answer, "answer_confidence": "yes", "answer_id": a + 1} for a in range(10)]})
            bar.update(1)
        (out / "annotations").mkdir(exist_ok=True)
        _dump(out / "annotations" / f"instances_{split}.json",
              {"info": info, "licenses": licenses, "images": images, "annotations": instances, "categories": categories})
        _dump(out / "annotations" / f"captions_{split}.json",
              {"info": info, "licenses": licenses, "images": images, "annotations": captions})
        (out / "vqa").mkdir(exist_ok=True)
        vqa_head = {"info": info, "license": licenses[0], "task_type": "Open-Ended", "data_type": "mscoco",
                    "data_subtype": split}
        _dump(out / "vqa" / f"v2_OpenEnded_mscoco_{split}_questions.json", {**vqa_head, "questions": questions})
        _dump(out / "vqa" / f"v2_mscoco_{split}_annotations.json", {**vqa_head, "annotations": answers})
    bar.close()
    (out / "refcocog").mkdir(exist_ok=True)
    _dump(out / "refcocog" / "instances.json",
          {"info": info, "licenses": licenses, "images": ref_images, "annotations": ref_anns, "categories": categories})
    tmp = out / "refcocog" / "refs(umd).p.tmp"
    with open(tmp, "wb") as fh:
        pickle.dump(refs, fh, protocol=2)  # the real file is a Python-2 pickle of plain containers
    os.replace(tmp, out / "refcocog" / "refs(umd).p")
    logger.info("wrote %s images to %s", counts, out)
    return counts

