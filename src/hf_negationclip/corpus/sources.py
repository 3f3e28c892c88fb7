"""The inputs of a corpus run, one split at a time: COCO captions, optional instances, optional VQAv2.

The scene world and a real COCO download share one layout, so one reader does
both: ``<root>/annotations/captions_<split>.json``, ``instances_<split>.json``,
``<root>/vqa/v2_OpenEnded_mscoco_<split>_questions.json`` +
``v2_mscoco_<split>_annotations.json``, images in ``<root>/images/<split>`` (the
world) or ``<root>/<split>`` (COCO's ``train2014/``).
"""
from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .captions import CaptionRecord, CorpusFormatError, captions_from_coco, read_json
from .scene import Vocabulary

logger = logging.getLogger(__name__)


@dataclass
class SplitSource:
    """Everything a corpus run reads about one split; objects are ``{category, attributes, center}`` dicts."""

    name: str
    image_dir: Path
    captions: list[CaptionRecord]
    images: dict[int, dict]
    objects: dict[int, list[dict]] | None = None
    vocabulary: Vocabulary | None = None
    no_questions: dict[int, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # re-renderable scene-world images (scene_seed + object centres), as opposed to photos
        self.has_scenes = self.objects is not None and all("scene_seed" in img for img in self.images.values()) and \
            all(o.get("center") for objs in self.objects.values() for o in objs)


#: the image fields a run needs (COCO images carry more: licenses, URLs, dates)
_IMAGE_KEYS = ("id", "file_name", "height", "width", "scene_seed", "background")


def _compact_vqa(obj: dict):
    # called bottom-up while parsing: each of the 10 answers per question shrinks to its string at once
    if "answer_id" in obj and "answer" in obj:
        return obj["answer"]
    if "question_id" in obj and "answers" in obj:
        return {"question_id": obj["question_id"], "image_id": obj.get("image_id"),
                "multiple_choice_answer": obj.get("multiple_choice_answer", ""), "answers": obj["answers"]}
    return obj


def discover_splits(root: str | os.PathLike) -> list[str]:
    """Split names that have a ``captions_<split>.json`` under ``<root>/annotations``."""
    names = sorted(p.name[len("captions_"):-len(".json")] for p in (Path(root) / "annotations").glob("captions_*.json"))
    if not names:
        raise FileNotFoundError(f"no annotations/captions_<split>.json under {root}")
    order = {"train": 0, "val": 1, "test": 2}
    return sorted(names, key=lambda s: (order.get(re.sub(r"\d+", "", s), 3), s))


def image_dir_for(root: str | os.PathLike, split: str) -> Path:
    root = Path(root)
    for candidate in (root / "images" / split, root / split):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"no image folder for split {split!r}: looked for {root / 'images' / split} and {root / split}")


def _drop_segmentation(obj: dict) -> dict:
    # instances files are mostly polygons we never read: dropping them while parsing keeps memory small
    obj.pop("segmentation", None)
    return obj


def load_instances(path: Path) -> tuple[dict[int, list[dict]], Vocabulary, dict[int, dict]]:
    """Objects per image id, the vocabulary and the image records of a COCO instances file."""
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    with open(path, encoding="utf-8") as fh:
        try:
            data = json.load(fh, object_hook=_drop_segmentation)
        except json.JSONDecodeError as err:
            raise CorpusFormatError(f"{path} is not valid JSON (line {err.lineno}: {err.msg})") from err
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations", "categories")):
        raise CorpusFormatError(f"{path} is not COCO instances JSON (needs images, annotations, categories)")
    names = {c["id"]: c["name"] for c in data["categories"]}
    objects: dict[int, list[dict]] = {img["id"]: [] for img in data["images"]}
    for ann in data["annotations"]:
        if ann.get("category_id") not in names or ann.get("image_id") not in objects:
            continue
        objects[ann["image_id"]].append({"category": names[ann["category_id"]], "attributes": dict(ann.get("attributes") or {}),
                                         "center": ann.get("center"), "bbox": ann.get("bbox")})
    vocab = Vocabulary.from_instances(data["categories"], data["annotations"])
    return objects, vocab, {img["id"]: img for img in data["images"]}


def load_no_questions(root: Path, split: str) -> dict[int, list[str]]:
    """VQAv2 questions whose majority answer is "no", per image id (empty when the files are absent)."""
    q_path = root / "vqa" / f"v2_OpenEnded_mscoco_{split}_questions.json"
    a_path = root / "vqa" / f"v2_mscoco_{split}_annotations.json"
    if not (q_path.is_file() and a_path.is_file()):
        return {}
    questions = read_json(q_path)
    try:
        with open(a_path, encoding="utf-8") as fh:
            answers = json.load(fh, object_hook=_compact_vqa)
    except json.JSONDecodeError as err:
        raise CorpusFormatError(f"{a_path} is not valid JSON (line {err.lineno}: {err.msg})") from err
    try:
        text = {q["question_id"]: q["question"] for q in questions["questions"]}
        del questions
        out: dict[int, list[str]] = {}
        for ann in answers["annotations"]:
            votes = Counter(str(a).strip().lower() for a in ann.get("answers", []))
            top = ann.get("multiple_choice_answer", "").strip().lower()
            if top == "no" and votes.get("no", 0) >= votes.get("yes", 0) and ann["question_id"] in text:
                out.setdefault(ann["image_id"], []).append(text[ann["question_id"]])
    except (KeyError, TypeError) as err:
        raise CorpusFormatError(f"{q_path} / {a_path} are not VQAv2 question/annotation files: missing {err}") from err
    return out


def load_split(root: str | os.PathLike, split: str, with_vqa: bool = True) -> SplitSource:
    """Read one split of a scene world or COCO root."""
    root = Path(root)
    image_dir = image_dir_for(root, split)
    cap_path = root / "annotations" / f"captions_{split}.json"
    data = read_json(cap_path)
    captions = captions_from_coco(data, cap_path, image_dir)
    images = {img["id"]: {k: img[k] for k in _IMAGE_KEYS if k in img} for img in data["images"]}
    del data
    objects = vocab = None
    inst = root / "annotations" / f"instances_{split}.json"
    if inst.is_file():
        objects, vocab, inst_images = load_instances(inst)
        for image_id, img in inst_images.items():  # the world keeps scene_seed/background on instance images too
            images.setdefault(image_id, {}).update({k: img[k] for k in _IMAGE_KEYS if k in img and k not in images.get(image_id, {})})
    else:
        logger.warning("%s missing: no annotation verifier, no distractors for split %s", inst, split)
    no_questions = load_no_questions(root, split) if with_vqa else {}
    return SplitSource(split, image_dir, captions, images, objects, vocab, no_questions)
