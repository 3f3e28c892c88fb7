"""Loss terms of the training loop, each a small function of normalised embeddings.

- ``contrastive``: CLIP's symmetric InfoNCE over the GLOBAL batch (features of
  every process gathered), as the paper trains.
- ``hard_negative``: image -> text cross-entropy where each negated caption's
  original affirmative caption joins the candidates as an extra negative.
- ``mcq``: NegBench-style multiple choice: the image picks its caption among
  wrong options (e.g. the caption affirming the negated thing).
- ``exclusion``: each negated caption picks its image among {its image, its
  distractors}, images that contain exactly what it says is absent. In a
  random batch almost no image holds the negated object, so only this term
  teaches "no X" to push X away.
- ``square``: both directions of negation on each caption's 2x2 square: its
  image I and distractor D (holding the negated thing), the caption C and its
  affirmative flip F (``Caption.flip``, the first of ``mcq_wrong``: the same
  words, the negation taken out). I picks C over F (caption side), D picks F
  over C (a negation of something present is false), F picks D over I; the
  fourth side, C picks I over D, is the exclusion term. The exclusion term
  alone lets negated captions sink below every affirmative one (right image,
  wrong caption).
- ``retain``: 1 - cosine between the model's embedding of each caption's
  affirmative original and the starting model's (fixed anchors): learning
  negation must not move what plain captions mean (zero-shot, retrieval).
  With ``retain_on="picks"`` only the batch's own affirmative rows (the
  ``affirmative_ratio`` swaps) are held, which costs no extra text rows.
  With ``retain_flips`` the flips of the square are held too.
- ``negated_retain``: 1 - cosine between each negated caption and the starting
  model's embedding of its affirmative original: a negated caption keeps what
  it affirms ("a red circle" in "a red circle with no blue star") and moves
  only away from what it negates. Without it the exclusion term lets negated
  captions drop their head and sink to "not X", far from every image.
- ``image_retain``: 1 - cosine between each image's embedding and the
  starting model's, for runs whose vision side trains (the vision head of
  ``--train text+vision-head``): images move only as far as negation needs.
  Every image the step encodes is held: the batch's, its distractors and the
  squares' bare images (side "o"), so no image a term pushes goes unheld.
- ``image_relations``: each image the step encodes keeps the starting model's
  softmax ranking of the batch's affirmative texts (and each text its ranking of
  the images): KL, not a distance, so an image may move where no affirmative
  text looks (a binding feature) but not where retrieval and zero-shot read.
- ``joint_relations``: the same ranking, of the affirmative texts as the text
  tower embeds them NOW (the batch's affirmative picks and, with
  ``retain_flips``, the flips), against the starting towers' ranking: image
  relations hold the images against fixed texts and the retain term the texts
  against their start, so neither sees the two towers drift together (the
  ``dt . di`` of a dot product). Measured: zero-shot shape 0.983 with either
  tower of a run beside the baseline's other, 0.939 with both.

Like the contrastive term, the two relations terms rank the GLOBAL batch: on N
processes each gathers every process's rows, so two processes of 4 train as one
of 8 (``tests/test_finetune.py`` checks it with torchrun).

Each term is one entry of :data:`TERMS`: a small function of the encoded
batch (:class:`Encoded`) and the :class:`~.batch.Batch`, with the text rows
and optional fields it reads. The table decides what the collator builds
(:func:`batch_spec`) and what one forward pass encodes; :func:`compute_loss`
is the weighted sum of the terms. A new term is one function and one entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .batch import Batch, BatchSpec

RETAIN_ON = ("originals", "picks")
#: the sides of the square term: "i" = image picks caption over flip, "d" = distractor picks flip over caption,
#: "f" = flip picks distractor over image (the fourth, caption picks image over distractor, is ``exclusion``),
#: "o" = side i on the caption's own image where the square's image is an added pair's positive (``Caption.bare``)
SQUARE_SIDES = "idfo"


@dataclass(frozen=True)
class LossWeights:
    """The weight of each term of :data:`TERMS` (0 = off; ``contrastive`` is always computed and logged)."""

    contrastive: float = 1.0
    hard_negative: float = 0.0
    mcq: float = 0.0
    exclusion: float = 0.0
    #: logit scale of the exclusion term; 0 = the model's own (trainable) logit scale
    exclusion_scale: float = 0.0
    square: float = 0.0
    #: logit scale of the square term; 0 = the model's own (trainable) logit scale
    square_scale: float = 0.0
    #: which sides of the square train (letters of :data:`SQUARE_SIDES`; a letter given twice counts twice)
    square_sides: str = "idf"
    retain: float = 0.0
    #: texts the retain term holds: "originals" (an extra text row per caption) | "picks" (no extra rows)
    retain_on: str = "originals"
    #: the retain term also holds the square's flips (affirmative texts) at their starting embeddings
    retain_flips: bool = False
    negated_retain: float = 0.0
    image_retain: float = 0.0
    image_relations: float = 0.0
    joint_relations: float = 0.0

    def __post_init__(self) -> None:
        names = ("contrastive", "hard_negative", "mcq", "exclusion", "exclusion_scale", "square", "square_scale")
        for name in (*names, "retain", "negated_retain", "image_retain", "image_relations", "joint_relations"):
            if getattr(self, name) < 0:
                raise ValueError(f"loss weight {name} must be >= 0, got {getattr(self, name)}")
        if self.retain_on not in RETAIN_ON:
            raise ValueError(f"retain_on must be 'originals' or 'picks', not {self.retain_on!r}")
        if not self.square_sides or set(self.square_sides) - set(SQUARE_SIDES):
            raise ValueError(f"square_sides must be letters of {SQUARE_SIDES!r}, not {self.square_sides!r}")


def gather_with_local_grad(accelerator, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All processes' rows (:func:`gather_rows`) and the offset of this process's rows (equal counts per process)."""
    if accelerator is None or accelerator.num_processes == 1:
        return x, 0
    return gather_rows(accelerator, x), accelerator.process_index * x.shape[0]


