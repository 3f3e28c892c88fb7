"""Speed and memory of the fine-tuning loop (a benchmark, not a test).

1. samples/s of ``train_contrastive`` (the loop ``hf-negationclip finetune``
   runs: batches drawn and tokenised from the data, Accelerate, logging)
   versus a bare PyTorch forward/backward/step loop over pre-built tensors,
   same model, trainable parts, batch size and number of steps, on the same
   machine, alternated so load changes hit both. Goal: ratio >= 0.85.
   Both see the same random batches (``group_by_length`` off in this part).
2. ``--group_by_length``: the same loop (text tower on cached image features,
   as the demo trains) with batches grouped by text length against random
   batches, same steps, alternated: the padding it saves.
3. peak RSS of fine-tuning ``both`` towers vs ``text`` vs ``lora-text``, each
   in its own subprocess (so one run's peak does not hide another's).
4. ``--token_cache RECIPE`` (with ``--demo``): ``finetune`` of the demo's recipe from the demo's
   baseline, ``--steps`` steps, each text tokenised once per run (``TokenCache``) against
   tokenised with every batch (the tokenizer called per batch, as before the cache),
   alternated; the two runs' logged losses must be identical.

``--preset clip-vit-base-patch32`` (or another OpenAI ViT preset) measures the
paper's model: built from its architecture with random weights (nothing is
downloaded), images processed at its size. The data is a small scene world
and its negated-caption corpus, built with the library's own pipeline.

    python scripts/bench_finetune.py [--preset tiny] [--steps 20] [--batch_size 64] [--group_by_length] [--demo runs/demo]
    python scripts/bench_finetune.py --preset clip-vit-base-patch32 --batch_size 8 --steps 5 --images 200
    python scripts/bench_finetune.py --demo runs/demo --token_cache ours --steps 150 --rounds 1
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from hf_negationclip import world as scene_world
from hf_negationclip.corpus import CorpusConfig, run_corpus
from hf_negationclip.modeling import NegationCLIPModel, build_model, get_preset, load_processor
from hf_negationclip.modeling.convert_openai import arch_clip_config
from hf_negationclip.training import (
    BatchSpec,
    FinetuneConfig,
    ImageTextData,
    TokenCache,
    configure_trainable,
    train_contrastive,
)
from hf_negationclip.training.data import load_negated_corpus
from hf_negationclip.training.finetune import _frozen_image_encoder

#: preset -> OpenAI architecture (OPENAI_ARCHS), for building the real models' shapes without a download
_ARCH = {
    "clip-vit-base-patch32": "ViT-B/32",
    "clip-vit-base-patch16": "ViT-B/16",
    "clip-vit-large-patch14": "ViT-L/14",
    "clip-vit-large-patch14-336": "ViT-L/14@336px",
}


def random_model(preset: str, seed: int = 0) -> NegationCLIPModel:
    """``preset`` with random weights: ``tiny`` as the package builds it, an OpenAI ViT from its architecture."""
    if preset == "tiny":
        return build_model("tiny", seed=seed)
    if preset not in _ARCH:
        raise SystemExit(f"unknown --preset {preset!r}; known: tiny, {', '.join(_ARCH)}")
    torch.manual_seed(seed)
    return NegationCLIPModel(arch_clip_config(_ARCH[preset]))


def processor_for(preset: str):
    return load_processor(image_size=None if preset == "tiny" else get_preset(preset).image_size)


def _setup(root: Path, n_images: int):
    """A scene world and its negated-caption corpus (the library's pipeline, with minimal-pair distractors)."""
    world, corpus = root / "world", root / "corpus"
    if not (world / "world.json").exists():
        scene_world.write_world(world, n_images, seed=0, show_progress=False)
    if not (corpus / "negated_captions_train.json").exists():
        run_corpus(CorpusConfig(world_dir=str(world), output_dir=str(corpus), splits="train", show_progress=False))
    return world, corpus


def _cfg(root, world, corpus, train, steps, batch_size, group_by_length=False, preset="tiny"):
    # InfoNCE only, random batches: the work of the bare loop
    return FinetuneConfig(
        preset=preset,
        world_dir=str(world),
        corpus_dir=str(corpus),
        output_dir=str(root / f"out_{train}"),
        train=train,
        max_steps=steps,
        batch_size=batch_size,
        contrastive_weight=1.0,
        exclusion_weight=0.0,
        retain_weight=0.0,
        group_by_length=group_by_length,
        save_steps=0,
        log_steps=10**6,
        show_progress=False,
        val_fraction=0.0,
        resume=False,
    )


def loop_seconds(cfg, data) -> float:
    model = configure_trainable(random_model(cfg.preset, seed=0), cfg)
    t = time.perf_counter()
    train_contrastive(model, data, cfg, cfg.loss_weights())
    return time.perf_counter() - t


def bare_seconds(cfg, data) -> float:
    """forward/backward/step over tensors built beforehand: the floor any loop pays."""
    from transformers import get_cosine_schedule_with_warmup

    model = configure_trainable(random_model(cfg.preset, seed=0), cfg)
    model.train()
    data.spec = BatchSpec()  # what the loop builds with every extra term off: caption rows only, same padding
    batches = [
        data.batch(data.order(0, 0)[k * cfg.batch_size : (k + 1) * cfg.batch_size].tolist(), 0, 0)
        for k in range(min(cfg.max_steps, len(data) // cfg.batch_size))
    ]
    # the tensors the loop's forward sees, as plain model inputs
    batches = [
        {"pixel_values": b.images, "input_ids": b.input_ids, "attention_mask": b.attention_mask} for b in batches
    ]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, fused=True
    )  # as the loop (CPU)
    sched = get_cosine_schedule_with_warmup(opt, 0, cfg.max_steps)
    t = time.perf_counter()
    for step in range(cfg.max_steps):
        loss = model(**batches[step % len(batches)], return_loss=True).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t


def rss_child(root: Path, train: str, steps: int, batch_size: int, preset: str) -> None:
    world, corpus = _setup(root, 0)
    cfg = _cfg(root, world, corpus, train, steps, batch_size, preset=preset)
    records = load_negated_corpus(cfg.corpus_path, cfg.images_path)
    data = ImageTextData(records, processor_for(preset), show_progress=False)
    before = _rss_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # Linux: reset the peak (VmHWM) so data loading does not count
    loop_seconds(cfg, data)
    print(json.dumps({"train": train, "peak_rss_mb": _rss_mb("VmHWM"), "data_rss_mb": before}))


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


class _TokenisedPerBatch(TokenCache):
    """The collation before ``TokenCache``: the tokenizer called on every batch's texts."""

    def __call__(self, texts):
        tok = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
        return tok["input_ids"], tok["attention_mask"]


def token_cache_seconds(demo: Path, recipe: str, steps: int, root: Path, cached: bool, features: dict):
    """(train seconds, logged losses) of ``steps`` steps of ``recipe`` from the demo's baseline."""
    from hf_negationclip.apps.demo import DemoConfig, finetune_config
    from hf_negationclip.training import data as data_module
    from hf_negationclip.training import finetune

    out = root / f"token_cache_{cached}"
    cfg = finetune_config(
        DemoConfig(),
        demo,
        recipe,
        export_text_encoder=False,
        output_dir=str(out),
        show_progress=False,
        save_steps=0,
        max_steps=steps,
        val_fraction=0.0,
        resume=False,
    )
    data_module.TokenCache = TokenCache if cached else _TokenisedPerBatch
    try:
        result = finetune(cfg, None, features)
    finally:
        data_module.TokenCache = TokenCache
    return result["train_seconds"], [h["loss"] for h in result["history"] if "loss" in h]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="tiny", help=f"tiny | {' | '.join(_ARCH)} (random weights, no download)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch_size", type=int, default=64)
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--group_by_length", action="store_true", help="also time grouped against random batches")
    ap.add_argument("--demo", default=None, help="a finished demo folder: its world and corpus instead of the fixture")
    ap.add_argument("--token_cache", default=None, metavar="RECIPE", help="with --demo: part 4 only, on this recipe")
    ap.add_argument("--root", default=None)
    ap.add_argument("--rss-child", default=None)
    args = ap.parse_args()
    root = Path(args.root or tempfile.mkdtemp(prefix="bench_finetune_"))
    if args.rss_child:
        return rss_child(root, args.rss_child, args.steps, args.batch_size, args.preset)
    torch.set_num_threads(torch.get_num_threads())
    if args.token_cache:
        if not args.demo:
            raise SystemExit("--token_cache needs --demo (a finished demo: its baseline, world and corpus)")
        features, runs = {}, {True: [], False: []}
        token_cache_seconds(Path(args.demo), args.token_cache, 2, root, True, features)  # encodes the images once
        for _ in range(args.rounds):
            for cached in (False, True):
                runs[cached].append(
                    token_cache_seconds(Path(args.demo), args.token_cache, args.steps, root, cached, features)
                )
        same = all(a[1] == b[1] for a, b in zip(runs[True], runs[False]))
        best = {k: min(s for s, _ in v) for k, v in runs.items()}
        print(
            f"recipe {args.token_cache}, {args.steps} steps, {torch.get_num_threads()} threads: train seconds "
            f"tokenised once {best[True]:.1f} vs per batch {best[False]:.1f} (all: "
            f"{[round(s, 1) for s, _ in runs[True]]} vs {[round(s, 1) for s, _ in runs[False]]}); speed-up "
            f"{best[False] / best[True]:.2f}x; logged losses identical: {same}"
        )
        return
    world, corpus = (Path(args.demo, "world"), Path(args.demo, "corpus")) if args.demo else _setup(root, args.images)
    cfg = _cfg(root, world, corpus, "text", args.steps, args.batch_size, preset=args.preset)
    records = load_negated_corpus(cfg.corpus_path, cfg.images_path)
    data = ImageTextData(records, processor_for(args.preset), show_progress=False)
    loop, bare = [], []
    for _ in range(args.rounds):  # alternate, so a load change on the machine hits both
        bare.append(bare_seconds(cfg, data))
        loop.append(loop_seconds(cfg, data))
    samples = args.steps * args.batch_size
    print(
        f"preset {args.preset}, train=text, batch {args.batch_size}, {args.steps} steps, {len(data)} images, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"  bare loop    : {samples / min(bare):7.1f} samples/s (best of {args.rounds}; all: {[round(samples / b, 1) for b in bare]})"
    )
    print(
        f"  finetune loop: {samples / min(loop):7.1f} samples/s (best of {args.rounds}; all: {[round(samples / s, 1) for s in loop]})"
    )
    print(f"  ratio (finetune / bare): {min(bare) / min(loop):.3f}   (goal >= 0.85)")
    if args.group_by_length:
        # as the demo trains the text tower: on cached image features, so the text side is the whole step
        features = ImageTextData(
            records,
            processor_for(args.preset),
            show_progress=False,
            encoder=_frozen_image_encoder(random_model(args.preset, seed=0)),
        )
        grouped_cfg = _cfg(root, world, corpus, "text", args.steps, args.batch_size, True, args.preset)
        plain, grouped = [], []
        for _ in range(args.rounds):
            plain.append(loop_seconds(cfg, features))
            grouped.append(loop_seconds(grouped_cfg, features))
        n_batches, lengths = min(args.steps, len(data) // args.batch_size), data.text_lengths(0, 0)

        def padded(group: int) -> float:  # the length each caption is padded to, averaged over the batches
            order = data.order(0, 0, group)
            return (
                sum(
                    int(lengths[order[k * args.batch_size : (k + 1) * args.batch_size]].max()) for k in range(n_batches)
                )
                / n_batches
            )

        print(
            f"  group_by_length: {samples / min(grouped):7.1f} samples/s against {samples / min(plain):7.1f} random "
            f"(all: {[round(samples / s, 1) for s in grouped]} vs {[round(samples / s, 1) for s in plain]}); "
            f"speed-up {min(plain) / min(grouped):.2f}x; tokens per padded caption {padded(args.batch_size):.1f} "
            f"vs {padded(0):.1f}"
        )
    for train in () if args.demo else ("both", "text", "lora-text"):  # memory: on the fixture only
        res = subprocess.run(
            [
                sys.executable,
                __file__,
                "--rss-child",
                train,
                "--root",
                str(root),
                "--steps",
                "5",
                "--batch_size",
                str(args.batch_size),
                "--preset",
                args.preset,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        row = json.loads(res.stdout.strip().splitlines()[-1])
        print(
            f"  peak RSS while training {train:<10}: {row['peak_rss_mb']:7.0f} MB "
            f"(model + data before training: {row['data_rss_mb']:.0f} MB)"
        )


if __name__ == "__main__":
    main()
