"""The two small interfaces every backend implements, and the job record that flows through them.

A *text backend* proposes what to negate (pipeline 1) and rewrites a caption
so it states the negation; a *verifier* says whether the negated thing is
really absent from the image. Both take a batch of :class:`Job` objects and
fill in fields, so an LLM backend can batch its calls; a job that fails a
stage gets ``reason`` set and goes no further.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..vocabulary import Mention, Target, Vocabulary

PIPELINES: tuple[str, ...] = ("absent-object", "vqa-no")


@dataclass
class Job:
    """One (image, caption, pipeline) item on its way to an accepted or rejected record."""

    image_id: int
    caption_id: int
    caption: str
    image_path: Path
    pipeline: str
    seed: int
    objects: list[dict] | None = None
    mentions: list[Mention] = field(default_factory=list)
    question: str | None = None  # pipeline 2: the VQA question answered "no"
    target: Target | None = None
    negated_caption: str | None = None
    form: str | None = None
    flip: str | None = None  # a model backend's affirmative flip, written in the same call (checked later)
    reason: str | None = None  # set when the job is rejected
    distractor_objects: list[dict] | None = None  # the edited scene of a rendered minimal pair
    positive_objects: list[dict] | None = None  # an added pair's positive scene (the image plus one object)

    @property
    def key(self) -> tuple[int, int, str]:
        return (self.image_id, self.caption_id, self.pipeline)

    def reject(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason


class TextBackend(Protocol):
    name: str

    def propose(self, jobs: Sequence[Job], vocab: Vocabulary, proposer: str) -> None:
        """Set ``job.target`` (something the caption does not mention) or reject the job."""

    def rewrite(self, jobs: Sequence[Job]) -> None:
        """Set ``job.negated_caption`` and ``job.form`` or reject the job."""


class Verifier(Protocol):
    name: str

    def verify(self, jobs: Sequence[Job]) -> list[bool | None]:
        """Per job: True = the negation holds in the image, False = it does not, None = cannot tell."""


class ChainVerifier:
    """Verifiers applied in order: any "present" verdict rejects; the name lists them ("annotations+clip")."""

    def __init__(self, verifiers: Sequence[Verifier]):
        self.verifiers = list(verifiers)
        self.name = "+".join(v.name for v in self.verifiers) or "none"

    def verify(self, jobs: Sequence[Job]) -> list[bool | None]:
        verdicts: list[bool | None] = [None] * len(jobs)
        for verifier in self.verifiers:
            todo = [i for i, v in enumerate(verdicts) if v is not False]
            if not todo:
                break
            for i, verdict in zip(todo, verifier.verify([jobs[i] for i in todo])):
                if verdict is False:
                    verdicts[i] = False
                    jobs[i].reject(f"{verifier.name}: present in image")
                elif verdict is True:
                    verdicts[i] = True
        return verdicts
