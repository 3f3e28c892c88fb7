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
- ``retain``: 1 - cosine between the model's embedding of each caption's
  affirmative original and the starting model's (fixed anchors): learning
  negation must not move what plain captions mean (zero-shot, retrieval).
  With ``retain_on="picks"`` only the batch's own affirmative rows (the
  ``affirmative_ratio`` swaps) are held, which costs no extra text rows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossWeights:
    contrastive: float = 1.0
    hard_negative: float = 0.0
    mcq: float = 0.0
    exclusion: float = 0.0
    #: logit scale of the exclusion term; 0 = the model's own (trainable) logit scale
    exclusion_scale: float = 0.0
    retain: float = 0.0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value < 0:
                raise ValueError(f"loss weight {name} must be >= 0, got {value}")


def gather_with_local_grad(accelerator, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All processes' rows (this process's keep their gradient) and the offset of this process's rows."""
    if accelerator is None or accelerator.num_processes == 1:
        return x, 0
    chunks = list(accelerator.gather(x.detach().contiguous()).chunk(accelerator.num_processes))
    chunks[accelerator.process_index] = x
    return torch.cat(chunks), accelerator.process_index * x.shape[0]


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
    logits = scale * torch.cat([pos[:, None], others.masked_fill(~valid, float("-inf"))], dim=1)[rows]
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


def retain_loss(txt: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Mean ``1 - cos`` between normalised text embeddings and their fixed anchors (0 for no rows)."""
    if not len(txt):
        return txt.sum() * 0.0
    return (1 - (txt * F.normalize(anchors.to(txt.dtype), dim=-1)).sum(-1)).mean()


def compute_loss(model, batch: dict, weights: LossWeights, accelerator=None) -> tuple[torch.Tensor, dict]:
    """The weighted loss of one batch: ``(loss to back-propagate, {term: value for logging})``.

    One forward call through ``model`` (so DDP sees it) encodes the batch's
    images and distractors and all its texts. The contrastive term is computed
    over the global batch with only this process's features carrying
    gradient; DDP then averages over processes, so it is scaled by the number
    of processes to give the exact gradient of the global loss.
    """
    n = batch["n_texts"]
    on_picks = "retain_mask" in batch  # retain on the batch's own affirmative rows, no extra rows
    n_hard = n if ("hard_mask" in batch or ("anchor_embeds" in batch and not on_picks)) else 0
    retain = bool(weights.retain and "anchor_embeds" in batch)
    hard = bool(weights.hard_negative and "hard_mask" in batch)
    originals_used = hard or (retain and not on_picks)  # rows n..2n (the affirmative originals) feed a term
    k = batch["mcq_valid"].shape[1] if "mcq_valid" in batch else 0
    # encode only what a weighted term uses: rows [captions | hard negatives | MCQ options]
    keep = [torch.arange(n)]
    if originals_used:
        keep.append(torch.arange(n, 2 * n))
    if weights.mcq and k:
        keep.append(torch.arange(n + n_hard, n + n_hard + n * k))
    rows = torch.cat(keep).to(batch["input_ids"].device)
    kind = "image_embeds" if "image_embeds" in batch else "pixel_values"  # cached features of a frozen vision tower
    images = batch[kind]
    n_img = len(images)
    if weights.exclusion and f"distractor_{kind}" in batch:
        images = torch.cat([images, batch[f"distractor_{kind}"]])
    out = model(input_ids=batch["input_ids"][rows], attention_mask=batch["attention_mask"][rows], **{kind: images})
    img_all, txt_all = out.image_embeds.float(), out.text_embeds.float()
    img, txt = img_all[:n_img], txt_all[:n]
    base = model.module if hasattr(model, "module") else model
    scale = base.logit_scale.exp().float()
    img_g, offset = gather_with_local_grad(accelerator, img)
    txt_g, _ = gather_with_local_grad(accelerator, txt)
    world = accelerator.num_processes if accelerator is not None else 1
    parts = {"contrastive": contrastive_loss(img_g, txt_g, scale)}
    cursor = n
    if retain and on_picks:
        mask = batch["retain_mask"].to(txt.device)
        parts["retain"] = retain_loss(txt[mask], batch["anchor_embeds"].to(txt.device)[mask])
    if originals_used:
        originals = txt_all[cursor : cursor + n]
        if hard:
            parts["hard_negative"] = hard_negative_loss(img, txt_g, offset, originals, batch["hard_mask"], scale)
        if retain and not on_picks:
            parts["retain"] = retain_loss(originals, batch["anchor_embeds"])
        cursor += n
    if weights.mcq and k:
        parts["mcq"] = mcq_loss(img, txt, txt_all[cursor : cursor + n * k].view(n, k, -1), batch["mcq_valid"], scale)
    if weights.exclusion and "distractor_owner" in batch:
        ex_scale = scale if not weights.exclusion_scale else torch.tensor(weights.exclusion_scale, device=img.device)
        parts["exclusion"] = exclusion_loss(img, txt, img_all[n_img:], batch["distractor_owner"], ex_scale)
    loss = sum(getattr(weights, name) * value for name, value in parts.items())
    backward = loss
    if world > 1:
        # DDP averages gradients over processes: the features' share of the global loss is scaled by the number
        # of processes; logit_scale sees every logit on every process already, so its share is not
        features_only = contrastive_loss(img_g, txt_g, scale.detach())
        scale_only = contrastive_loss(img_g.detach(), txt_g.detach(), scale)
        backward = loss + weights.contrastive * (world * features_only + scale_only - parts["contrastive"])
    return backward, {"loss": loss.detach(), **{name: value.detach() for name, value in parts.items()}}
