"""Fine-tuning experiments from a finished demo: each run one of the recipes with options changed.

Not a test: a measurement. Every run starts from the demo's baseline with the
demo's corpus and budget (4 epochs, batch 64, lr 1e-3, LoRA x2, 35%
affirmative picks), changes the given options, and is scored the way the
demo's report scores it: the world probes on the val split (n=200 each) and
the scene benchmark twins of ``<demo>/benchmarks`` (both directions of
negation, the affirmative controls, generality). All runs share one store of
encoded images (the baseline's frozen vision tower), so only the first run
encodes::

    python scripts/finetune_sweep.py --demo runs/demo --out runs/sweep \\
        "ours" "ours square_weight=2.0" "ours-lora retain_weight=4.0 seed=1" "@runs/demo/paper"

``@FOLDER`` scores a finished checkpoint instead of training; ``--benchmarks DIR`` scores on
another scene-benchmark folder than the demo's (say, one written in a newer format). Each run prints
one line (every family, then the worst negation family) and appends the full
row to ``<out>/sweep.jsonl``.

``--square_items N`` (default 600) also scores N of the corpus's own training squares
(image I, distractor D holding the negated thing, caption C, its flip F) side by side:
``sq_i`` I picks C over F (what the caption flip family measures), ``sq_d`` D picks F
over C, ``sq_c`` C picks I over D (the exclusion term), ``sq_f`` F picks D over I. A
side low on training data is underfitting, not a probe/corpus mismatch.
"""

import argparse
import ast
import json
import random
import shutil
import time
from pathlib import Path

import torch

from hf_negationclip import WorldEvaluator
from hf_negationclip.apps.demo import HEADLINE, NEGATION_FAMILIES, DemoConfig, finetune_config
from hf_negationclip.evaluation import HarnessConfig, embed_images, embed_texts, run_harness
from hf_negationclip.modeling import load_checkpoint
from hf_negationclip.training import RECIPES, finetune, load_negated_corpus
from hf_negationclip.training.batch import Pick, flip_text, has_flip
from hf_negationclip.training.data import negated_captions_path

#: short column names of the report's headline rows
SHORT = {
    "world-probes/negation_probe_accuracy": "probe",
    "world-probes/affirmative_probe_accuracy": "aff",
    "scene-negrefcocog-controlled/accuracy": "negref",
    "scene-negrefcocog-controlled/affirmative_accuracy": "negref_aff",
    "scene-negrefcocog/accuracy": "negref_plain",
    "scene-valse-existence-controlled/accuracy": "valse",
    "scene-negbench-mcq-controlled/negation_accuracy": "mcq_neg",
    "scene-negbench-mcq-controlled/affirmation_accuracy": "mcq_aff",
    "scene-ccneg-controlled/accuracy": "ccneg",
    "world-probes/caption_flip_accuracy": "flip",
    "world-probes/present_negation_accuracy": "present",
    "world-probes/scope_swap_accuracy": "scope",
    "world-probes/app_compare_accuracy": "app",
    "scene-caption-flip/accuracy": "flip_csv",
    "scene-negbench-mcq-controlled/hybrid_accuracy": "mcq_hyb",
    "world-probes/zero_shot_shape_accuracy": "shape",
    "world-probes/zero_shot_color_accuracy": "colour",
    "world-probes/shape_probe_accuracy": "shape_probe",
    "world-probes/image_to_text_r@1": "R@1",
}
assert set(SHORT) == {key for key, _ in HEADLINE}, "the sweep's columns must be the report's headline rows"
TASK_PREFIXES = sorted({key.split("/")[0] for key in SHORT if not key.startswith("world-probes/")})


def parse_run(text: str) -> tuple[str, dict]:
    """``"<recipe> key=value ..."`` -> (recipe, overrides); values are Python literals or plain strings."""
    label, *pairs = text.split()
    if label.startswith("@"):
        return label, {}
    if label not in RECIPES:
        raise SystemExit(f"unknown recipe {label!r}; known: {', '.join(RECIPES)}")
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"expected key=value, got {pair!r}")
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key] = value
    return label, overrides


