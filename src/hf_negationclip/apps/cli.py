"""``hf-negationclip``: one command, a subcommand per job.

Each subcommand parses one config dataclass (``HfArgumentParser``) and calls
one Python function, ``run_<name>(config)``, that can be called directly::

    from hf_negationclip.apps.demo import DemoConfig, run_demo
    run_demo(DemoConfig(out="runs/demo", images=2000))
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__

logger = logging.getLogger("hf_negationclip")


@dataclass
class WorldConfig:
    """Render the embedded scene world in COCO / RefCOCOg / VQAv2 formats."""

    out: str = field(default="runs/world", metadata={"help": "output folder"})
    images: int = field(default=5000, metadata={"help": "number of images over all splits"})
    seed: int = field(default=0, metadata={"help": "world seed (same seed, same bytes)"})
    image_size: int = field(default=128, metadata={"help": "image side in pixels (>= 96)"})
    splits: str = field(
        default="train=0.8,val=0.1,test=0.1", metadata={"help": "split=fraction pairs, comma-separated"}
    )
    layout: str = field(
        default="grid",
        metadata={
            "help": "grid (objects centred in 3x3 cells, one ViT patch each: "
            "learnable by the tiny preset) | random (anywhere: harder)"
        },
    )
    background: str = field(
        default="plain",
        metadata={"help": "plain (flat or softly shaded) | textured (shaded, striped, grainy, checkered)"},
    )
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

    model: list[str] = field(
        default_factory=lambda: ["runs/pretrain"],
        metadata={"help": "checkpoint folder, Hub id or preset; repeat (--model a --model b) for several"},
    )
    output_dir: str = field(default="runs/eval", metadata={"help": "results.json, results.md and results.png go here"})
    world_dir: str | None = field(
        default=None, metadata={"help": "scene world: write its benchmark twins and evaluate on them"}
    )
    benchmarks_dir: str | None = field(
        default=None, metadata={"help": "scene twins folder (default <output_dir>/scene_benchmarks)"}
    )
    split: str = field(default="val", metadata={"help": "world split the scene twins are built from"})
    n_items: int = field(default=200, metadata={"help": "items per scene twin"})
    tasks: str = field(
        default="all", metadata={"help": "comma-separated task kinds or names to run (all: every task given)"}
    )
    negrefcocog_json: str | None = field(default=None, metadata={"help": "the official NegRefCOCOg.json"})
    coco_images: str | None = field(default=None, metadata={"help": "COCO train2014 image folder (for NegRefCOCOg)"})
    valse_json: str | None = field(default=None, metadata={"help": "VALSE existence.json"})
    valse_images: str | None = field(default=None, metadata={"help": "Visual7W image folder of VALSE existence"})
    negbench_csv: str | None = field(default=None, metadata={"help": "NegBench MCQ CSV"})
    negbench_root: str | None = field(default=None, metadata={"help": "folder the CSV's image paths resolve against"})
    ccneg_pt: str | None = field(
        default=None,
        metadata={
            "help": "CC-Neg ccneg_preprocessed.pt, or a negated_captions_<split>.json (ours or the NegationCLIP repo's)"
        },
    )
    ccneg_images: str | None = field(
        default=None,
        metadata={
            "help": "CC-Neg: folder holding the images (by file name); negated_captions JSON: the image root its "
            "file_name entries resolve against"
        },
    )
    ccneg_last: int = field(default=40_000, metadata={"help": "CC-Neg evaluation split: the last N items of the file"})
    retrieval_captions: str | None = field(default=None, metadata={"help": "COCO captions JSON for retrieval"})
    retrieval_images: str | None = field(default=None, metadata={"help": "image folder of retrieval_captions"})
    retrieval_max_images: int | None = field(default=5000, metadata={"help": "retrieval over the first N images"})
    zeroshot_dir: str | None = field(
        default=None,
        metadata={
            "help": "zero-shot: ImageFolder tree (class/image) or a save_to_disk dataset with Image + ClassLabel columns"
        },
    )
    crop_margin: float = field(
        default=0.0, metadata={"help": "NegRefCOCOg crop context, a fraction of the box per side (0: official)"}
    )
    crop_mode: str | None = field(
        default=None,
        metadata={
            "help": "NegRefCOCOg candidates: crop (the box alone, the paper's scorer), isolate (the image at its own scale, "
            "outside the box painted over) or blur (outside blurred); default: crop for real files, isolate for "
            "the scene twins",
            "choices": ["crop", "isolate", "blur"],
        },
    )
    batch_size: int = field(default=256, metadata={"help": "images per encoding batch (texts: 4x)"})
    intervals: bool = field(default=True, metadata={"help": "95 per cent Wilson intervals beside every accuracy"})
    seed: int = field(default=0, metadata={"help": "seed of candidate shuffling and scene twins"})
    show_progress: bool = field(default=True, metadata={"help": "show progress bars"})

    def real_tasks(self) -> dict[str, dict]:
        """Specs of the real benchmarks whose files were given (both halves of a pair are required)."""
        pairs = {
            "negrefcocog": (self.negrefcocog_json, self.coco_images, lambda a, b: {"json": a, "image_dir": b}),
            "valse-existence": (self.valse_json, self.valse_images, lambda a, b: {"json": a, "image_dir": b}),
            "negbench-mcq": (self.negbench_csv, self.negbench_root, lambda a, b: {"csv": a, "image_root": b}),
            "ccneg": (
                self.ccneg_pt,
                self.ccneg_images,
                lambda a, b: {"pt": a, "image_dir": b, "last": self.ccneg_last},
            ),
            "retrieval": (
                self.retrieval_captions,
                self.retrieval_images,
                lambda a, b: {"captions": a, "image_dir": b, "max_images": self.retrieval_max_images},
            ),
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
    data_dir: str = field(
        default="runs/world", metadata={"help": "RefCOCOg root, folder of NegRefCOCOg.json, or a scene world"}
    )
    image_dir: str | None = field(default=None, metadata={"help": "COCO train2014 folder (refcocog, official)"})
    out: str = field(
        default="runs/negrefcocog", metadata={"help": "output folder (one sub-folder per config + README.md)"}
    )
    seed: int = field(default=0, metadata={"help": "seed of the candidate shuffling"})


@dataclass
class AppConfig:
    """Open the Gradio app (needs the ``app`` extra: pip install "hf-negationclip[app]")."""

    model: list[str] = field(
        default_factory=list,
        metadata={
            "help": "checkpoint folder or Hub id, optionally LABEL=PATH; repeat --model for several "
            "(default: the baseline and the best NegationCLIP under --demo_dir)"
        },
    )
    demo_dir: str = field(default="runs/demo", metadata={"help": "make demo's output: default models and results.json"})
    results: str | None = field(
        default=None,
        metadata={"help": "evaluation results.json for the Benchmarks tab (default: <demo_dir>/results.json)"},
    )
    host: str = field(default="127.0.0.1", metadata={"help": "address to serve on (0.0.0.0 for every interface)"})
    port: int = field(default=7860, metadata={"help": "port to serve on"})
    share: bool = field(default=False, metadata={"help": "also open a public gradio.live link"})
    seed: int = field(default=0, metadata={"help": "first scene and first negation pair"})


@dataclass
class PushSpaceConfig:
    """Stage the app as a Hugging Face Space folder and upload it (--dry_run: stage and list only)."""

    repo_id: str = field(metadata={"help": "the Space, ORG/NAME"})
    model: list[str] = field(
        default_factory=list,
        metadata={"help": "Hub id of a model to show, optionally LABEL=ORG/NAME; repeat --model for several"},
    )
    out_dir: str = field(default="runs/space", metadata={"help": "where to stage the Space folder"})
    results: str | None = field(default=None, metadata={"help": "results.json to ship for the Benchmarks tab"})
    title: str = field(default="NegationCLIP vs CLIP", metadata={"help": "Space title"})
    requirement: str = field(
        default=f"hf-negationclip[app]=={__version__}",
        metadata={"help": "pip requirement that installs this package in the Space (e.g. a git URL)"},
    )
    private: bool = field(default=False, metadata={"help": "create the Space private"})
    exist_ok: bool = field(default=False, metadata={"help": "allow a new commit to an existing Space"})
    dry_run: bool = field(default=False, metadata={"help": "stage the folder and list its files; upload nothing"})


@dataclass
class PushOptions:
    """What the model and dataset pushes share (push-space has its own options)."""

    private: bool = field(default=False, metadata={"help": "create the repo as private"})
    revision: str | None = field(default=None, metadata={"help": "branch to commit to (created from main if missing)"})
    dry_run: bool = field(
        default=False, metadata={"help": "only stage: print the file list and the card, send nothing"}
    )
    exist_ok: bool = field(default=False, metadata={"help": "allow adding a commit to an existing repo"})
    stage_dir: str | None = field(default=None, metadata={"help": "staging folder (default: a fresh temporary one)"})

    def push_kwargs(self) -> dict:
        return dict(
            private=self.private,
            revision=self.revision,
            dry_run=self.dry_run,
            exist_ok=self.exist_ok,
            stage_dir=self.stage_dir,
        )


@dataclass(kw_only=True)
class PushModelConfig(PushOptions):
    """Stage a run folder (checkpoint, card, results, logs, plots) and push it to a Hub model repo."""

    run_dir: str = field(
        metadata={"help": "run folder (a saved checkpoint with training_config.json, results.json, ...)"}
    )
    repo_id: str = field(metadata={"help": "target Hub repo, ORG/NAME"})
    adapter: bool = field(
        default=False, metadata={"help": "push the LoRA adapter in RUN_DIR/adapter/ instead of the full weights"}
    )
    base_model: str | None = field(
        default=None,
        metadata={"help": "Hub id of the base model (required when the run started from a local folder and --adapter)"},
    )
    model_label: str | None = field(
        default=None, metadata={"help": "this run's label in results.json (default: found by path)"}
    )
    datasets: str | None = field(
        default=None,
        metadata={
            "help": "task=ORG/NAME pairs, comma-separated: the Hub datasets behind results.json's tasks (for model-index)"
        },
    )


@dataclass(kw_only=True)
class PushDatasetConfig(PushOptions):
    """Stage a dataset folder (<config>/<split>-*.parquet + README.md with configs:) and push it."""

    folder: str = field(metadata={"help": "dataset folder with README.md and <config>/<split>-*.parquet"})
    repo_id: str = field(metadata={"help": "target Hub dataset repo, ORG/NAME"})


@dataclass
class PullConfig:
    """Download a model, dataset or Space repo (works offline from the cache with HF_HUB_OFFLINE=1)."""

    repo_id: str = field(metadata={"help": "Hub repo, ORG/NAME"})
    repo_type: str = field(default="model", metadata={"help": "model | dataset | space"})
    revision: str | None = field(default=None, metadata={"help": "branch, tag or commit"})
    local_dir: str | None = field(default=None, metadata={"help": "copy the files here (default: the Hub cache only)"})


@dataclass
class ConvertOpenAIConfig:
    """Convert an OpenAI-``clip`` ViT state dict (.pth) into a transformers checkpoint + processor."""

    checkpoint: str = field(
        default=None, metadata={"help": "the .pth/.pt state dict (loaded with torch.load(weights_only=True))"}
    )
    out: str = field(default=None, metadata={"help": "output checkpoint folder"})
    arch: str | None = field(
        default=None,
        metadata={
            "help": "expected architecture (ViT-B/32, ViT-B/16, ViT-L/14, ViT-L/14@336px); checked against the weights"
        },
    )

    def __post_init__(self) -> None:
        if not self.checkpoint or not self.out:
            raise ValueError("convert-openai needs --checkpoint and --out")


def run_world(cfg: WorldConfig) -> dict:
    from ..world import write_world

    counts = write_world(
        cfg.out,
        cfg.images,
        cfg.seed,
        cfg.split_fractions(),
        cfg.image_size,
        cfg.show_progress,
        layout=cfg.layout,
        background=cfg.background,
    )
    print(f"wrote {sum(counts.values())} images ({', '.join(f'{k}: {v}' for k, v in counts.items())}) to {cfg.out}")
    return counts


def run_pretrain(cfg) -> dict:
    """Pre-train, and on a scene world report the model's probes on the val split."""
    from ..evaluation import WorldEvaluator, format_metrics
    from ..training import pretrain
    from .cards import write_model_card

    evaluator = None
    if (Path(cfg.world_dir) / "annotations" / "instances_val.json").exists():
        evaluator = WorldEvaluator(cfg.world_dir, "val", 200, cfg.seed)
    result = pretrain(cfg, evaluator, on_save=write_model_card)
    print(f"saved the model to {result['output_dir']} ({result['train_seconds']:.0f} s of training)")
    if result["metrics"]:
        print(f"metrics on the world's val split:\n{format_metrics(result['metrics'])}")
    return result


