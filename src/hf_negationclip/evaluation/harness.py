"""The benchmark harness: any CLIP checkpoints on any negation benchmark, real or scene twin.

A task is a name and a spec (``kind`` + file paths): the real benchmarks are
given on the command line, the scene twins come from a ``manifest.json``
written by :func:`hf_negationclip.benchmarks.write_scene_benchmarks`. For each
model every distinct image, crop and text of every task is encoded ONCE, in
batches (:class:`hf_negationclip.modeling.encode.EmbeddingCache`, bf16 autocast
on a GPU); tasks then only index into the cached embeddings. Accuracies go
through the ``negation_accuracy`` evaluate metric (chance, 95% Wilson interval,
breakdowns). Ties count as wrong; candidate order is shuffled by the readers.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..benchmarks import (
    load_ccneg,
    load_coco_retrieval,
    load_image_folder,
    load_negbench_mcq,
    load_negrefcocog_official,
    load_valse_existence,
)
from ..benchmarks.negrefcocog import render_candidate
from ..benchmarks.readers import ImageRef, RetrievalSet, load_negbench_retrieval
from ..modeling import load_checkpoint
from ..modeling.encode import EmbeddingCache
from .core import choice_scores, strict_argmax
from .tables import markdown_table

logger = logging.getLogger(__name__)

TASK_KINDS = ("negrefcocog", "valse-existence", "negbench-mcq", "ccneg", "retrieval", "zeroshot")
ZERO_SHOT_TEMPLATES = ("a photo of a {}.",)
RECALL_KS = (1, 5, 10)


def metric_path() -> Path:
    """Folder of the ``negation_accuracy`` evaluate module: ``evaluate.load(metric_path())`` works offline."""
    return Path(str(resources.files("hf_negationclip") / "eval_scripts" / "negation_accuracy"))


@lru_cache(maxsize=1)
def _metric():
    import evaluate

    return evaluate.load(str(metric_path()))


# --------------------------------------------------------------------------- tasks


@dataclass
class Task:
    """A loaded task: choice items, a retrieval set, or an image folder with classes."""

    name: str
    kind: str
    items: list = field(default_factory=list)
    retrieval: RetrievalSet | None = None
    zeroshot: tuple | None = None

    def image_refs(self) -> list[ImageRef]:
        if self.kind == "negrefcocog":
            return [ref for it in self.items for ref in it.images]
        if self.items:
            return [it.image for it in self.items]
        return list(self.retrieval.images) if self.retrieval else list(self.zeroshot[0])

    def texts(self) -> list[str]:
        if self.kind == "negrefcocog":
            return [it.text for it in self.items]
        if self.items:
            return [t for it in self.items for t in it.texts]
        if self.retrieval:
            return list(self.retrieval.texts)
        return [t.format(c) for c in self.zeroshot[2] for t in ZERO_SHOT_TEMPLATES]


def load_task(name: str, spec: dict, seed: int = 0, crop_margin: float = 0.0, crop_mode: str | None = None) -> Task:
    """Read one task from its spec (``kind`` and the paths that kind's reader takes).

    NegRefCOCOg candidates are rendered with ``crop_mode`` when given, else with
    the spec's ``crop_mode`` (the scene twins' manifest says ``isolate``), else ``crop``.
    """
    kind = spec.get("kind")
    if kind == "negrefcocog":
        samples = [s for s in load_negrefcocog_official(spec["json"], spec["image_dir"], seed) if s.image.is_file()]
        if not samples:
            raise FileNotFoundError(f"{name}: none of the images of {spec['json']} is under {spec['image_dir']}")
        mode = crop_mode or spec.get("crop_mode", "crop")
        return Task(name, kind, [s.to_choice(crop_margin, mode) for s in samples])
    if kind == "valse-existence":
        return Task(name, kind, load_valse_existence(spec["json"], spec["image_dir"], seed))
    if kind == "negbench-mcq":
        return Task(name, kind, load_negbench_mcq(spec["csv"], spec["image_root"], seed))
    if kind == "ccneg":
        # "pt": CC-Neg's file or a negated_captions JSON (the reader tells them apart); "json" reads the same
        path = spec.get("pt") or spec["json"]
        return Task(name, kind, load_ccneg(path, spec["image_dir"], spec.get("last", 40_000), seed))
    if kind == "retrieval":
        if "csv" in spec:
            return Task(name, kind, retrieval=load_negbench_retrieval(spec["csv"], spec["image_root"]))
        return Task(
            name, kind, retrieval=load_coco_retrieval(spec["captions"], spec["image_dir"], spec.get("max_images"))
        )
    if kind == "zeroshot":
        folder = Path(spec["folder"])
        if (folder / "state.json").is_file() or (folder / "dataset_dict.json").is_file():
            return Task(name, kind, zeroshot=_labelled_dataset(folder, name))
        return Task(name, kind, zeroshot=load_image_folder(folder))
    raise ValueError(f"task {name!r}: unknown kind {kind!r}; expected one of {TASK_KINDS}")


def _labelled_dataset(folder: Path, name: str) -> tuple[list[ImageRef], list[int], list[str]]:
    """A ``save_to_disk`` dataset with an Image column and a ClassLabel column, written out as image files once."""
    import datasets

    ds = datasets.load_from_disk(str(folder))
    if isinstance(ds, datasets.DatasetDict):
        ds = ds["test"] if "test" in ds else ds[next(iter(ds))]
    image_col = next((c for c, f in ds.features.items() if isinstance(f, datasets.Image)), None)
    label_col = next((c for c, f in ds.features.items() if isinstance(f, datasets.ClassLabel)), None)
    if image_col is None or label_col is None:
        raise ValueError(f"task {name!r}: {folder} needs an Image column and a ClassLabel column")
    cache = folder / ".hf_negationclip_images"  # the harness reads files; decode each image once
    cache.mkdir(exist_ok=True)
    refs = []
    for i, row in enumerate(ds):
        path = cache / f"{i:08d}.png"
        if not path.is_file():
            row[image_col].convert("RGB").save(path)
        refs.append(ImageRef(path))
    return refs, list(ds[label_col]), [n.replace("_", " ") for n in ds.features[label_col].names]


# --------------------------------------------------------------------------- encoding once


def _render(refs: Sequence[ImageRef]):
    """The candidate renderings of ``refs``, in order; consecutive refs of one file open it once."""
    opened = (None, None)
    for ref in refs:
        if opened[0] != ref.path:
            with Image.open(ref.path) as im:
                opened = (ref.path, im.convert("RGB"))
        yield render_candidate(opened[1], ref)


def encode_once(
    model, processor, refs: Sequence[ImageRef], texts: Sequence[str], batch_size: int = 256, show_progress=False
) -> EmbeddingCache:
    """Every distinct image rendering (``batch_size`` a batch, sorted by file) and text (4x) of the tasks, once."""
    cache = EmbeddingCache(model, processor, batch_size, 4 * batch_size, bf16=True, show_progress=show_progress)
    cache.add_images(sorted(dict.fromkeys(refs), key=lambda ref: str(ref.path)), _render)
    cache.add_texts(texts)
    return cache


# --------------------------------------------------------------------------- scoring


def _summary(
    predictions,
    references,
    groups: dict | None = None,
    num_choices=None,
    chance=None,
    intervals: bool = True,
) -> dict:
    """One results.json metric entry, computed by the negation_accuracy metric."""
    out = _metric().compute(
        predictions=[int(p) for p in predictions],
        references=[int(r) for r in references],
        num_choices=num_choices,
        chance=chance,
        groups=groups,
        ci=intervals,
    )
    entry = {"value": out["accuracy"], "chance": out["chance"], "n": out["n"], "ci95": out["ci95"]}
    if out["breakdown"]:
        entry["breakdown"] = {
            g: {v: {"value": m["accuracy"], "n": m["n"]} for v, m in vals.items()}
            for g, vals in out["breakdown"].items()
        }
    return entry


def _choice_metrics(task: Task, cache: EmbeddingCache, intervals: bool) -> dict:
    if task.kind == "negrefcocog":
        queries = cache.texts([it.text for it in task.items])
        cands = [cache.images(it.images) for it in task.items]
    else:
        queries = cache.images([it.image for it in task.items])
        cands = [cache.texts(it.texts) for it in task.items]
    pred = strict_argmax(choice_scores(queries, cands)).tolist()
    ref = [it.answer for it in task.items]
    k = [len(c) for c in cands]
    groups = defaultdict(list)
    for it in task.items:
        for g, v in it.groups.items():
            groups[g].append(v)
    groups = {g: v for g, v in groups.items() if len(v) == len(ref)}
    metrics = {}
    # affirmative control items (no cue in the phrase) are scored apart from the negated ones
    affirm = [g == "none" for g in groups.get("cue", [])] if task.kind == "negrefcocog" else []
    if any(affirm):
        keep = [i for i, a in enumerate(affirm) if not a]
        aff = [i for i, a in enumerate(affirm) if a]
        metrics["affirmative_accuracy"] = _summary(
            [pred[i] for i in aff],
            [ref[i] for i in aff],
            num_choices=[k[i] for i in aff],
            intervals=intervals,
        )
        pred, ref, k = [pred[i] for i in keep], [ref[i] for i in keep], [k[i] for i in keep]
        groups = {g: [v[i] for i in keep] for g, v in groups.items()}
    metrics["accuracy"] = _summary(pred, ref, groups, num_choices=k, intervals=intervals)
    for template in sorted(set(groups.get("template", []))):
        idx = [i for i, t in enumerate(groups["template"]) if t == template]
        metrics[f"{template}_accuracy"] = _summary(
            [pred[i] for i in idx],
            [ref[i] for i in idx],
            num_choices=[k[i] for i in idx],
            intervals=intervals,
        )
    return metrics


def _strict_ranks(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Rank of each row's target column, counting every other column scoring >= it as ahead (ties lose)."""
    true = scores.gather(1, target[:, None])
    return (scores >= true).sum(1) - 1


