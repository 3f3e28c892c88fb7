"""One batch of the training loop: named text rows and the optional inputs of the loss terms, made by ONE collator.

A batch holds ``n`` images (pixels, or the embeddings of a frozen vision
tower) and its text rows, tokenised in ONE call so they share one padding
length, laid out kind after kind in the order of :data:`ROW_KINDS`::

    input_ids = [ captions (n) | originals (n) | mcq_options (n * k) | flips (n) ]

Which kinds and which optional fields a batch carries is a :class:`BatchSpec`
(``losses.batch_spec`` derives it from the weighted loss terms). A new kind of
text row is one entry of :data:`ROW_KINDS`; a new optional input is one field
of :class:`Batch` and one entry of :data:`FIELD_BUILDERS`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, NamedTuple

import torch

if TYPE_CHECKING:
    from .data import Caption


class Pick(NamedTuple):
    """The caption an image uses in an epoch, and whether it swaps to the caption's affirmative original."""

    caption: Caption
    swapped: bool

    @property
    def text(self) -> str:
        """The text the image is paired with."""
        return self.caption.original if self.swapped else self.caption.text

    @property
    def negated(self) -> bool:
        """A negated caption (it has an original or distractors) that was not swapped to its original."""
        return not self.swapped and (self.caption.original is not None or bool(self.caption.distractors))

    @property
    def affirmative(self) -> str:
        """The caption's affirmative original, or the caption itself when it has none."""
        return self.caption.original or self.caption.text


def mcq_width(picks: Sequence[Pick]) -> int:
    """Options per caption in the MCQ rows: the most wrong options any caption of the batch has."""
    return max(len(p.caption.mcq_wrong) for p in picks) if picks else 0


def _mcq_options(picks: Sequence[Pick]) -> list[str]:
    # a caption with fewer options is padded with its pick's text, and so are all options of a pick that is not
    # negated (``mcq_valid`` masks both): repeated rows cost no encoding
    k = mcq_width(picks)
    return [
        p.caption.mcq_wrong[j] if p.negated and j < len(p.caption.mcq_wrong) else p.text
        for p in picks
        for j in range(k)
    ]


def has_flip(pick: Pick) -> bool:
    """A negated pick with an affirmative flip (``Caption.flip``) and a distractor: a full 2x2 square."""
    return pick.negated and pick.caption.flip is not None and bool(pick.caption.distractors)


def flip_text(pick: Pick) -> str:
    """The pick's affirmative flip (its first wrong option), or its own text when it has no square (masked)."""
    return pick.caption.flip if has_flip(pick) else pick.text


#: the kinds of text rows, in the order a batch lays them out: kind -> the texts of that kind for a batch's picks
ROW_KINDS: dict[str, Callable[[Sequence[Pick]], list[str]]] = {
    "captions": lambda picks: [p.text for p in picks],
    "originals": lambda picks: [p.affirmative for p in picks],
    "mcq_options": _mcq_options,
    "flips": lambda picks: [flip_text(p) for p in picks],
}


@dataclass(frozen=True)
class BatchSpec:
    """What a batch carries beyond its images and caption rows: text-row kinds and optional fields."""

    rows: tuple[str, ...] = ("captions",)
    fields: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        unknown = [k for k in self.rows if k not in ROW_KINDS] + [f for f in self.fields if f not in FIELD_BUILDERS]
        if unknown:
            raise ValueError(
                f"unknown batch rows or fields {unknown}; rows: {list(ROW_KINDS)}, fields: {list(FIELD_BUILDERS)}"
            )
        # captions first, then the ROW_KINDS order: the layout never depends on how a spec was assembled
        object.__setattr__(self, "rows", tuple(k for k in ROW_KINDS if k in self.rows or k == "captions"))