def gather_rows(accelerator, x: torch.Tensor) -> torch.Tensor:
    """All processes' rows of ``x`` where each process may hold a different number (this process's keep their
    gradient): the batch-wide view the relations terms rank over, so N processes rank what one would."""
    if accelerator is None or accelerator.num_processes == 1:
        return x
    sizes = accelerator.gather(torch.tensor([len(x)], device=x.device)).tolist()
    padded = accelerator.pad_across_processes(x.detach().contiguous(), dim=0)
    chunks = [c[:n] for c, n in zip(accelerator.gather(padded).chunk(accelerator.num_processes), sizes)]
    chunks[accelerator.process_index] = x
    return torch.cat(chunks)


def contrastive_loss(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE: row i of ``img`` belongs with row i of ``txt``."""
    logits = scale * img @ txt.T
    labels = torch.arange(len(img), device=img.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def _masked_choice_loss(
    pos: torch.Tensor, others: torch.Tensor, valid: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy of picking ``pos`` (shape [n]) over it and ``others`` ([n, k], ``valid`` masks padding)."""
    rows = valid.any(dim=1)
    if not rows.any():
        return pos.sum() * 0.0  # keeps the graph connected on a batch without such items
    # mask after scaling: scale * -inf would give the logit scale a NaN gradient (0 * inf) at every padded slot
    logits = (scale * torch.cat([pos[:, None], others], dim=1)).masked_fill(
        torch.cat([torch.zeros_like(valid[:, :1]), ~valid], dim=1), float("-inf")
    )[rows]
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))


def hard_negative_loss(
    img: torch.Tensor,
    txt_global: torch.Tensor,
    offset: int,
    hard: torch.Tensor,
    mask: torch.Tensor,
    scale: torch.Tensor,
) -> torch.Tensor:
    """Image -> text over every caption of the global batch plus the image's own hard-negative caption."""
    if not mask.any():
        return img.sum() * 0.0
    logits = scale * torch.cat([img @ txt_global.T, (img * hard).sum(-1, keepdim=True)], dim=1)[mask]
    labels = (torch.arange(len(img), device=img.device) + offset)[mask]
    return F.cross_entropy(logits, labels)


