"""The exact colour detector of scene-world images, validated on the world's real images."""

from __future__ import annotations

import os

import numpy as np

from .world_model import load_world_pairs


def detect_colors(image: np.ndarray, tolerance: float = 45.0, min_fraction: float = 3 / 1024) -> dict[str, bool]:
    """Which world colours an image shows: a colour is present when at least ``min_fraction`` of the pixels
    are within ``tolerance`` (RGB distance) of its rendered value and nearer to it than to any other colour.

    The world's backgrounds are muted (never as saturated as an object colour), so a blank or grey image
    shows no colour.
    """
    from ...world.render import COLOR_RGB

    pixels = np.asarray(image, dtype=np.float32).reshape(-1, 3)
    palette = np.asarray(list(COLOR_RGB.values()), dtype=np.float32)
    dist = np.linalg.norm(pixels[:, None, :] - palette[None, :, :], axis=2)
    nearest, best = dist.argmin(axis=1), dist.min(axis=1)
    counts = np.bincount(nearest[best <= tolerance], minlength=len(palette))
    need = max(1, round(min_fraction * len(pixels)))
    return {name: bool(counts[i] >= need) for i, name in enumerate(COLOR_RGB)}


def validate_detector(world_dir: str | os.PathLike, split: str = "val", resolution: int = 32, n: int = 0) -> dict:
    """Accuracy of :func:`detect_colors` on the split's real (rendered, box-resized) images."""
    from ...benchmarks.probes import load_world_split

    world = load_world_split(world_dir, split)[: n or None]
    images, _ = load_world_pairs(world_dir, split, resolution, n)
    decisions = exact = 0
    wrong = 0
    for img, record in zip(images.permute(0, 2, 3, 1).numpy(), world):
        truth = {o["color"] for o in record.objects}
        found = detect_colors(img)
        errors = sum(found[c] != (c in truth) for c in found)
        wrong += errors
        decisions += len(found)
        exact += errors == 0
    return {
        "n_images": len(world),
        "colour_decision_accuracy": round(1 - wrong / decisions, 4),
        "image_exact_accuracy": round(exact / len(world), 4),
        "n_decisions": decisions,
    }
