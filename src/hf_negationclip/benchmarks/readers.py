"""Readers for each benchmark's own file layout (VALSE, NegBench, CC-Neg, COCO retrieval, image folders).

Every reader returns choice items with the candidates shuffled by a fixed seed
(the official files often put the answer first), resolves image paths against
a user-given folder, and skips, counts and logs items whose image is missing.
"""

from __future__ import annotations

import ast
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath

import numpy as np

from ..corpus import negation_cues, negation_position
from ..corpus.backends.affirmative import affirmative_counterpart  # noqa: F401 (re-exported: its old home)
from ..io import FormatError, read_json

logger = logging.getLogger(__name__)

#: NegBench's template names -> the paper's (Affirmation / Negation / Hybrid)
NEGBENCH_TEMPLATES = {"positive": "affirmation", "negative": "negation", "hybrid": "hybrid"}


#: how a NegRefCOCOg candidate box is shown to the model (see :func:`.negrefcocog.render_candidate`)
CROP_MODES = ("crop", "isolate", "blur")


@dataclass(frozen=True)
class ImageRef:
    """An image file, optionally narrowed to a COCO ``[x, y, w, h]`` box widened by ``margin`` (fraction of the box).

    ``mode`` says how the box is shown: ``crop`` (the box alone, resized by the
    processor), ``isolate`` / ``blur`` (the image at its own scale, everything
    outside the box filled / blurred); see :func:`.negrefcocog.render_candidate`.
    """

    path: Path
    box: tuple[float, float, float, float] | None = None
    margin: float = 0.0
    mode: str = "crop"


@dataclass(frozen=True)
class TextImageChoice:
    """One text scored against candidate images (NegRefCOCOg); ``answer`` indexes the right image."""

    text: str
    images: tuple[ImageRef, ...]
    answer: int
    groups: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class ImageTextChoice:
    """One image scored against candidate texts (VALSE, NegBench MCQ, CC-Neg); ``answer`` indexes the right text."""

    image: ImageRef
    texts: tuple[str, ...]
    answer: int
    groups: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class RetrievalSet:
    """Images and captions; ``owner[j]`` is the image index of caption ``j``."""

    images: list[ImageRef]
    texts: list[str]
    owner: list[int]


def shuffle_candidates(candidates: Sequence, answer: int, seed: int, index: int) -> tuple[tuple, int]:
    """Candidates in a fixed pseudo-random order (a function of ``seed`` and the item ``index``) and the new answer."""
    order = np.random.default_rng([seed, index]).permutation(len(candidates))
    return tuple(candidates[i] for i in order), int(np.flatnonzero(order == answer)[0])


def cue_label(text: str) -> str:
    """The group of a text by its negation cues: the single cue ("not"), ``mixed``, or ``none``."""
    cues = sorted(set(negation_cues(text)))
    return cues[0] if len(cues) == 1 else "mixed" if cues else "none"


def negation_groups(text: str) -> dict:
    return {"cue": cue_label(text), "position": negation_position(text) or "none"}


def resolve_image(path: str, root: str | os.PathLike) -> Path | None:
    """Find ``path`` (possibly relative to someone else's folder, or absolute on their machine) under ``root``.

    Tries ``root/path``, then ``root`` joined with ever shorter tails of
    ``path`` down to the bare file name. None when nothing exists.
    """
    parts = PurePath(path).parts
    parts = parts[1:] if parts and PurePath(path).is_absolute() else parts
    for start in range(len(parts)):
        candidate = Path(root).joinpath(*parts[start:])
        if candidate.is_file():
            return candidate
    return None


class _SkipCounter:
    """Counts and logs items skipped for a reason (missing image, bad row), once per reader call."""

    def __init__(self, source: str | os.PathLike):
        self.source, self.counts = str(source), Counter()

    def skip(self, reason: str) -> None:
        self.counts[reason] += 1

    def report(self, kept: int) -> None:
        if self.counts:
            logger.warning(
                "%s: kept %d items, skipped %d (%s)", self.source, kept, sum(self.counts.values()), dict(self.counts)
            )
        if not kept:
            raise FormatError(f"{self.source}: no usable items ({dict(self.counts) or 'empty file'})")