def score(model, processor, evaluator, tasks: dict, out: Path) -> dict:
    """The headline metrics of one model: world probes + the scene twins the headline reads."""
    results = run_harness(HarnessConfig({"run": (model, processor)}, tasks, str(out), show_progress=False))
    metrics = dict(results["models"]["run"]["metrics"])
    metrics.update({f"world-probes/{k}": v for k, v in evaluator(model, processor).items() if isinstance(v, dict)})
    return {SHORT[key]: round(metrics[key]["value"], 3) for key in SHORT if "value" in metrics.get(key, {})}


def training_squares(demo: Path, n: int, seed: int = 0) -> list:
    """``n`` records of the demo's training corpus with a distractor and a flip (the square term's squares)."""
    records = load_negated_corpus(negated_captions_path(demo / "corpus", "train"), demo / "world" / "images" / "train")
    squares = [r for r in records if has_flip(Pick(r.caption, False))]  # the records the square term trains on
    return random.Random(seed).sample(squares, min(n, len(squares)))


def square_sides(model, processor, squares: list) -> dict:
    """Per side of the 2x2 square, the share of ``squares`` on which the model makes the right choice."""
    with torch.no_grad():
        i = embed_images(model, processor, [r.image for r in squares])
        d = embed_images(model, processor, [r.caption.distractors[0] for r in squares])
        c = embed_texts(model, processor, [r.caption.text for r in squares])
        f = embed_texts(model, processor, [flip_text(Pick(r.caption, False)) for r in squares])
    ic, i_f, dc, df = (i * c).sum(-1), (i * f).sum(-1), (d * c).sum(-1), (d * f).sum(-1)
    sides = {"sq_i": ic > i_f, "sq_d": df > dc, "sq_c": ic > dc, "sq_f": df > i_f}
    return {name: round(right.float().mean().item(), 3) for name, right in sides.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--demo", default="runs/demo", help="a finished demo folder (baseline/, corpus/, world/)")
    ap.add_argument("--out", default="runs/sweep")
    ap.add_argument("--benchmarks", default=None, help="scene benchmarks folder (default: <demo>/benchmarks)")
    ap.add_argument("--square_items", type=int, default=600, help="training squares to score per run (0: none)")
    ap.add_argument("runs", nargs="+", help='"<recipe> key=value ..." (recipe: paper | ours | ours-lora) or "@FOLDER"')
    args = ap.parse_args()
    demo, out = Path(args.demo), Path(args.out)
    runs = [parse_run(text) for text in args.runs]  # every run is checked before the first one starts
    defaults = DemoConfig()
    evaluator = WorldEvaluator(demo / "world", "val", 200, defaults.seed)
    manifest = json.loads((Path(args.benchmarks or demo / "benchmarks") / "manifest.json").read_text())
    tasks = {name: spec for name, spec in manifest["tasks"].items() if name in TASK_PREFIXES}
    features: dict = {}
    squares = training_squares(demo, args.square_items) if args.square_items > 0 else []
    out.mkdir(parents=True, exist_ok=True)
    negation = [SHORT[key] for key in NEGATION_FAMILIES]
    for k, ((label, overrides), text) in enumerate(zip(runs, args.runs)):
        t = time.time()
        folder = out / f"run{k:02d}_{label.strip('@').replace('/', '_')}"
        row = {"run": text}
        if label.startswith("@"):
            model, processor = load_checkpoint(label[1:])
        else:
            shutil.rmtree(folder, ignore_errors=True)
            options = {"output_dir": str(folder), "show_progress": False, "save_steps": 0, **overrides}
            run = finetune_config(defaults, demo, label, export_text_encoder=False, **options)
            result = finetune(run, None, features)
            model, processor = load_checkpoint(str(folder))
            row["steps"] = max((h["step"] for h in result["history"]), default=0)
            row["train_seconds"] = round(result["train_seconds"], 1)
        row.update(score(model, processor, evaluator, tasks, folder / "eval"))
        if squares:
            row.update(square_sides(model, processor, squares))
        worst = min(negation, key=lambda name: row.get(name, 1.0))
        row.update(worst=worst, worst_value=row.get(worst), seconds=round(time.time() - t, 1))
        cells = " ".join(
            f"{name}={row[name]}"
            for name in [*negation, "aff", "mcq_aff", "shape", "R@1", "sq_i", "sq_d"]
            if name in row
        )
        print(f"{text:<50} {cells} | worst {worst}={row.get(worst)} ({row['seconds']} s)", flush=True)
        with (out / "sweep.jsonl").open("a") as fh:
            fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
