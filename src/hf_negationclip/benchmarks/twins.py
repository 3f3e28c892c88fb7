"""Scene twins of every benchmark, written in the real benchmark's file layout so the same reader runs on them.

Each twin comes in two variants:

- plain: built the way the real benchmark is built (NegRefCOCOg from the world's
  RefCOCOg refs, VALSE caption/foil pairs, NegBench's 4-option MCQ, CC-Neg
  true/negated captions);
- controlled: the right and wrong answers differ ONLY in the negated thing.
  Images are re-rendered with :func:`scene_world.render_scene` from the scene's
  own objects and background seed, with new objects placed at free spots
  (:func:`scene_world.free_spot`), so object count, affirmed content, layout and
  background are identical; each text is right on one render and wrong on its
  twin, so a model that ignores the negation scores chance, not better.

:func:`write_scene_benchmarks` writes them all plus ``manifest.json``, which the
harness reads (``hf-negationclip evaluate --benchmarks_dir``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .. import world as scene_world
from .negrefcocog import negrefcocog_from_refcocog, write_negrefcocog_json
from .probes import (
    WorldImage,
    _two_new_objects,
    build_caption_flip_probe,
    build_present_negation_probe,
    build_scope_swap_probe,
    load_world_split,
    single_object_images,
)
from .refcocog import load_refcocog

logger = logging.getLogger(__name__)

#: 2: the controlled MCQ builds n // 4 scenes per template (n rows each), not n // 4 scenes in all (n / 3 rows each)
SCENE_FORMAT_VERSION = 2
#: how the harness renders the scene NegRefCOCOg candidates: the whole scene with everything outside the box
#: painted over keeps the object at the scale and grid cell the model saw in training (a crop blows it up ~3x)
SCENE_CROP_MODE = "isolate"


def _phrase(obj: dict) -> str:
    return f"{obj['color']} {obj['shape']}"


def _with_article(obj: dict) -> str:
    return f"{scene_world.article(_phrase(obj))} {_phrase(obj)}"


def _absent_object(rng: np.random.Generator, objects: Sequence[dict]) -> dict:
    return _two_new_objects(rng, objects)[0]


@dataclass
class _Writer:
    """Saves rendered images under one folder with running numbers (PNG: no compression noise between twins)."""

    folder: Path
    count: int = 0

    def save(self, image: Image.Image) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.count += 1
        path = self.folder / f"{self.count:06d}.png"
        image.save(path)
        return path


def _place(rng: np.random.Generator, im: WorldImage, new: Sequence[dict], size: str = "small") -> list[dict] | None:
    """Free spots for ``len(new)`` objects of ``size`` in ``im`` (one after another); None if the scene is full."""
    placed: list[dict] = []
    for obj in new:
        spot = scene_world.free_spot(rng, list(im.objects) + placed, size, im.image_size, layout=im.layout)
        if spot is None:
            return None
        placed.append({**obj, "size": size, "x": spot[0], "y": spot[1]})
    return placed


def _render(im: WorldImage, extra: Sequence[dict]) -> Image.Image:
    return im.render(list(im.objects) + list(extra))


def _twin_renders(rng: np.random.Generator, im: WorldImage):
    """(X, Y, render with X, render with Y): two new objects (new colour AND shape) at the same free spot."""
    x_obj, y_obj = _two_new_objects(rng, im.objects)
    placed = _place(rng, im, [x_obj])
    if placed is None:
        return None
    x_obj = placed[0]
    y_obj = {**y_obj, "size": x_obj["size"], "x": x_obj["x"], "y": x_obj["y"]}
    return x_obj, y_obj, _render(im, [x_obj]), _render(im, [y_obj])


def _cycle(images: Sequence[WorldImage], n: int, rng: np.random.Generator, build: Callable, max_tries: int = 20):
    """Call ``build(im, index)`` on images drawn at random until ``n`` items are built (or tries run out)."""
    pool = [im for im in images if im.objects]
    if not pool:
        raise ValueError("the world split has no images with objects")
    built, tries = 0, 0
    while built < n and tries < max_tries * n:
        tries += 1
        if build(pool[int(rng.integers(len(pool)))], built):
            built += 1
    if built < n:
        logger.warning("built %d of %d items (scenes too full for new objects)", built, n)
    return built


# --------------------------------------------------------------------------- NegRefCOCOg


def scene_negrefcocog_controlled(images: Sequence[WorldImage], out: Path, n: int, seed: int) -> Path:
    """Phrases "the <shape> that is not <value>" against two crops that differ only in that value.

    The image is two renders of one scene side by side: the left holds the
    object, the right the same object with the negated colour, at the same
    spot (colour only: the tiny baseline cannot tell small from large, 0.52 on
    whole images, so a size control would not show that it sees the thing); both candidate boxes are the same box (the larger of the two
    objects' boxes) in each half. Crops therefore share shape, position,
    neighbours and background. Each negated phrase has an affirmative twin
    ("the <shape> that is <value>", right answer the other crop).
    """
    rng = np.random.default_rng([seed, 11])
    writer, records = _Writer(out / "images"), []

    def build(im: WorldImage, index: int) -> bool:
        obj = im.objects[int(rng.integers(len(im.objects)))]
        attr = "color"
        values = [v for v in scene_world.COLORS if v != obj[attr]]
        other = {**obj, attr: values[int(rng.integers(len(values)))]}
        rest = [o for o in im.objects if o is not obj]
        left, right = im.render(rest + [obj]), im.render(rest + [other])
        pair = Image.new("RGB", (2 * im.image_size, im.image_size))
        pair.paste(left, (0, 0))
        pair.paste(right, (im.image_size, 0))
        path = writer.save(pair)
        big = max((obj, other), key=lambda o: scene_world.SIZE_RADIUS[o["size"]])
        box = scene_world.object_bbox(big, im.image_size)
        shifted = [box[0] + im.image_size, box[1], box[2], box[3]]
        rel = os.path.relpath(path, out)
        records.append(
            {
                "image": rel,
                "phrase": f"the {obj['shape']} that is not {other[attr]}",
                "ref_bbox": box,
                "bbox_list": [box, shifted],
            }
        )
        records.append(
            {
                "image": rel,
                "phrase": f"the {obj['shape']} that is {other[attr]}",
                "ref_bbox": shifted,
                "bbox_list": [shifted, box],
            }
        )
        return True

    _cycle(images, n, rng, build)
    (out / "NegRefCOCOg.json").write_text(json.dumps(records))
    return out / "NegRefCOCOg.json"


# --------------------------------------------------------------------------- VALSE existence


def _valse_item(image_file: str, caption: str, foil: str, index: int, split: str) -> dict:
    return {
        "dataset": "scene",
        "dataset_idx": index,
        "image_file": image_file,
        "linguistic_phenomena": "existence",
        "caption": caption,
        "foil": foil,
        "answer": None,
        "classes": None,
        "classes_foil": None,
        "split": split,
        "provenance_of_foils": "hf-negationclip scene world",
        "mturk": {"foil": 0, "caption": 3, "other": 0},
    }


def scene_valse(images: Sequence[WorldImage], path: Path, n: int, seed: int) -> Path:
    """Plain: "There is no X." vs "There is a X." (X absent), or the reverse with X present; half each."""
    rng = np.random.default_rng([seed, 21])
    items = {}
    for index in range(n):
        im = images[index % len(images)]
        if index % 2 == 0:
            x = _absent_object(rng, im.objects)
            caption, foil = f"There is no {_phrase(x)}.", f"There is {_with_article(x)}."
        else:
            x = im.objects[int(rng.integers(len(im.objects)))]
            caption, foil = f"There is {_with_article(x)}.", f"There is no {_phrase(x)}."
        items[f"existence_scene_{index}"] = _valse_item(im.path.name, caption, foil, index, "test")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(items))
    return path


def scene_valse_controlled(images: Sequence[WorldImage], out: Path, n: int, seed: int) -> Path:
    """Controlled: the same caption/foil pair on two renders that differ only in the object at one spot.

    Render A holds a new object X, render B a different new object Y at the
    same spot. On A "There is a X." is right and "There is no X." wrong; on B
    the reverse. Same texts, same count, same scene: only reading "no" and
    seeing X answers both.
    """
    rng = np.random.default_rng([seed, 22])
    writer, items = _Writer(out / "images"), {}

    def build(im: WorldImage, index: int) -> bool:
        twins = _twin_renders(rng, im)
        if twins is None:
            return False
        x, _, with_x, with_y = twins
        yes, no = f"There is {_with_article(x)}.", f"There is no {_phrase(x)}."
        for image, caption, foil in ((with_x, yes, no), (with_y, no, yes)):
            rel = writer.save(image).name
            items[f"existence_scene_{len(items)}"] = _valse_item(rel, caption, foil, len(items), "test")
        return True

    _cycle(images, n // 2, rng, build)
    (out / "existence.json").write_text(json.dumps(items))
    return out / "existence.json"


# --------------------------------------------------------------------------- NegBench MCQ


MCQ_COLUMNS = [
    "image_path",
    "correct_answer",
    "caption_0",
    "caption_1",
    "caption_2",
    "caption_3",
    "correct_answer_template",
]


def _features(p: str) -> str:
    return f"This image features {p}."


def _not_features(p: str) -> str:
    return f"This image does not feature {p}."


def _features_but_not(p: str, q: str) -> str:
    return f"This image features {p}, but not {q}."


def _write_csv(rows: list[dict], path: Path) -> Path:
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=MCQ_COLUMNS).to_csv(path, index=False)
    return path


def scene_negbench_mcq(images: Sequence[WorldImage], path: Path, image_prefix: str, n: int, seed: int) -> Path:
    """Plain NegBench MCQ: answer of each template first, then wrong hybrid, positive and negative options."""
    rng = np.random.default_rng([seed, 31])
    rows = []
    for index in range(n):
        im = images[index % len(images)]
        p = _with_article(im.objects[int(rng.integers(len(im.objects)))])
        a = _with_article(_absent_object(rng, im.objects))
        template = ("positive", "negative", "hybrid")[index % 3]
        right = {"positive": _features(p), "negative": _not_features(a), "hybrid": _features_but_not(p, a)}[template]
        rows.append(
            {
                "image_path": f"{image_prefix}/{im.path.name}",
                "correct_answer": 0,
                "caption_0": right,
                "caption_1": _features_but_not(a, p),
                "caption_2": _features(a),
                "caption_3": _not_features(p),
                "correct_answer_template": template,
            }
        )
    return _write_csv(rows, path)


def scene_negbench_mcq_controlled(images: Sequence[WorldImage], out: Path, n: int, seed: int) -> Path:
    """Controlled MCQ: four new objects N1..N4, and four renders that differ only in which one is missing.

    Negation/hybrid rows: three small objects at three fixed free spots, render
    k omits N_k (rotating the other three through the spots), so every render
    has the same count and layout; the options "... not N_j" are the same four
    texts for all four renders, right iff N_j is the missing one. Affirmation
    rows: render k holds only N_k at one spot; options "features N_j".
    Each template gets ``n // 4`` scenes (``n`` rows; the four rows of a scene
    share it, so a template's accuracy rests on ``n // 4`` scenes).
    """
    rng = np.random.default_rng([seed, 32])
    writer, rows = _Writer(out / "images"), []

    def build(im: WorldImage, index: int) -> bool:
        news = _four_new_objects(rng, im.objects)
        if news is None:
            return False
        template = ("negative", "hybrid", "positive")[index % 3]
        spots = _place(rng, im, news[:3] if template != "positive" else news[:1])
        if spots is None:
            return False
        anchor = _with_article(im.objects[int(rng.integers(len(im.objects)))])
        names = [_with_article(o) for o in news]
        if template == "positive":
            texts = [_features(nm) for nm in names]
        elif template == "negative":
            texts = [_not_features(nm) for nm in names]
        else:
            texts = [_features_but_not(anchor, nm) for nm in names]
        for k in range(4):
            present = [o for j, o in enumerate(news) if j != k] if template != "positive" else [news[k]]
            extra = [{**o, "size": s["size"], "x": s["x"], "y": s["y"]} for o, s in zip(present, spots)]
            path = writer.save(_render(im, extra))
            wrong = [texts[j] for j in range(4) if j != k]
            rows.append(
                {
                    "image_path": f"images/{path.name}",
                    "correct_answer": 0,
                    "caption_0": texts[k],
                    "caption_1": wrong[0],
                    "caption_2": wrong[1],
                    "caption_3": wrong[2],
                    "correct_answer_template": template,
                }
            )
        return True

    _cycle(images, 3 * max(1, n // 4), rng, build)
    return _write_csv(rows, out / "COCO_val_mcq_scene.csv")


def _four_new_objects(rng: np.random.Generator, objects: Sequence[dict]) -> list[dict] | None:
    """Four objects new to the scene, pairwise different in colour and in shape."""
    colors = [c for c in scene_world.COLORS]
    shapes = [s for s in scene_world.SHAPES]
    present = {(o["color"], o["shape"]) for o in objects}
    for _ in range(50):
        cs = rng.choice(len(colors), 4, replace=False)
        ss = rng.choice(len(shapes), 4, replace=False)
        news = [{"color": colors[c], "shape": shapes[s], "size": "small"} for c, s in zip(cs, ss)]
        if not any((o["color"], o["shape"]) in present for o in news):
            return news
    return None


# --------------------------------------------------------------------------- CC-Neg


def _save_ccneg(paths: list[str], pairs: list[tuple[str, str]], path: Path) -> Path:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    annotations = [{"json": {"caption": c}, "sop_data": {"negative-prompt": neg}} for c, neg in pairs]
    torch.save({"image_paths": paths, "annotations": annotations}, path)
    return path


#: CC-Neg's image paths are absolute paths on the authors' machine; the twin keeps that quirk
FOREIGN_ROOT = "/home/ccneg/data/cc3m/images"


def scene_ccneg(images: Sequence[WorldImage], path: Path, n: int, seed: int) -> Path:
    """Plain CC-Neg: "A with B" (both present) vs the negated "A with no B"."""
    rng = np.random.default_rng([seed, 41])
    pool = [im for im in images if len(im.objects) >= 2]
    if not pool:
        raise ValueError("the world split has no image with two objects for the CC-Neg twin")
    paths, pairs = [], []
    for index in range(n):
        im = pool[index % len(pool)]
        a, b = (im.objects[i] for i in rng.choice(len(im.objects), 2, replace=False))
        paths.append(f"{FOREIGN_ROOT}/{im.path.name}")
        pairs.append((f"{_with_article(a)} with {_with_article(b)}", f"{_with_article(a)} with no {_phrase(b)}"))
    return _save_ccneg(paths, pairs, path)


def scene_ccneg_controlled(images: Sequence[WorldImage], out: Path, n: int, seed: int) -> Path:
    """Controlled: "A with no X" vs "A with no Y" on twin renders holding Y or X at the same spot.

    A is an object of the scene (the same affirmed content in both texts); each
    text is right on one render and wrong on the other.
    """
    rng = np.random.default_rng([seed, 42])
    writer, paths, pairs = _Writer(out / "images"), [], []

    def build(im: WorldImage, index: int) -> bool:
        twins = _twin_renders(rng, im)
        if twins is None:
            return False
        x, y, with_x, with_y = twins
        anchor = _with_article(im.objects[int(rng.integers(len(im.objects)))])
        no_x, no_y = f"{anchor} with no {_phrase(x)}", f"{anchor} with no {_phrase(y)}"
        for image, right, wrong in ((with_y, no_x, no_y), (with_x, no_y, no_x)):
            paths.append(f"{FOREIGN_ROOT}/{writer.save(image).name}")
            pairs.append((right, wrong))
        return True

    _cycle(images, n // 2, rng, build)
    return _save_ccneg(paths, pairs, out / "ccneg_preprocessed.pt")


# --------------------------------------------------------------------------- zero-shot folders


def scene_zeroshot(images: Sequence[WorldImage], out: Path) -> dict[str, Path]:
    """ImageFolder trees of the single-object images: ``shape/<shape>/`` and ``color/<color>/``."""
    singles = single_object_images(images)
    if not singles:
        raise ValueError("the world split has no single-object images for the zero-shot twin")
    folders = {}
    for attr, classes in (("shape", scene_world.SHAPES), ("color", scene_world.COLORS)):
        for name in classes:  # every class, also those without an image here: the choice is among all of them
            (out / attr / name).mkdir(parents=True, exist_ok=True)
        for im in singles:
            target = out / attr / im.objects[0][attr] / im.path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(im.path, target)
        folders[attr] = out / attr
    return folders


# --------------------------------------------------------------------------- caption-side twins (NegBench MCQ layout)

#: caption-side twins: (probe builder, NegBench template of the true caption); candidates differ only in the negation
CAPTION_TWINS: dict[str, tuple[Callable, str]] = {
    "scene-caption-flip": (build_caption_flip_probe, "hybrid"),  # "P with no A" over "P with A"
    "scene-scope-swap": (build_scope_swap_probe, "hybrid"),  # "P with no A" over "A with no P"
    "scene-present-negation": (build_present_negation_probe, "positive"),  # "P with Q" over "P with no Q"
}


def scene_caption_twin(
    images: Sequence[WorldImage], path: Path, image_prefix: str, build: Callable, template: str, n: int, seed: int
) -> Path:
    """A caption-side family of :mod:`.probes` as a NegBench MCQ CSV: the true caption first, then its twin.

    Two options per row (``caption_0``, ``caption_1``): the NegBench reader reads any
    number and shuffles them; chance is 1/2.
    """
    rows = []
    for item in build(images, n, seed):
        right, wrong = item.texts[item.answer], item.texts[1 - item.answer]
        rows.append(
            {
                "image_path": f"{image_prefix}/{Path(item.image).name}",
                "correct_answer": 0,
                "caption_0": right,
                "caption_1": wrong,
                "correct_answer_template": template,
            }
        )
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=[c for c in MCQ_COLUMNS if c not in ("caption_2", "caption_3")]).to_csv(
        path, index=False
    )
    return path


def caption_twin_tasks(
    images: Sequence[WorldImage], out: Path, image_dir: Path, split: str, n: int, seed: int
) -> dict[str, dict]:
    """The caption-side twins' manifest entries (``negbench-mcq`` tasks), their CSVs written under ``out``."""
    tasks = {}
    for name, (build, template) in CAPTION_TWINS.items():
        csv = out / "negbench" / "caption" / f"COCO_val_mcq_{name.removeprefix('scene-').replace('-', '_')}.csv"
        # seed + 1: other scenes and phrasings than the world probes of the same seed (a second sample, not a copy)
        csv = scene_caption_twin(images, csv, f"data/scene/images/{split}", build, template, n, seed + 1)
        tasks[name] = {"kind": "negbench-mcq", "csv": str(csv), "image_root": str(image_dir)}
    return tasks


# --------------------------------------------------------------------------- all of them


def write_scene_benchmarks(
    world_dir: str | os.PathLike, out_dir: str | os.PathLike, split: str = "val", n_items: int = 200, seed: int = 0
) -> dict:
    """Write every scene twin (plain and controlled) under ``out_dir`` and return the manifest.

    Re-running with the same arguments reuses what is there (the manifest
    records them); different arguments into the same folder are an error;
    benchmarks of an older ``SCENE_FORMAT_VERSION`` with the same arguments are
    written again (a demo folder from before a format change resumes).
    """
    world, out = Path(world_dir).resolve(), Path(out_dir)
    params = {
        "format_version": SCENE_FORMAT_VERSION,
        "world_dir": str(world),
        "split": split,
        "n_items": n_items,
        "seed": seed,
    }
    manifest_path = out / "manifest.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("params") == params:
            if not set(CAPTION_TWINS) <= set(manifest["tasks"]):  # written before the caption-side twins: add them
                images = [im for im in load_world_split(world, split) if im.objects]
                manifest["tasks"].update(
                    caption_twin_tasks(images, out, world / "images" / split, split, n_items, seed)
                )
                manifest_path.write_text(json.dumps(manifest, indent=2))
            return with_scene_defaults(manifest)
        if {**(manifest.get("params") or {}), "format_version": SCENE_FORMAT_VERSION} != params:  # not format alone
            raise FileExistsError(f"{out} holds scene benchmarks made with other arguments; choose another folder")
        logger.warning("%s holds scene benchmarks of an older format: writing them again", out)
    images = [im for im in load_world_split(world, split) if im.objects]
    image_dir = world / "images" / split
    out.mkdir(parents=True, exist_ok=True)
    samples = negrefcocog_from_refcocog(load_refcocog(world), world / "images", seed, splits=[split], source="scene")
    tasks = {
        "scene-negrefcocog": {
            "kind": "negrefcocog",
            "json": str(
                write_negrefcocog_json(samples[:n_items], out / "negrefcocog" / "NegRefCOCOg.json", world / "images")
            ),
            "image_dir": str(world / "images"),
        },
        "scene-negrefcocog-controlled": {
            "kind": "negrefcocog",
            "json": str(scene_negrefcocog_controlled(images, out / "negrefcocog" / "controlled", n_items // 2, seed)),
            "image_dir": str(out / "negrefcocog" / "controlled"),
        },
        "scene-valse-existence": {
            "kind": "valse-existence",
            "json": str(scene_valse(images, out / "valse" / "existence.json", n_items, seed)),
            "image_dir": str(image_dir),
        },
        "scene-valse-existence-controlled": {
            "kind": "valse-existence",
            "json": str(scene_valse_controlled(images, out / "valse" / "controlled", n_items, seed)),
            "image_dir": str(out / "valse" / "controlled" / "images"),
        },
        "scene-negbench-mcq": {
            "kind": "negbench-mcq",
            "csv": str(
                scene_negbench_mcq(
                    images, out / "negbench" / "COCO_val_mcq_scene.csv", f"data/scene/images/{split}", n_items, seed
                )
            ),
            "image_root": str(image_dir),
        },
        "scene-negbench-mcq-controlled": {
            "kind": "negbench-mcq",
            "csv": str(scene_negbench_mcq_controlled(images, out / "negbench" / "controlled", n_items, seed)),
            "image_root": str(out / "negbench" / "controlled"),
        },
        "scene-ccneg": {
            "kind": "ccneg",
            "pt": str(scene_ccneg(images, out / "ccneg" / "ccneg_preprocessed.pt", n_items, seed)),
            "image_dir": str(image_dir),
        },
        "scene-ccneg-controlled": {
            "kind": "ccneg",
            "pt": str(scene_ccneg_controlled(images, out / "ccneg" / "controlled", n_items, seed)),
            "image_dir": str(out / "ccneg" / "controlled" / "images"),
        },
        "scene-retrieval": {
            "kind": "retrieval",
            "captions": str(world / "annotations" / f"captions_{split}.json"),
            "image_dir": str(image_dir),
        },
    }
    tasks.update(caption_twin_tasks(images, out, image_dir, split, n_items, seed))
    for attr, folder in scene_zeroshot(load_world_split(world, split), out / "zeroshot").items():
        tasks[f"scene-zeroshot-{attr}"] = {"kind": "zeroshot", "folder": str(folder)}
    manifest = with_scene_defaults({"params": params, "tasks": tasks})
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return manifest


def with_scene_defaults(manifest: dict) -> dict:
    """The manifest with the scene twins' evaluation settings filled in (also for manifests written before them)."""
    for spec in manifest["tasks"].values():
        if spec.get("kind") == "negrefcocog":
            spec.setdefault("crop_mode", SCENE_CROP_MODE)
    return manifest
