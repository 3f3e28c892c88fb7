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
    """Evaluate a checkpoint on a world split (zero-shot, retrieval, negation probe)."""

    model: str = field(default="runs/pretrain", metadata={"help": "checkpoint folder or Hub id"})
    world_dir: str = field(default="runs/world", metadata={"help": "scene world folder"})
    split: str = field(default="val", metadata={"help": "split to evaluate on"})
    probe_items: int = field(default=200, metadata={"help": "negation-probe pairs (each with an affirmative twin)"})
    output: str | None = field(default=None, metadata={"help": "write the metrics JSON here"})


@dataclass
class DemoConfig:
    """The whole loop on the embedded default: render a world, pre-train the biased baseline, evaluate."""

    out: str = field(default="runs/demo", metadata={"help": "output folder (world/ and baseline/ inside)"})
    images: int = field(default=5000, metadata={"help": "world size"})
    seed: int = field(default=0, metadata={"help": "seed of the world, the weights and the data order"})
    epochs: int = field(default=12, metadata={"help": "pre-training epochs"})
    show_progress: bool = field(default=True, metadata={"help": "show progress bars"})


@dataclass
class ConvertOpenAIConfig:
    """Convert an OpenAI-``clip`` ViT state dict (.pth) into a transformers checkpoint + processor."""

    checkpoint: str = field(default=None, metadata={"help": "the .pth/.pt state dict (loaded with torch.load(weights_only=True))"})
    out: str = field(default=None, metadata={"help": "output checkpoint folder"})
    arch: str | None = field(default=None, metadata={"help": "expected architecture (ViT-B/32, ViT-B/16, ViT-L/14, ViT-L/14@336px); checked against the weights"})

    def __post_init__(self) -> None:
        if not self.checkpoint or not self.out:
            raise ValueError("convert-openai needs --checkpoint and --out")


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
    from .evaluation import WorldEvaluator, format_metrics
    from .modeling import build_model, load_processor

    model, processor = build_model(cfg.model), load_processor(cfg.model)
    metrics = WorldEvaluator(cfg.world_dir, cfg.split, cfg.probe_items)(model, processor)
    print(format_metrics(metrics))
    if cfg.output:
        Path(cfg.output).write_text(json.dumps(metrics, indent=2))
    return metrics


def run_finetune(cfg) -> dict:
    """Fine-tune (recipe ``paper`` or ``tiny``) and, on a scene world, report its probes."""
    from .evaluation import WorldEvaluator, format_metrics
    from .training import finetune

    evaluator = None
    if (Path(cfg.world_dir) / "annotations" / "instances_val.json").exists():
        evaluator = WorldEvaluator(cfg.world_dir, "val", 200, cfg.seed)
    result = finetune(cfg, evaluator)
    print(f"saved the fine-tuned model to {result['output_dir']} ({result['train_seconds']:.0f} s of training)")
    if result["metrics"]:
        print(f"metrics on the world's val split:\n{format_metrics(result['metrics'])}")
    return result


def run_convert_openai(cfg: ConvertOpenAIConfig) -> str:
    from .modeling import convert_openai_checkpoint

    out = convert_openai_checkpoint(cfg.checkpoint, cfg.out, cfg.arch)
    print(f"wrote a transformers CLIP checkpoint + processor to {out}")
    return str(out)


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
    from .training import FinetuneConfig, PretrainConfig

    return {
        "world": (WorldConfig, run_world),
        "pretrain": (PretrainConfig, run_pretrain),
        "finetune": (FinetuneConfig, run_finetune),
        "evaluate": (EvaluateConfig, run_evaluate),
        "demo": (DemoConfig, run_demo),
        "convert-openai": (ConvertOpenAIConfig, run_convert_openai),
    }


_SUMMARY = {
    "world": "render the embedded scene world (COCO, RefCOCOg, VQAv2 formats)",
    "pretrain": "pre-train a CLIP (tiny preset by default) on a world's affirmative captions and evaluate it",
    "finetune": "fine-tune NegationCLIP (recipes paper | tiny; text, vision, both or LoRA); --config FILE.yaml|json",
    "evaluate": "evaluate a checkpoint on a world split",
    "demo": "world + pretrain + evaluate: the whole loop on the embedded default",
    "convert-openai": "convert an OpenAI-clip ViT checkpoint (.pth) into a transformers checkpoint + processor",
}


def _usage() -> str:
    lines = ["usage: hf-negationclip <command> [options]   (hf-negationclip <command> --help for options)", "", "commands:"]
    lines += [f"  {name:<15} {text}" for name, text in _SUMMARY.items()]
    return "\n".join(lines)


def _apply_config_file(parser, config_cls, args: list[str]) -> list[str]:
    """``--config FILE`` (YAML or JSON) sets defaults; flags given on the command line still win."""
    if "--config" not in args:
        return args
    from dataclasses import fields

    from .training import read_config_file

    i = args.index("--config")
    if i + 1 >= len(args):
        raise ValueError("--config needs a file")
    values = read_config_file(args[i + 1])
    unknown = sorted(set(values) - {f.name for f in fields(config_cls)})
    if unknown:
        raise ValueError(f"unknown option(s) in {args[i + 1]}: {', '.join(unknown)}")
    parser.set_defaults(**values)
    return args[:i] + args[i + 2:]


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
        rest = _apply_config_file(parser, config_cls, rest)
        (cfg,) = parser.parse_args_into_dataclasses(rest)
        fn(cfg)
    except (ValueError, OSError, KeyError, CorpusFormatError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
