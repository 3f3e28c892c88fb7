"""Fine-tuning experiments from a finished demo: each run one of the demo's recipes with options changed.

Not a test: a measurement. Every run starts from the demo's baseline with the
demo's corpus and budget (4 epochs, batch 64, lr 1e-3, LoRA x2, 35%
affirmative picks), changes the given options, and is scored with the world
probes on the val split (n=200 each). All runs share one store of encoded
images (the baseline's frozen vision tower), so only the first run encodes::

    python scripts/finetune_sweep.py --demo runs/demo --out runs/sweep \\
        "ours" "ours contrastive_weight=1.0" "ours-lora retain_weight=4.0 seed=1"

Each run prints one line and appends it to ``<out>/sweep.jsonl``.
"""

import argparse
import ast
import json
import shutil
import time
from pathlib import Path

from hf_negationclip import WorldEvaluator, load_processor
from hf_negationclip.apps.demo import FINETUNES, DemoConfig, finetune_config
from hf_negationclip.training import finetune

KEYS = {
    "probe": "negation_probe_accuracy",
    "affirmative": "affirmative_probe_accuracy",
    "shape": "zero_shot_shape_accuracy",
    "colour": "zero_shot_color_accuracy",
    "R@1": "image_to_text_r@1",
}


def parse_run(text: str) -> tuple[str, dict]:
    """``"<recipe label> key=value ..."`` -> (label, overrides); values are Python literals or plain strings."""
    label, *pairs = text.split()
    if label not in FINETUNES:
        raise SystemExit(f"unknown recipe {label!r}; the demo's are {', '.join(FINETUNES)}")
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--demo", default="runs/demo", help="a finished demo folder (baseline/, corpus/, world/)")
    ap.add_argument("--out", default="runs/sweep")
    ap.add_argument("runs", nargs="+", help='"<recipe> key=value ..." (recipe: paper | ours | ours-lora)')
    args = ap.parse_args()
    demo, out = Path(args.demo), Path(args.out)
    runs = [parse_run(text) for text in args.runs]  # every run is checked before the first one starts
    defaults = DemoConfig()
    evaluator = WorldEvaluator(demo / "world", "val", 200, defaults.seed)
    features: dict = {}
    out.mkdir(parents=True, exist_ok=True)
    for k, ((label, overrides), text) in enumerate(zip(runs, args.runs)):
        folder = out / f"run{k:02d}_{label}"
        shutil.rmtree(folder, ignore_errors=True)
        run = finetune_config(
            defaults,
            demo,
            label,
            **{
                "output_dir": str(folder),
                "show_progress": False,
                "save_steps": 0,
                "export_text_encoder": False,
                **overrides,
            },
        )
        t = time.time()
        result = finetune(run, None, features)
        metrics = evaluator(result["model"], load_processor(str(folder)))
        steps = max((h["step"] for h in result["history"]), default=0)
        row = {
            "run": text,
            "steps": steps,
            "train_seconds": round(result["train_seconds"], 1),
            "seconds": round(time.time() - t, 1),
            **{name: round(metrics[key]["value"], 3) for name, key in KEYS.items()},
        }
        print(f"{text:<60} " + " ".join(f"{name}={value}" for name, value in row.items() if name != "run"), flush=True)
        with (out / "sweep.jsonl").open("a") as fh:
            fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
