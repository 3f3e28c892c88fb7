"""The main job: the whole NegationCLIP story on the embedded scene world, from nothing, on one CPU machine.

Stages (each cached in its own folder under ``out``, each resumable after a kill):

1. ``world/``: render the scene world (COCO, RefCOCOg, VQAv2 formats);
2. ``baseline/``: pre-train "CLIP" on affirmative captions only (it never sees a negation);
3. ``corpus/``: the negated-caption corpus (both pipelines, minimal-pair distractors), and
   ``benchmarks/``: the scene twins of every benchmark (plain and controlled);
4. ``paper/``, ``ours/``, ``ours-lora/``: fine-tune three ways from the baseline (the recipes
   of ``training.RECIPES``, on one budget): the paper's method (InfoNCE on negated captions,
   text tower), ours (minimal pairs + exclusion + retain terms, text tower) and ours with LoRA;
5. evaluate all four the same way (the harness on the scene twins + the world probes; NegRefCOCOg candidates
   isolated, not cropped: the scene manifest's ``crop_mode``);
6. ``segment/``: downstream, the paper's CLIPSeg protocol: a CLIPSeg decoder trained on the baseline's frozen
   towers (affirmative referring expressions), every model's text tower swapped in without retraining;
7. ``report.md``, ``results.json``, ``results.png``, ``best/`` (the best fine-tune with its
   generated model card and ``text_encoder/``), ``datasets/`` (corpus and NegRefCOCOg as
   ``load_dataset``-ready parquet folders).

A stage whose outputs exist is skipped; ``fresh=True`` starts over.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..training import BUDGETS, FROZEN_VISION_FEATURES, RECIPES, FinetuneConfig, PretrainConfig, finetune, pretrain
from .cards import write_model_card

logger = logging.getLogger(__name__)

#: the demo's fine-tunes: recipes of ``training.RECIPES``, each run with its method on the demo's one budget (the
#: ``cpu`` budget with DemoConfig's epochs, learning rate, batch and affirmative share), all from the baseline with
#: the same data order
FINETUNES: tuple[str, ...] = ("paper", "ours", "ours-lora")
DEMO_BUDGET = "cpu"
#: the downstream stage's decoder (``SegmentConfig`` fields; the rest are its defaults, text noise 1 included): a
#: quarter of CLIPSeg's MLP width and ten times its learning rate, so 1,000 steps on 2 cores take about 40 s
SEGMENT_OPTIONS = dict(learning_rate=1e-2, decoder_intermediate_size=256)
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
    # caption side: one image, captions that differ only in the negation
    ("world-probes/caption_flip_accuracy", "caption side: flip ('P with no A' over 'P with A')"),
    ("world-probes/present_negation_accuracy", "caption side: present object ('P with Q' over 'P with no Q')"),
    ("world-probes/scope_swap_accuracy", "caption side: scope swap ('P with no A' over 'A with no P')"),
    ("world-probes/app_compare_accuracy", "caption side: the app's Compare example"),
    ("scene-caption-flip/accuracy", "caption flip scene twin (MCQ CSV)"),
    ("scene-negbench-mcq-controlled/hybrid_accuracy", "MCQ hybrid template, controlled"),
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
    finetune_epochs: int = field(
        default=BUDGETS[DEMO_BUDGET]["epochs"], metadata={"help": "fine-tuning epochs (each of the three)"}
    )
    finetune_lr: float = field(
        default=BUDGETS[DEMO_BUDGET]["learning_rate"],
        metadata={"help": "fine-tuning learning rate (all three; times the recipe's lr_scale: 2 for LoRA)"},
    )
    finetune_batch_size: int = field(
        default=BUDGETS[DEMO_BUDGET]["batch_size"], metadata={"help": "fine-tuning batch size (all three)"}
    )
    added_pairs: bool = field(
        default=True,
        metadata={"help": "corpus: render added pairs (image + Z vs image + X) for captions that mention every object"},
    )
    affirmative_ratio: float = field(
        default=BUDGETS[DEMO_BUDGET]["affirmative_ratio"],
        metadata={"help": "share of plain captions mixed into fine-tuning"},
    )
    n_items: int = field(default=200, metadata={"help": "items per scene benchmark twin and per world probe"})
    segment_steps: int = field(
        default=1000,
        metadata={"help": "CLIPSeg decoder training steps of the downstream stage (0: skip the stage)"},
    )
    fresh: bool = field(default=False, metadata={"help": "delete earlier outputs in --out and start over"})
    show_progress: bool = field(default=True, metadata={"help": "show progress bars"})


def _stage(name: str) -> None:
    print(f"\n== {name}", flush=True)


def _done(folder: Path, marker: str = "model.safetensors") -> bool:
    return (folder / marker).is_file() and (folder / "training_config.json").is_file()


def _world_probe_metrics(metrics: dict) -> dict:
    """The world evaluator's metrics (each with its Wilson ``ci95``) under ``world-probes/``; skipped ones left out."""
    return {f"world-probes/{k}": v for k, v in metrics.items() if isinstance(v, dict) and "value" in v}