# --------------------------------------------------------------------------- VALSE existence


def load_valse_existence(
    json_path: str | os.PathLike, image_dir: str | os.PathLike, seed: int = 0, valid_only: bool = True
) -> list[ImageTextChoice]:
    """VALSE ``existence.json``: caption vs foil per image; valid items only (``mturk.caption >= 2``).

    Groups: ``polarity`` (is the negated sentence the caption or the foil), and
    the cue / position of the negated sentence.
    """
    data = read_json(json_path)
    if not isinstance(data, dict):
        raise FormatError(f"{json_path}: expected VALSE's object keyed by item id")
    skips, items = _SkipCounter(json_path), []
    for index, (_key, rec) in enumerate(data.items()):
        if not isinstance(rec, dict) or not all(isinstance(rec.get(k), str) for k in ("caption", "foil", "image_file")):
            skips.skip("malformed item")
            continue
        if valid_only and (rec.get("mturk") or {}).get("caption", 0) < 2:
            skips.skip("not valid (mturk.caption < 2)")
            continue
        image = resolve_image(rec["image_file"], image_dir)
        if image is None:
            skips.skip("missing image")
            continue
        negated = rec["caption"] if negation_cues(rec["caption"]) else rec["foil"]
        texts, answer = shuffle_candidates((rec["caption"], rec["foil"]), 0, seed, index)
        groups = {
            "polarity": "negated-caption" if negated == rec["caption"] else "negated-foil",
            **negation_groups(negated),
        }
        items.append(ImageTextChoice(ImageRef(image), texts, answer, groups))
    skips.report(len(items))
    return items


# --------------------------------------------------------------------------- NegBench


def _read_csv(path: str | os.PathLike, columns: Sequence[str]):
    import pandas as pd

    if not Path(path).is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise FormatError(f"{path} is not a readable CSV: {err}") from err
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise FormatError(f"{path}: missing columns {missing} (has {list(frame.columns)})")
    return frame


def load_negbench_mcq(
    csv_path: str | os.PathLike, image_root: str | os.PathLike, seed: int = 0
) -> list[ImageTextChoice]:
    """A NegBench MCQ CSV (``caption_0..3``, ``correct_answer``, ``correct_answer_template``, ``image_path``).

    Options are shuffled per row (the COCO/VOC files always put the answer at
    index 0); groups: ``template`` (affirmation / negation / hybrid).
    """
    frame = _read_csv(csv_path, ["image_path", "correct_answer", "correct_answer_template"])
    option_cols = sorted((c for c in frame.columns if c.startswith("caption_")), key=lambda c: int(c.split("_")[1]))
    if len(option_cols) < 2:
        raise FormatError(f"{csv_path}: expected caption_0..caption_N columns")
    skips, items = _SkipCounter(csv_path), []
    for index, row in enumerate(frame.itertuples(index=False)):
        row = row._asdict()
        options = [row[c] for c in option_cols]
        template = NEGBENCH_TEMPLATES.get(str(row["correct_answer_template"]).strip().lower())
        if template is None or not all(isinstance(o, str) and o for o in options):
            skips.skip("malformed row")
            continue
        image = resolve_image(str(row["image_path"]), image_root)
        if image is None:
            skips.skip("missing image")
            continue
        texts, answer = shuffle_candidates(options, int(row["correct_answer"]), seed, index)
        items.append(ImageTextChoice(ImageRef(image), texts, answer, {"template": template}))
    skips.report(len(items))
    return items


def parse_list_cell(cell: object) -> list:
    """A NegBench list cell ("['a dog', 'no cat']") as a list; ``ast.literal_eval``, never ``eval``."""
    if isinstance(cell, list):
        return cell
    try:
        value = ast.literal_eval(str(cell))
    except (ValueError, SyntaxError) as err:
        raise FormatError(f"not a list literal: {str(cell)[:80]!r}") from err
    if not isinstance(value, list):
        raise FormatError(f"not a list literal: {str(cell)[:80]!r}")
    return value