def _retrieval_metrics(task: Task, cache: EmbeddingCache, intervals: bool) -> dict:
    r = task.retrieval
    sim = cache.images(r.images) @ cache.texts(r.texts).T  # [images, texts]
    owner = torch.as_tensor(r.owner)
    t2i = _strict_ranks(sim.T, owner)
    # image -> text: the best-ranked own caption; other images' captions scoring >= it are ahead
    own = owner[None, :] == torch.arange(len(r.images))[:, None]
    best_own = sim.masked_fill(~own, float("-inf")).max(1).values
    i2t = (sim.masked_fill(own, float("-inf")) >= best_own[:, None]).sum(1)
    metrics = {}
    for k in RECALL_KS:
        for direction, ranks, pool in (("text_to_image", t2i, len(r.images)), ("image_to_text", i2t, len(r.images))):
            hits = (ranks < k).long().tolist()
            metrics[f"{direction}_r@{k}"] = _summary(
                hits, [1] * len(hits), chance=min(1.0, k / pool), intervals=intervals
            )
    return metrics


def _zeroshot_metrics(task: Task, cache: EmbeddingCache, intervals: bool) -> dict:
    refs, labels, classes = task.zeroshot
    prompts = cache.texts(task.texts()).view(len(classes), len(ZERO_SHOT_TEMPLATES), -1).mean(1)
    pred = strict_argmax(cache.images(refs) @ torch.nn.functional.normalize(prompts, dim=-1).T).tolist()
    return {"accuracy": _summary(pred, labels, num_choices=len(classes), intervals=intervals)}


