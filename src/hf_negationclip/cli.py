"""``hf-negationclip``: one command, a subcommand per job.

Each subcommand parses one config dataclass (``HfArgumentParser``) and calls
one Python function, ``run_<name>(config)``, that can be called directly::

    from hf_negationclip.cli import DemoConfig, run_demo
    run_demo(DemoConfig(out="runs/demo", images=2000))
"""
from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

logger = logging.getLogger("hf_negationclip")


@dataclass
class WorldConfig:
    """Render the embedded scene world in COCO / RefCOCOg / VQAv2 formats."""

    out: str = field(default="runs/world", metadata={"help": "output folder"})
    images: int = field(default=5000, metadata={"help": "number of images over all splits"})
    seed: int = field(default=0, metadata={"help": "world seed (same seed, same bytes)"})
    image_size: int = field(default=128, metadata={"help": "image side in pixels (>= 96)"})
    splits: str = field(default="train=0.8,val=0.1,test=0.1", metadata={"help": "split=fraction pairs, comma-separated"})
    show_progress: bool = field(default=True, metadata={"help": "show a progress bar"})

    def split_fractions(self) -> dict[str, float]:
        try:
            pairs = [item.split("=") for item in self.splits.split(",") if item.strip()]
            return {name.strip(): float(value) for name, value in pairs}
        except ValueError as err:
            raise ValueError(f"--splits must look like 'train=0.8,val=0.2', got {self.splits!r}") from err


@dataclass
class EvaluateConfig:
    """Score checkpoints on the negation benchmarks (real files and/or the scene twins of a world)."""

    model: list[str] = field(default_factory=lambda: ["runs/pretrain"],
                             metadata={"help": "checkpoint folder, Hub id or preset; repeat (--model a --model b) for several"})
    output_dir: str = field(default="runs/eval", metadata={"help": "results.json, results.md and results.png go here"})
    world_dir: str | None = field(default=None, metadata={"help": "scene world: write its benchmark twins and evaluate on them"})
    benchmarks_dir: str | None = field(default=None, metadata={"help": "scene twins folder (default <output_dir>/scene_benchmarks)"})
    split: str = field(default="val", metadata={"help": "world split the scene twins are built from"})
    n_items: int = field(default=200, metadata={"help": "items per scene twin"})
    tasks: str = field(default="all", metadata={"help": "comma-separated task kinds or names to run (all: every task given)"})
    negrefcocog_json: str | None = field(default=None, metadata={"help": "the official NegRefCOCOg.json"})
    coco_images: str | None = field(default=None, metadata={"help": "COCO train2014 image folder (for NegRefCOCOg)"})
    valse_json: str | None = field(default=None, metadata={"help": "VALSE existence.json"})
    valse_images: str | None = field(default=None, metadata={"help": "Visual7W image folder of VALSE existence"})
    negbench_csv: str | None = field(default=None, metadata={"help": "NegBench MCQ CSV"})
    negbench_root: str | None = field(default=None, metadata={"help": "folder the CSV's image paths resolve against"})
    ccneg_pt: str | None = field(default=None, metadata={"help": "CC-Neg ccneg_preprocessed.pt"})
    ccneg_images: str | None = field(default=None, metadata={"help": "folder holding the CC-Neg images (by file name)"})
    ccneg_last: int = field(default=40_000, metadata={"help": "CC-Neg evaluation split: the last N items of the file"})
    retrieval_captions: str | None = field(default=None, metadata={"help": "COCO captions JSON for retrieval"})
    retrieval_images: str | None = field(default=None, metadata={"help": "image folder of retrieval_captions"})
    retrieval_max_images: int | None = field(default=5000, metadata={"help": "retrieval over the first N images"})
    zeroshot_dir: str | None = field(default=None, metadata={"help": "zero-shot: ImageFolder tree (class/image) or a save_to_disk dataset with Image + ClassLabel columns"})
    crop_margin: float = field(default=0.0, metadata={"help": "NegRefCOCOg crop context, a fraction of the box per side (0: official)"})
    batch_size: int = field(default=256, metadata={"help": "images per encoding batch (texts: 4x)"})
    bootstrap: int = field(default=1000, metadata={"help": "bootstrap resamples for the 95% intervals (0: none)"})
    seed: int = field(default=0, metadata={"help": "seed of candidate shuffling, scene twins and bootstrap"})
    show_progress: bool = field(default=True, metadata={"help": "show progress bars"})

    def real_tasks(self) -> dict[str, dict]:
        """Specs of the real benchmarks whose files were given (both halves of a pair are required)."""
        pairs = {
            "negrefcocog": (self.negrefcocog_json, self.coco_images, lambda a, b: {"json": a, "image_dir": b}),
            "valse-existence": (self.valse_json, self.valse_images, lambda a, b: {"json": a, "image_dir": b}),
            "negbench-mcq": (self.negbench_csv, self.negbench_root, lambda a, b: {"csv": a, "image_root": b}),
            "ccneg": (self.ccneg_pt, self.ccneg_images, lambda a, b: {"pt": a, "image_dir": b, "last": self.ccneg_last}),
            "retrieval": (self.retrieval_captions, self.retrieval_images,
                          lambda a, b: {"captions": a, "image_dir": b, "max_images": self.retrieval_max_images}),
        }
        specs = {}
        for name, (a, b, make) in pairs.items():
            if bool(a) != bool(b):
                raise ValueError(f"task {name} needs both its file and its image folder")
            if a:
                specs[name] = {"kind": name, **make(a, b)}
        if self.zeroshot_dir:
            specs["zeroshot"] = {"kind": "zeroshot", "folder": self.zeroshot_dir}
        return specs


