import json

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