def mcq_loss(
    img: torch.Tensor, txt: torch.Tensor, options: torch.Tensor, valid: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """The image picks its caption (row of ``txt``) over its wrong options ([n, k, d])."""
    return _masked_choice_loss((img * txt).sum(-1), torch.einsum("nd,nkd->nk", img, options), valid, scale)


def exclusion_loss(
    img: torch.Tensor, txt: torch.Tensor, distractors: torch.Tensor, owner: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """Each negated caption picks its image over its distractors (``owner[j]`` = caption row of distractor j)."""
    n = len(txt)
    counts = torch.bincount(owner, minlength=n) if len(owner) else torch.zeros(n, dtype=torch.long, device=txt.device)
    k = int(counts.max()) if n else 0
    others = txt.new_zeros(n, max(k, 1))
    valid = torch.zeros(n, max(k, 1), dtype=torch.bool, device=txt.device)
    if len(owner):
        slot = torch.cat([torch.arange(int(c), device=txt.device) for c in counts])  # owner is sorted by row
        others = others.index_put((owner, slot), (txt[owner] * distractors).sum(-1))
        valid[owner, slot] = True
    return _masked_choice_loss((img * txt).sum(-1), others, valid, scale)


def square_loss(
    img: torch.Tensor,
    txt: torch.Tensor,
    flips: torch.Tensor,
    distractors: torch.Tensor,
    owner: torch.Tensor,
    valid: torch.Tensor,
    scale: torch.Tensor,
    sides: str = "idf",
    bare: torch.Tensor | None = None,
    bare_owner: torch.Tensor | None = None,
) -> torch.Tensor:
    """The mean over ``sides`` of each side's mean two-way choice loss over the squares (image, distractor j,
    caption, flip); a side named twice ("iddf") counts twice.

    ``owner[j]`` is the caption row of distractor j, ``valid[row]`` whether that row has a flip;
    each side is ``softplus(scale * (wrong - right))``, the cross-entropy of a choice between two.
    Side "o" reads ``bare`` (caption row ``bare_owner[b]``'s own image, see ``Caption.bare``): the
    scene the caption was written of picks the caption over its flip; a batch without such rows
    averages the other sides.
    """
    keep = valid[owner]
    if not keep.any():
        return img.sum() * 0.0
    row = owner[keep]
    i, d, c, f = img[row], distractors[keep], txt[row], flips[row]
    ic, i_f, dc, df = (i * c).sum(-1), (i * f).sum(-1), (d * c).sum(-1), (d * f).sum(-1)
    margins = {"i": i_f - ic, "d": dc - df, "f": i_f - df}  # wrong - right, per side
    if "o" in sides and bare is not None and len(bare_owner):
        o = bare_owner
        margins["o"] = (bare * flips[o]).sum(-1) - (bare * txt[o]).sum(-1)
    return torch.stack([F.softplus(scale * margins[side]).mean() for side in sides if side in margins]).mean()


def retain_loss(txt: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Mean ``1 - cos`` between normalised text embeddings and their fixed anchors (0 for no rows)."""
    if not len(txt):
        return txt.sum() * 0.0
    return (1 - (txt * F.normalize(anchors.to(txt.dtype), dim=-1)).sum(-1)).mean()


# --------------------------------------------------------------------------- the terms of a batch


@dataclass
class Encoded:
    """One forward pass over a batch: normalised embeddings by name, and the contrastive term's global view."""

    images: torch.Tensor  # this process's images [n, d]
    distractors: torch.Tensor  # their distractors [m, d] (empty when no term reads them)
    texts: dict[str, torch.Tensor]  # row kind -> embeddings of those rows
    scale: torch.Tensor  # the model's logit scale (exp)
    images_global: torch.Tensor  # every process's images; this process's rows keep their gradient
    captions_global: torch.Tensor
    offset: int  # where this process's rows start in the global batch
    bare: torch.Tensor | None = None  # the squares' own images without an added pair's object [b, d] (side "o")
    accelerator: object | None = None  # for :meth:`everywhere` (None: one process)

    def everywhere(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        """Each tensor's rows on every process (:func:`gather_rows`); unchanged on one process."""
        return [gather_rows(self.accelerator, t) for t in tensors]

    @property
    def captions(self) -> torch.Tensor:
        return self.texts["captions"]


def contrastive_term(enc: Encoded, batch: Batch, weights: LossWeights) -> torch.Tensor:
    return contrastive_loss(enc.images_global, enc.captions_global, enc.scale)


def hard_negative_term(enc: Encoded, batch: Batch, weights: LossWeights) -> torch.Tensor:
    originals = enc.texts["originals"]
    return hard_negative_loss(enc.images, enc.captions_global, enc.offset, originals, batch.hard_mask, enc.scale)


def _affirmative_rows(
    enc: Encoded, batch: Batch, weights: LossWeights, picks: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The affirmative text rows the step encodes, with their starting embeddings: the caption rows that are
    affirmative picks (``picks``) or every caption's original, and the flips where ``retain_flips`` holds them."""
    if picks:
        txt = enc.captions
        mask = batch.retain_mask.to(txt.device)
        held, anchors = txt[mask], batch.anchor_embeds.to(txt.device)[mask]
    else:
        held, anchors = enc.texts["originals"], batch.anchor_embeds
    if weights.retain_flips:
        valid = batch.flip_valid.to(held.device)
        held = torch.cat([held, enc.texts["flips"][valid]])
        anchors = torch.cat([anchors.to(held.device), batch.flip_anchors.to(held.device)[valid]])
    return held, anchors.to(held.device)


def retain_term(enc: Encoded, batch: Batch, weights: LossWeights) -> torch.Tensor:
    return retain_loss(*_affirmative_rows(enc, batch, weights, picks=weights.retain_on == "picks"))


def mcq_term(enc: Encoded, batch: Batch, weights: LossWeights) -> torch.Tensor:
    n, k = batch.mcq_valid.shape
    options = enc.texts["mcq_options"].view(n, k, -1)
    return mcq_loss(enc.images, enc.captions, options, batch.mcq_valid, enc.scale)


def exclusion_term(enc: Encoded, batch: Batch, weights: LossWeights) -> torch.Tensor:
    scale = enc.scale
    if weights.exclusion_scale:
        scale = torch.tensor(weights.exclusion_scale, device=enc.images.device)
    return exclusion_loss(enc.images, enc.captions, enc.distractors, batch.distractor_owner, scale)


def relations_loss(
    images: torch.Tensor,
    anchors: torch.Tensor,
    texts: torch.Tensor,
    scale: torch.Tensor,
    text_anchors: torch.Tensor | None = None,
) -> torch.Tensor:
    """KL(starting || now) of the softmax over ``texts`` of each image (image -> text) and of each text
    over the images (text -> image): the images keep how they rank the texts and are ranked by them, not
    where they are (``anchors``: the starting embeddings of ``images``; ``text_anchors``: of ``texts``, default
    ``texts`` themselves, fixed; all normalised). 0 for no texts."""
    if not len(texts):
        return images.sum() * 0.0
    start_texts = texts if text_anchors is None else text_anchors
    now, start = scale * images @ texts.T, scale * anchors @ start_texts.T
    kl = sum(
        F.kl_div(F.log_softmax(a, dim=1), F.log_softmax(b, dim=1), log_target=True, reduction="batchmean")
        for a, b in ((now, start), (now.T, start.T))
    )
    return kl / 2


def _held_images(enc: Encoded, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image the step encodes (the batch's, and the distractors and bare images where they are encoded)
    with its starting embedding."""
    held, anchors = [enc.images], [batch.image_anchors]
    for images, fixed in ((enc.distractors, batch.distractor_anchors), (enc.bare, batch.bare_anchors)):
        if fixed is not None:  # built with the images' own field, so they were encoded
            held.append(images)
            anchors.append(fixed)
    return torch.cat(held), torch.cat(anchors).to(enc.images.device)


def image_retain_term(enc: Encoded, batch: Batch, weights: LossWeights) -> torch.Tensor:
    """Every image the step encodes: the batch's, and the distractors and bare images where they are encoded."""
    return retain_loss(*_held_images(enc, batch))


def image_relations_term(enc: Encoded, batch: Batch, weights: LossWeights) -> torch.Tensor:
    """Every image the step encodes keeps its starting similarities to the batch's affirmative texts (each
    caption row's original, at the starting model's embedding), at the model's logit scale (no gradient)."""
    held, anchors = _held_images(enc, batch)
    texts = F.normalize(batch.anchor_embeds.to(held.device).float(), dim=-1)
    held, anchors, texts = enc.everywhere(held, F.normalize(anchors.float(), dim=-1), texts)
    return relations_loss(held, anchors, texts, enc.scale.detach())


def joint_relations_term(enc: Encoded, batch: Batch, weights: LossWeights) -> torch.Tensor:
    """Every image the step encodes keeps the starting towers' ranking of the batch's affirmative texts as the
    towers embed both now (the affirmative picks, and the flips where the retain term holds them)."""
    held, anchors = _held_images(enc, batch)
    texts, fixed = _affirmative_rows(enc, batch, weights, picks=True)
    anchors, fixed = F.normalize(anchors.float(), dim=-1), F.normalize(fixed.float(), dim=-1)
    held, anchors, texts, fixed = enc.everywhere(held, anchors, texts, fixed)
    return relations_loss(held, anchors, texts, enc.scale.detach(), fixed)


def negated_retain_term(enc: Encoded, batch: Batch, weights: LossWeights) -> torch.Tensor:
    txt = enc.captions
    mask = batch.hard_mask.to(txt.device)  # negated caption rows with an original
    return retain_loss(txt[mask], batch.anchor_embeds.to(txt.device)[mask])


def square_term(enc: Encoded, batch: Batch, weights: LossWeights) -> torch.Tensor:
    scale = enc.scale
    if weights.square_scale:
        scale = torch.tensor(weights.square_scale, device=enc.images.device)
    flips, owner = enc.texts["flips"], batch.distractor_owner.to(enc.images.device)
    valid = batch.flip_valid.to(enc.images.device)
    bare_owner = batch.bare_owner.to(enc.images.device) if batch.bare_owner is not None else None
    sides = weights.square_sides
    return square_loss(
        enc.images, enc.captions, flips, enc.distractors, owner, valid, scale, sides, enc.bare, bare_owner
    )


@dataclass(frozen=True)
class LossTerm:
    """A loss term: its function, the text rows and batch fields it reads, and what the data must hold for it."""

    fn: Callable[[Encoded, Batch, LossWeights], torch.Tensor]
    rows: tuple[str, ...] = ("captions",)
    fields: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()  # ``ImageTextData.available()`` names the data must hold
    #: rows and fields that depend on the weights (the retain term's ``retain_on``); overrides rows/fields
    needs_of: Callable[[LossWeights], tuple[tuple[str, ...], tuple[str, ...]]] | None = None
    #: ranks over every process's rows (``Encoded.everywhere``) with the logit scale fixed, so its gradient is
    #: scaled by the number of processes like the contrastive term's (DDP averages it)
    global_batch: bool = False

    def needs(self, weights: LossWeights) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return self.needs_of(weights) if self.needs_of is not None else (self.rows, self.fields)


def _affirmative_needs(weights: LossWeights, picks: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What :func:`_affirmative_rows` reads."""
    flips = (("flips",), ("flip_valid", "flip_anchors")) if weights.retain_flips else ((), ())
    if picks:
        return ("captions", *flips[0]), ("anchor_embeds", "retain_mask", *flips[1])
    return ("captions", "originals", *flips[0]), ("anchor_embeds", *flips[1])


def _retain_needs(weights: LossWeights) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return _affirmative_needs(weights, picks=weights.retain_on == "picks")


def _joint_relations_needs(weights: LossWeights) -> tuple[tuple[str, ...], tuple[str, ...]]:
    rows, fields = _affirmative_needs(weights, picks=True)
    return rows, ("image_anchors", *fields)


def _square_needs(weights: LossWeights) -> tuple[tuple[str, ...], tuple[str, ...]]:
    bare = ("bare_images",) if "o" in weights.square_sides else ()
    return ("captions", "flips"), ("distractors", "flip_valid", *bare)


#: every loss term, in the order the weighted sum adds them
TERMS: dict[str, LossTerm] = {
    "contrastive": LossTerm(contrastive_term),
    "hard_negative": LossTerm(hard_negative_term, ("captions", "originals"), ("hard_mask",), ("originals",)),
    "retain": LossTerm(retain_term, requires=("anchors",), needs_of=_retain_needs),
    "negated_retain": LossTerm(negated_retain_term, fields=("anchor_embeds", "hard_mask"), requires=("anchors",)),
    "image_retain": LossTerm(image_retain_term, fields=("image_anchors",), requires=("image_anchors",)),
    "image_relations": LossTerm(
        image_relations_term,
        fields=("image_anchors", "anchor_embeds"),
        requires=("image_anchors", "anchors"),
        global_batch=True,
    ),
    "joint_relations": LossTerm(
        joint_relations_term,
        requires=("image_anchors", "anchors"),
        needs_of=_joint_relations_needs,
        global_batch=True,
    ),
    "mcq": LossTerm(mcq_term, ("captions", "mcq_options"), ("mcq_valid",), ("mcq",)),
    "exclusion": LossTerm(exclusion_term, fields=("distractors",), requires=("distractors",)),
    "square": LossTerm(square_term, requires=("distractors", "mcq"), needs_of=_square_needs),
}


def _weighted(name: str, weights: LossWeights) -> bool:
    return name == "contrastive" or getattr(weights, name) > 0  # InfoNCE is logged even at weight 0


def batch_spec(weights: LossWeights, available: frozenset[str] | set[str]) -> BatchSpec:
    """What batches must carry for the weighted terms that the data can feed (``ImageTextData.available()``)."""
    rows, fields = set(), set()
    for name, term in TERMS.items():
        if _weighted(name, weights) and set(term.requires) <= set(available):
            term_rows, term_fields = term.needs(weights)
            rows.update(term_rows)
            fields.update(term_fields)
    return BatchSpec(tuple(rows), frozenset(fields))


_FIELD_ATTRS = {
    "distractors": "distractor_owner",
    "bare_images": "bare_owner",
}  # spec field -> the Batch attribute that shows it is there


def active_terms(batch: Batch, weights: LossWeights) -> list[str]:
    """The weighted terms whose rows and fields this batch holds (MCQ needs at least one option row)."""
    active = []
    for name, term in TERMS.items():
        rows, fields = term.needs(weights)
        has_rows = all(k in batch.rows and batch.rows[k].stop > batch.rows[k].start for k in rows)
        has_fields = all(getattr(batch, _FIELD_ATTRS.get(f, f)) is not None for f in fields)
        if _weighted(name, weights) and has_rows and has_fields:
            active.append(name)
    return active


def encode(model, batch: Batch, terms: list[str], weights: LossWeights, accelerator=None) -> Encoded:
    """ONE forward call through ``model`` (so DDP sees it) over the images, distractors and text rows ``terms`` read."""
    needs = [TERMS[name].needs(weights) for name in terms]
    kinds = [k for k in batch.rows if k == "captions" or any(k in rows for rows, _ in needs)]
    index = torch.cat([torch.arange(batch.rows[k].start, batch.rows[k].stop) for k in kinds])
    index = index.to(batch.input_ids.device)
    images = batch.images
    if any("distractors" in fields for _, fields in needs):
        images = torch.cat([images, batch.distractor_images])
    n_bare = 0
    if any("bare_images" in fields for _, fields in needs):
        images, n_bare = torch.cat([images, batch.bare_images]), len(batch.bare_images)
    # each distinct text row is encoded once (a pick without a flip repeats its caption in the flip rows, the MCQ
    # rows repeat the flip and pad with the caption); the embeddings are gathered back, gradients summed
    rows = torch.cat([batch.input_ids[index], batch.attention_mask[index]], dim=1)
    distinct, inverse = torch.unique(rows, dim=0, return_inverse=True)
    width = batch.input_ids.shape[1]
    out = model(input_ids=distinct[:, :width], attention_mask=distinct[:, width:], **{batch.image_kind: images})
    img_all, txt_all = out.image_embeds.float(), out.text_embeds.float()[inverse]
    texts, start = {}, 0
    for k in kinds:
        size = batch.rows[k].stop - batch.rows[k].start
        texts[k] = txt_all[start : start + size]
        start += size
    n_img = len(batch.images)
    img = img_all[:n_img]
    base = model.module if hasattr(model, "module") else model
    img_g, offset = gather_with_local_grad(accelerator, img)
    txt_g, _ = gather_with_local_grad(accelerator, texts["captions"])
    others, bare = img_all[n_img : len(img_all) - n_bare], img_all[len(img_all) - n_bare :]
    scale = base.logit_scale.exp().float()
    return Encoded(img, others, texts, scale, img_g, txt_g, offset, bare, accelerator)


def compute_loss(model, batch: Batch, weights: LossWeights, accelerator=None) -> tuple[torch.Tensor, dict]:
    """The weighted loss of one batch: ``(loss to back-propagate, {term: value for logging})``.

    The contrastive term is computed over the global batch with only this
    process's features carrying gradient; DDP then averages over processes,
    so it is scaled by the number of processes to give the exact gradient of
    the global loss.
    """
    terms = active_terms(batch, weights)
    enc = encode(model, batch, terms, weights, accelerator)
    parts = {name: TERMS[name].fn(enc, batch, weights) for name in terms}
    loss = sum(getattr(weights, name) * value for name, value in parts.items())
    backward = loss
    world = accelerator.num_processes if accelerator is not None else 1
    if world > 1:
        # DDP averages gradients over processes: the features' share of the global loss is scaled by the number
        # of processes; logit_scale sees every logit on every process already, so its share is not
        features_only = contrastive_loss(enc.images_global, enc.captions_global, enc.scale.detach())
        scale_only = contrastive_loss(enc.images_global.detach(), enc.captions_global.detach(), enc.scale)
        backward = loss + weights.contrastive * (world * features_only + scale_only - parts["contrastive"])
        # the relations terms rank the global batch with the scale fixed: all their gradient is the features'
        backward = backward + (world - 1) * sum(getattr(weights, n) * parts[n] for n in terms if TERMS[n].global_batch)
    return backward, {"loss": loss.detach(), **{name: value.detach() for name, value in parts.items()}}