@dataclass
class NegRefCOCOgConfig:
    """Build NegRefCOCOg and export it as parquet (images embedded) with a dataset card."""

    config: str = field(default="scene", metadata={"help": "refcocog | official | scene"})
    data_dir: str = field(default="runs/world", metadata={"help": "RefCOCOg root, folder of NegRefCOCOg.json, or a scene world"})
    image_dir: str | None = field(default=None, metadata={"help": "COCO train2014 folder (refcocog, official)"})
    out: str = field(default="runs/negrefcocog", metadata={"help": "output folder (one sub-folder per config + README.md)"})
    seed: int = field(default=0, metadata={"help": "seed of the candidate shuffling"})


@dataclass
class DemoConfig:
    """The whole loop on the embedded default: render a world, pre-train the biased baseline, evaluate."""

    out: str = field(default="runs/demo", metadata={"help": "output folder (world/ and baseline/ inside)"})
    images: int = field(default=5000, metadata={"help": "world size"})
    seed: int = field(default=0, metadata={"help": "seed of the world, the weights and the data order"})
    epochs: int = field(default=12, metadata={"help": "pre-training epochs"})
    show_progress: bool = field(default=True, metadata={"help": "show progress bars"})


def run_world(cfg: WorldConfig) -> dict:
    from .synthetic import write_world

    counts = write_world(cfg.out, cfg.images, cfg.seed, cfg.split_fractions(), cfg.image_size, cfg.show_progress)
    print(f"wrote {sum(counts.values())} images ({', '.join(f'{k}: {v}' for k, v in counts.items())}) to {cfg.out}")
    return counts


def _pretrain_and_evaluate(cfg, eval_split: str = "val", probe_items: int = 200) -> dict:
    from .evaluation import WorldEvaluator, format_metrics
    from .training import pretrain

    evaluator = None
    if (Path(cfg.world_dir) / "annotations" / f"instances_{eval_split}.json").exists():
        evaluator = WorldEvaluator(cfg.world_dir, eval_split, probe_items, cfg.seed)
    result = pretrain(cfg, evaluator)
    print(f"saved the model to {result['output_dir']} ({result['train_seconds']:.0f} s of training)")
    if result["metrics"]:
        print(f"metrics on the world's {eval_split} split:\n{format_metrics(result['metrics'])}")
    return result


def run_pretrain(cfg) -> dict:
    return _pretrain_and_evaluate(cfg)


def run_evaluate(cfg: EvaluateConfig) -> dict:
    from .benchmarks import write_scene_benchmarks
    from .evaluation import TASK_KINDS, HarnessConfig, run_harness

    from .evaluation import load_checkpoint

    labels = {label: load_checkpoint(name) for label, name in _model_labels(cfg.model).items()}  # fail fast
    tasks = cfg.real_tasks()
    if cfg.world_dir or cfg.benchmarks_dir:
        bench = Path(cfg.benchmarks_dir or Path(cfg.output_dir) / "scene_benchmarks")
        if cfg.world_dir:
            manifest = write_scene_benchmarks(cfg.world_dir, bench, cfg.split, cfg.n_items, cfg.seed)
        else:
            from .corpus import read_json

            manifest = read_json(bench / "manifest.json")
        tasks.update(manifest["tasks"])
    wanted = [w.strip() for w in cfg.tasks.split(",") if w.strip()]
    if wanted != ["all"]:
        unknown = [w for w in wanted if w not in TASK_KINDS and w not in tasks]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; kinds: {list(TASK_KINDS)}")
        tasks = {n: s for n, s in tasks.items() if n in wanted or s["kind"] in wanted}
    results = run_harness(HarnessConfig(labels, tasks, cfg.output_dir, cfg.seed, cfg.bootstrap, cfg.batch_size,
                                        cfg.crop_margin, cfg.show_progress))
    for label, name in _model_labels(cfg.model).items():
        results["models"][label]["path"] = name
    (Path(cfg.output_dir) / "results.json").write_text(json.dumps(results, indent=2))
    print((Path(cfg.output_dir) / "results.md").read_text())
    print(f"wrote {Path(cfg.output_dir) / 'results.json'}, results.md and results.png")
    return results