def build_data(cfg: DemoConfig, out: Path) -> tuple[Path, dict]:
    """Stage 3: the corpus (train split, with distractors) and the scene benchmark twins (val split)."""
    from ..benchmarks import export_negrefcocog, write_scene_benchmarks
    from ..corpus import CorpusConfig, run_corpus
    from ..corpus.export import export_parquet
    from .cards import write_corpus_card, write_negrefcocog_card

    world, corpus = out / "world", out / "corpus"
    _stage("3/7 negated-caption corpus (both pipelines, minimal pairs) and scene benchmarks")
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
    """The ``FinetuneConfig`` of the demo's fine-tune ``label`` (a recipe name) on the stages in ``out``.

    Every fine-tune starts from ``out/baseline`` with the demo's corpus, seed and budget (``DEMO_BUDGET`` with
    DemoConfig's epochs, learning rate, batch and affirmative share); ``overrides`` (any ``FinetuneConfig`` option)
    win, which is how ``scripts/finetune_sweep.py`` varies them.
    """
    budget = RECIPES[label].options(
        DEMO_BUDGET,
        epochs=cfg.finetune_epochs,
        learning_rate=cfg.finetune_lr,
        batch_size=cfg.finetune_batch_size,
        affirmative_ratio=cfg.affirmative_ratio,
    )
    options = dict(
        preset=str(out / "baseline"),
        output_dir=str(out / label),
        recipe=label,
        corpus_dir=str(out / "corpus"),
        world_dir=str(out / "world"),
        seed=cfg.seed,
        show_progress=cfg.show_progress,
    )
    return FinetuneConfig(**{**budget, **options, **overrides})


def run_finetunes(cfg: DemoConfig, out: Path, evaluator) -> dict[str, Path]:
    """Stage 4: the three fine-tunes from the baseline, same data, same budget."""
    runs, image_features = {}, {}  # the frozen vision body is the baseline's in all three: its features, once
    # the runs that cache token states below the last vision block first: the CLS states are one block up from them
    order = sorted(
        FINETUNES, key=lambda label: FROZEN_VISION_FEATURES.get(RECIPES[label].method["train"]) != "vision_states"
    )
    for k, label in enumerate(order, 1):
        run = finetune_config(cfg, out, label)
        _stage(f"4/7 fine-tune {k}/3: {label} ({RECIPES[label].about}; lr={run.learning_rate:g})")
        folder = out / label
        runs[label] = folder
        if _done(folder):
            print(f"cached: {folder}")
            continue
        result = finetune(run, evaluator, image_features, on_save=write_model_card)
        print(f"saved {folder} ({result['train_seconds']:.0f} s of training)")
    return {label: runs[label] for label in FINETUNES}


