"""The two generation pipelines, run split by split into sharded JSONL and exported for the next stages.

Pipeline 1 (``absent-object``, the paper's): propose something the caption does
not mention, verify that the image lacks it, rewrite the caption to say so.
Pipeline 2 (``vqa-no``): a VQAv2 question answered "no" about the image is
merged into one of its captions ("Is the square red?" + no -> "a square that is
not red ..."). Every output passes :func:`validation.validate`; rejects are
counted by reason. Every random choice is seeded by the job's key, so a run that
is killed and restarted writes exactly what an uninterrupted run writes.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..modeling.encode import batched
from .backends import make_text_backend, make_verifier
from .backends.base import PIPELINES, Job
from .captions import has_negation, negation_cues, negation_position
from .distractors import RetrievalIndex, render_added_pair, render_distractor
from .embeddings import ImageEmbeddings
from .sources import SplitSource, discover_splits, load_split
from .store import ShardWriter, shard_path
from .twins import text_twins
from .validation import validate
from .vocabulary import Target, Vocabulary

logger = logging.getLogger(__name__)


@dataclass
class CorpusConfig:
    """Build the negated-caption corpus (both pipelines, validation, minimal-pair distractors) and export it."""

    world_dir: str = field(default="runs/world", metadata={"help": "scene world folder (ignored with --coco_root)"})
    coco_root: str | None = field(
        default=None, metadata={"help": "COCO-layout root: annotations/, vqa/, <split>/ images"}
    )
    output_dir: str = field(default="runs/corpus", metadata={"help": "output folder (shards/, distractors/, exports)"})
    splits: str = field(default="", metadata={"help": "comma-separated splits; empty = every split found"})
    pipelines: str = field(default="absent-object,vqa-no", metadata={"help": "absent-object, vqa-no, or both"})
    proposer: str = field(default="plausible", metadata={"help": "pipeline 1 proposer: plausible | random"})
    bind_ratio: float = field(
        default=0.0,
        metadata={
            "help": "rules backend: share of new-object proposals that take an attribute of a mentioned object "
            "('a blue circle' -> 'no blue star'): what is absent is the conjunction, not its parts"
        },
    )
    backend: str = field(default="rules", metadata={"help": "text backend: rules | transformers | openai"})
    verifiers: str = field(
        default="annotations", metadata={"help": "'+'-chained verifiers: annotations, clip, mllm, none"}
    )
    lm_model: str | None = field(default=None, metadata={"help": "transformers backend: local causal LM folder or id"})
    mllm_model: str | None = field(
        default=None, metadata={"help": "mllm verifier: image-text-to-text model folder or id"}
    )
    clip_model: str | None = field(default=None, metadata={"help": "clip verifier: CLIP checkpoint folder or id"})
    clip_threshold: float = field(default=0.5, metadata={"help": "clip verifier: reject above this probability"})
    api_base: str | None = field(default=None, metadata={"help": "openai backend: base URL (env OPENAI_BASE_URL)"})
    api_model: str | None = field(default=None, metadata={"help": "openai backend: model name (env OPENAI_MODEL)"})
    api_key: str | None = field(
        default=None, metadata={"help": "openai backend: key (env OPENAI_API_KEY); never logged"}
    )
    max_in_flight: int = field(default=8, metadata={"help": "openai backend: concurrent requests"})
    request_timeout: float = field(default=60.0, metadata={"help": "openai backend: seconds per request"})
    max_retries: int = field(default=4, metadata={"help": "openai backend: retries on 429/5xx/timeouts"})
    max_new_tokens: int = field(
        default=96, metadata={"help": "model backends: tokens generated per answer (a rewrite is JSON: caption + flip)"}
    )
    num_shards: int = field(default=1, metadata={"help": "split the job over this many machines"})
    shard_index: int = field(default=0, metadata={"help": "this machine's shard (0-based)"})
    batch_size: int = field(default=64, metadata={"help": "jobs per backend call and per JSONL flush"})
    captions_per_image: int = field(default=0, metadata={"help": "use the first N captions of each image (0 = all)"})
    max_images: int = field(default=0, metadata={"help": "use the first N images of each split (0 = all)"})
    distractors: bool = field(default=True, metadata={"help": "render/retrieve minimal-pair distractor images"})
    added_pairs: bool = field(
        default=False,
        metadata={
            "help": "scene world: when a caption mentions every object, "
            "render an added pair (image + Z as positive, image + X as "
            "distractor); more pairs, but 2-4x longer fine-tuning"
        },
    )
    max_distractors: int = field(default=1, metadata={"help": "retrieved distractors per caption (COCO photos)"})
    distractor_clip_model: str | None = field(
        default=None,
        metadata={
            "help": "COCO photos: when no image holds the negated category and every mentioned one, retrieve the "
            "images holding the negated category whose image embedding by this CLIP checkpoint is nearest "
            "(embeddings cached in <output_dir>/clip_embeddings); records then carry distractor_source"
        },
    )
    seed: int = field(default=0, metadata={"help": "seed of every proposal and wording choice"})
    export: bool = field(default=True, metadata={"help": "write negated_captions_<split>.json after the run"})
    show_progress: bool = field(default=True, metadata={"help": "show progress bars"})

    def __post_init__(self) -> None:
        names = [p.strip() for p in self.pipelines.split(",") if p.strip()]
        aliases = {"1": "absent-object", "2": "vqa-no", "pipeline1": "absent-object", "pipeline2": "vqa-no"}
        self.pipeline_list = [aliases.get(p, p) for p in names]
        bad = [p for p in self.pipeline_list if p not in PIPELINES]
        if bad or not self.pipeline_list:
            raise ValueError(f"--pipelines must list {PIPELINES}, got {self.pipelines!r}")
        if self.proposer not in ("plausible", "random"):
            raise ValueError(f"--proposer must be plausible or random, got {self.proposer!r}")
        if not 0 <= self.bind_ratio <= 1:
            raise ValueError(f"--bind_ratio must be in [0, 1], got {self.bind_ratio}")
        if not 0 <= self.shard_index < self.num_shards:
            raise ValueError(f"need 0 <= --shard_index < --num_shards, got {self.shard_index} / {self.num_shards}")
        if self.batch_size < 1 or self.max_in_flight < 1:
            raise ValueError("--batch_size and --max_in_flight must be >= 1")

    @property
    def root(self) -> Path:
        return Path(self.coco_root or self.world_dir)

    def public_dict(self) -> dict:
        """The config as written next to the corpus: the API key is never written."""
        out = asdict(self)
        out["api_key"] = "***" if self.api_key else None
        return out


@dataclass
class CorpusStats:
    """Counts of one run: decisions by pipeline, reasons, forms, positions and distractors."""

    counts: Counter = field(default_factory=Counter)

    def add(self, rec: dict) -> None:
        c, p = self.counts, rec["pipeline"]
        c[f"{p}/{rec['status']}"] += 1
        if rec["status"] == "rejected":
            c[f"reason/{p}/{rec['reason']}"] += 1
            return
        c[f"form/{rec['form']}"] += 1
        c[f"position/{rec['position']}"] += 1
        c[f"kind/{rec['target']['kind']}"] += 1
        c["distractors/with"] += bool(rec["distractors"])
        if "mcq_wrong" in rec:  # records of runs before the text twins have none
            c[f"twins/flip/{rec['flip_source'] or 'not built'}"] += 1
            c["twins/scope_swap/built" if rec["scope_swap"] else "twins/scope_swap/not built"] += 1
            for kind in ("flip_rejected", "flip_missing", "scope_missing"):
                if rec.get(kind):
                    c[f"twins/{kind.replace('_', ' ')}/{rec[kind]}"] += 1
        if rec.get("distractor_source"):
            c[f"distractors/source/{rec['distractor_source']}"] += 1
        if not rec["distractors"]:
            c[f"distractors/none/{rec.get('distractor_note') or 'disabled'}"] += 1

    @property
    def accepted(self) -> int:
        return sum(v for k, v in self.counts.items() if k.endswith("/accepted"))

    @property
    def rejected(self) -> int:
        return sum(v for k, v in self.counts.items() if k.endswith("/rejected"))

    def grouped(self, prefix: str) -> dict[str, int]:
        return {k[len(prefix) + 1 :]: v for k, v in sorted(self.counts.items()) if k.startswith(prefix + "/")}


# --------------------------------------------------------------------------- pipeline 2: questions answered "no"

_PRESENCE = re.compile(
    r"^(?:is|are) there (?:a |an |any |some )?(.+?)(?: (?:in|on) (?:the|this) (?:picture|image|photo|scene))?\?*$", re.I
)
_PROPERTY = re.compile(r"^(?:is|are|does|do) (?:the|this|that) (.+?)\?*$", re.I)


def question_target(question: str, caption_mentions, vocab: Vocabulary | None) -> Target | None:
    """The thing a "no"-answered question denies, if it fits this caption, else None.

    "Is there a red star in the picture?" -> object "red star" (not when the
    caption mentions it); "Is the square red?" -> attribute red of the caption's
    square; "Is the man wearing a hat?" -> free predicate "wearing a hat".
    """
    q = question.strip()
    m = _PRESENCE.match(q)
    if m:
        phrase = m.group(1).strip().lower()
        found = vocab.mentions(phrase) if vocab else []
        if found:
            target = Target("object", found[-1].category, found[-1].attributes)
            if any(
                c.category == target.category and set(c.attributes) >= set(target.attributes) for c in caption_mentions
            ):
                return None  # the caption affirms it: a "no" would contradict the caption
            return target
        return Target("object", phrase) if phrase and vocab is None else None
    m = _PROPERTY.match(q)
    if not m or vocab is None:
        return None
    rest = m.group(1).strip()
    found = vocab.mentions(rest)
    if not found or found[0].start != 0:
        return None
    subject, predicate = found[0], rest[found[0].end :].strip().lower()
    if not predicate or subject.category not in {c.category for c in caption_mentions}:
        return None
    key = vocab.value_to_key.get(predicate)
    if key is not None and any(
        c.category == subject.category and dict(c.attributes).get(key) for c in caption_mentions
    ):
        return None  # "a blue square" + "is the square red? no": nothing new to say
    return Target("attribute", subject.category, (), key, predicate)


# --------------------------------------------------------------------------- jobs


def _job_seed(seed: int, image_id: int, caption_id: int, pipeline: str) -> int:
    return int(np.random.SeedSequence([seed, image_id, caption_id, PIPELINES.index(pipeline)]).generate_state(1)[0])


def iter_jobs(src: SplitSource, cfg: CorpusConfig, done) -> Iterator[Job | None]:
    """Jobs of this shard not decided yet; None for an item that does not apply (counted, not stored)."""
    for n, rec in src.captions(cfg.shard_index, cfg.num_shards, cfg.max_images, cfg.captions_per_image):
        caption_id = rec.annotation_id if rec.annotation_id is not None else n
        objects = src.objects(rec.image_id)
        mentions = src.vocabulary.mentions(rec.caption) if src.vocabulary else []
        for pipeline in cfg.pipeline_list:
            if (rec.image_id, caption_id, pipeline) in done:
                continue
            job = Job(
                rec.image_id,
                caption_id,
                rec.caption,
                rec.image_path,
                pipeline,
                _job_seed(cfg.seed, rec.image_id, caption_id, pipeline),
                objects,
                mentions,
            )
            if has_negation(rec.caption):
                job.reject("source caption already negated")
            elif pipeline == "vqa-no" and not _attach_question(job, src):
                yield None
                continue
            yield job


def _attach_question(job: Job, src: SplitSource) -> bool:
    options = [
        (q, t)
        for q in src.no_questions(job.image_id)
        if (t := question_target(q, job.mentions, src.vocabulary)) is not None
    ]
    if not options:
        return False
    job.question, job.target = options[int(np.random.default_rng([job.seed, 5]).integers(len(options)))]
    return True


# --------------------------------------------------------------------------- one batch


class SplitRunner:
    """Runs the stages over batches of one split's jobs and turns them into records."""

    def __init__(self, cfg: CorpusConfig, src: SplitSource, text_backend, verifier, out_dir: Path):
        self.cfg, self.src, self.text, self.verifier, self.out_dir = cfg, src, text_backend, verifier, out_dir
        self.index = None
        if cfg.distractors and src.has_objects and not src.has_scenes:
            neighbours = (
                ImageEmbeddings(
                    cfg.distractor_clip_model, src, out_dir / "clip_embeddings", cfg.batch_size, cfg.show_progress
                )
                if cfg.distractor_clip_model
                else None
            )
            self.index = RetrievalIndex(src, neighbours)

    def run_batch(self, jobs: list[Job]) -> list[dict]:
        p1 = [j for j in jobs if j.pipeline == "absent-object" and j.reason is None]
        if p1:
            self.text.propose(p1, self.src.vocabulary or Vocabulary([]), self.cfg.proposer)
        live = [j for j in jobs if j.reason is None]
        if live and self.verifier.verifiers:
            verdicts = self.verifier.verify(live)
            for job, verdict in zip(live, verdicts):
                # pipeline 2's evidence is the human "no"; pipeline 1 needs a verifier to confirm the absence
                if verdict is None and job.pipeline == "absent-object":
                    job.reject("unverified")
        live = [j for j in jobs if j.reason is None]
        if live:
            self.text.rewrite(live)
        for job in jobs:
            if job.reason is None:
                reason = validate(job, self.src.vocabulary)
                if reason:
                    job.reject(reason)
        return [self._record(job) for job in jobs]

    def _record(self, job: Job) -> dict:
        rec = {
            "image_id": job.image_id,
            "caption_id": job.caption_id,
            "caption": job.caption,
            "pipeline": job.pipeline,
            "split": self.src.name,
            "backend": self.text.name,
            "verifier": self.verifier.name,
            "proposer": self.cfg.proposer if job.pipeline == "absent-object" else "vqa",
            "question": job.question,
            "target": job.target.to_json() if job.target else None,
            "negated_caption": job.negated_caption,
        }
        if job.reason is not None:
            return {**rec, "status": "rejected", "reason": job.reason}
        cues = negation_cues(job.negated_caption)
        rec.update(
            status="accepted",
            reason=None,
            negated=job.target.phrase,
            cue=cues[0],
            form=job.form,
            position=negation_position(job.negated_caption),
        )
        # the minimal text twins (affirmative flip, scope swap): the caption's wrong options
        rec.update(text_twins(job.negated_caption, job.caption, job.target, self.src.vocabulary, job.flip))
        rec["distractors"], rec["distractor_note"], source = self._distractors(job)
        if self.cfg.distractor_clip_model:
            rec["distractor_source"] = source  # "annotations" | "clip-neighbour" | None
        if job.distractor_objects:
            rec["distractor_objects"] = job.distractor_objects  # the rendered scene, checkable against the caption
        if job.positive_objects:  # an added pair: the caption describes this rendered image, not the original
            rec["positive"], rec["positive_objects"] = self._positive_rel(job).as_posix(), job.positive_objects
        return rec

    def _positive_rel(self, job: Job) -> Path:
        return (
            Path("positives")
            / self.src.name
            / f"{job.image_id}_{job.caption_id}_{PIPELINES.index(job.pipeline) + 1}.jpg"
        )

    def _distractors(self, job: Job) -> tuple[list[str], str | None, str | None]:
        """(distractor paths relative to the output folder, why there are none, how they were found)."""
        if not self.cfg.distractors:
            return [], "disabled", None
        if not self.src.has_objects or job.objects is None:
            return [], "no instance annotations", None
        if self.src.has_scenes:
            rel = (
                Path("distractors")
                / self.src.name
                / f"{job.image_id}_{job.caption_id}_{PIPELINES.index(job.pipeline) + 1}.jpg"
            )
            image = self.src.image(job.image_id)
            edited, why = render_distractor(job, image, self.out_dir / rel)
            if edited is None and why == "nothing to edit" and self.cfg.added_pairs:
                edited, why = render_added_pair(job, image, self.out_dir / self._positive_rel(job), self.out_dir / rel)
            job.distractor_objects = edited
            return ([rel.as_posix()] if edited else []), (None if edited else why), ("rendered" if edited else None)
        ids, why, source = self.index.find(job, self.cfg.max_distractors)
        paths = [os.path.relpath(self.src.image_dir / self.src.image(i)["file_name"], self.out_dir) for i in ids]
        return [Path(p).as_posix() for p in paths], (why or None), source


