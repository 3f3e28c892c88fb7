"""Writing a world in the real file formats (COCO, RefCOCOg, VQAv2)."""

from __future__ import annotations

import json
import logging
import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .language import make_captions, make_questions, referring_expressions, tokenize_expression
from .render import (
    _SPLIT_ID_STRIDE,
    BACKGROUND_FAMILIES,
    CAPTIONS_PER_IMAGE,
    DEFAULT_BACKGROUND,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_LAYOUT,
    DEFAULT_SPLITS,
    LAYOUTS,
    SHAPES,
    WORLD_FORMAT_VERSION,
    _check_size,
    background_style,
    object_bbox,
    object_segmentation,
    render_scene,
    sample_scene,
)

logger = logging.getLogger(__name__)


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
            raise FileExistsError(
                f"{out_dir} already holds a different world ({manifest}); choose an empty folder or delete it first"
            )
    _atomic_write_text(manifest, json.dumps(params, indent=2, sort_keys=True))


def write_world(
    out_dir: str | os.PathLike,
    n_images: int,
    seed: int = 0,
    splits: Mapping[str, float] | None = None,
    image_size: int = DEFAULT_IMAGE_SIZE,
    show_progress: bool = True,
    layout: str = DEFAULT_LAYOUT,
    background: str = DEFAULT_BACKGROUND,
) -> dict[str, int]:
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
    params = {
        "format_version": WORLD_FORMAT_VERSION,
        "n_images": n_images,
        "seed": seed,
        "splits": splits,
        "image_size": image_size,
        "layout": layout,
        "background": background,
    }
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
            image = {
                "id": image_id,
                "file_name": file_name,
                "height": image_size,
                "width": image_size,
                "license": 1,
                "background": style,
                "scene_seed": bg_seed,
            }
            images.append(image)
            ref_images.append({**image, "file_name": f"{split}/{file_name}"})
            first_ann = ann_id + 1
            for obj in objects:
                ann_id += 1
                ann = {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": SHAPES.index(obj["shape"]) + 1,
                    "bbox": object_bbox(obj, image_size),
                    "iscrowd": 0,
                    **object_segmentation(obj, image_size),
                    "attributes": {"color": obj["color"], "size": obj["size"]},
                    "center": [obj["x"], obj["y"]],
                }
                instances.append(ann)
                ref_anns.append(ann)
            for cap in make_captions(objects, style, rng):
                captions.append(
                    {
                        "id": len(captions) + 1 + split_idx * _SPLIT_ID_STRIDE * CAPTIONS_PER_IMAGE,
                        "image_id": image_id,
                        "caption": cap,
                    }
                )
            for i in range(len(objects)):
                sents = []
                for expr in referring_expressions(objects, i):
                    sent_id += 1
                    sents.append(
                        {"sent_id": sent_id, "raw": expr, "sent": expr.lower(), "tokens": tokenize_expression(expr)}
                    )
                refs.append(
                    {
                        "ref_id": len(refs),
                        "ann_id": first_ann + i,
                        "category_id": SHAPES.index(objects[i]["shape"]) + 1,
                        "image_id": image_id,
                        "split": split,
                        "sent_ids": [s["sent_id"] for s in sents],
                        "file_name": f"{file_name[:-4]}_{first_ann + i}.jpg",
                        "sentences": sents,
                    }
                )
            for question, qtype, answer in make_questions(objects, rng):
                question_id += 1
                questions.append({"image_id": image_id, "question": question, "question_id": question_id})
                answers.append(
                    {
                        "question_id": question_id,
                        "image_id": image_id,
                        "question_type": qtype,
                        "answer_type": "yes/no",
                        "multiple_choice_answer": answer,
                        "answers": [
                            {"answer": answer, "answer_confidence": "yes", "answer_id": a + 1} for a in range(10)
                        ],
                    }
                )
            bar.update(1)
        (out / "annotations").mkdir(exist_ok=True)
        _dump(
            out / "annotations" / f"instances_{split}.json",
            {"info": info, "licenses": licenses, "images": images, "annotations": instances, "categories": categories},
        )
        _dump(
            out / "annotations" / f"captions_{split}.json",
            {"info": info, "licenses": licenses, "images": images, "annotations": captions},
        )
        (out / "vqa").mkdir(exist_ok=True)
        vqa_head = {
            "info": info,
            "license": licenses[0],
            "task_type": "Open-Ended",
            "data_type": "mscoco",
            "data_subtype": split,
        }
        _dump(out / "vqa" / f"v2_OpenEnded_mscoco_{split}_questions.json", {**vqa_head, "questions": questions})
        _dump(out / "vqa" / f"v2_mscoco_{split}_annotations.json", {**vqa_head, "annotations": answers})
    bar.close()
    (out / "refcocog").mkdir(exist_ok=True)
    _dump(
        out / "refcocog" / "instances.json",
        {"info": info, "licenses": licenses, "images": ref_images, "annotations": ref_anns, "categories": categories},
    )
    tmp = out / "refcocog" / "refs(umd).p.tmp"
    with open(tmp, "wb") as fh:
        pickle.dump(refs, fh, protocol=2)  # the real file is a Python-2 pickle of plain containers
    os.replace(tmp, out / "refcocog" / "refs(umd).p")
    logger.info("wrote %s images to %s", counts, out)
    return counts