def evaluate_all(cfg: DemoConfig, out: Path, models: dict[str, Path], tasks: dict, world_eval) -> dict:
    """Stage 5: the harness on every scene twin + the world probes, every model the same way."""
    from ..evaluation import HarnessConfig, run_harness
    from ..modeling import load_checkpoint
    from .app import COMPARE_SEEDS, compare_example_hits

    _stage("5/7 evaluate all four the same way")
    tasks = {k: v for k, v in tasks.items() if not k.startswith("_")}
    loaded = {label: load_checkpoint(str(path)) for label, path in models.items()}  # once, for both evaluations
    results = run_harness(HarnessConfig(loaded, tasks, str(out / "eval"), cfg.seed, show_progress=cfg.show_progress))
    for label, path in models.items():
        results["models"][label]["path"] = str(path)
        results["models"][label]["metrics"].update(_world_probe_metrics(world_eval(*loaded[label])))
        hits = compare_example_hits(*loaded[label])
        results["models"][label]["app_compare_seeds"] = {"right": hits, "seeds": len(COMPARE_SEEDS)}
    results["tasks"] = [*results["tasks"], "world-probes"]
    return results


def run_downstream(cfg: DemoConfig, out: Path, models: dict[str, Path]) -> dict | None:
    """Stage 6: CLIPSeg decoder trained with the baseline's towers, every model's text tower swapped in."""
    if not cfg.segment_steps:
        return None
    from ..downstream import run_segment_stage

    _stage("6/7 downstream: CLIPSeg referring segmentation, decoder trained with the baseline, text towers swapped")
    results = run_segment_stage(
        out / "segment",
        out / "world",
        models["baseline"],
        models,
        train_steps=cfg.segment_steps,
        show_progress=cfg.show_progress,
        seed=cfg.seed,
        **SEGMENT_OPTIONS,
    )
    keep = ("data", "trained_with", "eval_split", "encoders", "text_blind", "seconds", "config")
    return {k: results[k] for k in keep if k in results}


def _value(results: dict, label: str, key: str) -> float | None:
    entry = results["models"][label]["metrics"].get(key)
    return None if entry is None else entry["value"]


#: the headline's negation families (image side and caption side); the affirmative controls and generality rows are not
NEGATION_FAMILIES: tuple[str, ...] = tuple(
    key
    for key, _ in HEADLINE
    if "affirm" not in key
    and "zero_shot" not in key
    and "r@1" not in key
    and "shape_probe" not in key
    and key != "scene-negrefcocog/accuracy"
)


def worst_negation_family(results: dict) -> dict[str, tuple[str, float]]:
    """label -> (the negation family it scores lowest on, that value): the number a headline must not hide."""
    worst = {}
    for label in results["models"]:
        scored = [(key, _value(results, label, key)) for key in NEGATION_FAMILIES]
        scored = [(key, v) for key, v in scored if v is not None]
        if scored:
            worst[label] = min(scored, key=lambda kv: kv[1])
    return worst


#: affirmation and generality a fine-tune must keep to be chosen: (results key, least share of the baseline's value)
KEPT: tuple[tuple[str, float], ...] = (
    ("world-probes/affirmative_probe_accuracy", 0.95),
    ("scene-negrefcocog-controlled/affirmative_accuracy", 0.95),
    ("scene-negbench-mcq-controlled/affirmation_accuracy", 0.95),
    ("world-probes/zero_shot_shape_accuracy", 0.97),
    ("world-probes/zero_shot_color_accuracy", 0.97),
    ("world-probes/image_to_text_r@1", 0.97),
)


def lost_affirmation(results: dict, label: str) -> list[str]:
    """The rows of :data:`KEPT` on which ``label`` falls below its share of the baseline's value."""
    lost = []
    for key, share in KEPT:
        base, value = _value(results, "baseline", key), _value(results, label, key)
        if base is not None and value is not None and value < share * base:
            lost.append(f"{key} {value:.3f} < {share:.0%} of {base:.3f}")
    return lost