def _model_labels(models: list[str]) -> dict[str, str]:
    """A short, unique label per model (its folder name), mapped to the checkpoint."""
    labels: dict[str, str] = {}
    for name in models:
        label = Path(name.rstrip("/")).name or name
        while label in labels:
            label += "'"
        labels[label] = name
    return labels


def _merge_repeated(argv: list[str], flag: str) -> list[str]:
    """``--model a --model b`` -> ``--model a b`` (HfArgumentParser keeps only the last of repeated list flags)."""
    values, rest, i = [], [], 0
    while i < len(argv):
        if argv[i] == flag:
            i += 1
            while i < len(argv) and not argv[i].startswith("--"):
                values.append(argv[i])
                i += 1
        else:
            rest.append(argv[i])
            i += 1
    return rest + ([flag, *values] if values else [])


def run_negrefcocog(cfg: NegRefCOCOgConfig) -> Path:
    from .benchmarks import export_negrefcocog

    out = export_negrefcocog(cfg.out, cfg.config, cfg.data_dir, cfg.image_dir, cfg.seed)
    stats = json.loads((out / "stats.json").read_text())[cfg.config]
    print(f"wrote NegRefCOCOg {cfg.config}: {stats['n']} samples, cues {stats['cue']} to {out}")
    return out


def run_demo(cfg: DemoConfig) -> dict:
    from .training import PretrainConfig

    out = Path(cfg.out)
    run_world(WorldConfig(out=str(out / "world"), images=cfg.images, seed=cfg.seed, show_progress=cfg.show_progress))
    result = _pretrain_and_evaluate(PretrainConfig(world_dir=str(out / "world"), output_dir=str(out / "baseline"),
                                                   epochs=cfg.epochs, seed=cfg.seed, show_progress=cfg.show_progress))
    m = result["metrics"]
    neg, aff = m["negation_probe_accuracy"], m["affirmative_probe_accuracy"]
    print(f"\nThe baseline, trained on captions that never negate, picks the image WITHOUT the negated object "
          f"{neg['value']:.0%} of the time (chance {neg['chance']:.0%}); with the affirmative caption it finds the object "
          f"{aff['value']:.0%} of the time. Metrics: {out / 'baseline' / 'metrics.json'}")
    return result


def _commands() -> dict[str, tuple[type, Callable]]:
    from .training import PretrainConfig

    return {
        "world": (WorldConfig, run_world),
        "pretrain": (PretrainConfig, run_pretrain),
        "evaluate": (EvaluateConfig, run_evaluate),
        "negrefcocog": (NegRefCOCOgConfig, run_negrefcocog),
        "demo": (DemoConfig, run_demo),
    }


_SUMMARY = {
    "world": "render the embedded scene world (COCO, RefCOCOg, VQAv2 formats)",
    "pretrain": "pre-train a CLIP (tiny preset by default) on a world's affirmative captions and evaluate it",
    "evaluate": "score checkpoints on the negation benchmarks (real files and/or a world's scene twins)",
    "negrefcocog": "build NegRefCOCOg (refcocog | official | scene) and export it as parquet with a dataset card",
    "demo": "world + pretrain + evaluate: the whole loop on the embedded default",
}


def _usage() -> str:
    lines = ["usage: hf-negationclip <command> [options]   (hf-negationclip <command> --help for options)", "", "commands:"]
    lines += [f"  {name:<12} {text}" for name, text in _SUMMARY.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    from .corpus import CorpusFormatError

    commands = _commands()
    name, rest = argv[0], argv[1:]
    if name not in commands:
        print(f"error: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    from transformers import HfArgumentParser

    config_cls, fn = commands[name]
    parser = HfArgumentParser(config_cls, prog=f"hf-negationclip {name}", description=_SUMMARY[name])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # one line per saved file is noise here
    try:
        (cfg,) = parser.parse_args_into_dataclasses(_merge_repeated(rest, "--model") if name == "evaluate" else rest)
        fn(cfg)
    except (ValueError, OSError, KeyError, CorpusFormatError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
