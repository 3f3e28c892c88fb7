"""Fine-tuning: what trains, losses, LoRA outputs, resume after SIGKILL, 2 CPU processes, config and errors."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import CLIPModel, CLIPTextModel

from hf_negationclip import NegationCLIPModel, load_processor, tiny_clip_config
from hf_negationclip.apps.cli import main
from hf_negationclip.training import (
    TERMS,
    BatchSpec,
    FinetuneConfig,
    LossWeights,
    batch_spec,
    compute_loss,
    exclusion_loss,
    finetune,
)
from hf_negationclip.training.batch import BatchSources, Pick, TokenCache, collate, has_flip
from hf_negationclip.training.data import (
    Caption,
    ImageTextData,
    TrainRecord,
    drop_unreadable_images,
    load_negated_corpus,
)
from hf_negationclip.training.losses import active_terms, encode

sys.path.insert(0, str(Path(__file__).parent))
from negation_fixture import write_negation_fixture  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(world, tmp_path_factory):
    """A negated-caption corpus on the test world (first 40 train images) and a small base checkpoint."""
    tmp = tmp_path_factory.mktemp("finetune")
    write_negation_fixture(world, tmp / "corpus", "train", max_images=40)
    torch.manual_seed(0)
    NegationCLIPModel(tiny_clip_config(64)).save_pretrained(tmp / "base")
    return {"world": world, "corpus": tmp / "corpus", "base": tmp / "base"}


def _cfg(setup, out, **kw):
    base = dict(
        preset=str(setup["base"]),
        world_dir=str(setup["world"]),
        corpus_dir=str(setup["corpus"]),
        output_dir=str(out),
        batch_size=8,
        epochs=1,
        learning_rate=1e-3,
        warmup_ratio=0.0,
        save_steps=0,
        log_steps=1,
        show_progress=False,
        val_fraction=0.25,
        # the retain term (0 at step 0, on in the ours recipe) is tested on its own below; InfoNCE at full
        # weight and no affirmative swaps: the loop's mechanics, not the demo recipe, are under test here
        retain_weight=0.0,
        contrastive_weight=1.0,
        affirmative_ratio=0.0,
    )
    return FinetuneConfig(**{**base, **kw})


def _weights(folder):
    return load_file(str(Path(folder) / "model.safetensors"))


def test_fixture_distractors_differ_from_their_image_only_by_the_negated_object(setup, world):
    records = load_negated_corpus(setup["corpus"] / "negated_captions_train.json", world / "images" / "train")
    assert records and all(len(r.caption.distractors) == 1 and r.caption.original for r in records)
    import numpy as np
    from PIL import Image

    for r in records[:5]:
        a = np.asarray(Image.open(r.image).convert("RGB"), dtype=float)
        b = np.asarray(Image.open(r.caption.distractors[0]).convert("RGB"), dtype=float)
        changed = (np.abs(a - b).max(-1) > 40).mean()
        assert 0.005 < changed < 0.25  # one object swapped, the rest (background, other objects) alike


def test_text_finetune_lowers_validation_loss_and_changes_only_the_text_side(setup, tmp_path):
    result = finetune(_cfg(setup, tmp_path, epochs=3, train="text", exclusion_weight=1.0))
    val = [h["val_loss"] for h in result["history"] if "val_loss" in h]
    assert val[0] == next(h for h in result["history"] if h["step"] == 0)["val_loss"]
    assert min(val[1:]) < val[0]
    assert any("exclusion" in h for h in result["history"])
    before, after = _weights(setup["base"]), _weights(tmp_path)
    for name, value in before.items():
        same = torch.equal(value, after[name])
        frozen = name.startswith(("vision_model.", "visual_projection.", "text_model.final_layer_norm."))
        assert same == frozen or (not frozen and "position_ids" in name), name
    for name in ("training_config.json", "train_log.jsonl", "loss.png", "processor_config.json"):
        assert (tmp_path / name).is_file(), name
    assert json.loads((tmp_path / "training_config.json").read_text())["train"] == "text"
    text = CLIPTextModel.from_pretrained(tmp_path / "text_encoder")
    assert torch.equal(
        text.state_dict()["embeddings.token_embedding.weight"], after["text_model.embeddings.token_embedding.weight"]
    )


def test_lora_run_writes_an_adapter_that_loads_like_the_merged_checkpoint(setup, tmp_path):
    finetune(
        _cfg(
            setup,
            tmp_path,
            train="lora-both",
            lora_r=4,
            max_steps=2,
            val_fraction=0.0,
            mixed_precision="bf16",
            gradient_checkpointing=True,
            gradient_accumulation_steps=2,
        )
    )
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(setup["base"].resolve()) and config["r"] == 4
    adapter = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert adapter and all("lora_" in k for k in adapter)  # the adapter only, not the whole model
    merged, base = _weights(tmp_path), _weights(setup["base"])
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    assert changed and all(".self_attn." in k and k.endswith("proj.weight") for k in changed)
    assert not any(k.startswith(("logit_scale", "text_model.embeddings", "visual_projection")) for k in changed)
    processor = load_processor(tmp_path)
    batch = processor(
        text=["a red circle with no blue star", "a cross"],
        images=[torch.rand(3, 64, 64).numpy()],
        padding=True,
        return_tensors="pt",
        do_rescale=False,
    )
    with torch.no_grad():
        a = NegationCLIPModel.from_pretrained(tmp_path / "adapter").eval()(**batch).logits_per_image
        b = CLIPModel.from_pretrained(tmp_path).eval()(**batch).logits_per_image
    assert torch.allclose(a, b, atol=1e-4)


# The CLI, except that the run waits forever once its first training state is saved (``stopped`` says so).
_STOP_AFTER_FIRST_STATE = """
import sys, time
from pathlib import Path
from hf_negationclip.apps.cli import main
from hf_negationclip.training import loop
real_save = loop._save_state
def save_then_wait(accelerator, checkpoints, step, *args, **kwargs):
    real_save(accelerator, checkpoints, step, *args, **kwargs)
    (Path(checkpoints).parent / "stopped").write_text(str(step))
    time.sleep(3600)
