"""Visual verifiers that need no generative model: instance annotations and CLIP zero-shot scores."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ..vocabulary import Target, article, is_absent
from .base import Job

logger = logging.getLogger(__name__)


class AnnotationVerifier:
    """Absence checked against the image's instance annotations: exact for COCO categories and the world."""

    name = "annotations"

    def verify(self, jobs: Sequence[Job]) -> list[bool | None]:
        return [
            None if job.objects is None or job.target is None else is_absent(job.target, job.objects) for job in jobs
        ]


def _prompt(target: Target) -> str:
    phrase = target.phrase if target.kind == "object" else f"{target.value} {target.category}"
    return f"a photo of {article(phrase)} {phrase}."


class ClipVerifier:
    """Rejects when a CLIP model finds the negated thing likely present.

    The object's prompt is scored against prompts for every other category of
    the vocabulary; a softmax probability above ``threshold`` counts as
    "present". It only rejects (never confirms), as CLIP itself misreads
    negation but is decent at spotting objects.
    """

    name = "clip"

    def __init__(
        self, model_name_or_path: str, categories: Sequence[str], threshold: float = 0.5, batch_size: int = 32
    ):
        from ...modeling import build_model, load_processor

        if not 0 < threshold <= 1:
            raise ValueError(f"clip threshold must be in (0, 1], got {threshold}")
        self.model, self.processor = build_model(model_name_or_path), load_processor(model_name_or_path)
        self.model.eval()
        self.categories, self.threshold, self.batch_size = list(categories), threshold, batch_size

    def verify(self, jobs: Sequence[Job]) -> list[bool | None]:
        import torch
        from PIL import Image

        out: list[bool | None] = []
        for job in jobs:
            if job.target is None:
                out.append(None)
                continue
            try:
                with Image.open(job.image_path) as im:
                    image = im.convert("RGB")
            except OSError as err:
                logger.warning("clip verifier: cannot read %s (%s)", job.image_path, err)
                out.append(None)
                continue
            texts = [_prompt(job.target)] + [
                f"a photo of {article(c)} {c}." for c in self.categories if c != job.target.category
            ]
            with torch.no_grad():
                prob = float(self.model.score([image], texts, self.processor, self.batch_size)[0, 0])
            out.append(False if prob > self.threshold else None)
        return out
