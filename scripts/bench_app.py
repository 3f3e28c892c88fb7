"""Time the app's clicks on CPU with tiny models: Compare and "next pair", beside the bare model calls.

    python scripts/bench_app.py [--repeats 20]

Prints the median seconds per click and the app's overhead over the bare
``NegationCLIPModel.score`` / ``similarity`` calls that it wraps (same inputs,
same process, interleaved).
"""

import argparse
import statistics
import tempfile
import time

import torch

from hf_negationclip.apps import app
from hf_negationclip.modeling import NegationCLIPModel, load_processor, tiny_clip_config


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 on a busy shared machine)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        specs = []
        for k in range(2):
            torch.manual_seed(k)
            NegationCLIPModel(tiny_clip_config()).save_pretrained(f"{tmp}/m{k}")
            load_processor().save_pretrained(f"{tmp}/m{k}")
            specs.append(f"m{k}={tmp}/m{k}")
        models = app.load_models(specs)
        image, texts = app.scene_example(0)
        texts = texts + ["a photo of a red circle", "a blue square on a striped background"]
        raw = "\n".join(texts)
        item, _ = app.negation_pair(0)
        bare_compare = median_seconds(
            lambda: [m.model.score([image], texts, m.processor) for m in models], args.repeats
        )
        click_compare = median_seconds(lambda: app.run_compare(models, image, raw), args.repeats)
        bare_pair = median_seconds(lambda: app.pair_picks(models, item), args.repeats)
        click_pair = median_seconds(lambda: app.run_pair(models, 0, None), args.repeats)
    print(
        f"Compare click, 2 tiny models x {len(texts)} texts: {click_compare * 1000:.0f} ms "
        f"(bare score calls {bare_compare * 1000:.0f} ms, ratio {click_compare / bare_compare:.2f})"
    )
    print(
        f"next-pair click, 2 tiny models: {click_pair * 1000:.0f} ms "
        f"(scoring alone {bare_pair * 1000:.0f} ms, ratio {click_pair / bare_pair:.2f}; the rest renders the pair)"
    )


if __name__ == "__main__":
    main()