def run_evaluate(cfg: EvaluateConfig) -> dict:
    from ..benchmarks import write_scene_benchmarks
    from ..evaluation import TASK_KINDS, HarnessConfig, load_checkpoint, run_harness

    labels = {label: load_checkpoint(name) for label, name in _model_labels(cfg.model).items()}  # fail fast
    tasks = cfg.real_tasks()
    if cfg.world_dir or cfg.benchmarks_dir:
        bench = Path(cfg.benchmarks_dir or Path(cfg.output_dir) / "scene_benchmarks")
        if cfg.world_dir:
            manifest = write_scene_benchmarks(cfg.world_dir, bench, cfg.split, cfg.n_items, cfg.seed)
        else:
            from ..benchmarks.twins import with_scene_defaults
            from ..io import read_json

            manifest = with_scene_defaults(read_json(bench / "manifest.json"))
        tasks.update(manifest["tasks"])
    wanted = [w.strip() for w in cfg.tasks.split(",") if w.strip()]
    if wanted != ["all"]:
        unknown = [w for w in wanted if w not in TASK_KINDS and w not in tasks]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; kinds: {list(TASK_KINDS)}")
        tasks = {n: s for n, s in tasks.items() if n in wanted or s["kind"] in wanted}
    results = run_harness(
        HarnessConfig(
            labels,
            tasks,
            cfg.output_dir,
            cfg.seed,
            cfg.intervals,
            cfg.batch_size,
            cfg.crop_margin,
            cfg.show_progress,
            cfg.crop_mode,
        )
    )
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