def load_negbench_retrieval(csv_path: str | os.PathLike, image_root: str | os.PathLike) -> RetrievalSet:
    """A NegBench retrieval CSV (``filepath``, ``captions`` as a list repr) as images and captions."""
    frame = _read_csv(csv_path, ["filepath", "captions"])
    skips, images, texts, owner = _SkipCounter(csv_path), [], [], []
    for row in frame.itertuples(index=False):
        image = resolve_image(str(row.filepath), image_root)
        if image is None:
            skips.skip("missing image")
            continue
        caps = [c for c in parse_list_cell(row.captions) if isinstance(c, str) and c.strip()]
        if not caps:
            skips.skip("no captions")
            continue
        texts += caps
        owner += [len(images)] * len(caps)
        images.append(ImageRef(image))
    skips.report(len(images))
    return RetrievalSet(images, texts, owner)


# --------------------------------------------------------------------------- CC-Neg


def load_ccneg(
    path: str | os.PathLike, image_dir: str | os.PathLike, last: int | None = 40_000, seed: int = 0
) -> list[ImageTextChoice]:
    """The ``ccneg`` task's items from either layout, told apart by extension, else by the file's first byte.

    - ``.pt``: CC-Neg's ``ccneg_preprocessed.pt`` (:func:`load_ccneg_pt`; ``last`` items);
    - ``.json``: a ``negated_captions_<split>.json`` (ours or the NegationCLIP repository's; the whole file,
      ``last`` is ignored) read by :func:`load_ccneg_negated_captions` with ``image_dir`` as the image root.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if path.suffix.lower() == ".json" or (path.suffix.lower() != ".pt" and path.read_bytes()[:64].lstrip()[:1] == b"{"):
        return load_ccneg_negated_captions(path, image_dir, seed)
    return load_ccneg_pt(path, image_dir, last, seed)


def load_ccneg_pt(
    pt_path: str | os.PathLike, image_dir: str | os.PathLike, last: int | None = 40_000, seed: int = 0
) -> list[ImageTextChoice]:
    """CC-Neg's ``ccneg_preprocessed.pt``: the true caption vs the negated prompt per image.

    The file is a pickle: it is read with ``torch.load(weights_only=True)``,
    which refuses anything but plain data. Image paths are the authors'
    absolute paths: their file names are looked up in ``image_dir``. The
    evaluation split is the ``last`` items in file order (None: all). Commas
    are stripped from the negated prompt, as in the official scorer.
    """
    import pickle

    import torch

    if not Path(pt_path).is_file():
        raise FileNotFoundError(f"no such file: {pt_path}")
    try:
        data = torch.load(pt_path, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise FormatError(
            f"{pt_path}: refused or unreadable as plain data with torch.load(weights_only=True): {err}"
        ) from err
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("image_paths"), list)
        or not isinstance(data.get("annotations"), list)
    ):
        raise FormatError(f"{pt_path}: expected a dict with 'image_paths' and 'annotations' lists")
    pairs = list(zip(data["image_paths"], data["annotations"]))
    start = max(0, len(pairs) - last) if last else 0
    skips, items = _SkipCounter(pt_path), []
    for index, (path, ann) in enumerate(pairs[start:], start):
        try:
            caption, negated = ann["json"]["caption"], ann["sop_data"]["negative-prompt"].replace(",", "")
        except (KeyError, TypeError, AttributeError):
            skips.skip("malformed annotation")
            continue
        image = Path(image_dir) / PurePath(str(path).replace("\\", "/")).name
        if not image.is_file():
            skips.skip("missing image")
            continue
        texts, answer = shuffle_candidates((caption, negated), 0, seed, index)
        items.append(ImageTextChoice(ImageRef(image), texts, answer, negation_groups(negated)))
    skips.report(len(items))
    return items


def load_ccneg_negated_captions(
    json_path: str | os.PathLike, image_root: str | os.PathLike, seed: int = 0
) -> list[ImageTextChoice]:
    """A ``negated_captions_<split>.json`` (COCO captions + ``updated_caption``) as CC-Neg-style items.

    Each annotation's image is scored against two texts that differ only in
    the negation: the true one is the negated caption (``updated_caption``:
    the negated thing is absent from the image), the false one its
    :func:`affirmative_counterpart`, which asserts the absent thing is there.
    (The original ``caption`` is true of the image as well, so it cannot be
    the wrong answer; CC-Neg's own files pair a true caption with a false
    negation instead.) Images: the annotation's ``image`` (our added-pair
    positive, relative to the JSON's folder) or its image's ``file_name``,
    resolved against ``image_root``. Skipped and counted: annotations whose
    original caption already has a negation cue, whose negated caption has
    none, or whose negation no rule can take out. Groups: the cue and
    position of the negated caption, and ``form`` when every record has one.
    """
    data = read_json(json_path)
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("annotations"), list)
        or not isinstance(data.get("images"), list)
    ):
        raise FormatError(f"{json_path}: expected COCO captions JSON with 'annotations' and 'images'")
    if data["annotations"] and not any(
        isinstance(a, dict) and "updated_caption" in a for a in data["annotations"][:100]
    ):
        raise FormatError(f"{json_path}: its annotations have no 'updated_caption': not a negated-captions file")
    files = {img.get("id"): img.get("file_name") for img in data["images"] if isinstance(img, dict)}
    skips, items, resolved = _SkipCounter(json_path), [], {}
    for index, ann in enumerate(data["annotations"]):
        caption, negated_caption = (
            ann.get(k) if isinstance(ann, dict) else None for k in ("caption", "updated_caption")
        )
        if not isinstance(caption, str) or not isinstance(negated_caption, str):
            skips.skip("malformed annotation")
            continue
        if negation_cues(caption):
            skips.skip("original caption already negated")
            continue
        if not negation_cues(negated_caption):
            skips.skip("negated caption without a negation cue")
            continue
        false = affirmative_counterpart(negated_caption, caption, ann.get("negated"))
        if false is None:
            skips.skip("no affirmative counterpart")
            continue
        name = ann.get("image") or files.get(ann.get("image_id"))
        root = Path(json_path).parent if ann.get("image") else image_root
        if (name, root) not in resolved:
            resolved[name, root] = resolve_image(str(name), root) if name else None
        image = resolved[name, root]
        if image is None:
            skips.skip("missing image")
            continue
        texts, answer = shuffle_candidates((negated_caption, false), 0, seed, index)
        groups = negation_groups(negated_caption)
        if isinstance(ann.get("form"), str):
            groups["form"] = ann["form"]
        items.append(ImageTextChoice(ImageRef(image), texts, answer, groups))
    skips.report(len(items))
    return items


# --------------------------------------------------------------------------- retrieval and zero-shot


def load_coco_retrieval(
    captions_json: str | os.PathLike, image_dir: str | os.PathLike, max_images: int | None = None
) -> RetrievalSet:
    """COCO captions (``captions_*.json``) as a retrieval set, the first ``max_images`` images by id."""
    from ..corpus import load_coco_captions

    records = [r for r in load_coco_captions(captions_json, image_dir) if r.image_path.is_file()]
    keep = sorted({r.image_id for r in records})[:max_images]
    row = {image_id: i for i, image_id in enumerate(keep)}
    images: list[ImageRef | None] = [None] * len(keep)
    texts, owner = [], []
    for r in records:
        if r.image_id in row:
            images[row[r.image_id]] = ImageRef(r.image_path)
            texts.append(r.caption)
            owner.append(row[r.image_id])
    if not images:
        raise FormatError(f"{captions_json}: no caption has its image under {image_dir}")
    return RetrievalSet(images, texts, owner)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def load_image_folder(root: str | os.PathLike) -> tuple[list[ImageRef], list[int], list[str]]:
    """An ImageFolder tree (``root/<class name>/<image>``): images, label indices and class names (sorted)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no such image folder: {root}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    images, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((root / name).iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                images.append(ImageRef(path))
                labels.append(label)
    if len(classes) < 2 or not images:
        raise FormatError(f"{root}: expected an ImageFolder layout (one sub-folder of images per class, at least 2)")
    return images, labels, [c.replace("_", " ") for c in classes]