# --------------------------------------------------------------------------- the run


def run_split(
    cfg: CorpusConfig, split: str, text_backend=None, stats: CorpusStats | None = None, cache: dict | None = None
) -> CorpusStats:
    """Decide every job of one split (this shard), appending records to its shard file."""
    out_dir = Path(cfg.output_dir)
    src = load_split(cfg.root, split, with_vqa="vqa-no" in cfg.pipeline_list, index_dir=out_dir / "index")
    text_backend = text_backend or make_text_backend(cfg)
    if hasattr(text_backend, "cooccurrence"):
        text_backend.cooccurrence = src.cooccurrence()
    verifier = make_verifier(cfg, src, cache)
    runner = SplitRunner(cfg, src, text_backend, verifier, out_dir)
    stats = stats or CorpusStats()
    path = shard_path(out_dir, split, cfg.shard_index, cfg.num_shards)
    n_images = src.n_images(cfg.shard_index, cfg.num_shards)
    if cfg.max_images:
        n_images = min(n_images, cfg.max_images)
    with ShardWriter(path, on_existing=stats.add) as writer:
        bar = tqdm(
            desc=f"corpus {split}",
            unit="job",
            disable=not cfg.show_progress,
            total=n_images * (cfg.captions_per_image or 5) * len(cfg.pipeline_list),
            initial=len(writer.done),
        )
        not_applicable = 0
        for batch in batched(iter_jobs(src, cfg, writer.done), cfg.batch_size):
            jobs = [j for j in batch if j is not None]
            not_applicable += len(batch) - len(jobs)
            records = runner.run_batch(jobs)
            writer.write(records)
            for rec in records:
                stats.add(rec)
            bar.update(len(batch))
            bar.set_postfix(accepted=stats.accepted, rejected=stats.rejected, refresh=False)
        bar.close()
    src.close()
    stats.counts[f"vqa-no/not applicable/{split}"] += not_applicable
    logger.info("split %s: %d accepted, %d rejected so far (%s)", split, stats.accepted, stats.rejected, path)
    return stats