def run_finetune(cfg) -> dict:
    """Fine-tune (a recipe of ``training.RECIPES``) and, on a scene world, report its probes."""
    from ..evaluation import WorldEvaluator, format_metrics
    from ..training import finetune
    from .cards import write_model_card

    evaluator = None
    if (Path(cfg.world_dir) / "annotations" / "instances_val.json").exists():
        evaluator = WorldEvaluator(cfg.world_dir, "val", 200, cfg.seed)
    result = finetune(cfg, evaluator, on_save=write_model_card)
    print(f"saved the fine-tuned model to {result['output_dir']} ({result['train_seconds']:.0f} s of training)")
    if result["metrics"]:
        print(f"metrics on the world's val split:\n{format_metrics(result['metrics'])}")
    return result


def run_convert_openai(cfg: ConvertOpenAIConfig) -> str:
    from ..modeling import convert_openai_checkpoint

    out = convert_openai_checkpoint(cfg.checkpoint, cfg.out, cfg.arch)
    print(f"wrote a transformers CLIP checkpoint + processor to {out}")
    return str(out)


def run_negrefcocog(cfg: NegRefCOCOgConfig) -> Path:
    from ..benchmarks import export_negrefcocog
    from .cards import write_negrefcocog_card

    out = export_negrefcocog(cfg.out, cfg.config, cfg.data_dir, cfg.image_dir, cfg.seed)
    write_negrefcocog_card(out)  # every config exported into the folder so far
    stats = json.loads((out / "stats.json").read_text())[cfg.config]
    print(f"wrote NegRefCOCOg {cfg.config}: {stats['n']} samples, cues {stats['cue']} to {out}")
    return out


