"""The main job: the whole NegationCLIP story on the embedded scene world, from nothing, on one CPU machine.

Stages (each cached in its own folder under ``out``, each resumable after a kill):

1. ``world/``: render the scene world (COCO, RefCOCOg, VQAv2 formats);
2. ``baseline/``: pre-train "CLIP" on affirmative captions only (it never sees a negation);
3. ``corpus/``: the negated-caption corpus (both pipelines, minimal-pair distractors), and
   ``benchmarks/``: the scene twins of every benchmark (plain and controlled);
4. ``paper/``, ``ours/``, ``ours-lora/``: fine-tune three ways from the baseline: the paper's
   recipe (InfoNCE on negated captions, text tower), ours (minimal pairs + exclusion term,
   text tower) and ours with LoRA;
5. evaluate all four the same way (the harness on the scene twins + the world probes; NegRefCOCOg candidates
   isolated, not cropped: the scene manifest's ``crop_mode``);
6. ``report.md``, ``results.json``, ``results.png``, ``best/`` (the best fine-tune with its
   generated model card and ``text_encoder/``), ``datasets/`` (corpus and NegRefCOCOg as
   ``load_dataset``-ready parquet folders).

A stage whose outputs exist is skipped; ``fresh=True`` starts over.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

#: label -> what differs; all start from the baseline with the same epochs, batch, data order and affirmative
#: share. "paper": InfoNCE on every negated caption, text tower; "ours": the captions that have minimal-pair
#: distractors, the exclusion term (each caption picks its image over its distractor) + the retain term (plain
#: captions keep their meaning) + InfoNCE at weight 0.1, text tower; "ours-lora": LoRA (rank 16, attention and
#: MLP of the text tower) with the exclusion and retain terms only (retain weight 8: measured best for LoRA)
LORA_TARGETS = r".*text_model\.encoder\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|out_proj)|mlp\.(fc1|fc2))"
FINETUNES: dict[str, dict] = {
    "paper": dict(train="text", contrastive_weight=1.0, exclusion_weight=0.0, retain_weight=0.0),
    "ours": dict(
        train="text",
        contrastive_weight=0.1,
        exclusion_weight=2.0,
        retain_weight=4.0,
        retain_on="picks",
        minimal_pairs_only=True,
    ),
    "ours-lora": dict(
        train="lora-text",
        contrastive_weight=0.0,
        exclusion_weight=2.0,
        retain_weight=8.0,
        retain_on="picks",
        minimal_pairs_only=True,
        lora_r=16,
        lora_alpha=32,
        lora_target_modules=LORA_TARGETS,
        lr_multiplier=2.0,
    ),
}
#: the report's headline rows: (results key, label)
HEADLINE: tuple[tuple[str, str], ...] = (
    ("world-probes/negation_probe_accuracy", "negation probe (controlled pairs)"),
    ("world-probes/affirmative_probe_accuracy", "affirmative probe (same pairs)"),
    ("scene-negrefcocog-controlled/accuracy", "NegRefCOCOg scene, controlled"),
    ("scene-negrefcocog-controlled/affirmative_accuracy", "NegRefCOCOg scene, affirmative twin"),
    ("scene-negrefcocog/accuracy", "NegRefCOCOg scene, plain"),
    ("scene-valse-existence-controlled/accuracy", "VALSE existence scene, controlled"),
    ("scene-negbench-mcq-controlled/negation_accuracy", "MCQ negation template, controlled"),
    ("scene-negbench-mcq-controlled/affirmation_accuracy", "MCQ affirmation template, controlled"),
    ("scene-ccneg-controlled/accuracy", "CC-Neg scene, controlled"),
    ("world-probes/zero_shot_shape_accuracy", "zero-shot shape"),
    ("world-probes/zero_shot_color_accuracy", "zero-shot colour"),
    ("world-probes/shape_probe_accuracy", "shape-controlled probe"),
    ("world-probes/image_to_text_r@1", "image->text R@1"),
)


@dataclass
class DemoConfig:
    """The whole loop on the embedded default: world, baseline, corpus, benchmarks, three fine-tunes, report."""

    out: str = field(default="runs/demo", metadata={"help": "output folder (one sub-folder per stage)"})
    images: int = field(default=5000, metadata={"help": "world size"})
    seed: int = field(default=0, metadata={"help": "seed of the world, the weights and the data order"})
    epochs: int = field(default=16, metadata={"help": "pre-training epochs"})
    batch_size: int = field(default=128, metadata={"help": "pre-training batch size"})
    finetune_epochs: int = field(default=4, metadata={"help": "fine-tuning epochs (each of the three)"})
    finetune_lr: float = field(default=1e-3, metadata={"help": "fine-tuning learning rate (all three)"})
    finetune_batch_size: int = field(default=64, metadata={"help": "fine-tuning batch size (all three)"})
    added_pairs: bool = field(
        default=True,
        metadata={"help": "corpus: render added pairs (image + Z vs image + X) for captions that mention every object"},
    )
    affirmative_ratio: float = field(default=0.35, metadata={"help": "share of plain captions mixed into fine-tuning"})
    n_items: int = field(default=200, metadata={"help": "items per scene benchmark twin and per world probe"})
    fresh: bool = field(default=False, metadata={"help": "delete earlier outputs in --out and start over"})
    show_progress: bool = field(default=True, metadata={"help": "show progress bars"})


def _stage(name: str) -> None:
    print(f"\n== {name}", flush=True)


def _done(folder: Path, marker: str = "model.safetensors") -> bool:
    return (folder / marker).is_file() and (folder / "training_config.json").is_file()


def _wilson(value: float, n: int) -> list[float]:
    """95% Wilson interval of a proportion (the world probes have no bootstrap of their own)."""
    if n == 0:
        return [0.0, 1.0]
    z, p = 1.96, value
    centre, half = (
        (p + z * z / (2 * n)) / (1 + z * z / n),
        z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n),
    )
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def _world_probe_metrics(metrics: dict) -> dict:
    return {
        f"world-probes/{k}": {**v, "ci95": _wilson(v["value"], v["n"])}
        for k, v in metrics.items()
        if isinstance(v, dict) and "value" in v
    }


def build_data(cfg: DemoConfig, out: Path) -> tuple[Path, dict]:
    """Stage 3: the corpus (train split, with distractors) and the scene benchmark twins (val split)."""
    from ..benchmarks import export_negrefcocog, write_scene_benchmarks
    from ..corpus import CorpusConfig, run_corpus
    from ..corpus.export import export_parquet
    from .cards import write_corpus_card, write_negrefcocog_card

    world, corpus = out / "world", out / "corpus"
    _stage("3/6 negated-caption corpus (both pipelines, minimal pairs) and scene benchmarks")
    if not (corpus / "negated_captions_train.json").is_file():
        run_corpus(
            CorpusConfig(
                world_dir=str(world),
                output_dir=str(corpus),
                splits="train",
                seed=cfg.seed,
                added_pairs=cfg.added_pairs,
                show_progress=cfg.show_progress,
            )
        )
    stats = json.loads((corpus / "corpus_stats.json").read_text()) if (corpus / "corpus_stats.json").is_file() else {}
    datasets = out / "datasets"
    if not (datasets / "negation_captions" / "README.md").is_file():  # the library writes data, the card is ours
        write_corpus_card(
            export_parquet(corpus, datasets / "negation_captions", str(world / "images" / "train"))["output_dir"]
        )
    if not (datasets / "negrefcocog" / "README.md").is_file():
        write_negrefcocog_card(export_negrefcocog(datasets / "negrefcocog", "scene", world, seed=cfg.seed))
    manifest = write_scene_benchmarks(world, out / "benchmarks", "val", cfg.n_items, cfg.seed)
    print(
        f"corpus: {corpus / 'negated_captions_train.json'}; benchmarks: {len(manifest['tasks'])} scene tasks in "
        f"{out / 'benchmarks'}; datasets: {datasets}"
    )
    return corpus, {**manifest["tasks"], "_corpus_stats": stats}


def finetune_config(cfg: DemoConfig, out: Path, label: str, **overrides):
    """The ``FinetuneConfig`` of the demo's fine-tune ``label`` (``FINETUNES``) on the stages in ``out``.

    Every fine-tune starts from ``out/baseline`` with the demo's corpus, epochs, batch, affirmative share and
    seed; ``overrides`` (any ``FinetuneConfig`` option) win, which is how ``scripts/finetune_sweep.py`` varies them.
    """
    from ..training import FinetuneConfig

    spec = dict(FINETUNES[label])
    lr = cfg.finetune_lr * spec.pop("lr_multiplier", 1.0)  # LoRA adapters start at zero and need a larger step
    options = dict(
        preset=str(out / "baseline"),
        output_dir=str(out / label),
        recipe="tiny",
        corpus_dir=str(out / "corpus"),
        world_dir=str(out / "world"),
        seed=cfg.seed,
        epochs=cfg.finetune_epochs,
        learning_rate=lr,
        batch_size=cfg.finetune_batch_size,
        affirmative_ratio=cfg.affirmative_ratio,
        show_progress=cfg.show_progress,
    )
    return FinetuneConfig(**{**options, **spec, **overrides})


def run_finetunes(cfg: DemoConfig, out: Path, evaluator) -> dict[str, Path]:
    """Stage 4: the three fine-tunes from the baseline, same data, same budget."""
    from ..training import finetune

    runs, image_features = {}, {}  # the frozen vision tower is the baseline's in all three: encode images once
    for k, (label, spec) in enumerate(FINETUNES.items(), 1):
        run = finetune_config(cfg, out, label)
        shown = {name: value for name, value in spec.items() if name not in ("lora_target_modules", "lr_multiplier")}
        _stage(
            f"4/6 fine-tune {k}/3: {label} ({', '.join(f'{a}={b}' for a, b in shown.items())}, "
            f"lr={run.learning_rate:g})"
        )
        folder = out / label
        runs[label] = folder
        if _done(folder):
            print(f"cached: {folder}")
            continue
        result = finetune(run, evaluator, image_features)
        print(f"saved {folder} ({result['train_seconds']:.0f} s of training)")
    return runs


def evaluate_all(cfg: DemoConfig, out: Path, models: dict[str, Path], tasks: dict, world_eval) -> dict:
    """Stage 5: the harness on every scene twin + the world probes, every model the same way."""
    from ..evaluation import HarnessConfig, load_checkpoint, run_harness

    _stage("5/6 evaluate all four the same way")
    tasks = {k: v for k, v in tasks.items() if not k.startswith("_")}
    loaded = {label: load_checkpoint(str(path)) for label, path in models.items()}  # once, for both evaluations
    results = run_harness(HarnessConfig(loaded, tasks, str(out / "eval"), cfg.seed, show_progress=cfg.show_progress))
    for label, path in models.items():
        results["models"][label]["path"] = str(path)
        results["models"][label]["metrics"].update(_world_probe_metrics(world_eval(*loaded[label])))
    results["tasks"] = [*results["tasks"], "world-probes"]
    return results


def _value(results: dict, label: str, key: str) -> float | None:
    entry = results["models"][label]["metrics"].get(key)
    return None if entry is None else entry["value"]


def pick_best(results: dict) -> str:
    """The fine-tune with the highest mean of the controlled negation accuracies."""
    keys = ["world-probes/negation_probe_accuracy", "scene-negrefcocog-controlled/accuracy"]
    candidates = [label for label in results["models"] if label != "baseline"]
    return max(candidates, key=lambda lab: sum(_value(results, lab, k) or 0.0 for k in keys))


def write_report(results: dict, out: Path, best: str, seconds: dict) -> str:
    """report.md: the headline table (value [95% interval]), chance and n, then every metric."""
    labels = list(results["models"])
    lines = [
        "# NegationCLIP on the scene world",
        "",
        "Every model is scored the same way on the same items; a tie counts as wrong, candidate order is "
        "shuffled, chance is given beside every accuracy. *Controlled* items differ only in the negated thing.",
        "",
        "| metric | chance | n | " + " | ".join(labels) + " |",
        "|---|---|---|" + "---|" * len(labels),
    ]
    for key, name in HEADLINE:
        entries = [results["models"][lab]["metrics"].get(key) for lab in labels]
        first = next((e for e in entries if e), None)
        if first is None:
            continue
        cells = [
            f"{e['value']:.3f} [{e['ci95'][0]:.2f}, {e['ci95'][1]:.2f}]"
            if e and e.get("ci95")
            else (f"{e['value']:.3f}" if e else "")
            for e in entries
        ]
        lines.append(f"| {name} | {first['chance']:.3f} | {first['n']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Best fine-tune (highest mean of the controlled negation accuracies): **{best}**, copied to `best/`.",
        "",
        "Wall time per stage (s): " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()),
        "",
        "## Every metric",
        "",
        (out / "eval" / "results.md").read_text(),
    ]
    text = "\n".join(lines) + "\n"
    (out / "report.md").write_text(text)
    return text


#: what a run folder holds only to resume or pick its best step (the loop's checkpoints/ and best/), never published
TRAINING_STATE = ("checkpoints", "best", "best_weights*")


def publish_best(out: Path, best: str) -> Path:
    """``best/``: the chosen checkpoint (weights, processor, text_encoder/) with its generated model card."""
    from .cards import write_model_card

    target = out / "best"
    if target.exists():
        shutil.rmtree(target)
    source = out / best

    def training_state(folder: str, names: list[str]) -> set[str]:  # top level only: text_encoder/ etc. stay whole
        if Path(folder) != source:
            return set()
        return {name for name in names if any(fnmatch.fnmatch(name, p) for p in TRAINING_STATE)}

    shutil.copytree(source, target, ignore=training_state)
    try:
        write_model_card(target, model_label=best)
    except (ValueError, OSError, KeyError) as err:  # a card problem never costs the run
        logger.warning("could not write the model card of %s: %s", target, err)
    return target


def run_demo(cfg: DemoConfig) -> dict:
    """Run every stage (skipping the ones already done) and print the report's table."""
    from ..evaluation import WorldEvaluator, format_metrics
    from ..training import PretrainConfig, pretrain
    from ..world import write_world

    out = Path(cfg.out)
    if cfg.fresh and out.exists():
        shutil.rmtree(out)
    if not cfg.show_progress:  # the libraries' own bars (datasets' Map / parquet writes, transformers' weight loading)
        import datasets
        import transformers

        datasets.disable_progress_bars()
        transformers.utils.logging.disable_progress_bar()
    seconds, t0 = {}, time.time()
    _stage("1/6 scene world")
    write_world(out / "world", cfg.images, cfg.seed, show_progress=cfg.show_progress)
    seconds["world"] = time.time() - t0
    _stage("2/6 baseline CLIP, pre-trained on affirmative captions only")
    t = time.time()
    world_eval = WorldEvaluator(out / "world", "val", cfg.n_items, cfg.seed)
    if _done(out / "baseline") and (out / "baseline" / "metrics.json").is_file():
        print(f"cached: {out / 'baseline'}")
    else:
        result = pretrain(
            PretrainConfig(
                world_dir=str(out / "world"),
                output_dir=str(out / "baseline"),
                epochs=cfg.epochs,
                batch_size=cfg.batch_size,
                seed=cfg.seed,
                show_progress=cfg.show_progress,
            ),
            world_eval,
        )
        print(f"baseline metrics on the world's val split:\n{format_metrics(result['metrics'])}")
    seconds["baseline"] = time.time() - t
    t = time.time()
    _, tasks = build_data(cfg, out)
    seconds["corpus+benchmarks"] = time.time() - t
    t = time.time()
    runs = run_finetunes(cfg, out, None)
    seconds["fine-tuning"] = time.time() - t
    t = time.time()
    results = evaluate_all(cfg, out, {"baseline": out / "baseline", **runs}, tasks, world_eval)
    seconds["evaluation"] = time.time() - t
    _stage("6/6 report, best checkpoint, datasets")
    best = pick_best(results)
    results["best"] = best
    (out / "results.json").write_text(json.dumps(results, indent=2))
    shutil.copy(out / "eval" / "results.png", out / "results.png")
    publish_best(out, best)
    seconds["total"] = time.time() - t0
    report = write_report(results, out, best, seconds)
    print("\n" + report.split("## Every metric")[0])
    print(
        f"Everything is in {out}: report.md, results.json, results.png, best/ (checkpoint + model card + "
        f"text_encoder/), datasets/ (load_dataset-ready), corpus/, benchmarks/. Total {seconds['total'] / 60:.1f} min."
    )
    return results
