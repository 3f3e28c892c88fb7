"""Prompts and answer parsing shared by the model backends (transformers and OpenAI-compatible HTTP)."""

from __future__ import annotations

import json
import re

import numpy as np

from ..vocabulary import Target, Vocabulary, article
from .base import Job

SYSTEM = "You edit image captions. Reply with the requested text only, no explanation."


def propose_prompt(job: Job) -> str:
    # the paper's step (a): one object that fits the scene but is not in the caption
    return (
        f'Caption: "{job.caption}"\nName one object that is NOT mentioned in this caption but could plausibly '
        "appear in the same scene. Reply with the object's name only (one to three words)."
    )


def rewrite_prompt(job: Job) -> str:
    t = job.target
    if job.question:
        fact = f'the answer to the question "{job.question}" is no'
    elif t.kind == "attribute":
        fact = f"the {t.category} is not {t.value}"
    else:
        fact = f"there is no {t.phrase} in the image"
    return (
        f'Caption: "{job.caption}"\nRewrite the caption so that it also states that {fact}. Keep every word of '
        "the caption and add a negation (no, not, without, ...). Also write its flip: the same new sentence with "
        'the negation taken out, stating the opposite. Reply with JSON only: {"caption": "...", "flip": "..."}'
    )


def verify_question(target: Target) -> str:
    if target.kind == "attribute":
        return f"Is the {target.category} {target.value}? Answer yes or no."
    return f"Is there {article(target.phrase)} {target.phrase} in the image? Answer yes or no."


def parse_proposal(text: str, vocab: Vocabulary) -> Target | None:
    """An object name from a model's answer, or None when it is not a short noun phrase."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    line = re.sub(r"^(answer|object)\s*:\s*", "", line.strip(), flags=re.I).strip(" .\"'*`")
    line = re.sub(r"^(a|an|the|one)\s+", "", line, flags=re.I).lower()
    if not line or len(line.split()) > 3 or not re.fullmatch(r"[a-z][a-z ' -]*", line):
        return None
    found = vocab.mentions(line)
    if found:
        return Target("object", found[-1].category, found[-1].attributes)
    return Target("object", line) if not vocab.categories else None


def parse_rewrite(text: str) -> tuple[str | None, str | None]:
    """(caption, flip) from a model's rewrite answer: the JSON object asked for, else a plain caption (no flip)."""
    match = re.search(r"\{.*\}", text or "", re.S)
    if match:
        try:
            data = json.loads(match.group(0))
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("caption"), str):
            flip = data.get("flip")
            return data["caption"].strip(), (flip if isinstance(flip, str) else "") if "flip" in data else None
    return parse_caption(text), None


def parse_caption(text: str) -> str | None:
    """The caption in a model's answer: first non-empty line, outer quotes removed."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[0].strip("\"'` ") if lines else None


def parse_yes_no(text: str) -> bool | None:
    """The paper's rule, made strict: an answer containing "yes" means present (False = the negation fails);
    a clear "no" confirms absence (True); anything else cannot tell (None)."""
    words = re.findall(r"[a-z]+", text.lower())
    if "yes" in words:
        return False
    if words[:3] and "no" in words[:3]:
        return True
    return None


def random_target(job: Job, vocab: Vocabulary) -> Target | None:
    """The paper's "random" ablation: any category the caption does not mention, chosen without a model."""
    mentioned = {m.category for m in job.mentions}
    fresh = [c for c in vocab.categories if c not in mentioned]
    if not fresh:
        return None
    return Target("object", fresh[int(np.random.default_rng([job.seed, 1]).integers(len(fresh)))])


class GenerativeTextBackend:
    """propose/rewrite on top of one ``generate(prompts) -> [text or Exception]`` call; subclasses supply it."""

    name = "model"

    def generate(self, prompts: list[str]) -> list:  # pragma: no cover - interface
        raise NotImplementedError

    def propose(self, jobs, vocab: Vocabulary, proposer: str) -> None:
        if proposer == "random":
            for job in jobs:
                job.target = random_target(job, vocab)
                if job.target is None:
                    job.reject("nothing left to propose")
            return
        for job, out in zip(jobs, self.generate([propose_prompt(j) for j in jobs])):
            if isinstance(out, Exception):
                job.reject(f"{self.name}: {type(out).__name__}")
                continue
            job.target = parse_proposal(out, vocab)
            if job.target is None:
                job.reject(f"{self.name}: unusable proposal")

    def rewrite(self, jobs) -> None:
        for job, out in zip(jobs, self.generate([rewrite_prompt(j) for j in jobs])):
            if isinstance(out, Exception):
                job.reject(f"{self.name}: {type(out).__name__}")
                continue
            job.negated_caption, job.flip = parse_rewrite(out)
            job.form = f"{self.name}-rewrite"


class GenerativeVerifier:
    """Asks a vision-language model "Is there a X in the image?" through ``ask(jobs, questions)``."""

    name = "mllm"

    def ask(self, jobs, questions: list[str]) -> list:  # pragma: no cover - interface
        raise NotImplementedError

    def verify(self, jobs) -> list[bool | None]:
        answers = self.ask(jobs, [verify_question(j.target) for j in jobs])
        for job, answer in zip(jobs, answers):
            if isinstance(answer, Exception):
                job.reject(f"{self.name}: {type(answer).__name__}")
        return [None if isinstance(a, Exception) else parse_yes_no(a) for a in answers]