def choose_best(results: dict) -> tuple[str, str]:
    """(the fine-tune to publish, why): the highest worst negation family among those that keep affirmation.

    A fine-tune that loses affirmation (:func:`lost_affirmation`) is chosen only when every one does; ties
    on the worst family go to the higher mean over the negation families.
    """
    worst = worst_negation_family(results)
    candidates = [label for label in results["models"] if label != "baseline" and label in worst]
    if not candidates:
        raise ValueError("no fine-tuned model with negation metrics to choose from")
    lost = {label: lost_affirmation(results, label) for label in candidates}
    keeping = [label for label in candidates if not lost[label]]

    def mean(label: str) -> float:
        values = [_value(results, label, key) for key in NEGATION_FAMILIES]
        return sum(v for v in values if v is not None) / max(1, sum(v is not None for v in values))

    best = max(keeping or candidates, key=lambda label: (worst[label][1], mean(label)))
    name, value = worst[best]
    others = [f"{label} {worst[label][1]:.3f}" for label in candidates if label != best]
    why = f"its worst negation family ({dict(HEADLINE).get(name, name)}) is {value:.3f}" + (
        f", against {', '.join(others)}" if others else ""
    )
    dropped = [f"{label} ({'; '.join(lost[label])})" for label in candidates if lost[label]]
    if not keeping:
        why += "; every fine-tune lost affirmation, so none is safe to publish: " + ", ".join(dropped)
    elif dropped:
        why += "; not eligible, they lost affirmation: " + ", ".join(dropped)
    else:
        why += "; every fine-tune kept affirmation (>= 95% of the baseline's affirmative controls, >= 97% generality)"
    return best, why


def pick_best(results: dict) -> str:
    """The fine-tune :func:`choose_best` picks."""
    return choose_best(results)[0]


def write_report(results: dict, out: Path, best: str, seconds: dict, why: str) -> str:
    """report.md: the headline table (value [95% interval]), chance and n, then every metric."""
    from ..evaluation import markdown_table

    lines = [
        "# NegationCLIP on the scene world",
        "",
        "Every model is scored the same way on the same items; a tie counts as wrong, candidate order is "
        "shuffled, chance is given beside every accuracy. *Controlled* items differ only in the negated thing.",
        "",
        markdown_table(results, HEADLINE).rstrip("\n"),
        "",
        "![The table above as bars: 95% intervals, chance dashed](results.png)",
    ]
    lines += [
        "",
        "Worst negation family (lowest of the negation rows above, image side and caption side): "
        + ", ".join(f"{label} {name} {value:.3f}" for label, (name, value) in worst_negation_family(results).items())
        + ".",
        "",
        f"Best fine-tune: **{best}**, copied to `best/`: {why}.",
        "",
        "The app's Compare tab, pre-filled example of seeds 0-19 (true negated caption vs its affirmative twin): "
        + ", ".join(
            f"{label} {entry['right']}/{entry['seeds']} right"
            for label, entry in ((label, m.get("app_compare_seeds")) for label, m in results["models"].items())
            if entry
        )
        + ".",
        "",
        "Wall time per stage (s): " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()),
        "",
    ]
    segmentation = results.get("downstream", {}).get("segmentation")
    if segmentation:
        from ..downstream import segmentation_table

        lines += [
            "## Downstream: CLIPSeg referring segmentation",
            "",
            segmentation_table(segmentation).rstrip("\n"),
            "",
        ]
    lines += [
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
    from ..evaluation import WorldEvaluator, format_metrics, write_plot
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
    _stage("1/7 scene world")
    write_world(out / "world", cfg.images, cfg.seed, show_progress=cfg.show_progress)
    seconds["world"] = time.time() - t0
    _stage("2/7 baseline CLIP, pre-trained on affirmative captions only")
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
            on_save=write_model_card,
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
    t = time.time()
    segmentation = run_downstream(cfg, out, {"baseline": out / "baseline", **runs})
    if segmentation:
        results["downstream"] = {"segmentation": segmentation}
        seconds["downstream"] = time.time() - t
    _stage("7/7 report, best checkpoint, datasets")
    best, why = choose_best(results)
    results["best"], results["best_reason"] = best, why
    (out / "results.json").write_text(json.dumps(results, indent=2))
    write_plot(results, out / "results.png", rows=HEADLINE)  # the headline (eval/results.png: every metric)
    publish_best(out, best)
    seconds["total"] = time.time() - t0
    report = write_report(results, out, best, seconds, why)
    print("\n" + report.split("## Every metric")[0])
    print(
        f"Everything is in {out}: report.md, results.json, results.png, best/ (checkpoint + model card + "
        f"text_encoder/), datasets/ (load_dataset-ready), corpus/, benchmarks/. Total {seconds['total'] / 60:.1f} min."
    )
    return results
