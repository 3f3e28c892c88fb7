"""Throughput of the evaluation harness vs a naive per-sample loop, on the same model and the same items.

The naive loop is how the official scripts score: one processor call and one
model forward per sample (the sample's image/crops and its candidate texts),
nothing cached. The harness encodes each distinct image, crop and text once,
in batches. Both score the four choice tasks of the scene twins (plain and
controlled) and must agree on every prediction; the script prints both
throughputs and their ratio.

    python eval_scripts/benchmark_harness_speed.py --world_dir runs/world --model tiny --n_items 100
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image


def naive_predictions(model, processor, tasks) -> list[int]:
    from hf_negationclip.benchmarks.negrefcocog import render_candidate
    from hf_negationclip.evaluation import strict_argmax

    preds = []
    with torch.inference_mode():
        for task in tasks:
            for it in task.items:
                if task.kind == "negrefcocog":
                    with Image.open(it.images[0].path) as im:
                        im = im.convert("RGB")
                        crops = [render_candidate(im, r) for r in it.images]
                    batch = processor(text=[it.text], images=crops, return_tensors="pt", padding=True)
                    scores = model(**batch).logits_per_text[0]
                else:
                    with Image.open(it.image.path) as im:
                        batch = processor(
                            text=list(it.texts), images=[im.convert("RGB")], return_tensors="pt", padding=True
                        )
                    scores = model(**batch).logits_per_image[0]
                preds.append(int(strict_argmax(scores[None])[0]))
    return preds


def harness_predictions(model, processor, tasks) -> list[int]:
    from hf_negationclip.evaluation import choice_scores, strict_argmax
    from hf_negationclip.evaluation.harness import encode_once

    cache = encode_once(
        model, processor, [r for t in tasks for r in t.image_refs()], [s for t in tasks for s in t.texts()]
    )
    preds = []
    for task in tasks:
        if task.kind == "negrefcocog":
            scores = choice_scores(
                cache.texts([it.text for it in task.items]), [cache.images(it.images) for it in task.items]
            )
        else:
            scores = choice_scores(
                cache.images([it.image for it in task.items]), [cache.texts(it.texts) for it in task.items]
            )
        preds += strict_argmax(scores).tolist()
    return preds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--world_dir", default=None, help="scene world (default: render a 300-image one in a temp folder)"
    )
    parser.add_argument("--model", default="tiny", help="checkpoint folder or preset")
    parser.add_argument("--n_items", type=int, default=100, help="items per scene twin")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from hf_negationclip import world as scene_world
    from hf_negationclip.benchmarks import write_scene_benchmarks
    from hf_negationclip.evaluation.harness import load_task
    from hf_negationclip.modeling import load_checkpoint

    tmp = Path(tempfile.mkdtemp(prefix="harness_speed_"))
    world = args.world_dir
    if world is None:
        world = tmp / "world"
        scene_world.write_world(world, 300, seed=0, show_progress=False)
    manifest = write_scene_benchmarks(world, tmp / "bench", "val", args.n_items, 0)
    tasks = [
        load_task(n, s)
        for n, s in manifest["tasks"].items()
        if s["kind"] in ("negrefcocog", "valse-existence", "negbench-mcq", "ccneg")
    ]
    n = sum(len(t.items) for t in tasks)
    model, processor = load_checkpoint(args.model)
    model.eval()
    harness_predictions(model, processor, tasks[:1])  # warm-up, same for both
    start = time.perf_counter()
    fast = harness_predictions(model, processor, tasks)
    t_fast = time.perf_counter() - start
    start = time.perf_counter()
    slow = naive_predictions(model, processor, tasks)
    t_slow = time.perf_counter() - start
    agree = sum(a == b for a, b in zip(fast, slow)) / n
    print(f"items: {n} over {len(tasks)} choice tasks (model {args.model}, {torch.get_num_threads()} threads)")
    print(f"harness (encode once, batched): {t_fast:7.2f} s  {n / t_fast:8.1f} items/s")
    print(f"naive (one forward per sample):  {t_slow:7.2f} s  {n / t_slow:8.1f} items/s")
    print(f"speed-up: {t_slow / t_fast:.1f}x   predictions agree on {agree:.1%} of items")


if __name__ == "__main__":
    main()
