"""Caption corpora: reading COCO-format caption files and spotting negation.

Later stages (LLM/MLLM negation pipelines) build on the records read here.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..io import FormatError, read_json
from ..text import clean_text

logger = logging.getLogger(__name__)

#: the old name of :class:`hf_negationclip.io.FormatError`, kept for existing imports
CorpusFormatError = FormatError

#: whole-word, lower-cased cues of negation (the paper's and NegBench's lists, merged)
NEGATION_CUES: tuple[str, ...] = (
    "no",
    "not",
    "without",
    "none",
    "nobody",
    "nothing",
    "nowhere",
    "neither",
    "nor",
    "never",
    "isn't",
    "aren't",
    "wasn't",
    "weren't",
    "doesn't",
    "don't",
    "didn't",
    "hasn't",
    "haven't",
    "can't",
    "cannot",
    "won't",
    "absent",
    "absence",
    "lacking",
    "lacks",
    "missing",
    "except",
    "excluding",
    "free of",
    "n't",
)
_CUE_RE = re.compile(
    r"(?<![\w'])(" + "|".join(re.escape(c) for c in sorted(NEGATION_CUES, key=len, reverse=True)) + r")(?![\w'])|n't\b",
    re.IGNORECASE,
)


def negation_cues(text: str) -> list[str]:
    """The negation cues in ``text``, lower-cased, in order ("a street with no cars" -> ["no"]).

    The text is cleaned as the tokenizer cleans it first (:func:`hf_negationclip.text.clean_text`), so a curly
    apostrophe ("isn’t") or an HTML entity counts as the tokenizer will see it.
    """
    return [m.group(0).lower() for m in _CUE_RE.finditer(clean_text(text))]


def has_negation(text: str) -> bool:
    return bool(negation_cues(text))


POSITIONS: tuple[str, ...] = ("front", "middle", "end")


def negation_position(text: str) -> str | None:
    """Where the first negation cue sits: ``front`` / ``middle`` / ``end`` of the sentence (thirds by word), or None.

    The cue's word index ``i`` among ``n`` words gives ``r = i / (n - 1)``:
    front below 1/3, end from 2/3 on. "no dogs on the beach" -> front,
    "a green umbrella with no one under it" -> middle, "a dog with no hat" -> end.
    """
    text = clean_text(text)
    match = _CUE_RE.search(text)
    if match is None:
        return None
    words_before = len(re.findall(r"\S+", text[: match.start()]))
    if match.start() > 0 and not text[match.start() - 1].isspace():
        words_before -= 1  # "isn't": the cue is inside the word already counted
    n = len(re.findall(r"\S+", text))
    r = words_before / max(n - 1, 1)
    return POSITIONS[0] if r < 1 / 3 else POSITIONS[1] if r < 2 / 3 else POSITIONS[2]


@dataclass(frozen=True)
class CaptionRecord:
    """One (image, caption) pair of a COCO-format caption file."""

    image_id: int
    image_path: Path
    caption: str
    annotation_id: int | None = None


def load_coco_captions(
    path: str | os.PathLike, image_dir: str | os.PathLike, caption_field: str = "caption"
) -> list[CaptionRecord]:
    """Read a COCO captions file (``captions_*.json``) into records, images resolved under ``image_dir``.

    ``caption_field="updated_caption"`` reads the paper's negated file. An
    annotation with a missing image or empty caption is skipped, counted and
    logged; a file that is not COCO captions at all raises ``CorpusFormatError``.
    """
    return captions_from_coco(read_json(path), path, image_dir, caption_field)


def captions_from_coco(
    data: object, path: str | os.PathLike, image_dir: str | os.PathLike, caption_field: str = "caption"
) -> list[CaptionRecord]:
    """:func:`load_coco_captions` on already parsed JSON (``path`` only names it in messages)."""
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("images"), list)
        or not isinstance(data.get("annotations"), list)
    ):
        raise CorpusFormatError(
            f"{path} is not COCO captions JSON: expected an object with 'images' and 'annotations' lists"
        )
    image_dir = Path(image_dir)
    files = {
        img["id"]: img["file_name"]
        for img in data["images"]
        if isinstance(img, dict) and "id" in img and "file_name" in img
    }
    records, skipped = [], Counter()
    for ann in data["annotations"]:
        caption = ann.get(caption_field) if isinstance(ann, dict) else None
        if not isinstance(caption, str) or not caption.strip():
            skipped["no caption"] += 1
            continue
        if ann.get("image_id") not in files:
            skipped["unknown image_id"] += 1
            continue
        records.append(
            CaptionRecord(ann["image_id"], image_dir / files[ann["image_id"]], caption.strip(), ann.get("id"))
        )
    if skipped:
        logger.warning("%s: skipped %d annotations (%s)", path, sum(skipped.values()), dict(skipped))
    if not records:
        raise CorpusFormatError(f"{path} holds no usable '{caption_field}' annotations")
    return records