@dataclass
class Batch:
    """The tensors of one batch. Optional fields are ``None`` when no weighted loss term reads them."""

    images: torch.Tensor  # [n, ...] pixel values, or [n, d] image embeddings (``image_kind``)
    image_kind: str  # the model's keyword for ``images``: "pixel_values" | "image_embeds" | "vision_cls"
    input_ids: torch.Tensor  # every text row, one padding length
    attention_mask: torch.Tensor
    rows: dict[str, slice]  # row kind -> its rows of ``input_ids`` (``ROW_KINDS`` order)
    hard_mask: torch.Tensor | None = None  # [n] bool: a negated caption with an original (hard-negative term)
    anchor_embeds: torch.Tensor | None = None  # [n, d]: the starting model's embedding of each caption's original
    retain_mask: torch.Tensor | None = None  # [n] bool: caption rows that are affirmative texts (retain on picks)
    mcq_valid: torch.Tensor | None = None  # [n, k] bool: real wrong options (of negated captions), not padding
    distractor_images: torch.Tensor | None = None  # [m, ...] like ``images``: images holding the negated thing
    distractor_owner: torch.Tensor | None = None  # [m] caption row of each distractor, in row order
    flip_valid: torch.Tensor | None = None  # [n] bool: the caption row has a flip and a distractor (square term)
    flip_anchors: torch.Tensor | None = None  # [n, d]: the starting model's embedding of each flip row
    image_anchors: torch.Tensor | None = None  # [n, d]: the starting model's embedding of each image
    bare_owner: torch.Tensor | None = None  # [b] caption row of each bare image (square side "o"), in row order
    bare_images: torch.Tensor | None = None  # [b, ...] each square's own image without an added pair's object
    distractor_anchors: torch.Tensor | None = None  # [m, d]: the starting model's embedding of each distractor
    bare_anchors: torch.Tensor | None = None  # [b, d]: the starting model's embedding of each bare image

    def __len__(self) -> int:
        """The number of captions (= images)."""
        return self.rows["captions"].stop

    def to(self, device) -> Batch:
        """The batch with every tensor on ``device``."""
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return replace(self, **moved)


@dataclass(frozen=True)
class BatchSources:
    """Where the collator gets what is not in the picks: anchors of affirmative texts and distractor images."""

    anchors: Callable[[list[str]], torch.Tensor] | None = None  # affirmative texts -> fixed embeddings
    #: distractor (and bare image) paths -> images of ``image_kind``
    distractors: Callable[[list], torch.Tensor] | None = None
    image_anchors: torch.Tensor | None = None  # the starting model's embeddings of the batch's images
    #: distractor (and bare image) paths -> the starting model's embeddings (the image-retain term holds them too)
    distractor_anchors: Callable[[list], torch.Tensor] | None = None


def _hard_mask(picks, images, sources) -> dict:
    return {"hard_mask": torch.tensor([p.negated and p.caption.original is not None for p in picks])}


def _anchor_embeds(picks, images, sources) -> dict:
    return {"anchor_embeds": sources.anchors([p.affirmative for p in picks])}


def _retain_mask(picks, images, sources) -> dict:
    return {"retain_mask": torch.tensor([not p.negated for p in picks])}


def _mcq_valid(picks, images, sources) -> dict:
    k = mcq_width(picks)
    valid = [[p.negated and j < len(p.caption.mcq_wrong) for j in range(k)] for p in picks]
    return {"mcq_valid": torch.tensor(valid, dtype=torch.bool).view(len(picks), k)}


def _distractors(picks, images, sources) -> dict:
    """Every negated caption's distractors, encoded where the caption is (co-located by construction)."""
    owner = [row for row, p in enumerate(picks) if p.negated for _ in p.caption.distractors]
    paths = [d for p in picks if p.negated for d in p.caption.distractors]
    out = {
        "distractor_owner": torch.tensor(owner, dtype=torch.long),
        "distractor_images": sources.distractors(paths) if paths else images[:0],
    }
    if sources.distractor_anchors is not None and paths:
        out["distractor_anchors"] = sources.distractor_anchors(paths)
    return out


