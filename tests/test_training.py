import dataclasses
import json
import re

import pytest
import torch
from transformers import CLIPModel, CLIPTextModel

from hf_negationclip import NegationCLIPModel, PretrainConfig, WorldEvaluator, load_processor, pretrain
from hf_negationclip.training import ImageTextData


def _cfg(world, out, **kw):
    base = dict(
        world_dir=str(world),
        output_dir=str(out),
        epochs=1,
        batch_size=16,
        learning_rate=1e-3,
        warmup_ratio=0.0,
        show_progress=False,
        save_steps=0,
        log_steps=1,
    )
    return PretrainConfig(**{**base, **kw})


def test_short_pretraining_lowers_loss_and_reloads_in_plain_clip(world, tmp_path, check_png):
    result = pretrain(_cfg(world, tmp_path, epochs=4, max_steps=30))
    losses = [h["loss"] for h in result["history"]]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    assert (tmp_path / "model.safetensors").is_file()
    check_png(tmp_path / "loss.png", height=418, width=715, colours=["#1f77b4"])  # the train-loss line, 110 dpi
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "clip" and config["architectures"] == ["NegationCLIPModel"]
    ours, plain = NegationCLIPModel.from_pretrained(tmp_path), CLIPModel.from_pretrained(tmp_path)
    processor = load_processor(tmp_path)
    batch = processor(
        text=["a red circle", "a photo with no blue star"],
        images=[torch.zeros(3, 96, 96).numpy()] * 2,
        padding=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        a, b = ours(**batch).logits_per_image, plain(**batch).logits_per_image
    assert torch.allclose(a, b)
    text_only = CLIPTextModel.from_pretrained(tmp_path)
    assert text_only.config.eos_token_id == 49407


def test_resume_after_kill(world, tmp_path, monkeypatch):
    full = pretrain(_cfg(world, tmp_path / "full", max_steps=6, resume=False))
    real_batch, calls = ImageTextData.batch, []

    def dying_batch(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 6:  # killed while fetching the 6th batch: states were saved at steps 2 and 4
            raise KeyboardInterrupt
        return real_batch(self, *args, **kwargs)

    monkeypatch.setattr(ImageTextData, "batch", dying_batch)
    with pytest.raises(KeyboardInterrupt):
        pretrain(_cfg(world, tmp_path / "cut", max_steps=6, save_steps=2))
    monkeypatch.setattr(ImageTextData, "batch", real_batch)
    assert not (tmp_path / "cut" / "model.safetensors").exists()
    resumed = pretrain(_cfg(world, tmp_path / "cut", max_steps=6, save_steps=2))
    steps = [json.loads(line)["step"] for line in (tmp_path / "cut" / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6] == [h["step"] for h in resumed["history"]]
    assert resumed["history"][-1]["loss"] == pytest.approx(full["history"][-1]["loss"], rel=1e-4)


def test_evaluator_reports_chance_beside_accuracy(world, tmp_path):
    pretrain(_cfg(world, tmp_path, max_steps=2), WorldEvaluator(world, "val", probe_items=8))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    # the numbers are those of the saved weights: a fresh evaluator on the reloaded checkpoint gives them again
    again = WorldEvaluator(world, "val", probe_items=8)(
        NegationCLIPModel.from_pretrained(tmp_path), load_processor(tmp_path)
    )
    assert {k: v["value"] for k, v in again.items()} == pytest.approx({k: metrics[k]["value"] for k in again}, abs=1e-6)
    instances = json.loads((world / "annotations" / "instances_val.json").read_text())
    per_image = [sum(a["image_id"] == im["id"] for a in instances["annotations"]) for im in instances["images"]]
    assert metrics["zero_shot_shape_accuracy"]["n"] == per_image.count(1)  # every single-object val image
    train_images = json.loads((world / "annotations" / "captions_train.json").read_text())["images"]
    assert metrics["steps"] == 2 and metrics["train_images"] == len(train_images)
    assert metrics["negation_probe_accuracy"]["chance"] == 0.5 and metrics["negation_probe_accuracy"]["n"] == 8
    assert metrics["zero_shot_shape_accuracy"]["chance"] == pytest.approx(1 / 8, abs=1e-3)
    for key in (
        "zero_shot_shape_accuracy",
        "zero_shot_color_accuracy",
        "image_to_text_r@1",
        "affirmative_probe_accuracy",
    ):
        assert 0.0 <= metrics[key]["value"] <= 1.0 and metrics[key]["n"] > 0


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(epochs=0), "epochs"),
        (dict(batch_size=1), "batch_size"),
        (dict(mixed_precision="fp8"), "mixed_precision"),
        (dict(save_steps=-1), "save_steps"),
    ],
)
def test_bad_config_is_refused(world, tmp_path, bad, match):
    with pytest.raises(ValueError, match=match):
        _cfg(world, tmp_path, **bad)


def test_missing_or_malformed_captions(world, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        pretrain(_cfg(world, tmp_path / "a", captions_file=str(tmp_path / "nope.json")))
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [], "annotations": [')
    with pytest.raises(ValueError, match="not valid JSON"):
        pretrain(_cfg(world, tmp_path / "b", captions_file=str(bad)))


def test_training_never_imports_the_apps():
    """Layering: the library's training code calls back (evaluator, on_save); it never imports cards or the CLI."""
    import ast
    from pathlib import Path

    import hf_negationclip.training as training

    for path in Path(training.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            assert not any(n.startswith(("..apps", "hf_negationclip.apps")) for n in names), (path.name, names)


def test_the_save_hook_gets_the_run_folder_and_the_cli_writes_the_card(world, tmp_path):
    from hf_negationclip.apps.cli import main

    calls = []
    pretrain(_cfg(world, tmp_path / "lib", max_steps=1), on_save=calls.append)
    assert calls == [tmp_path / "lib"] and not (tmp_path / "lib" / "README.md").exists()
    flags = ["--world_dir", str(world), "--output_dir", str(tmp_path / "cli"), "--max_steps", "1"]
    assert main(["pretrain", *flags, "--batch_size", "16", "--show_progress", "false", "--save_steps", "0"]) == 0
    assert "baseline" in (tmp_path / "cli" / "README.md").read_text()  # the model card, written through the hook


def test_a_corrupt_jpeg_stops_training_unless_skip_bad_images(world, tmp_path):
    import shutil

    images = tmp_path / "images"
    shutil.copytree(world / "images" / "train", images)
    bad = sorted(images.glob("*.jpg"))[3]
    bad.write_bytes(bad.read_bytes()[:300])  # truncated: the header opens, the pixels do not decode
    with pytest.raises(OSError, match=re.escape(f"cannot read training image {bad}")):
        pretrain(_cfg(world, tmp_path / "strict", image_dir=str(images), max_steps=1))
    result = pretrain(_cfg(world, tmp_path / "skip", image_dir=str(images), max_steps=1, skip_bad_images=True))
    assert result["history"][-1]["step"] == 1
    listed = json.loads((tmp_path / "skip" / "skipped_images.json").read_text())
    assert listed == {"count": 1, "images": [str(bad)]}
    assert json.loads((tmp_path / "skip" / "training_config.json").read_text())["skip_bad_images"] is True


def test_flags_that_did_nothing_are_gone():
    from hf_negationclip.training import FinetuneConfig

    names = {f.name for f in dataclasses.fields(PretrainConfig)}
    assert not names & {"num_workers", "eval_steps", "best_metric"} and "captions_file" in names
    names = {f.name for f in dataclasses.fields(FinetuneConfig)}
    assert not names & {"num_workers", "captions_file"} and {"eval_steps", "best_metric"} <= names