def score_task(task: Task, cache: EmbeddingCache, intervals: bool = True) -> dict:
    """``{metric: entry}`` of one task from the cached embeddings."""
    if task.kind == "retrieval":
        return _retrieval_metrics(task, cache, intervals)
    if task.kind == "zeroshot":
        return _zeroshot_metrics(task, cache, intervals)
    return _choice_metrics(task, cache, intervals)


def evaluate_models(
    models: dict[str, object],
    tasks: Sequence[Task],
    batch_size: int = 256,
    intervals: bool = True,
    show_progress: bool = False,
) -> dict:
    """results.json's ``models`` part: each model's metrics on every task (``"<task>/<metric>"`` keys).

    ``models`` maps a label to a (model, processor) pair or a checkpoint name.
    """
    refs = [r for t in tasks for r in t.image_refs()]
    texts = [s for t in tasks for s in t.texts()]
    out = {}
    for label, model in models.items():
        path = model if isinstance(model, str) else getattr(model[0], "name_or_path", "")
        model, processor = load_checkpoint(model) if isinstance(model, str) else model
        if torch.cuda.is_available():
            model = model.to("cuda")
        cache = encode_once(model, processor, refs, texts, batch_size, show_progress)
        metrics = {}
        for task in tasks:
            for name, entry in score_task(task, cache, intervals).items():
                metrics[f"{task.name}/{name}"] = entry
        out[label] = {"path": str(path), "metrics": metrics}
    return out


# --------------------------------------------------------------------------- outputs


def write_markdown(results: dict, path: str | os.PathLike) -> str:
    """A table of every metric (:func:`.tables.markdown_table`): one column per model ("value [lo, hi]")."""
    text = markdown_table(results)
    Path(path).write_text(text)
    return text


