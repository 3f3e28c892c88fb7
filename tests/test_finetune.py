"""Fine-tuning: what trains, losses, LoRA outputs, resume after SIGKILL, 2 CPU processes, config and errors."""

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
from hf_negationclip.training import FinetuneConfig, LossWeights, compute_loss, exclusion_loss, finetune
from hf_negationclip.training.data import ImageTextData, load_negated_corpus

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
        # the retain term (0 at step 0, on in the tiny recipe) is tested on its own below; InfoNCE at full
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
    seen.append({"images": [str(self.paths[i]) for i in indices], "n_distractors": len(out["distractor_owner"]),
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
    batch = data.batch(list(range(6)), 0, 0)
    with torch.no_grad():
        _, parts = compute_loss(model, batch, LossWeights(exclusion=1.0, hard_negative=1.0, mcq=1.0))
        clip = model(
            input_ids=batch["input_ids"][:6],
            attention_mask=batch["attention_mask"][:6],
            pixel_values=batch["pixel_values"],
            return_loss=True,
        ).loss
        out = model(
            input_ids=batch["input_ids"][:6],
            attention_mask=batch["attention_mask"][:6],
            pixel_values=batch["distractor_pixel_values"],
        )
    assert parts["contrastive"].item() == pytest.approx(clip.item(), rel=1e-5)
    assert set(parts) == {"loss", "contrastive", "hard_negative", "mcq", "exclusion"}
    with torch.no_grad():
        img = model(
            input_ids=batch["input_ids"][:6],
            attention_mask=batch["attention_mask"][:6],
            pixel_values=batch["pixel_values"],
        ).image_embeds
    txt, dis, scale = out.text_embeds, out.image_embeds, model.logit_scale.exp()
    manual = torch.nn.functional.cross_entropy(
        scale * torch.stack([(txt * img).sum(-1), (txt * dis).sum(-1)], dim=1), torch.zeros(6, dtype=torch.long)
    )
    assert exclusion_loss(img, txt, dis, batch["distractor_owner"], scale).item() == pytest.approx(
        manual.item(), rel=1e-5
    )


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
        train="text", max_steps=3, val_fraction=0.0, exclusion_weight=1.0, retain_weight=1.0, export_text_encoder=False
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
    second.keep_extras(False, False, True, "picks")
    batch = second.batch(list(range(len(second))), 0, 0)
    assert len(batch["input_ids"]) == batch["n_texts"] == len(batch["retain_mask"]) == len(batch["anchor_embeds"])
    with torch.no_grad():
        _, parts = compute_loss(model, batch, LossWeights(exclusion=1.0, retain=1.0))
    assert "retain" in parts and torch.isfinite(parts["retain"])
    with pytest.raises(ValueError, match="retain_on"):
        second.keep_extras(False, False, True, "everything")


def test_finetune_reuses_image_features_only_for_the_same_vision_tower(setup, tmp_path):
    kw = dict(train="text", max_steps=1, val_fraction=0.0, exclusion_weight=1.0, export_text_encoder=False)
    features = {}
    finetune(_cfg(setup, tmp_path / "a", **kw), image_features=features)
    finetune(_cfg(setup, tmp_path / "b", retain_weight=1.0, retain_on="picks", **kw), image_features=features)
    assert len(features) == 1  # same base checkpoint: one fingerprint, reused
    torch.manual_seed(1)
    NegationCLIPModel(tiny_clip_config(64)).save_pretrained(tmp_path / "other")
    finetune(_cfg(setup, tmp_path / "c", preset=str(tmp_path / "other"), **kw), image_features=features)
    assert len(features) == 2  # other vision weights never read the first run's features


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
