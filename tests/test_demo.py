"""The main job end to end on a small world: ours learns negation, every output loads, a rerun reuses the stages."""

import json

import pytest
import yaml
from transformers import CLIPModel, CLIPTextModel

from hf_negationclip.apps.demo import DemoConfig, run_demo


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    # the small preset: big enough that the baseline sees colours and the fine-tunes pass the exclusion plateau
    cfg = DemoConfig(
        out=str(out),
        images=1000,
        epochs=20,
        batch_size=64,
        finetune_epochs=12,
        finetune_batch_size=32,
        n_items=100,
        show_progress=False,
    )
    return out, cfg, run_demo(cfg)


def test_every_stage_writes_its_outputs(demo):
    out, _, results = demo
    assert set(results["models"]) == {"baseline", "paper", "ours", "ours-lora"}
    for label in results["models"]:
        metrics = results["models"][label]["metrics"]
        for key in (
            "world-probes/negation_probe_accuracy",
            "scene-negrefcocog-controlled/accuracy",
            "scene-valse-existence-controlled/accuracy",
        ):
            assert 0.0 <= metrics[key]["value"] <= 1.0 and metrics[key]["n"] > 0 and "chance" in metrics[key]
            lo, hi = metrics[key]["ci95"]
            assert lo <= metrics[key]["value"] <= hi
    assert json.loads((out / "results.json").read_text())["best"] == results["best"] != "baseline"
    report = (out / "report.md").read_text()
    assert "negation probe (controlled pairs)" in report and "chance" in report
    assert (out / "results.png").stat().st_size > 1000


def test_ours_beats_the_baseline_on_controlled_negation_and_still_sees_the_object(demo):
    _, _, results = demo
    models = results["models"]
    value = lambda label, key: models[label]["metrics"][key]["value"]  # noqa: E731
    controlled = "scene-negrefcocog-controlled/accuracy"  # the twins differ only in the negated colour
    assert value("baseline", controlled) <= 0.35  # the biased baseline picks the object that HAS it
    assert value("ours", controlled) >= value("baseline", controlled) + 0.15
    # not by ignoring the object: the affirmative twin of the same crops stays right
    assert value("ours", "scene-negrefcocog-controlled/affirmative_accuracy") >= 0.8
    assert value("ours", "world-probes/negation_probe_accuracy") > value(
        "baseline", "world-probes/negation_probe_accuracy"
    )


def test_outputs_load_with_plain_libraries(demo):
    from datasets import load_dataset

    out, _, _ = demo
    model = CLIPModel.from_pretrained(out / "best")
    assert model.config.model_type == "clip"
    assert CLIPTextModel.from_pretrained(out / "best" / "text_encoder").config.eos_token_id == 49407
    card = (out / "best" / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert "model-index" in meta
    corpus = load_dataset(str(out / "datasets" / "negation_captions"), "combined")
    row = next(iter(corpus.values()))[0]
    assert row["image"].size[0] > 0 and row["negated_caption"]
    negref = load_dataset(str(out / "datasets" / "negrefcocog"), "scene")
    assert len(next(iter(negref.values()))) > 0
    assert not (out / "paper" / "adapter").exists()  # only LoRA runs keep an adapter folder
    assert (out / "ours-lora" / "adapter" / "adapter_config.json").is_file()


def test_rerun_reuses_every_stage(demo, capsys):
    out, cfg, first = demo
    mtime = (out / "ours" / "model.safetensors").stat().st_mtime_ns
    again = run_demo(cfg)
    assert (out / "ours" / "model.safetensors").stat().st_mtime_ns == mtime
    assert "cached" in capsys.readouterr().out
    assert again["best"] == first["best"]
