"""Scoring a segmenter: IoU and pointing per expression, the text-blind reference, mIoU / P@0.5 / pointing summaries."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ...evaluation.stats import wilson_interval
from .data import MaskReader, ReferringSample
from .features import FeatureCache

#: what is scored per expression and cached per text tower (``ious/<label>.<kind>.<part>.npy``)
SCORES = ("iou", "pointing", "rivals")


@torch.no_grad()
def score_segmenter(
    seg,
    cache: FeatureCache,
    samples: Sequence[ReferringSample],
    masks: MaskReader,
    tag: str,
    batch_size: int = 64,
    show_progress: bool = True,
) -> dict[str, np.ndarray]:
    """Each expression's IoU and whether the decoder points at its target rather than a same-category rival.

    ``iou``: the predicted mask (sigmoid > 0.5, resized to the image) against
    the target's. ``pointing``: 1 when the mean logit over the target beats the
    mean logit over every other object of its category in the image (RefCOCOg's
    distractors by design; for a negated expression, the object the negation
    excludes), else 0 (a tie is wrong); NaN without a rival. ``rivals``: how
    many, so chance is the mean of ``1 / (1 + rivals)``. Pointing reads the
    ranking even where every logit is below the threshold.
    """
    seg.eval()
    ious = np.zeros(len(samples), dtype=np.float64)
    pointing = np.full(len(samples), np.nan)
    rivals = np.zeros(len(samples), dtype=np.int64)
    for start in tqdm(
        range(0, len(samples), batch_size), desc=f"segmenting ({tag})", unit="batch", disable=not show_progress
    ):
        batch = samples[start : start + batch_size]
        logits = seg.decoder(
            cache.activations([s.image_path for s in batch]), cache.text_features([s.sentence for s in batch], tag)
        ).logits
        for k, s in enumerate(batch):
            target = torch.from_numpy(masks.mask(s.ann_id))
            scores = torch.nn.functional.interpolate(
                logits[k][None, None].float(), size=tuple(target.shape), mode="bilinear", align_corners=False
            )[0, 0].cpu()
            pred = scores > 0
            union = (pred | target).sum().item()
            ious[start + k] = (pred & target).sum().item() / union if union else 1.0
            others = [torch.from_numpy(masks.mask(a)) for a in masks.rivals(s.ann_id)]
            others = [m for m in others if m.any()]
            rivals[start + k] = len(others)
            if others and target.any():
                mine = scores[target].mean().item()
                pointing[start + k] = float(all(mine > scores[m].mean().item() for m in others))
    return {"iou": ious, "pointing": pointing, "rivals": rivals}


def evaluate_segmenter(*args, **kwargs) -> np.ndarray:
    """IoU of each expression's predicted mask with its target mask: :func:`score_segmenter`'s ``iou`` (same arguments)."""
    return score_segmenter(*args, **kwargs)["iou"]


def text_blind_ious(samples: Sequence[ReferringSample], masks: MaskReader) -> np.ndarray:
    """IoU of "mark every object of the image" with each expression's target: what a decoder blind to text scores.

    The reference beside every mIoU (the segmentation analogue of chance): a
    decoder that ignores its text can do no better than this on average.
    """
    ious = np.zeros(len(samples), dtype=np.float64)
    union_area: dict[int, int] = {}
    for k, s in enumerate(samples):
        if s.image_id not in union_area:
            union = None
            for ann_id in masks.coco.getAnnIds(imgIds=[s.image_id]):
                m = masks.mask(ann_id)
                union = m.copy() if union is None else union | m
            union_area[s.image_id] = int(union.sum()) if union is not None else 0
        target = int(masks.mask(s.ann_id).sum())
        ious[k] = target / union_area[s.image_id] if union_area[s.image_id] else 0.0
    return ious


def _mean_interval(values: np.ndarray, resamples: int, seed: int) -> list[float]:
    from scipy import stats

    if len(values) < 2:
        return [float("nan"), float("nan")]
    if np.ptp(values) == 0:
        return [float(values[0]), float(values[0])]
    if resamples <= 0:
        lo, hi = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
        return [float(lo), float(hi)]
    res = stats.bootstrap(
        (values,), np.mean, n_resamples=resamples, method="percentile", rng=np.random.default_rng(seed)
    )
    return [float(res.confidence_interval.low), float(res.confidence_interval.high)]


def summarize(
    ious: np.ndarray,
    resamples: int = 1000,
    seed: int = 0,
    pointing: np.ndarray | None = None,
    rivals: np.ndarray | None = None,
) -> dict:
    """mIoU with its 95% bootstrap interval, precision at IoU 0.5 and (given) pointing accuracy, Wilson intervals.

    ``pointing`` / ``rivals`` are :func:`score_segmenter`'s; items without a
    rival (NaN) are left out of the pointing accuracy, whose chance is the mean
    of ``1 / (1 + rivals)`` over the items it counts.
    """
    ious = np.asarray(ious, dtype=np.float64)
    hits = int((ious >= 0.5).sum())
    out = {
        "n": len(ious),
        "miou": float(ious.mean()) if len(ious) else float("nan"),
        "miou_ci95": _mean_interval(ious, resamples, seed),
        "precision@0.5": hits / len(ious) if len(ious) else float("nan"),
        "precision@0.5_ci95": wilson_interval(hits, len(ious)),
    }
    if pointing is not None:
        pointing = np.asarray(pointing, dtype=np.float64)
        counted = ~np.isnan(pointing)
        n, right = int(counted.sum()), int(pointing[counted].sum())
        chance = 1.0 / (1.0 + np.asarray(rivals)[counted]) if rivals is not None else np.full(n, np.nan)
        out["pointing"] = {
            "value": right / n if n else float("nan"),
            "ci95": wilson_interval(right, n),
            "n": n,
            "chance": float(chance.mean()) if n else float("nan"),
        }
    return out


def paired_delta(ious: np.ndarray, reference: np.ndarray, resamples: int = 1000, seed: int = 0) -> dict:
    """mIoU difference against the reference encoder on the same expressions, with a paired bootstrap interval."""
    diff = np.asarray(ious, dtype=np.float64) - np.asarray(reference, dtype=np.float64)
    return {"delta_miou": float(diff.mean()), "delta_miou_ci95": _mean_interval(diff, resamples, seed)}
