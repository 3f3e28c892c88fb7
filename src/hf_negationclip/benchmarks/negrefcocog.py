"""NegRefCOCOg: referring expressions with negation, built as the paper does, and its parquet export.

Three sources, one record type (:class:`NegRefCOCOgSample`):

- ``refcocog``: a RefCOCOg download (``refs(umd).p`` + ``instances.json``) and the
  COCO images: keep the expressions that contain a negation cue, pair the
  referred box with the other boxes of the same category in the image;
- ``official``: the published ``NegRefCOCOg.json`` + a COCO train2014 folder;
- ``scene``: the scene world's RefCOCOg files, built exactly like ``refcocog``.

Candidate boxes are shuffled per sample with a fixed seed (the official file
always lists the answer first). :func:`export_negrefcocog` writes parquet with
the images embedded; with the dataset card the applications write next to it
(``apps.cards.write_negrefcocog_card``), ``load_dataset(folder, "scene")`` works
offline and ``push_to_hub`` works unchanged. The ``datasets`` builder lives in
``dataset_builders/negrefcocog/`` and reads :func:`iter_examples`.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ..corpus import negation_cues, negation_position
from ..io import FormatError, read_json
from .readers import CROP_MODES, ImageRef, TextImageChoice, cue_label, shuffle_candidates
from .refcocog import RefCOCOg, load_refcocog

logger = logging.getLogger(__name__)

CONFIGS = ("refcocog", "official", "scene")
SPLIT = "test"


@dataclass(frozen=True)
class NegRefCOCOgSample:
    """One phrase with its candidate boxes (COCO ``[x, y, w, h]``); ``target`` indexes the referred one."""

    image: Path
    image_id: str
    phrase: str
    boxes: tuple[tuple[float, float, float, float], ...]
    target: int
    cues: tuple[str, ...] = field(default=())
    position: str = "none"
    source: str = ""

    @property
    def cue(self) -> str:
        return cue_label(self.phrase)

    def to_choice(self, margin: float = 0.0, mode: str = "crop") -> TextImageChoice:
        """The harness item: the phrase against one rendering (``mode``, see :func:`render_candidate`) per box."""
        if mode not in CROP_MODES:
            raise ValueError(f"crop mode must be one of {CROP_MODES}, got {mode!r}")
        crops = tuple(ImageRef(self.image, box, margin, mode) for box in self.boxes)
        return TextImageChoice(self.phrase, crops, self.target, {"cue": self.cue, "position": self.position})


def _pixel_box(image: Image.Image, box: Sequence[float], margin: float) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` of a COCO box widened by ``margin``, clipped to the image, never empty."""
    x, y, w, h = (float(v) for v in box)
    dx, dy = margin * w, margin * h
    left = min(image.width - 1, max(0, int(round(x - dx))))
    top = min(image.height - 1, max(0, int(round(y - dy))))
    right = min(image.width, max(left + 1, int(round(x + w + dx))))
    bottom = min(image.height, max(top + 1, int(round(y + h + dy))))
    return left, top, right, bottom


def crop_box(image: Image.Image, box: Sequence[float], margin: float = 0.0) -> Image.Image:
    """Crop a COCO ``[x, y, w, h]`` box, widened by ``margin`` times its width/height on every side.

    ``margin=0`` is the official scorer's crop ``(x, y, x + w, y + h)``. A
    margin shows some context around small objects; the crop is clipped to
    the image and is never empty.
    """
    return image.crop(_pixel_box(image, box, margin))