def run_app(cfg: AppConfig, launch: bool = True):
    """Load the models and serve the app; ``launch=False`` returns the Blocks without serving."""
    from .app import build_demo, default_model_specs, load_models

    specs = cfg.model or default_model_specs(cfg.demo_dir)
    results = cfg.results
    if results is None and (Path(cfg.demo_dir) / "results.json").is_file():
        results = str(Path(cfg.demo_dir) / "results.json")
    demo = build_demo(load_models(specs), results, seed=cfg.seed)
    if launch:
        demo.launch(server_name=cfg.host, server_port=cfg.port, share=cfg.share)
    return demo


def run_push_space(cfg: PushSpaceConfig) -> list[Path]:
    from .space import push_space, stage_space

    files = stage_space(cfg.out_dir, cfg.model, cfg.title, cfg.results, cfg.requirement)
    print(f"staged the Space {cfg.repo_id} in {cfg.out_dir}:")
    for path in files:
        print(f"  {path.name:<18} {path.stat().st_size:>7} bytes")
    if cfg.dry_run:
        print("dry run: nothing uploaded")
    else:
        push_space(cfg.out_dir, cfg.repo_id, cfg.private, cfg.exist_ok)
        print(f"uploaded to https://huggingface.co/spaces/{cfg.repo_id}")
    return files


