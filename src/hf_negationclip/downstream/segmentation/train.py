"""Training the CLIPSeg decoder only: CLIP frozen, BCE + Dice, text and visual prompts mixed as CLIPSeg trains."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .data import MaskReader, ReferringSample
from .features import FeatureCache
from .model import freeze_clip


def _target_masks(masks: MaskReader, samples: Sequence[ReferringSample], size: tuple[int, int]) -> torch.Tensor:
    """Masks resized to the decoder's output (area average: soft labels at the edges)."""
    out = []
    for s in samples:
        m = torch.from_numpy(masks.mask(s.ann_id)).float()[None, None]
        out.append(torch.nn.functional.interpolate(m, size=size, mode="area")[0, 0])
    return torch.stack(out)


def train_decoder(
    seg,
    cache: FeatureCache,
    samples: Sequence[ReferringSample],
    masks: MaskReader,
    steps: int = 2000,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    tag: str = "trained-with",
    show_progress: bool = True,
    log_every: int = 50,
    dice_weight: float = 1.0,
    visual_prompts: float = 0.0,
    text_noise: float = 0.0,
) -> list[dict]:
    """Train ``seg.decoder`` only (CLIP frozen): CLIPSeg's BCE + ``dice_weight`` x soft Dice; AdamW, cosine.

    The Dice term keeps small targets from collapsing into "all background",
    the BCE optimum when an object covers a few per cent of the image.
    ``visual_prompts`` is the share of samples whose condition is, as in
    CLIPSeg's training, a random interpolation between the expression's text
    features and the image features of the target's :func:`visual_prompt`
    (rescaled to the text's norm, so a plain CLIPSeg forward on text stays in
    distribution): the decoder learns to read CLIP's joint space rather than
    one text tower's quirks, which is what a swapped-in text tower relies on.
    ``text_noise`` adds Gaussian noise to the text features of each batch,
    ``text_noise`` times their mean per-dimension spread across the batch: the
    decoder learns to read the neighbourhood of a text embedding rather than
    its exact point, so another tower's features (which every fine-tune moves
    a little) still land where it reads them.
    Returns the training log (mean loss every ``log_every`` steps).
    """
    if not 0.0 <= visual_prompts <= 1.0:
        raise ValueError(f"visual_prompts is a share in [0, 1], got {visual_prompts}")
    if text_noise < 0:
        raise ValueError(f"text_noise must be >= 0, got {text_noise}")
    if not samples:
        raise ValueError("no training samples")
    freeze_clip(seg)
    params = [p for p in seg.decoder.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, steps // 20)) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    rng = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    log, running = [], []
    seg.decoder.train()
    bar = tqdm(range(steps), desc="training the CLIPSeg decoder", unit="step", disable=not show_progress)
    for step in bar:
        if len(order) < batch_size:
            more = list(range(len(samples)))
            rng.shuffle(more)
            order += more
        batch = [samples[i] for i in order[:batch_size]]
        del order[:batch_size]
        acts = cache.activations([s.image_path for s in batch])
        cond = cache.text_features([s.sentence for s in batch], tag)
        if text_noise:
            spread = cond.std(0, keepdim=True).mean()
            cond = cond + text_noise * spread * torch.randn(cond.shape, generator=generator).to(cond)
        if visual_prompts:
            mix = torch.rand(len(batch), 1, generator=generator) * (
                torch.rand(len(batch), 1, generator=generator) < visual_prompts
            )
            image = cache.prompt_features(batch, masks)
            image = image / image.norm(dim=-1, keepdim=True).clamp_min(1e-6) * cond.norm(dim=-1, keepdim=True)
            mix = mix.to(cond.device, cond.dtype)
            cond = (1 - mix) * cond + mix * image
        logits = seg.decoder(acts, cond).logits
        labels = _target_masks(masks, batch, tuple(logits.shape[-2:])).to(logits.device, logits.dtype)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
        if dice_weight:
            probs = logits.sigmoid().flatten(1)
            flat = labels.flatten(1)
            dice = 1 - (2 * (probs * flat).sum(1) + 1) / (probs.sum(1) + flat.sum(1) + 1)
            loss = loss + dice_weight * dice.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running.append(loss.item())
        if (step + 1) % log_every == 0 or step + 1 == steps:
            log.append({"step": step + 1, "loss": float(np.mean(running)), "lr": sched.get_last_lr()[0]})
            bar.set_postfix(loss=f"{log[-1]['loss']:.4f}")
            running = []
    seg.decoder.eval()
    return log