def isolate_box(
    image: Image.Image, box: Sequence[float], margin: float = 0.0, fill: str = "median", blur_radius: float = 8.0
) -> Image.Image:
    """The whole image, same size, with everything outside the (widened) box filled or blurred (ReCLIP's isolation).

    ``fill="median"`` paints the outside with the median colour of the outside
    pixels (a flat background stays that background; other objects vanish);
    ``fill="blur"`` Gaussian-blurs it. Pixels inside the box are unchanged.
    """
    from PIL import ImageFilter

    left, top, right, bottom = _pixel_box(image, box, margin)
    image = image.convert("RGB")
    if fill == "blur":
        out = image.filter(ImageFilter.GaussianBlur(blur_radius))
    elif fill == "median":
        import numpy as np

        pixels = np.asarray(image)
        outside = np.ones(pixels.shape[:2], dtype=bool)
        outside[top:bottom, left:right] = False
        colour = np.median(pixels[outside], axis=0) if outside.any() else np.full(3, 128.0)
        out = Image.new("RGB", image.size, tuple(int(c) for c in colour))
    else:
        raise ValueError(f"fill must be 'median' or 'blur', got {fill!r}")
    out.paste(image.crop((left, top, right, bottom)), (left, top))
    return out


def square_window(size: tuple[int, int], box: Sequence[float]) -> tuple[int, int, int, int]:
    """A square of the image's shorter side that holds the box's centre, aligned to that side where possible.

    On a square image it is the image. On a row (column) of square panels, such
    as the controlled scene twin's side-by-side renders, it is the box's own
    panel; otherwise the panel-aligned square is slid just enough to hold the box.
    """
    width, height = size
    side = min(width, height)
    x, y, w, h = (float(v) for v in box)

    def start(lo: float, hi: float, extent: int) -> int:
        aligned = int((lo + hi) / 2 // side) * side  # the panel holding the box's centre
        fit = min(max(aligned, int(round(hi)) - side), int(lo))  # slid to hold the box where it is wider than a panel
        return max(0, min(extent - side, fit))

    left, top = start(x, x + w, width), start(y, y + h, height)
    return left, top, left + side, top + side


def render_candidate(image: Image.Image, ref: ImageRef) -> Image.Image:
    """What the model sees of one candidate: the whole image, a crop, or the isolated box at the image's own scale.

    ``crop`` (the paper's scorer) resizes the box alone to the model's input, so
    an object fills the frame whatever its size in the image. ``isolate`` /
    ``blur`` keep the image's geometry (:func:`isolate_box`) and then cut the
    square window of :func:`square_window`, so the processor's centre crop never
    cuts the box off and the object keeps the scale and position it has in the image.
    """
    if ref.box is None:
        return image
    if ref.mode == "crop":
        return crop_box(image, ref.box, ref.margin)
    if ref.mode not in CROP_MODES:
        raise ValueError(f"crop mode must be one of {CROP_MODES}, got {ref.mode!r}")
    isolated = isolate_box(image, ref.box, ref.margin, "blur" if ref.mode == "blur" else "median")
    window = square_window(isolated.size, ref.box)
    return isolated if window == (0, 0, *isolated.size) else isolated.crop(window)


def _sample(
    image: Path, image_id, phrase: str, boxes: list, target: int, seed: int, index: int, source: str
) -> NegRefCOCOgSample:
    boxes = [tuple(float(v) for v in b) for b in boxes]
    shuffled, answer = shuffle_candidates(boxes, target, seed, index)
    return NegRefCOCOgSample(
        Path(image),
        str(image_id),
        phrase,
        shuffled,
        answer,
        tuple(negation_cues(phrase)),
        negation_position(phrase) or "none",
        source,
    )


def negrefcocog_from_refcocog(
    data: RefCOCOg,
    image_root: str | os.PathLike,
    seed: int = 0,
    splits: Iterable[str] | None = None,
    source: str = "refcocog",
) -> list[NegRefCOCOgSample]:
    """Expressions with a negation cue, each with its box and the same-category boxes of its image as distractors."""
    by_image: dict[int, list[dict]] = {}
    for ann in data.annotations.values():
        by_image.setdefault(ann["image_id"], []).append(ann)
    wanted = set(splits) if splits is not None else None
    samples, skipped = [], Counter()
    for ref in data.refs:
        if wanted is not None and ref.get("split") not in wanted:
            continue
        target = data.annotations.get(ref["ann_id"])
        if target is None:
            skipped["unknown ann_id"] += 1
            continue
        others = [
            a["bbox"]
            for a in by_image.get(ref["image_id"], [])
            if a["category_id"] == target["category_id"] and a["id"] != target["id"]
        ]
        for sent in ref["sentences"]:
            phrase = str(sent.get("raw") or sent.get("sent") or "").strip()
            if not negation_cues(phrase):
                continue
            if not others:
                skipped["no same-category distractor"] += 1
                continue
            samples.append(
                _sample(
                    data.image_path(ref, image_root),
                    ref["image_id"],
                    phrase,
                    [target["bbox"]] + others,
                    0,
                    seed,
                    len(samples),
                    f"{source}:{ref.get('split', '')}",
                )
            )
    if skipped:
        logger.info("NegRefCOCOg from RefCOCOg: skipped %s", dict(skipped))
    return samples


def load_negrefcocog_official(
    json_path: str | os.PathLike, image_dir: str | os.PathLike, seed: int = 0
) -> list[NegRefCOCOgSample]:
    """The published ``NegRefCOCOg.json`` (``image``, ``phrase``, ``ref_bbox``, ``bbox_list``), images under ``image_dir``."""
    data = read_json(json_path)
    if not isinstance(data, list):
        raise FormatError(f"{json_path}: expected NegRefCOCOg's list of records")
    samples = []
    for index, rec in enumerate(data):
        try:
            boxes, ref = rec["bbox_list"], rec["ref_bbox"]
            target = boxes.index(ref)  # the official scorer compares exact float lists
            phrase, image = rec["phrase"], rec["image"]
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise FormatError(f"{json_path}: record {index} is not a NegRefCOCOg record ({err!r})") from err
        image_id = Path(image).stem.rsplit("_", 1)[-1].lstrip("0") or "0"
        samples.append(_sample(Path(image_dir) / image, image_id, phrase, boxes, target, seed, index, "official"))
    return samples


def write_negrefcocog_json(
    samples: Sequence[NegRefCOCOgSample], json_path: str | os.PathLike, image_root: str | os.PathLike
) -> Path:
    """Write samples in the official layout (answer first, image names relative to ``image_root``)."""
    records = []
    for s in samples:
        boxes = [list(s.boxes[s.target])] + [list(b) for i, b in enumerate(s.boxes) if i != s.target]
        records.append(
            {
                "image": os.path.relpath(s.image, image_root),
                "phrase": s.phrase,
                "ref_bbox": list(s.boxes[s.target]),
                "bbox_list": boxes,
            }
        )
    path = Path(json_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records))
    return path


