"""Referring expressions in RefCOCOg format (the scene world's or the real RefCOCOg + COCO), their masks, visual prompts."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...benchmarks import load_refcocog
from ...corpus import has_negation
from ...io import FormatError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReferringSample:
    """One referring expression with its target object (``ann_id``) and image."""

    ref_id: int
    ann_id: int
    image_id: int
    image_path: str
    sentence: str
    negated: bool


class MaskReader:
    """Binary masks of COCO annotations through pycocotools ``annToMask`` (polygons and RLE alike)."""

    def __init__(
        self,
        images: Mapping[int, dict],
        annotations: Mapping[int, dict],
        categories: Mapping[int, dict],
        max_bytes: int = 512 << 20,
    ):
        from pycocotools.coco import COCO

        self.cache: dict[int, np.ndarray] = {}
        self.bytes, self.max_bytes = 0, max_bytes

        self.coco = COCO()
        self.coco.dataset = {
            "images": list(images.values()),
            "annotations": list(annotations.values()),
            "categories": list(categories.values()),
        }
        with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress lines
            self.coco.createIndex()

    def rivals(self, ann_id: int) -> list[int]:
        """The other annotations of the same image and category (RefCOCOg's same-category distractors)."""
        ann = self.coco.anns[ann_id]
        return [
            a
            for a in self.coco.getAnnIds(imgIds=[ann["image_id"]], catIds=[ann["category_id"]])
            if a != ann_id and not self.coco.anns[a].get("iscrowd")
        ]

    def mask(self, ann_id: int) -> np.ndarray:
        """The annotation's mask (bool, image height x width); kept in memory up to ``max_bytes``."""
        if ann_id in self.cache:
            return self.cache[ann_id]
        mask = self.coco.annToMask(self.coco.anns[ann_id]).astype(bool)
        if self.bytes + mask.nbytes <= self.max_bytes:
            self.cache[ann_id], self.bytes = mask, self.bytes + mask.nbytes
        return mask


def load_referring_samples(
    refcocog_root: str | os.PathLike,
    image_root: str | os.PathLike,
    split: str,
    negated: bool | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    split_by: str = "umd",
) -> tuple[list[ReferringSample], MaskReader, dict]:
    """Referring expressions of a RefCOCOg-format split, their masks, and counts of what was skipped.

    Works on the real RefCOCOg (``image_root`` = COCO train2014) and on the scene
    world (``refcocog_root`` = the world, ``image_root`` = ``world/images``).
    ``negated`` keeps only negated (True) or affirmative (False) expressions
    (``corpus.has_negation``). A ref whose image is missing is skipped and
    counted; an annotation without a ``segmentation`` is an error.
    """
    ref = load_refcocog(refcocog_root, split_by)
    refs = ref.split(split)
    if not refs:
        splits = sorted({r["split"] for r in ref.refs})
        raise ValueError(f"RefCOCOg at {refcocog_root} has no refs in split {split!r} (splits: {splits})")
    image_root = Path(image_root)
    if not image_root.is_dir():
        raise FileNotFoundError(f"image folder {image_root} does not exist")
    counts = {"refs": len(refs), "missing_image": 0, "expressions": 0, "negated": 0, "affirmative": 0}
    samples, exists = [], {}
    for r in refs:
        ann = ref.annotations.get(r["ann_id"])
        if ann is None:
            raise FormatError(f"ref {r.get('ref_id')} points at annotation {r['ann_id']}, which instances.json lacks")
        if not ann.get("segmentation"):
            raise FormatError(f"annotation {ann['id']} in instances.json has no segmentation mask")
        path = ref.image_path(r, image_root)
        if path not in exists:
            exists[path] = path.is_file()
        if not exists[path]:
            counts["missing_image"] += 1
            continue
        for sent in r["sentences"]:
            text = str(sent.get("sent") or sent.get("raw") or "").strip()
            if not text:
                continue
            neg = has_negation(text)
            counts["negated" if neg else "affirmative"] += 1
            if negated is None or neg == negated:
                samples.append(
                    ReferringSample(int(r["ref_id"]), int(r["ann_id"]), int(r["image_id"]), str(path), text, neg)
                )
    counts["expressions"] = counts["negated"] + counts["affirmative"]
    if counts["missing_image"]:
        logger.warning(
            "skipped %d of %d refs: image file missing under %s", counts["missing_image"], len(refs), image_root
        )
    if not samples:
        raise ValueError(f"no usable referring expressions in split {split!r} of {refcocog_root} (counts: {counts})")
    if max_samples is not None and len(samples) > max_samples:
        samples = random.Random(seed).sample(samples, max_samples)
    return samples, MaskReader(ref.images, ref.annotations, ref.categories), counts


def visual_prompt(image, mask: np.ndarray, darken: float = 0.1, blur: float = 2.0):
    """CLIPSeg's visual prompt: the image with everything but the target blurred and darkened (no crop: it keeps
    the object where the query image has it, which a tower with one patch per scene cell needs)."""
    from PIL import Image, ImageFilter

    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    if mask.shape != rgb.shape[:2]:
        raise ValueError(f"mask of shape {mask.shape} does not fit an image of {rgb.shape[1]}x{rgb.shape[0]}")
    background = np.asarray(image.convert("RGB").filter(ImageFilter.GaussianBlur(blur)), dtype=np.float32) * darken
    out = np.where(mask[..., None], rgb, background)
    return Image.fromarray(out.round().clip(0, 255).astype(np.uint8))