loop._save_state = save_then_wait
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("train", ["text", "lora-text"])
def test_sigkill_after_a_checkpoint_then_resume_matches_an_uninterrupted_run(setup, tmp_path, train):
    kw = dict(
        train=train,
        max_steps=4,
        val_fraction=0.0,
        lora_r=4,
        export_text_encoder=False,
        retain_weight=0.0,
        contrastive_weight=1.0,
        affirmative_ratio=0.0,
    )  # what _cfg pins, also for the CLI run
    finetune(_cfg(setup, tmp_path / "full", **kw))
    cut = tmp_path / "cut"
    args = [
        f"--{k}={v}"
        for k, v in dict(
            preset=setup["base"],
            world_dir=setup["world"],
            corpus_dir=setup["corpus"],
            output_dir=cut,
            batch_size=8,
            learning_rate=1e-3,
            warmup_ratio=0.0,
            save_steps=2,
            show_progress=False,
            log_steps=1,
            **kw,
        ).items()
    ]
    proc = subprocess.Popen(
        [sys.executable, "-c", _STOP_AFTER_FIRST_STATE, "finetune", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while not (cut / "stopped").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended (code {proc.returncode}) before its first state was saved"
    assert (cut / "checkpoints" / "step_00000002" / "done").exists()
    proc.send_signal(signal.SIGKILL)  # the run waits right after its step-2 state: the kill lands there, every time
    assert proc.wait() == -signal.SIGKILL
    assert not (cut / "model.safetensors").exists()
    resumed = finetune(_cfg(setup, cut, save_steps=2, **kw))
    assert [h["step"] for h in resumed["history"]] == [1, 2, 3, 4]
    full, again = _weights(tmp_path / "full"), _weights(cut)
    assert all(torch.allclose(full[k], again[k], atol=1e-6) for k in full)


_TWO_PROCESS_SCRIPT = """
import json, os, sys
from hf_negationclip.training import FinetuneConfig, finetune
from hf_negationclip.training.data import ImageTextData
seen, real = [], ImageTextData.batch
def spy(self, indices, epoch, seed):
    out = real(self, indices, epoch, seed)
    entries = self.entries(indices, epoch, seed)
    seen.append({"images": [str(self.paths[i]) for i in indices], "n_distractors": len(out.distractor_owner),
                 "expected": sum(len(e.distractors) for e, swapped in entries if not swapped)})
    return out
ImageTextData.batch = spy
cfg = FinetuneConfig(**json.loads(sys.argv[1]))
finetune(cfg)
rank = int(os.environ.get("RANK", 0))
json.dump({"world": int(os.environ.get("WORLD_SIZE", 1)), "batches": seen}, open(f"{cfg.output_dir}/rank{rank}.json", "w"))
"""


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_cpu_processes_train_on_the_global_batch(setup, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(_TWO_PROCESS_SCRIPT)
    kw = dict(
        preset=str(setup["base"]),
        world_dir=str(setup["world"]),
        corpus_dir=str(setup["corpus"]),
        batch_size=8,
        learning_rate=1e-3,
        warmup_ratio=0.0,
        save_steps=0,
        show_progress=False,
        max_steps=3,
        val_fraction=0.0,
        train="text",
        exclusion_weight=1.0,
        export_text_encoder=False,
        contrastive_weight=1.0,
        affirmative_ratio=0.0,
    )
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    torchrun = Path(sys.executable).with_name("torchrun")
    two = subprocess.run(
        [
            str(torchrun),
            "--nproc_per_node",
            "2",
            "--master_port",
            str(_free_port()),
            str(script),
            json.dumps({**kw, "output_dir": str(tmp_path / "two")}),
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run(
        [sys.executable, str(script), json.dumps({**kw, "output_dir": str(tmp_path / "one")})],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    ranks = [json.loads((tmp_path / "two" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    for a, b in zip(ranks[0]["batches"], ranks[1]["batches"]):
        assert len(a["images"]) == len(b["images"]) == 4 and not set(a["images"]) & set(b["images"])
    for r in ranks:  # every negated caption's distractors are encoded on the process that holds the caption
        assert all(b["n_distractors"] == b["expected"] > 0 for b in r["batches"])
    single = json.loads((tmp_path / "one" / "rank0.json").read_text())["batches"]
    assert [sorted(s["images"]) for s in single] == [
        sorted(a["images"] + b["images"]) for a, b in zip(*[r["batches"] for r in ranks])
    ]
    # same global batches, same weights: the contrastive loss saw all 8 images on both processes
    w1, w2, base = _weights(tmp_path / "one"), _weights(tmp_path / "two"), _weights(setup["base"])
    assert any(not torch.equal(w1[k], base[k]) for k in w1)
    # k_proj biases get a zero gradient (softmax ignores a shift of every key), so Adam turns float noise into
    # lr-sized steps there; elsewhere Adam does the same to the rare coordinate whose gradient is ~0, so: nearly
    # every weight agrees to 2e-5 (a per-process loss would move most of them apart), none by more than the lr steps
    for k in w1:
        if k.endswith("k_proj.bias"):
            continue
        diff = (w1[k] - w2[k]).abs()
        assert (diff > 2e-5).float().mean() < 1e-3 and diff.max() < 3 * 1e-3, (k, diff.max().item())


def test_exclusion_and_gathered_contrastive_terms_match_their_definitions(setup, world):
    records = load_negated_corpus(setup["corpus"] / "negated_captions_train.json", world / "images" / "train")
    model = NegationCLIPModel.from_pretrained(setup["base"]).eval()
    data = ImageTextData(records[:6], load_processor(image_size=64), show_progress=False)
    weights = LossWeights(exclusion=1.0, hard_negative=1.0, mcq=1.0)
    data.spec = batch_spec(weights, data.available())
    batch = data.batch(list(range(6)), 0, 0)
    assert batch.image_kind == "pixel_values" and list(batch.rows) == ["captions", "originals", "mcq_options"]
    with torch.no_grad():
        _, parts = compute_loss(model, batch, weights)
        clip = model(
            input_ids=batch.input_ids[:6],
            attention_mask=batch.attention_mask[:6],
            pixel_values=batch.images,
            return_loss=True,
        ).loss
        out = model(
            input_ids=batch.input_ids[:6],
            attention_mask=batch.attention_mask[:6],
            pixel_values=batch.distractor_images,
        )
    assert parts["contrastive"].item() == pytest.approx(clip.item(), rel=1e-5)
    assert set(parts) == {"loss", "contrastive", "hard_negative", "mcq", "exclusion"}
    with torch.no_grad():
        img = model(
            input_ids=batch.input_ids[:6],
            attention_mask=batch.attention_mask[:6],
            pixel_values=batch.images,
        ).image_embeds
    txt, dis, scale = out.text_embeds, out.image_embeds, model.logit_scale.exp()
    manual = torch.nn.functional.cross_entropy(
        scale * torch.stack([(txt * img).sum(-1), (txt * dis).sum(-1)], dim=1), torch.zeros(6, dtype=torch.long)
    )
    assert exclusion_loss(img, txt, dis, batch.distractor_owner, scale).item() == pytest.approx(manual.item(), rel=1e-5)


def test_config_file_with_flag_overrides_and_a_parquet_dataset(setup, tmp_path, capsys):
    import datasets
    from PIL import Image

    images = sorted((setup["world"] / "images" / "train").glob("*.jpg"))[:8]
    ds = datasets.Dataset.from_dict(
        {"image": [Image.open(p) for p in images], "text": [f"picture {i}" for i in range(8)]}
    )
    (tmp_path / "pq").mkdir()
    ds.cast_column("image", datasets.Image()).to_parquet(str(tmp_path / "pq" / "train-00000.parquet"))
    (tmp_path / "run.yaml").write_text(
        f"preset: {setup['base']}\ndataset: {tmp_path / 'pq'}\nrecipe: paper\n"
        "batch_size: 4\nval_fraction: 0.0\nshow_progress: false\n"
    )
    out = tmp_path / "out"
    assert (
        main(
            [
                "finetune",
                "--config",
                str(tmp_path / "run.yaml"),
                "--output_dir",
                str(out),
                "--max_steps",
                "1",
                "--world_dir",
                str(tmp_path / "no-world"),
            ]
        )
        == 0
    )
    saved = json.loads((out / "training_config.json").read_text())
    assert saved["learning_rate"] == 1e-6 and saved["batch_size"] == 4 and saved["dataset"] == str(tmp_path / "pq")
    assert (
        main(["finetune", "--config", str(tmp_path / "run.yaml"), "--text_column", "caption", "--output_dir", str(out)])
        == 2
    )
    assert "has no column 'caption'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--learning_rate", "-1"], "learning_rate must be > 0"),
        (["--train", "legs"], "unknown train part 'legs'"),
        (["--exclusion_weight", "-2"], "exclusion must be >= 0"),
        (["--recipe", "fancy"], "unknown recipe 'fancy'"),
    ],
)
def test_bad_config_values_give_one_line_errors(flags, message, capsys):
    assert main(["finetune", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_forward_on_cached_image_embeddings_matches_the_pixel_forward():
    torch.manual_seed(0)
    model = NegationCLIPModel(tiny_clip_config(64)).eval()
    processor = load_processor(image_size=64)
    batch = processor(
        text=["a red circle with no blue star", "a cross"],
        images=[torch.rand(3, 64, 64).numpy()] * 3,
        padding=True,
        return_tensors="pt",
        do_rescale=False,
    )
    with torch.no_grad():
        full = model(**batch)
        cached = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            image_embeds=model.image_embeddings(batch["pixel_values"]),
        )
    assert torch.allclose(full.logits_per_image, cached.logits_per_image, atol=1e-5)
    assert torch.allclose(full.text_embeds, cached.text_embeds, atol=1e-6)
    with pytest.raises(ValueError, match="not both"):
        model(**batch, image_embeds=full.image_embeds)


def test_cached_image_features_train_like_pixels_and_the_retain_term_starts_at_zero(setup, tmp_path):
    kw = dict(
        train="text",
        max_steps=3,
        val_fraction=0.0,
        exclusion_weight=1.0,
        retain_weight=1.0,
        retain_on="originals",  # affirmative_ratio is 0 here: on "picks" the term would hold no rows
        export_text_encoder=False,
    )
    cached = finetune(_cfg(setup, tmp_path / "cached", **kw))
    finetune(_cfg(setup, tmp_path / "pixels", cache_image_features=False, **kw))
    # the same training up to float noise: the two models embed the training captions alike
    processor = load_processor(image_size=64)
    texts = [
        r.caption.text
        for r in load_negated_corpus(
            setup["corpus"] / "negated_captions_train.json", setup["world"] / "images" / "train"
        )[:16]
    ]
    tok = processor.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        a, b, base = (
            NegationCLIPModel.from_pretrained(f).get_text_features(**tok).pooler_output
            for f in (tmp_path / "cached", tmp_path / "pixels", setup["base"])
        )
    cos = torch.nn.functional.cosine_similarity
    assert cos(a, b).min() > 0.99999 and cos(a, base).min() < 0.9999, (cos(a, b).min(), cos(a, base).min())
    retain = [h["retain"] for h in cached["history"] if "retain" in h]
    assert retain[0] == pytest.approx(0.0, abs=1e-6) and retain[-1] > 1e-5  # step 1 is logged before any update


def test_runs_from_one_vision_tower_share_encoded_images_and_picks_retain_adds_no_rows(setup, tmp_path):
    records = load_negated_corpus(setup["corpus"] / "negated_captions_train.json", setup["world"] / "images" / "train")
    model = NegationCLIPModel.from_pretrained(setup["base"]).eval()
    processor = load_processor(image_size=64)
    encoded = []

    def encoder(pixels):
        encoded.append(len(pixels))
        return model.image_embeddings(pixels)

    store = {}
    first = ImageTextData(records[:12], processor, show_progress=False, encoder=encoder, feature_store=store)
    n_first = sum(encoded)
    second = ImageTextData(records[:12], processor, show_progress=False, encoder=encoder, feature_store=store)
    assert n_first == len(first.paths) + len(first.distractor_row) and sum(encoded) == n_first  # nothing re-encoded
    assert torch.equal(first.cache, second.cache) and torch.equal(first.distractor_cache, second.distractor_cache)
    # the retain term on the batch's affirmative picks: a mask over the caption rows, no extra text rows
    second.set_anchors(lambda texts: torch.randn(len(texts), model.config.projection_dim))
    weights = LossWeights(exclusion=1.0, retain=1.0, retain_on="picks")
    second.spec = batch_spec(weights, second.available())
    batch = second.batch(list(range(len(second))), 0, 0)
    assert len(batch.input_ids) == len(batch) == len(batch.retain_mask) == len(batch.anchor_embeds)
    with torch.no_grad():
        _, parts = compute_loss(model, batch, weights)
    assert "retain" in parts and torch.isfinite(parts["retain"])
    with pytest.raises(ValueError, match="retain_on"):
        LossWeights(retain=1.0, retain_on="everything")


def test_finetune_reuses_image_features_and_anchors_only_for_the_same_towers(setup, tmp_path):
    kw = dict(train="text", max_steps=1, val_fraction=0.0, exclusion_weight=1.0, export_text_encoder=False)
    features = {}
    finetune(_cfg(setup, tmp_path / "a", **kw), image_features=features)
    finetune(_cfg(setup, tmp_path / "b", retain_weight=1.0, retain_on="picks", **kw), image_features=features)
    vision = [k for k in features if k.startswith("vision_cls:")]
    texts = [k for k in features if k.startswith("text:")]
    assert len(vision) == 1 and len(texts) == 1  # same base checkpoint: one fingerprint each, reused
    assert len([k for k in features if k.startswith("corpus:")]) == 1  # and the corpus, read once
    anchors = dict(features[texts[0]])
    assert anchors  # the retain term's anchors, kept for the next run from this text tower
    finetune(_cfg(setup, tmp_path / "d", retain_weight=1.0, retain_on="picks", **kw), image_features=features)
    assert features[texts[0]].keys() == anchors.keys()
    assert all(features[texts[0]][t] is anchors[t] for t in anchors)  # read back, not encoded again
    torch.manual_seed(1)
    NegationCLIPModel(tiny_clip_config(64)).save_pretrained(tmp_path / "other")
    finetune(_cfg(setup, tmp_path / "c", preset=str(tmp_path / "other"), **kw), image_features=features)
    assert len([k for k in features if k.startswith("vision_cls:")]) == 2  # other vision weights: their own features


def test_group_by_length_keeps_every_image_once_and_cuts_padding():
    from hf_negationclip.training.data import Caption, TrainRecord

    rng = torch.Generator().manual_seed(0)
    words = ["red", "circle", "with", "no", "blue", "star", "and", "a", "large", "square"]
    records = [
        TrainRecord(
            Path(f"im{i}.png"), Caption(" ".join(words[int(j)] for j in torch.randint(0, 10, (n,), generator=rng)))
        )
        for i, n in enumerate(torch.randint(2, 40, (600,), generator=rng).tolist())
    ]
    data = ImageTextData(records, load_processor(image_size=64), cache_images=False, show_progress=False)
    group = 16
    grouped, plain = data.order(1, 0, group), data.order(1, 0)
    assert sorted(grouped.tolist()) == list(range(len(data)))  # a permutation: every image once per epoch
    assert torch.equal(grouped, data.order(1, 0, group)) and not torch.equal(grouped, data.order(2, 0, group))
    lengths = data.text_lengths(1, 0)

    def padded(order):  # tokens a batch of the loop pads to (its longest text), over the epoch's full batches
        full = len(order) // group * group
        return int(lengths[order[:full].view(-1, group)].max(1).values.sum()) * group

    assert padded(grouped) < 0.75 * padded(plain), (padded(grouped), padded(plain))
    first = [lengths[grouped[k * group : (k + 1) * group]].float().mean().item() for k in range(5)]
    assert sorted(first) != first and sorted(first, reverse=True) != first  # batches are shuffled, not long-to-short


# --------------------------------------------------------------------------- the typed batch and the loss terms

_PICKS = [  # negated with 2 distractors and 1 option; negated with 1 distractor, 2 options and a bare image (its
    # record trains on an added pair's positive); swapped; plain
    Pick(Caption("a red circle with no blue star", "a red circle", (Path("d0"), Path("d1")), ("a red star",)), False),
    Pick(
        Caption(
            "a cross without a square", "a cross and a square", (Path("d2"),), ("a square", "a cross"), bare=Path("b1")
        ),
        False,
    ),
    Pick(Caption("a green cross but no star", "a green cross", (Path("d3"),), ("a star",)), True),
    Pick(Caption("a yellow triangle"), False),
]


def _starting(image: torch.Tensor) -> torch.Tensor:
    """The hand batch's "starting model's embedding" of a distractor or bare image: not the image itself."""
    return image.flip(0)


def _hand_batch(spec: BatchSpec, dim: int = 128):
    gen = torch.Generator().manual_seed(0)
    anchors = {t: torch.randn(dim, generator=gen) for t in ("a red circle", "a cross and a square", "a green cross")}
    anchors["a yellow triangle"] = torch.randn(dim, generator=gen)
    distractors = {Path(f"d{i}"): torch.randn(dim, generator=gen) for i in range(4)}
    sources = BatchSources(
        anchors=lambda texts: torch.stack([anchors[t] for t in texts]),
        distractors=lambda paths: torch.stack([distractors[p] for p in paths]),
    )
    images = torch.randn(len(_PICKS), dim, generator=gen)
    distractors[Path("b1")] = torch.randn(dim, generator=gen)
    sources = dataclasses.replace(
        sources,
        image_anchors=torch.randn(len(_PICKS), dim, generator=gen),
        distractor_anchors=lambda paths: torch.stack([_starting(distractors[p]) for p in paths]),
    )
    anchors.update({t: torch.randn(dim, generator=gen) for t in ("a red star", "a square")})  # the flips
    tokenizer = load_processor(image_size=64).tokenizer
    return collate(_PICKS, images, "image_embeds", tokenizer, spec, sources), anchors, distractors


def test_the_collator_lays_out_named_rows_and_fields():
    spec = BatchSpec(("mcq_options", "originals"), frozenset(["distractors", "hard_mask", "retain_mask", "mcq_valid"]))
    batch, _, distractors = _hand_batch(spec)
    assert batch.rows == {"captions": slice(0, 4), "originals": slice(4, 8), "mcq_options": slice(8, 16)}
    texts = ["a red circle with no blue star", "a cross without a square", "a green cross", "a yellow triangle"]
    texts += ["a red circle", "a cross and a square", "a green cross", "a yellow triangle"]
    texts += ["a red star", _PICKS[0].caption.text, "a square", "a cross"]
    texts += ["a green cross"] * 2  # swapped to its original: its options are masked, so they repeat its text
    texts += ["a yellow triangle"] * 2  # no options: padded with the caption itself, masked out
    tokenizer = load_processor(image_size=64).tokenizer
    assert torch.equal(batch.input_ids, tokenizer(texts, padding=True, return_tensors="pt")["input_ids"])
    assert batch.hard_mask.tolist() == [True, True, False, False]
    assert batch.retain_mask.tolist() == [False, False, True, True]
    assert batch.mcq_valid.tolist() == [[True, False], [True, True], [False, False], [False, False]]
    assert batch.distractor_owner.tolist() == [0, 0, 1]  # the swapped caption's distractor is not encoded
    assert torch.equal(batch.distractor_images, torch.stack([distractors[Path(f"d{i}")] for i in range(3)]))
    assert batch.anchor_embeds is None and len(batch) == 4
    only = _hand_batch(BatchSpec())[0]
    assert only.rows == {"captions": slice(0, 4)} and only.hard_mask is None and only.distractor_owner is None


def test_the_token_cache_pads_stored_ids_exactly_as_the_tokenizer_pads_a_batch():
    tokenizer = load_processor(image_size=64).tokenizer
    long = " ".join(["a red circle with no blue star"] * 20)  # over 77 tokens: truncated alike
    texts = ["a red circle", "a cross that isn’t blue", long, "a red circle", "No blue star here.", "x"]
    cache = TokenCache(tokenizer)
    for batch in (texts, texts[::-1], texts[:2]):  # seen and unseen texts, other orders and widths
        want = tokenizer(batch, padding=True, truncation=True, return_tensors="pt")
        ids, mask = cache(batch)
        assert torch.equal(ids, want["input_ids"]) and torch.equal(mask, want["attention_mask"])
    assert ids.shape[1] < 77 and cache(texts)[0].shape[1] == 77
    calls = []
    counting = TokenCache(lambda batch, truncation: calls.append(list(batch)) or tokenizer(batch, truncation=True))
    counting.tokenizer.pad_token_id, counting.tokenizer.padding_side = tokenizer.pad_token_id, "left"
    ids, mask = counting(["a red circle", "a red circle", "a cross"])
    counting(["a cross", "a red circle"])
    assert calls == [["a red circle", "a cross"]]  # each text tokenised once, repeats and later batches read
    assert mask.tolist() == [[1] * 5, [1] * 5, [0, 1, 1, 1, 1]] and ids[2, 0] == tokenizer.pad_token_id  # left pads


def test_batch_spec_holds_only_what_the_weighted_terms_read_from_the_data_at_hand():
    every = frozenset({"originals", "distractors", "mcq", "anchors"})
    assert batch_spec(LossWeights(), every) == BatchSpec()
    assert batch_spec(LossWeights(mcq=1.0), every) == BatchSpec(("captions", "mcq_options"), frozenset({"mcq_valid"}))
    assert batch_spec(LossWeights(mcq=1.0), frozenset()) == BatchSpec()  # no options in the data: nothing to build
    picks = batch_spec(LossWeights(retain=1.0, exclusion=1.0, retain_on="picks"), every)
    assert picks == BatchSpec(("captions",), frozenset({"anchor_embeds", "retain_mask", "distractors"}))
    originals = batch_spec(LossWeights(retain=1.0, hard_negative=1.0), every)
    assert originals == BatchSpec(("captions", "originals"), frozenset({"anchor_embeds", "hard_mask"}))
    square = batch_spec(LossWeights(square=1.0, retain=1.0, retain_on="picks", retain_flips=True), every)
    assert square == BatchSpec(
        ("captions", "flips"), frozenset({"anchor_embeds", "retain_mask", "distractors", "flip_valid", "flip_anchors"})
    )
    assert batch_spec(LossWeights(square=1.0), every - {"mcq"}) == BatchSpec()  # no flips in the data
    joint = batch_spec(LossWeights(joint_relations=1.0, retain_flips=True), every | {"image_anchors"})
    assert joint == BatchSpec(
        ("captions", "flips"),
        frozenset({"image_anchors", "anchor_embeds", "retain_mask", "flip_valid", "flip_anchors"}),
    )
    with pytest.raises(ValueError, match="unknown batch rows"):
        BatchSpec(("paraphrases",))


@pytest.mark.parametrize("retain_on, retain_flips", [("originals", False), ("picks", True)])
def test_each_loss_term_matches_a_direct_computation_and_the_loss_is_their_weighted_sum(retain_on, retain_flips):
    import torch.nn.functional as F

    from hf_negationclip.modeling import feature_tensor

    weights = LossWeights(
        contrastive=0.5,
        hard_negative=0.7,
        mcq=1.3,
        exclusion=2.0,
        square=1.7,
        negated_retain=0.9,
        retain=3.0,
        retain_on=retain_on,
        retain_flips=retain_flips,
        image_retain=0.4,
        image_relations=0.3,
        joint_relations=0.6,
        square_sides="idfo",
    )
    batch, anchors, distractors = _hand_batch(
        batch_spec(weights, frozenset({"originals", "distractors", "mcq", "anchors", "image_anchors"}))
    )
    torch.manual_seed(0)
    model = NegationCLIPModel(tiny_clip_config(64)).eval()
    tokenizer = load_processor(image_size=64).tokenizer
    seen = []  # the text rows the one forward pass encodes: each distinct text once
    hook = model.text_model.register_forward_pre_hook(
        lambda module, args, kw: seen.append(kw["input_ids"]), with_kwargs=True
    )
    with torch.no_grad():
        _, parts = compute_loss(model, batch, weights)
        hook.remove()
        assert len(seen[0]) == len(torch.unique(batch.input_ids, dim=0)) < len(batch.input_ids)

        def text(texts):  # each kind encoded on its own, not in the batch's one forward pass
            tok = tokenizer(texts, padding=True, return_tensors="pt")
            return F.normalize(feature_tensor(model.get_text_features(**tok)), dim=-1)

        T = text([p.text for p in _PICKS])
        O = text([p.affirmative for p in _PICKS])
        I = F.normalize(batch.images, dim=-1)
        D = F.normalize(torch.stack([distractors[Path(f"d{i}")] for i in range(3)]), dim=-1)
        s = model.logit_scale.exp()
        labels = torch.arange(4)
        expected = {"contrastive": (F.cross_entropy(s * I @ T.T, labels) + F.cross_entropy(s * T @ I.T, labels)) / 2}
        hard = [
            F.cross_entropy(s * torch.cat([I[i] @ T.T, (I[i] @ O[i])[None]])[None], labels[i : i + 1]) for i in (0, 1)
        ]
        expected["hard_negative"] = sum(hard) / 2
        A = F.normalize(torch.stack([anchors[p.affirmative] for p in _PICKS]), dim=-1)
        expected["negated_retain"] = (1 - (T[:2] * A[:2]).sum(-1)).mean()  # the negated rows near their originals
        Fl = text(["a red star", "a square"])  # the flips (first wrong option) of the two negated picks
        FA = F.normalize(torch.stack([anchors["a red star"], anchors["a square"]]), dim=-1)
        if retain_on == "originals":
            expected["retain"] = (1 - (O * A).sum(-1)).mean()
        else:  # rows 2 (swapped to its original) and 3 (plain) are the affirmative picks; + the two flips
            expected["retain"] = torch.cat([1 - (T[2:] * A[2:]).sum(-1), 1 - (Fl * FA).sum(-1)]).mean()
        options = {0: ["a red star"], 1: ["a square", "a cross"]}
        mcq = [
            F.cross_entropy(s * torch.cat([(I[i] @ T[i])[None], I[i] @ text(options[i]).T])[None], labels[:1])
            for i in (0, 1)
        ]
        expected["mcq"] = sum(mcq) / 2
        excl = [
            F.cross_entropy(s * torch.stack([T[0] @ I[0], T[0] @ D[0], T[0] @ D[1]])[None], labels[:1]),
            F.cross_entropy(s * torch.stack([T[1] @ I[1], T[1] @ D[2]])[None], labels[:1]),
        ]
        expected["exclusion"] = sum(excl) / 2
        squares = [(0, D[0]), (0, D[1]), (1, D[2])]  # (caption row, distractor): the swapped row has none
        sides = [
            margin
            for row, d in squares
            for margin in (
                I[row] @ Fl[row] - I[row] @ T[row],  # the image prefers its caption over the flip
                d @ T[row] - d @ Fl[row],  # the distractor prefers the flip
                I[row] @ Fl[row] - d @ Fl[row],  # the flip prefers the distractor
            )
        ]
        side_means = [F.softplus(s * torch.stack(sides[k::3])).mean() for k in range(3)]
        B = F.normalize(distractors[Path("b1")], dim=-1)  # row 1's own image: picks its caption over the flip
        side_means.append(F.softplus(s * (B @ Fl[1] - B @ T[1])))
        expected["square"] = torch.stack(side_means).mean()
        # every image the step encodes is held: the batch's, its distractors, the bare image
        held = torch.cat([I, D, B[None]])
        others = [_starting(distractors[Path(p)]) for p in ("d0", "d1", "d2", "b1")]
        starts = torch.cat([batch.image_anchors, torch.stack(others)])
        expected["image_retain"] = (1 - (held * F.normalize(starts, dim=-1)).sum(-1)).mean()
        # ... and keeps how it ranks the batch's affirmative texts at their anchors (and they rank it)
        now, then = s * held @ A.T, s * F.normalize(starts, dim=-1) @ A.T

        def kl(p_logits, q_logits):  # KL(softmax p || softmax q), mean over rows
            p_log = p_logits.log_softmax(1)
            return (p_log.exp() * (p_log - q_logits.log_softmax(1))).sum(1).mean()

        expected["image_relations"] = (kl(then, now) + kl(then.T, now.T)) / 2
        # ... and the same ranking of the affirmative picks (rows 2, 3; + the flips where retain holds them) as
        # both towers embed them now, against both towers at their start
        texts_now, texts_then = (torch.cat([T[2:], Fl]), torch.cat([A[2:], FA])) if retain_flips else (T[2:], A[2:])
        now, then = s * held @ texts_now.T, s * F.normalize(starts, dim=-1) @ texts_then.T
        expected["joint_relations"] = (kl(then, now) + kl(then.T, now.T)) / 2
    assert set(parts) == {"loss", *expected} == {"loss", *TERMS}
    for name, value in expected.items():
        assert parts[name].item() == pytest.approx(value.item(), rel=1e-4, abs=1e-6), name
    total = sum(getattr(weights, name) * parts[name] for name in TERMS)
    assert parts["loss"].item() == pytest.approx(total.item(), rel=1e-6)


def test_padded_choices_give_finite_gradients_to_the_logit_scale():
    # the hand batch's negated picks have 1 and 2 MCQ options and 2 and 1 distractors: both terms pad a slot
    weights = LossWeights(mcq=1.0, exclusion=1.0, square=1.0)
    batch, _, _ = _hand_batch(batch_spec(weights, frozenset({"distractors", "mcq"})))
    assert not batch.mcq_valid.all()
    torch.manual_seed(0)
    model = NegationCLIPModel(tiny_clip_config(64))
    loss, parts = compute_loss(model, batch, weights)
    loss.backward()
    assert torch.isfinite(loss) and parts["mcq"] > 0 and parts["exclusion"] > 0
    assert torch.isfinite(model.logit_scale.grad).all() and model.logit_scale.grad != 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_terms_a_batch_cannot_feed_are_left_out():
    weights = LossWeights(mcq=1.0, exclusion=1.0, hard_negative=1.0)
    batch, _, _ = _hand_batch(batch_spec(weights, frozenset({"mcq"})))  # the data has options, nothing else
    assert active_terms(batch, weights) == ["contrastive", "mcq"]
    plain = [Pick(Caption(p.caption.text), False) for p in _PICKS]  # no caption has an option: zero MCQ rows
    tokenizer = load_processor(image_size=64).tokenizer
    spec = batch_spec(weights, frozenset({"mcq"}))
    empty = collate(plain, torch.randn(4, 128), "image_embeds", tokenizer, spec)
    assert empty.rows["mcq_options"] == slice(4, 4) and active_terms(empty, weights) == ["contrastive"]
    torch.manual_seed(0)
    enc = encode(NegationCLIPModel(tiny_clip_config(64)).eval(), empty, ["contrastive"], weights)
    assert list(enc.texts) == ["captions"] and len(enc.distractors) == 0


# --------------------------------------------------------------------------- recipes and bad images


def test_the_demo_runs_are_recipes_of_the_one_table_with_the_values_they_always_had(tmp_path):
    from hf_negationclip.apps.demo import FINETUNES, DemoConfig, finetune_config
    from hf_negationclip.training import RECIPES

    shared = dict(epochs=4, batch_size=64, affirmative_ratio=0.35, warmup_ratio=0.05, group_by_length=True)
    shared.update(val_fraction=0.2, best_metric="val_loss", hard_negative_weight=0.0)
    expected = {  # the demo's fine-tunes before the recipe table (demo.FINETUNES over the "tiny" recipe)
        "paper": dict(train="text", learning_rate=1e-3, contrastive_weight=1.0, exclusion_weight=0.0,
                      retain_weight=0.0, retain_on="originals", minimal_pairs_only=False, lora_r=8, lora_alpha=16),
        # issue 17: both directions, 2x the passes; then the vision head, side o, clauses, retain 10; then the last
        # vision block, image relations 4 + image retain 1, square 4; then joint relations 4, MCQ 1, image retain 0.5;
        # then square side d twice, both relations 2; then side i twice too
        "ours": dict(train="text+vision-top", learning_rate=1e-3, contrastive_weight=0.1, exclusion_weight=2.0,
                     retain_weight=10.0, retain_on="picks", minimal_pairs_only=True, lora_r=8, lora_alpha=16,
                     square_weight=4.0, retain_flips=True, epochs=8, square_sides="iiddfo", clause_ratio=0.3,
                     image_retain_weight=0.5, image_relation_weight=2.0, joint_relation_weight=2.0, mcq_weight=1.0),
        # then ours' method through LoRA on the text tower and the last vision block, 4x the learning rate; then
        # square side d twice, both relations 2, MCQ 1
        "ours-lora": dict(train="lora-text+vision-top", learning_rate=4e-3, contrastive_weight=0.1,
                          exclusion_weight=2.0, retain_weight=10.0, retain_on="picks", minimal_pairs_only=True,
                          lora_r=16, lora_alpha=32, square_weight=4.0, retain_flips=True, square_sides="iddfo",
                          clause_ratio=0.3, image_retain_weight=0.5, image_relation_weight=2.0,
                          joint_relation_weight=2.0, mcq_weight=1.0),
    }  # fmt: skip
    expected["paper"].update(
        mcq_weight=0.0, square_weight=0.0, retain_flips=False, square_sides="idf", clause_ratio=0.0
    )
    expected["paper"].update(image_retain_weight=0.0, image_relation_weight=0.0, joint_relation_weight=0.0)
    assert FINETUNES == tuple(expected) and set(FINETUNES) <= set(RECIPES)
    for label, values in expected.items():
        run = finetune_config(DemoConfig(), tmp_path, label)
        assert run.recipe == label and run.preset == str(tmp_path / "baseline")
        got = {name: getattr(run, name) for name in {**shared, **values}}
        assert got == {**shared, **values}, label
    lora = finetune_config(DemoConfig(finetune_lr=5e-4), tmp_path, "ours-lora")
    assert lora.learning_rate == 2e-3 and lora.lora_target_modules.startswith(".*text_model")  # 4x the demo's lr


def test_recipes_fill_unset_options_and_tiny_is_ours(setup, tmp_path):
    ours, tiny = FinetuneConfig(recipe="ours"), FinetuneConfig(recipe="tiny")
    assert tiny.recipe == "ours" and dataclasses.asdict(tiny) == dataclasses.asdict(ours)
    assert FinetuneConfig().recipe == "ours"
    paper = FinetuneConfig(recipe="paper", learning_rate=3e-5)
    assert (paper.learning_rate, paper.batch_size, paper.epochs, paper.warmup_ratio) == (3e-5, 512, 15, 0.0)
    with pytest.raises(ValueError, match="known: paper, ours, ours-lora, tiny"):
        FinetuneConfig(recipe="fancy")


def _corrupt(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:200])  # a truncated JPEG: the header opens, decoding fails


def test_unreadable_images_and_distractors_are_dropped_and_listed(setup, tmp_path):
    import shutil

    corpus, images = tmp_path / "corpus", tmp_path / "images"
    shutil.copytree(setup["corpus"], corpus)
    shutil.copytree(setup["world"] / "images" / "train", images)
    records = load_negated_corpus(corpus / "negated_captions_train.json", images)
    bad_image, bad_distractor = records[0].image, records[1].caption.distractors[0]
    _corrupt(bad_image)
    _corrupt(bad_distractor)
    kept, skipped = drop_unreadable_images(records, show_progress=False)
    assert skipped == sorted([str(bad_image), str(bad_distractor)])
    assert [r.image for r in kept] == [r.image for r in records if r.image != bad_image]
    assert next(r for r in kept if r.image == records[1].image).caption.distractors == ()
    cfg = _cfg(setup, tmp_path / "out", corpus_dir=str(corpus), image_dir=str(images), max_steps=1, val_fraction=0.0)
    with pytest.raises(OSError, match="cannot read training image"):
        finetune(cfg)
    finetune(dataclasses.replace(cfg, skip_bad_images=True, export_text_encoder=False))
    listed = json.loads((tmp_path / "out" / "skipped_images.json").read_text())
    assert listed == {"count": 2, "images": skipped}
    ds = [TrainRecord(Path("nope.jpg"), Caption("a red circle"))]
    assert drop_unreadable_images(ds, show_progress=False) == ([], ["nope.jpg"])


def test_clause_ratio_trains_negated_picks_as_their_negation_clause_and_holds_its_flip():
    from hf_negationclip.training.data import Caption

    caption = Caption(
        "no blue star here: a red circle",
        "a red circle",
        (Path("d0"),),
        ("a blue star here: a red circle", "no red circle here: a blue star"),
        ("No blue star here", "A blue star here"),
    )
    plain = Caption("a green cross")
    records = [TrainRecord(Path(f"i{k}"), caption if k % 2 == 0 else plain) for k in range(8)]
    processor = load_processor(image_size=64)
    data = ImageTextData(records, processor, cache_images=False, show_progress=False, clause_ratio=1.0)
    picks = data.entries(range(8), epoch=0, seed=0)
    assert [p.text for p in picks] == ["No blue star here", "a green cross"] * 4
    view = picks[0].caption
    assert view.mcq_wrong == ("A blue star here",) and view.distractors == caption.distractors and picks[0].negated
    # the same picks and affirmative swaps as without clauses; clause views only replace negated picks
    half = ImageTextData(records, processor, False, False, affirmative_ratio=0.5, clause_ratio=1.0)
    none = ImageTextData(records, processor, False, False, affirmative_ratio=0.5)
    for a, b in zip(half.entries(range(8), 3, 1), none.entries(range(8), 3, 1)):
        assert a.swapped == b.swapped and (a.text == b.text or (b.negated and a.text == "No blue star here"))
    data.set_anchors(lambda texts: torch.randn(len(texts), 4), flips=True)
    assert {"A blue star here", "a blue star here: a red circle", "a red circle"} <= set(data.anchor_row)
    assert len(data.text_lengths(0, 0)) == 8
    # with the scope swap's clause (the negation of the object the image holds) both are the view's wrong options
    swapped = Caption(caption.text, caption.original, caption.distractors, caption.mcq_wrong,
                      (*caption.clause, "No red circle here"))  # fmt: skip
    assert swapped.clause_view().mcq_wrong == ("A blue star here", "No red circle here")


@pytest.mark.parametrize(
    "train, kind, trained",
    [
        ("text+vision-head", "vision_cls", ("vision_model.post_layernorm.", "visual_projection.")),
        (
            "text+vision-top",
            "vision_states",
            ("vision_model.encoder.layers.2.", "vision_model.post_layernorm.", "visual_projection."),
        ),
        # LoRA adapters on the same last block and projection (merged into the saved weights); LayerNorm frozen
        ("lora-text+vision-top", "vision_states", ("vision_model.encoder.layers.2.", "visual_projection.")),
    ],
)
def test_vision_head_runs_train_the_top_on_cached_states_and_keep_the_body(setup, tmp_path, train, kind, trained):
    features = {}
    cfg = _cfg(setup, tmp_path, epochs=2, train=train, exclusion_weight=1.0, image_retain_weight=1.0)
    result = finetune(cfg, image_features=features)
    assert any("image_retain" in h for h in result["history"])
    first = next(h["image_retain"] for h in result["history"] if "image_retain" in h)
    assert first == pytest.approx(0.0, abs=1e-6)  # the anchors are the starting model's own embeddings
    before, after = _weights(setup["base"]), _weights(tmp_path)
    for name, value in before.items():
        if name.startswith("vision_model.") and not name.startswith(trained):
            assert torch.equal(value, after[name]), name  # the rest of the vision body is frozen
    for prefix in trained:  # every trained part moved
        assert any(not torch.equal(v, after[k]) for k, v in before.items() if k.startswith(prefix)), prefix
    # the cache holds the states below the trained part, under their own fingerprint; the forward from them
    # reproduces the pixel path exactly
    (key,) = [k for k in features if k.startswith(kind + ":")]
    model = NegationCLIPModel.from_pretrained(tmp_path).eval()
    processor = load_processor(image_size=64)
    pixels = torch.randn(2, 3, 64, 64)
    ids = processor.tokenizer(["a red circle"] * 2, return_tensors="pt")["input_ids"]
    states = model.vision_cls_states(pixels) if kind == "vision_cls" else model.vision_block_inputs(pixels)
    with torch.no_grad():
        via_pixels = model(input_ids=ids, pixel_values=pixels).image_embeds
        via_cache = model(input_ids=ids, **{kind: states}).image_embeds
    assert torch.allclose(via_pixels, via_cache, atol=1e-5) and len(features[key]) > 0
    assert features[key][next(iter(features[key]))].shape == states.shape[1:]
    with pytest.raises(ValueError, match="pass one of"):
        model(input_ids=ids, image_embeds=via_cache, **{kind: states})


def test_runs_sharing_a_store_read_the_corpus_once_and_take_cls_states_from_cached_token_states(
    setup, tmp_path, monkeypatch
):
    from PIL import Image

    ft = sys.modules["hf_negationclip.training.finetune"]  # the module (the package's name is the function)
    reads, opened = [], []
    monkeypatch.setattr(ft, "load_negated_corpus", lambda *a: reads.append(a) or load_negated_corpus(*a))
    process = ImageTextData._process
    monkeypatch.setattr(
        ImageTextData, "_process", lambda self, chunk: opened.append(len(chunk)) or process(self, chunk)
    )
    shared = {}
    finetune(_cfg(setup, tmp_path / "top", max_steps=1, train="text+vision-top"), image_features=shared)
    states_opened = sum(opened)
    finetune(_cfg(setup, tmp_path / "text", max_steps=1, train="text"), image_features=shared)
    assert len(reads) == 1 and states_opened > 0 and sum(opened) == states_opened  # no image opened again
    (states,) = [v for k, v in shared.items() if k.startswith("vision_states:")]
    (cls,) = [v for k, v in shared.items() if k.startswith("vision_cls:")]
    assert set(cls) == set(states)
    model = NegationCLIPModel.from_pretrained(setup["base"]).eval()
    path = next(iter(cls))
    pixels = load_processor(image_size=64)(images=[Image.open(path).convert("RGB")], return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(model.vision_cls_states(pixels["pixel_values"])[0], cls[path], atol=1e-5)


def test_an_added_pairs_record_keeps_the_captions_own_image_for_square_side_o(tmp_path):
    from PIL import Image

    from hf_negationclip.training.losses import batch_spec

    (tmp_path / "images").mkdir()
    (tmp_path / "corpus" / "positives").mkdir(parents=True)
    (tmp_path / "corpus" / "distractors").mkdir()
    colours = {
        "images/1.png": (200, 0, 0),
        "corpus/positives/1.png": (0, 200, 0),
        "corpus/distractors/1.png": (0, 0, 9),
    }
    for rel, colour in colours.items():
        Image.new("RGB", (32, 32), colour).save(tmp_path / rel)
    ann = {
        "id": 1,
        "image_id": 1,
        "caption": "a red circle",
        "updated_caption": "a red circle with no blue star",
        "distractors": ["distractors/1.png"],
        "image": "positives/1.png",
        "mcq_wrong": ["a red circle with a blue star"],
    }
    data = {"images": [{"id": 1, "file_name": "1.png", "height": 32, "width": 32}], "annotations": [ann]}
    path = tmp_path / "corpus" / "negated_captions_train.json"
    path.write_text(json.dumps(data))
    (record,) = load_negated_corpus(path, tmp_path / "images")
    assert record.caption.clause == ("With no blue star", "With a blue star")  # no scope swap in the file
    ann.update(updated_caption="a red circle; no blue star here", mcq_wrong=["a red circle; a blue star here",
               "a blue star; no red circle here"])  # fmt: skip
    path.write_text(json.dumps(data))
    (clauses,) = load_negated_corpus(path, tmp_path / "images")
    assert clauses.caption.clause == ("No blue star here", "A blue star here", "No red circle here")
    # a backend that built the scope swap but no flip: the swap is an MCQ option, never the square's flip
    ann.update(updated_caption="a red circle with no blue star", mcq_wrong=["a blue star with no red circle"])
    path.write_text(json.dumps(data))
    (no_flip,) = load_negated_corpus(path, tmp_path / "images")
    assert no_flip.caption.mcq_wrong == ("a blue star with no red circle",) and no_flip.caption.flip is None
    assert no_flip.caption.clause is None and not has_flip(Pick(no_flip.caption, False))
    ann.update(mcq_wrong=["a red circle with a blue star"])
    path.write_text(json.dumps(data))
    (record,) = load_negated_corpus(path, tmp_path / "images")
    assert record.image == tmp_path / "corpus" / "positives" / "1.png"  # trains on the positive (same count as D)
    assert record.caption.bare == tmp_path / "images" / "1.png"  # the scene the caption was written of
    processor = load_processor(image_size=64)
    dataset = ImageTextData([record], processor, show_progress=False)
    weights = LossWeights(square=1.0, square_sides="idfo")
    dataset.spec = batch_spec(weights, dataset.available())
    batch = dataset.batch([0], epoch=0, seed=0)
    assert batch.bare_owner.tolist() == [0]
    own = processor(images=[Image.open(record.caption.bare)], return_tensors="pt")["pixel_values"]
    assert torch.allclose(batch.bare_images, own)  # from the cache, beside the distractors
    assert not torch.allclose(batch.images, own)
    # without side "o" nothing extra is built or encoded
    dataset.spec = batch_spec(LossWeights(square=1.0), dataset.available())
    assert dataset.batch([0], epoch=0, seed=0).bare_owner is None
    with pytest.raises(ValueError, match="square_sides"):
        LossWeights(square_sides="idx")


def test_image_relations_loss_is_zero_at_the_start_and_ignores_moves_no_text_sees():
    from hf_negationclip.training.losses import relations_loss

    torch.manual_seed(0)
    texts = torch.randn(6, 8)
    texts[:, 6:] = 0  # no text looks along the last two dimensions
    texts = torch.nn.functional.normalize(texts, dim=-1)
    start = torch.nn.functional.normalize(torch.randn(5, 8) + torch.tensor([0.0] * 6 + [2.0, -2.0]), dim=-1)
    scale = torch.tensor(10.0)
    assert relations_loss(start, start, texts, scale).item() == pytest.approx(0.0, abs=1e-6)
    unseen = start[:, [0, 1, 2, 3, 4, 5, 7, 6]]  # rotated where no text looks: same norm, same similarities
    assert relations_loss(unseen, start, texts, scale).item() == pytest.approx(0.0, abs=1e-6)
    assert (1 - (unseen * start).sum(-1)).mean() > 0.5  # a retain distance would charge that move
    swapped = start[[1, 0, 2, 3, 4]]  # two images trade places: their rankings change
    assert relations_loss(swapped, start, texts, scale).item() > 0.05


def test_a_square_side_named_twice_counts_twice():
    import torch.nn.functional as F

    from hf_negationclip.training.losses import square_loss

    g = torch.Generator().manual_seed(0)
    img, txt, flips = (F.normalize(torch.randn(4, 8, generator=g), dim=-1) for _ in range(3))
    dis = F.normalize(torch.randn(3, 8, generator=g), dim=-1)  # distractor j belongs to caption row owner[j]
    owner, valid, scale = torch.tensor([0, 1, 3]), torch.tensor([True, True, False, False]), torch.tensor(5.0)

    def loss(sides):
        return square_loss(img, txt, flips, dis, owner, valid, scale, sides)

    i, d = loss("i"), loss("d")
    assert not torch.isclose(i, d)
    assert torch.isclose(loss("idd"), (i + 2 * d) / 3)
    assert torch.isclose(loss("iddfo"), (i + 2 * d + loss("f")) / 4)  # no bare images: side o is left out