def check_config(config: str, data_dir, image_dir) -> None:
    """Clear errors for a bad config name or missing folders, before any building starts."""
    if config not in CONFIGS:
        raise ValueError(f"unknown NegRefCOCOg config {config!r}; expected one of {CONFIGS}")
    if not Path(data_dir).exists():
        raise FileNotFoundError(f"NegRefCOCOg {config}: data_dir {data_dir} does not exist")
    if config != "scene" and image_dir is None:
        raise ValueError(f"NegRefCOCOg {config}: pass image_dir= (the COCO train2014 image folder)")
    if image_dir is not None and not Path(image_dir).is_dir():
        raise FileNotFoundError(f"NegRefCOCOg {config}: image_dir {image_dir} is not a folder")


def samples_for_config(
    config: str, data_dir: str | os.PathLike, image_dir: str | os.PathLike | None = None, seed: int = 0
) -> list[NegRefCOCOgSample]:
    """The samples of one builder config (see the module docstring for what ``data_dir`` holds)."""
    check_config(config, data_dir, image_dir)
    data_dir = Path(data_dir)
    if config == "scene":
        return negrefcocog_from_refcocog(
            load_refcocog(data_dir), image_dir or data_dir / "images", seed, source="scene"
        )
    if config == "official":
        json_path = data_dir / "NegRefCOCOg.json" if data_dir.is_dir() else data_dir
        return load_negrefcocog_official(json_path, image_dir, seed)
    return negrefcocog_from_refcocog(load_refcocog(data_dir), image_dir, seed)