def run_corpus(cfg: CorpusConfig) -> dict:
    """Run both pipelines on every split, then export. Returns the run's statistics (also written to disk)."""
    from .export import export_split, write_stats

    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    splits = [s.strip() for s in cfg.splits.split(",") if s.strip()] or discover_splits(cfg.root)
    cfg, state = _per_process(cfg)
    if state is None or state.is_main_process:
        (out_dir / "corpus_config.json").write_text(json.dumps(cfg.public_dict(), indent=2, sort_keys=True))
    stats, cache = CorpusStats(), {}
    text_backend = make_text_backend(cfg)
    for split in splits:
        stats = run_split(cfg, split, text_backend, stats, cache)
    if state is not None:  # the export reads every process's shard file; the statistics add up every process's counts
        part = out_dir / f"corpus_counts.process-{state.process_index}.json"
        if not state.is_main_process:
            part.write_text(json.dumps(stats.counts))
        state.wait_for_everyone()
        if not state.is_main_process:
            return {"splits": {}, "counts": dict(sorted(stats.counts.items()))}
        for index in range(1, state.num_processes):
            part = out_dir / f"corpus_counts.process-{index}.json"
            stats.counts.update(json.loads(part.read_text()))
            part.unlink()
    summary = {"splits": {}, "counts": dict(sorted(stats.counts.items()))}
    if cfg.export:
        for split in splits:
            summary["splits"][split] = export_split(cfg.output_dir, split, image_dir=_image_dir(cfg, split))
    write_stats(out_dir, stats, summary)
    return summary


def _per_process(cfg: CorpusConfig):
    """Under ``accelerate launch`` / ``torchrun``, each process takes its own slice of this shard (whatever the
    backend: two processes never write one shard file)."""
    if cfg.backend != "transformers" and "mllm" not in cfg.verifiers and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return cfg, None  # a plain single-process run does not import torch/accelerate
    from ..launch import launch_state

    world = int(os.environ.get("WORLD_SIZE", "1"))
    state = launch_state()
    if state.num_processes == 1:
        if world > 1:
            raise ValueError(
                f"launched as {world} processes but accelerate sees one (no GPU?): on CPUs use "
                "`accelerate launch --cpu` or set ACCELERATE_USE_CPU=true, or each would write every record"
            )
        return cfg, None
    return replace(
        cfg,
        num_shards=cfg.num_shards * state.num_processes,
        shard_index=cfg.shard_index * state.num_processes + state.process_index,
    ), state


def _image_dir(cfg: CorpusConfig, split: str) -> str:
    from .sources import image_dir_for

    return str(image_dir_for(cfg.root, split).resolve())