def _flip_valid(picks, images, sources) -> dict:
    return {"flip_valid": torch.tensor([has_flip(p) for p in picks], dtype=torch.bool)}


def _flip_anchors(picks, images, sources) -> dict:
    return {"flip_anchors": sources.anchors([flip_text(p) for p in picks])}


def _bare_images(picks, images, sources) -> dict:
    """The caption's own image of every square trained on an added pair's positive (``Caption.bare``)."""
    owner = [row for row, p in enumerate(picks) if has_flip(p) and p.caption.bare is not None]
    paths = [picks[row].caption.bare for row in owner]
    out = {
        "bare_owner": torch.tensor(owner, dtype=torch.long),
        "bare_images": sources.distractors(paths) if owner else images[:0],
    }
    if sources.distractor_anchors is not None and paths:
        out["bare_anchors"] = sources.distractor_anchors(paths)
    return out


def _image_anchors(picks, images, sources) -> dict:
    return {"image_anchors": sources.image_anchors}


#: optional fields: spec name -> builder ``(picks, images, sources) -> {Batch field: tensor}``
FIELD_BUILDERS: dict[str, Callable] = {
    "hard_mask": _hard_mask,
    "anchor_embeds": _anchor_embeds,
    "retain_mask": _retain_mask,
    "mcq_valid": _mcq_valid,
    "distractors": _distractors,
    "flip_valid": _flip_valid,
    "flip_anchors": _flip_anchors,
    "image_anchors": _image_anchors,
    "bare_images": _bare_images,
}


class TokenCache:
    """Each text tokenised once, batches padded from the stored ids: the same ``input_ids`` and
    ``attention_mask`` as ``tokenizer(texts, padding=True, truncation=True, return_tensors="pt")``.

    A fine-tune meets the same texts every epoch (captions, flips, clauses, MCQ options); tokenising every
    batch afresh was about a sixth of a step of the demo's ``ours`` run (cProfile, 120 steps).
    """

    def __init__(self, tokenizer):
        self.tokenizer, self._ids = tokenizer, {}

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """The (truncated) token ids of each text; texts not seen before are tokenised in one call."""
        todo = [t for t in dict.fromkeys(texts) if t not in self._ids]
        if todo:
            self._ids.update(zip(todo, self.tokenizer(todo, truncation=True)["input_ids"]))
        return [self._ids[t] for t in texts]

    def __call__(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids, attention_mask)`` of ``texts``, padded to the longest on the tokenizer's side."""
        ids = self.token_ids(texts)
        width = max(map(len, ids), default=0)
        input_ids = torch.full((len(ids), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        left = self.tokenizer.padding_side == "left"
        for row, seq in enumerate(ids):
            cols = slice(width - len(seq), width) if left else slice(0, len(seq))
            input_ids[row, cols] = torch.tensor(seq, dtype=torch.long)
            mask[row, cols] = 1
        return input_ids, mask


def collate(
    picks: Sequence[Pick],
    images: torch.Tensor,
    image_kind: str,
    tokenizer,
    spec: BatchSpec,
    sources: BatchSources = BatchSources(),
) -> Batch:
    """THE collator: the text rows of ``spec`` tokenised together (one padding length), then the optional fields
    of ``spec``. ``tokenizer``: a :class:`TokenCache` (ids kept across batches) or a tokenizer."""
    texts, rows = [], {}
    for kind in spec.rows:
        start = len(texts)
        texts += ROW_KINDS[kind](picks)
        rows[kind] = slice(start, len(texts))
    extra = {}
    for name in FIELD_BUILDERS:  # a fixed order, whatever order the spec lists them in
        if name in spec.fields:
            extra.update(FIELD_BUILDERS[name](picks, images, sources))
    tokens = tokenizer if isinstance(tokenizer, TokenCache) else TokenCache(tokenizer)
    return Batch(images, image_kind, *tokens(texts), rows, **extra)