def _report_push(staged, dry_run: bool):
    print(f"staged {len(staged.files)} files in {staged.folder}:\n{staged.tree()}")
    if staged.skipped:
        groups: dict[str, int] = {}
        for rel in staged.skipped:  # one entry per top-level folder: checkpoints/ holds many files
            top = rel.split("/")[0] + ("/" if "/" in rel else "")
            groups[top] = groups.get(top, 0) + 1
        print("left out: " + ", ".join(f"{k} ({n} files)" if n > 1 else k for k, n in groups.items()))
    if dry_run:
        print(
            f"\n--- README.md ---\n{staged.card}\n--- dry run: nothing was sent (commit would be "
            f"{staged.commit_message!r}) ---"
        )
    else:
        print(f"pushed to {staged.repo_id}: {staged.commit_url}")
    return staged


def _pairs(text: str | None, flag: str) -> dict[str, str]:
    pairs = [item.split("=") for item in (text or "").split(",") if item.strip()]
    if any(len(p) != 2 for p in pairs):
        raise ValueError(f"{flag} must look like 'task=ORG/NAME,task2=ORG/NAME2', got {text!r}")
    return {k.strip(): v.strip() for k, v in pairs}


def run_push_model(cfg: PushModelConfig):
    from .hub import push_model

    staged = push_model(
        cfg.run_dir,
        cfg.repo_id,
        adapter=cfg.adapter,
        base_model=cfg.base_model,
        model_label=cfg.model_label,
        dataset_ids=_pairs(cfg.datasets, "--datasets"),
        **cfg.push_kwargs(),
    )
    return _report_push(staged, cfg.dry_run)


def run_push_dataset(cfg: PushDatasetConfig):
    from .hub import push_dataset

    staged = push_dataset(cfg.folder, cfg.repo_id, **cfg.push_kwargs())
    return _report_push(staged, cfg.dry_run)


def run_pull(cfg: PullConfig) -> Path:
    from .hub import pull

    path = pull(cfg.repo_id, cfg.repo_type, revision=cfg.revision, local_dir=cfg.local_dir)
    print(path)
    return path


def run_corpus(cfg) -> dict:
    from ..corpus.pipeline import run_corpus as build

    summary = build(cfg)
    for split, info in summary["splits"].items():
        print(
            f"{split}: {info['captions']} negated captions on {info['images']} images "
            f"({info['with_distractors']} with a distractor) -> {Path(cfg.output_dir) / info['file']}"
        )
    counts = summary["counts"]
    print(
        f"accepted {sum(v for k, v in counts.items() if k.endswith('/accepted'))}, rejected "
        f"{sum(v for k, v in counts.items() if k.endswith('/rejected'))}; details in {Path(cfg.output_dir) / 'corpus_stats.json'}"
    )
    return summary


def run_negation_stats(cfg) -> dict:
    from ..corpus.stats import run_negation_stats as count

    return count(cfg)


def run_export_corpus(cfg) -> dict:
    from ..corpus.export import run_export_corpus as export
    from .cards import write_corpus_card

    result = export(cfg)
    write_corpus_card(result["output_dir"], cfg.license)
    print(
        f"wrote {result['output_dir']} ({result['splits']}) with its dataset card; load it with "
        f"datasets.load_dataset({result['output_dir']!r}, 'combined')"
    )
    return result