# --------------------------------------------------------------------------- examples and the parquet export


def features():
    """The ``datasets`` features of a NegRefCOCOg example (the builder's and the parquet export's)."""
    import datasets

    return datasets.Features(
        {
            "image": datasets.Image(),
            "image_id": datasets.Value("string"),
            "phrase": datasets.Value("string"),
            "boxes": datasets.List(datasets.List(datasets.Value("float32"), length=4)),
            "target": datasets.Value("int32"),
            "cues": datasets.List(datasets.Value("string")),
            "cue": datasets.Value("string"),
            "position": datasets.Value("string"),
            "source": datasets.Value("string"),
        }
    )


def sample_to_example(s: NegRefCOCOgSample) -> dict:
    return {
        "image": str(s.image),
        "image_id": s.image_id,
        "phrase": s.phrase,
        "boxes": [list(b) for b in s.boxes],
        "target": s.target,
        "cues": list(s.cues),
        "cue": s.cue,
        "position": s.position,
        "source": s.source,
    }


def iter_examples(
    config: str, data_dir: str | os.PathLike, image_dir: str | os.PathLike | None = None, seed: int = 0
) -> Iterator[tuple[int, dict]]:
    """``(index, example)`` of one config; samples whose image file is missing are skipped, counted and logged.

    The ``datasets`` builder (``dataset_builders/negrefcocog/``) and :func:`export_negrefcocog` both read this.
    """
    missing = 0
    for index, s in enumerate(samples_for_config(config, data_dir, image_dir, seed)):
        if not s.image.is_file():
            missing += 1
            continue
        yield index, sample_to_example(s)
    if missing:
        logger.warning("NegRefCOCOg %s: skipped %d samples whose image is missing", config, missing)


def _examples(config: str, data_dir: str, image_dir: str | None, seed: int) -> Iterator[dict]:
    for _, example in iter_examples(config, data_dir, image_dir, seed):
        yield example


def export_negrefcocog(
    out_dir: str | os.PathLike,
    config: str,
    data_dir: str | os.PathLike,
    image_dir: str | os.PathLike | None = None,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Build one config and write ``<out_dir>/<config>/test-00000-of-00001.parquet`` (images embedded) + stats.json.

    Exporting several configs one after another fills one folder. Its dataset
    card (``README.md`` with ``configs:``, which ``load_dataset(out_dir,
    config)`` needs) is the applications' job:
    ``hf_negationclip.apps.cards.write_negrefcocog_card(out_dir)``
    (``hf-negationclip negrefcocog`` and the demo call it). The examples are
    staged in a fresh folder under ``cache_dir`` (default: the system's
    temporary folder) that is removed afterwards, so a rebuilt source is never
    answered from an old cache.
    """
    import tempfile

    from datasets import Dataset
    from datasets.table import embed_table_storage

    check_config(config, data_dir, image_dir)  # before datasets would wrap these errors in its own
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
    out = Path(out_dir)
    (out / config).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="negrefcocog-", dir=cache_dir) as staging:
        ds = Dataset.from_generator(
            _examples,
            features=features(),
            cache_dir=staging,
            gen_kwargs={
                "config": config,
                "data_dir": str(data_dir),
                "image_dir": str(image_dir) if image_dir else None,
                "seed": seed,
            },
        )
        # to_parquet stores image paths only: embed the bytes first so the folder is self-contained
        ds = ds.with_format("arrow").map(embed_table_storage, batched=True).with_format(None)
        ds.to_parquet(str(out / config / f"{SPLIT}-00000-of-00001.parquet"))
        stats = json.loads((out / "stats.json").read_text()) if (out / "stats.json").is_file() else {}
        stats[config] = {
            "n": len(ds),
            "images": len(set(ds["image_id"])),
            "cue": dict(Counter(ds["cue"]).most_common()),
            "position": dict(Counter(ds["position"]).most_common()),
        }
        del ds  # release the staged arrow files before the folder goes
    (out / "stats.json").write_text(json.dumps(stats, indent=2))
    return out
