"""Scoring CLIP models: zero-shot classification, retrieval and controlled choice probes.

Conventions: cosine similarity of L2-normalised embeddings; a tie counts as
wrong; every accuracy is reported next to its chance level.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from .. import world as scene_world
from ..benchmarks import (
    CaptionChoiceItem,
    ChoiceItem,
    build_app_compare_probe,
    build_caption_probes,
    build_negation_probe,
    build_shape_probe,
    load_world_split,
    single_object_images,
)
from ..corpus import load_coco_captions
from ..modeling.encode import EmbeddingCache, encode_images, encode_texts
from .stats import wilson_interval

logger = logging.getLogger(__name__)


def embed_images(
    model,
    processor,
    images: Sequence[Image.Image | str | os.PathLike],
    batch_size: int = 64,
    show_progress: bool = False,
) -> torch.Tensor:
    """L2-normalised image embeddings (N x D); paths are opened lazily, batch by batch (:func:`.encode_images`)."""
    return encode_images(model, processor, images, batch_size, show_progress=show_progress)


def embed_texts(model, processor, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """L2-normalised text embeddings (N x D), batched by length (:func:`.encode_texts`)."""
    return encode_texts(model, processor, texts, batch_size)


def strict_argmax(scores: torch.Tensor) -> torch.Tensor:
    """Row-wise argmax that returns -1 where the maximum is shared (a tie is never right)."""
    best = scores.max(dim=-1, keepdim=True).values
    winners = scores == best
    idx = scores.argmax(dim=-1)
    return torch.where(winners.sum(-1) == 1, idx, torch.full_like(idx, -1))


def choice_scores(queries: torch.Tensor, candidates: Sequence[torch.Tensor]) -> torch.Tensor:
    """Scores [n, max_k] of each query against its own candidates ([k_i, D] each); missing slots are -inf."""
    k = max(len(c) for c in candidates)
    cand = torch.zeros(len(candidates), k, queries.shape[-1])
    mask = torch.ones(len(candidates), k, dtype=torch.bool)
    for i, c in enumerate(candidates):
        cand[i, : len(c)] = c
        mask[i, : len(c)] = False
    return torch.einsum("nkd,nd->nk", cand, queries).masked_fill(mask, float("-inf"))


@dataclass(frozen=True)
class Accuracy:
    """An accuracy with its chance level, item count and 95% Wilson interval (``ci95``)."""

    value: float
    chance: float
    n: int

    @property
    def ci95(self) -> list[float]:
        return wilson_interval(round(self.value * self.n), self.n)

    def to_dict(self) -> dict:
        return {
            "value": round(self.value, 4),
            "chance": round(self.chance, 4),
            "n": self.n,
            "ci95": [round(x, 4) for x in self.ci95],
        }


def zero_shot_accuracy(image_emb: torch.Tensor, labels: Sequence[int], class_emb: torch.Tensor) -> Accuracy:
    pred = strict_argmax(image_emb @ class_emb.T)
    correct = (pred == torch.as_tensor(labels)).float()
    return Accuracy(correct.mean().item(), 1.0 / class_emb.shape[0], len(labels))


def image_to_text_recall_at_1(image_emb: torch.Tensor, text_emb: torch.Tensor, text_image: Sequence[int]) -> Accuracy:
    """R@1 image->text: the top caption belongs to the image (``text_image[j]`` = image row of caption j)."""
    pred = strict_argmax(image_emb @ text_emb.T)
    owner = torch.as_tensor(text_image)
    hit = (pred >= 0) & (owner[pred.clamp(min=0)] == torch.arange(image_emb.shape[0]))
    captions_per_image = len(text_image) / image_emb.shape[0]
    return Accuracy(hit.float().mean().item(), captions_per_image / len(text_image), image_emb.shape[0])


def choice_accuracy(model, processor, items: Sequence[ChoiceItem]) -> Accuracy:
    """Accuracy of picking the right image for each text among its candidates."""
    if not items:
        raise ValueError("no items to score")
    sizes = [len(it.images) for it in items]
    img = embed_images(model, processor, [im for it in items for im in it.images]).split(sizes)
    txt = embed_texts(model, processor, [it.text for it in items])
    pred = strict_argmax(choice_scores(txt, img))
    correct = (pred == torch.tensor([it.answer for it in items])).float()
    return Accuracy(correct.mean().item(), sum(1.0 / k for k in sizes) / len(items), len(items))


def caption_choice_accuracy(model, processor, items: Sequence[CaptionChoiceItem]) -> Accuracy:
    """Accuracy of picking the true caption for each image among its candidate captions."""
    if not items:
        raise ValueError("no items to score")
    k = len(items[0].texts)
    if any(len(it.texts) != k for it in items):
        raise ValueError("caption choice items must all have the same number of candidates")
    # a family draws its images from one split with replacement: embed each file once
    keys = [it.image if isinstance(it.image, (str, os.PathLike)) else id(it.image) for it in items]
    row = {key: i for i, key in enumerate(dict.fromkeys(keys))}
    unique = {key: it.image for key, it in zip(keys, items)}
    img = embed_images(model, processor, [unique[key] for key in row])[[row[key] for key in keys]]
    txt = embed_texts(model, processor, [t for it in items for t in it.texts]).view(len(items), k, -1)
    pred = strict_argmax(torch.einsum("nkd,nd->nk", txt, img))
    correct = (pred == torch.tensor([it.answer for it in items])).float()
    return Accuracy(correct.mean().item(), 1.0 / k, len(items))


class WorldEvaluator:
    """Evaluates a CLIP model on a split of the scene world.

    Metrics: zero-shot shape and colour accuracy (single-object images,
    prompt "a photo of a <class>."), image->text R@1 over the split's COCO
    captions, the controlled negation probe with its affirmative twin, and the
    caption-side families (one image, captions that differ only in the negation):
    caption flip, scope swap, present-object negation and the app's Compare example.
    """

    def __init__(
        self,
        world_dir: str | os.PathLike,
        split: str = "val",
        probe_items: int = 200,
        seed: int = 0,
        max_retrieval_images: int = 500,
    ):
        self.world_dir, self.split = Path(world_dir), split
        self.images = load_world_split(world_dir, split)
        self.singles = single_object_images(self.images)
        if not self.singles:  # a small world: the other metrics still say something
            logger.warning(
                "%s split %r has no single-object images: zero-shot shape and colour evaluation skipped",
                world_dir,
                split,
            )
        probe = build_negation_probe(self.images, probe_items, seed)
        self.negated = [it for it in probe if it.kind == "negated"]
        self.affirmative = [it for it in probe if it.kind == "affirmative"]
        self.shape_probe = build_shape_probe(self.images, probe_items, seed)
        self.caption_probes = build_caption_probes(self.images, probe_items, seed)
        self.caption_probes["app_compare"] = build_app_compare_probe(range(probe_items), seed)
        captions = load_coco_captions(
            self.world_dir / "annotations" / f"captions_{split}.json", self.world_dir / "images" / split
        )
        keep = sorted({c.image_id for c in captions})[:max_retrieval_images]
        row = {image_id: i for i, image_id in enumerate(keep)}
        self.retrieval_paths = [None] * len(keep)
        self.retrieval_texts, self.retrieval_owner = [], []
        for c in captions:
            if c.image_id in row:
                self.retrieval_paths[row[c.image_id]] = c.image_path
                self.retrieval_texts.append(c.caption)
                self.retrieval_owner.append(row[c.image_id])

    @property
    def skipped_zero_shot(self) -> str:
        return f"split {self.split!r} has no single-object images"

    def __call__(self, model, processor) -> dict:
        """``{metric: {"value", "chance", "n", "ci95"}}``; a metric the split cannot give is ``{"skipped": why}``."""
        metrics = {}
        # one cache per call: an image that is both a single-object image and a retrieval image is encoded once
        cache = EmbeddingCache(model, processor, batch_size=64, text_batch_size=256)
        singles = [im.path for im in self.singles]
        cache.add_images(singles)
        for name, classes in (("shape", scene_world.SHAPES), ("color", scene_world.COLORS)):
            if not singles:
                metrics[f"zero_shot_{name}_accuracy"] = {"skipped": self.skipped_zero_shot}
                continue
            prompts = [f"a photo of a {c}." for c in classes]
            cache.add_texts(prompts)
            labels = [classes.index(im.objects[0][name]) for im in self.singles]
            accuracy = zero_shot_accuracy(cache.images(singles), labels, cache.texts(prompts))
            metrics[f"zero_shot_{name}_accuracy"] = accuracy.to_dict()
        cache.add_images(self.retrieval_paths)
        cache.add_texts(self.retrieval_texts)
        img, txt = cache.images(self.retrieval_paths), cache.texts(self.retrieval_texts)
        metrics["image_to_text_r@1"] = image_to_text_recall_at_1(img, txt, self.retrieval_owner).to_dict()
        metrics["negation_probe_accuracy"] = choice_accuracy(model, processor, self.negated).to_dict()
        metrics["affirmative_probe_accuracy"] = choice_accuracy(model, processor, self.affirmative).to_dict()
        metrics["shape_probe_accuracy"] = choice_accuracy(model, processor, self.shape_probe).to_dict()
        for family, items in self.caption_probes.items():
            metrics[f"{family}_accuracy"] = caption_choice_accuracy(model, processor, items).to_dict()
        return metrics


def format_metrics(metrics: dict) -> str:
    """One line per metric: value, chance and count (or why it was skipped)."""
    lines = []
    for name, m in metrics.items():
        if isinstance(m, dict) and "value" in m:
            lines.append(f"  {name:<28} {m['value']:.3f}   (chance {m['chance']:.3f}, n={m['n']})")
        elif isinstance(m, dict) and "skipped" in m:
            lines.append(f"  {name:<28} skipped ({m['skipped']})")
    return "\n".join(lines)