def run_segment(cfg) -> dict:
    """Train a CLIPSeg decoder on a CLIP's frozen towers and score swapped-in text towers (``downstream``)."""
    from ..downstream.segmentation import run_segment as segment

    results = segment(cfg)
    print((Path(cfg.output_dir) / "results.md").read_text())
    print(f"wrote {Path(cfg.output_dir) / 'results.json'} and results.md ({results['seconds']:.0f} s)")
    return results


def _commands() -> dict[str, tuple[type, Callable]]:
    from ..corpus.export import ExportCorpusConfig
    from ..corpus.pipeline import CorpusConfig
    from ..corpus.stats import NegationStatsConfig
    from ..downstream import diffusion
    from ..downstream.segmentation import SegmentConfig
    from ..training import FinetuneConfig, PretrainConfig
    from .demo import DemoConfig, run_demo

    return {
        "world": (WorldConfig, run_world),
        "corpus": (CorpusConfig, run_corpus),
        "export-corpus": (ExportCorpusConfig, run_export_corpus),
        "negation-stats": (NegationStatsConfig, run_negation_stats),
        "pretrain": (PretrainConfig, run_pretrain),
        "finetune": (FinetuneConfig, run_finetune),
        "evaluate": (EvaluateConfig, run_evaluate),
        "negrefcocog": (NegRefCOCOgConfig, run_negrefcocog),
        "demo": (DemoConfig, run_demo),
        "convert-openai": (ConvertOpenAIConfig, run_convert_openai),
        "segment": (SegmentConfig, run_segment),
        "app": (AppConfig, run_app),
        "push-space": (PushSpaceConfig, run_push_space),
        "push-model": (PushModelConfig, run_push_model),
        "push-dataset": (PushDatasetConfig, run_push_dataset),
        "pull": (PullConfig, run_pull),
        "swap-text-encoder": (diffusion.SwapTextEncoderConfig, diffusion.run_swap_text_encoder),
        "t2i-train": (diffusion.T2ITrainConfig, diffusion.run_t2i_train),
        "t2i-eval": (diffusion.T2IEvalConfig, diffusion.run_t2i_eval),
    }


_SUMMARY = {
    "world": "render the embedded scene world (COCO, RefCOCOg, VQAv2 formats)",
    "corpus": "build the negated-caption corpus (2 pipelines, validation, minimal-pair distractors, resumable shards)",
    "export-corpus": "export a corpus as a parquet folder with embedded images + dataset card (load_dataset-ready)",
    "negation-stats": "how often captions contain negation, by cue (COCO JSON, parquet folder or Hub dataset)",
    "pretrain": "pre-train a CLIP (tiny preset by default) on a world's affirmative captions and evaluate it",
    "evaluate": "score checkpoints on the negation benchmarks (real files and/or a world's scene twins)",
    "negrefcocog": "build NegRefCOCOg (refcocog | official | scene) and export it as parquet with a dataset card",
    "demo": "the whole story on the embedded default: world, baseline, corpus, benchmarks, 3 fine-tunes, report",
    "app": "the Gradio app: compare CLIP checkpoints on negation in the browser",
    "push-space": "stage the app as a Hugging Face Space (--dry_run) and upload it",
    "push-model": "stage a run (checkpoint, generated card, results) and push it to the Hub (--dry_run: stage only)",
    "push-dataset": "stage a parquet dataset folder with its card and push it to the Hub (--dry_run: stage only)",
    "pull": "download a model / dataset / Space repo (offline from the cache with HF_HUB_OFFLINE=1)",
    "finetune": "fine-tune NegationCLIP (recipes paper | ours | ours-lora; text, vision, both or LoRA); --config FILE",
    "convert-openai": "convert an OpenAI-clip ViT checkpoint (.pth) into a transformers checkpoint + processor",
    "swap-text-encoder": "write a diffusers pipeline folder with a NegationCLIP text tower in it (sizes checked)",
    "t2i-train": "train a tiny text-to-image diffusion model on a scene world (frozen CLIP text tower)",
    "t2i-eval": "negation score of text-to-image: world model with swapped encoders, or a real pipeline",
    "segment": "CLIPSeg referring segmentation: decoder trained on a CLIP, text towers swapped in (mIoU, P@0.5)",
}