def write_plot(
    results: dict,
    path: str | os.PathLike,
    metric_suffixes: Sequence[str] = ("accuracy",),
    rows: Sequence[tuple[str, str]] | None = None,
) -> Path:
    """Bar chart of the accuracy metrics, one bar per model, chance drawn as a black line per metric.

    ``rows`` (``(metric, label)`` pairs, as :func:`markdown_table` takes them): only those metrics, in that
    order, as labelled horizontal bars with their 95% intervals, top to bottom (a report's headline).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(results["models"])
    metrics = {lab: results["models"][lab]["metrics"] for lab in labels}
    if rows is None:
        names = [
            m
            for m in dict.fromkeys(n for lab in labels for n in metrics[lab])
            if m.split("/")[-1].endswith(tuple(metric_suffixes))
        ]
        fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(names) * max(1, len(labels)) ** 0.5), 4.5))
        _draw_columns(ax, metrics, labels, names)
    else:
        rows = [(key, text) for key, text in rows if any(key in m for m in metrics.values())]
        if not rows:
            raise ValueError("none of the rows to plot is among the results' metrics")
        fig, ax = plt.subplots(figsize=(9, 1.2 + 0.26 * len(rows) * max(1, len(labels)) ** 0.5))
        _draw_rows(ax, metrics, labels, rows)
    ax.legend(fontsize=8, loc="best" if rows is None else "lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def _chance(metrics: dict, labels: list[str], name: str) -> float:
    """The chance level of metric ``name`` (the first model that has it)."""
    return next(metrics[lab][name]["chance"] for lab in labels if name in metrics[lab])


def _draw_columns(ax, metrics: dict, labels: list[str], names: list[str]) -> None:
    """A group of vertical bars per metric, a bar per model, chance as a dashed line over each group."""
    width = 0.8 / max(1, len(labels))
    x = np.arange(len(names))
    for j, lab in enumerate(labels):
        vals = [metrics[lab].get(n, {}).get("value", np.nan) for n in names]
        ax.bar(x + (j - (len(labels) - 1) / 2) * width, vals, width, label=lab)
    for i, n in enumerate(names):
        ax.hlines(_chance(metrics, labels, n), i - 0.45, i + 0.45, colors="black", linestyles="--",
                  label="chance" if i == 0 else None)  # fmt: skip
    ax.set_xticks(x, names, rotation=35, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")


def _draw_rows(ax, metrics: dict, labels: list[str], rows: list[tuple[str, str]]) -> None:
    """A group of horizontal bars per row, top to bottom, error bars = the 95% interval, chance dashed."""
    height = 0.8 / max(1, len(labels))
    y = np.arange(len(rows))
    for j, lab in enumerate(labels):
        got = [metrics[lab].get(key, {}) for key, _ in rows]
        vals = np.array([g.get("value", np.nan) for g in got], dtype=float)
        ci = np.array([g.get("ci95") or (v, v) for g, v in zip(got, vals)], dtype=float).T
        err = np.clip(np.stack([vals - ci[0], ci[1] - vals]), 0, None)
        ax.barh(y + (j - (len(labels) - 1) / 2) * height, vals, height, xerr=err, label=lab, error_kw={"lw": 0.6})
    for i, (key, _) in enumerate(rows):
        ax.vlines(_chance(metrics, labels, key), i - 0.45, i + 0.45, colors="black", linestyles="--",
                  label="chance" if i == 0 else None)  # fmt: skip
    ax.set_yticks(y, [text for _, text in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy (95% interval)")


# --------------------------------------------------------------------------- one run


@dataclass
class HarnessConfig:
    """What :func:`run_harness` evaluates: models (label -> checkpoint), task specs and where to write."""

    models: dict[str, object]
    tasks: dict[str, dict]
    output_dir: str = "runs/eval"
    seed: int = 0
    #: 95% Wilson intervals (``ci95``) beside every accuracy; False: none
    intervals: bool = True
    batch_size: int = 256
    crop_margin: float = 0.0
    show_progress: bool = True
    #: NegRefCOCOg candidate rendering for every negrefcocog task (crop / isolate / blur); None: each spec's
    #: ``crop_mode``, else crop
    crop_mode: str | None = None


def run_harness(cfg: HarnessConfig) -> dict:
    """Load every task, score every model, write results.json, results.md and results.png; return the results."""
    if not cfg.tasks:
        raise ValueError("no tasks to evaluate: pass benchmark files or a world/benchmarks folder")
    if not cfg.models:
        raise ValueError("no model to evaluate")
    # load the models first: a bad model name fails in a second, before any benchmark is read
    loaded = {label: load_checkpoint(m) if isinstance(m, str) else m for label, m in cfg.models.items()}
    tasks = [load_task(name, spec, cfg.seed, cfg.crop_margin, cfg.crop_mode) for name, spec in cfg.tasks.items()]
    models = evaluate_models(loaded, tasks, cfg.batch_size, cfg.intervals, cfg.show_progress)
    for label, name in cfg.models.items():
        if isinstance(name, str):
            models[label]["path"] = name
    results = {
        "tasks": [t.name for t in tasks],
        "models": models,
        "created": datetime.now(timezone.utc).isoformat(),
        "seed": cfg.seed,
    }
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    write_markdown(results, out / "results.md")
    write_plot(results, out / "results.png")
    return results
