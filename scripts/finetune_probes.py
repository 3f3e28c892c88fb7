"""Scene-world probes of a baseline vs fine-tuned models (paper-style InfoNCE, ours with the exclusion term, LoRA).

Not a test: a measurement. Builds the small negated-caption fixture of
tests/negation_fixture.py on the world's train split (the corpus issue's
output replaces it when present), fine-tunes the baseline three ways with
the SAME steps and batch, and evaluates all four with WorldEvaluator on the
val split::

    python scripts/finetune_probes.py --world runs/W --baseline runs/B --out runs/probes
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from negation_fixture import write_negation_fixture  # noqa: E402

from hf_negationclip import WorldEvaluator, build_model, load_processor  # noqa: E402
from hf_negationclip.training import FinetuneConfig, finetune  # noqa: E402

KEYS = ("negation_probe_accuracy", "affirmative_probe_accuracy", "zero_shot_shape_accuracy", "zero_shot_color_accuracy",
        "image_to_text_r@1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--world", required=True)
    ap.add_argument("--baseline", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--corpus", default=None, help="a corpus folder with negated_captions_train.json (default: build the fixture)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch_size", type=int, default=64)
    ap.add_argument("--max_images", type=int, default=None)
    ap.add_argument("--runs", default="paper,ours,lora")
    args = ap.parse_args()
    out = Path(args.out)
    corpus = Path(args.corpus) if args.corpus else out / "corpus"
    if not (corpus / "negated_captions_train.json").exists():
        write_negation_fixture(args.world, corpus, "train", max_images=args.max_images)
    evaluator = WorldEvaluator(args.world, "val", 200, 0)
    table = {}
    t = time.time()
    table["baseline"] = evaluator(build_model(args.baseline), load_processor(args.baseline))
    print("baseline", round(time.time() - t), "s", flush=True)
    common = dict(preset=args.baseline, world_dir=args.world, corpus_dir=str(corpus), epochs=args.epochs,
                  batch_size=args.batch_size, show_progress=False, save_steps=0, export_text_encoder=False)
    recipes = {"paper": dict(recipe="paper", learning_rate=1e-4, warmup_ratio=0.05),  # paper objective, CPU-sized
               "ours": dict(recipe="tiny"),
               "lora": dict(recipe="tiny", train="lora-text", learning_rate=1e-3)}
    for name in args.runs.split(","):
        t = time.time()
        result = finetune(FinetuneConfig(output_dir=str(out / name), **common, **recipes[name]), evaluator)
        table[name] = result["metrics"]
        print(name, round(time.time() - t), "s", flush=True)
    rows = {name: {k: m[k]["value"] for k in KEYS} for name, m in table.items()}
    (out / "probes.json").write_text(json.dumps({"rows": rows, "chance": {k: table["baseline"][k]["chance"] for k in KEYS},
                                                 "n": {k: table["baseline"][k]["n"] for k in KEYS}, "args": vars(args)}, indent=2))
    print(f"{'model':<10}" + "".join(f"{k[:22]:>24}" for k in KEYS))
    for name, row in rows.items():
        print(f"{name:<10}" + "".join(f"{v:>24.3f}" for v in row.values()))


if __name__ == "__main__":
    main()