# commands whose first argument may be given without its flag: `push-model RUN_DIR --repo_id ...`
_POSITIONAL = {"push-model": "run_dir", "push-dataset": "folder", "pull": "repo_id"}


def _usage() -> str:
    lines = [
        "usage: hf-negationclip <command> [options]   (hf-negationclip <command> --help for options)",
        "       --debug (or HF_NEGATIONCLIP_DEBUG=1): show the traceback behind an 'error:' line",
        "",
        "commands:",
    ]
    lines += [f"  {name:<15} {text}" for name, text in _SUMMARY.items()]
    return "\n".join(lines)


def _merge_repeated_list_flags(config_cls: type, argv: list[str]) -> list[str]:
    """``--model A --model B`` -> ``--model A B`` for list fields (argparse keeps only the last occurrence)."""
    from dataclasses import fields

    list_flags = {f"--{f.name}" for f in fields(config_cls) if "list" in str(f.type)}
    list_flags |= {flag.replace("_", "-") for flag in list_flags}
    merged: dict[str, list[str]] = {}
    rest, i = [], 0
    while i < len(argv):
        flag = argv[i].split("=", 1)[0]
        if flag in list_flags:
            key = flag.replace("-", "_")[2:]
            if "=" in argv[i]:
                values, i = [argv[i].split("=", 1)[1]], i + 1
            else:
                j = i + 1
                while j < len(argv) and not argv[j].startswith("--"):
                    j += 1
                values, i = argv[i + 1 : j], j
            merged.setdefault(key, []).extend(values)
        else:
            rest.append(argv[i])
            i += 1
    for key, values in merged.items():
        rest += [f"--{key}", *values]
    return rest


def _apply_config_file(parser, config_cls, args: list[str]) -> list[str]:
    """``--config FILE`` (YAML or JSON) sets defaults; flags given on the command line still win."""
    from dataclasses import fields

    if "--config" not in args or any(f.name == "config" for f in fields(config_cls)):
        return args  # no file given, or the subcommand has a --config of its own (negrefcocog: builder config)

    from ..training import read_config_file

    i = args.index("--config")
    if i + 1 >= len(args):
        raise ValueError("--config needs a file")
    values = read_config_file(args[i + 1])
    unknown = sorted(set(values) - {f.name for f in fields(config_cls)})
    if unknown:
        raise ValueError(f"unknown option(s) in {args[i + 1]}: {', '.join(unknown)}")
    parser.set_defaults(**values)
    return args[:i] + args[i + 2 :]


def _debug_requested(argv: list[str]) -> tuple[bool, list[str]]:
    """``--debug`` (anywhere on the line) or ``HF_NEGATIONCLIP_DEBUG=1``; returns the flag and argv without it."""
    env = os.environ.get("HF_NEGATIONCLIP_DEBUG", "").strip().lower() not in ("", "0", "false", "no")
    return env or "--debug" in argv, [a for a in argv if a != "--debug"]


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; a known failure prints one ``error:`` line (``--debug``: the traceback above it)."""
    debug, argv = _debug_requested(list(sys.argv[1:] if argv is None else argv))
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    from ..io import FormatError
    from .hub import HubError

    commands = _commands()
    name, rest = argv[0], argv[1:]
    if name not in commands:
        print(f"error: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    from transformers import HfArgumentParser

    config_cls, fn = commands[name]
    if name in _POSITIONAL and rest and not rest[0].startswith("-"):
        rest = [f"--{_POSITIONAL[name]}", *rest]
    parser = HfArgumentParser(config_cls, prog=f"hf-negationclip {name}", description=_SUMMARY[name])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # one line per saved file is noise here
    try:
        rest = _apply_config_file(parser, config_cls, _merge_repeated_list_flags(config_cls, rest))
        (cfg,) = parser.parse_args_into_dataclasses(rest)
        fn(cfg)
    except (ValueError, OSError, KeyError, ImportError, FormatError, HubError) as err:
        if debug:
            traceback.print_exc()
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
