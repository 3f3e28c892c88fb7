"""The main job end to end on a small world: ours learns negation, every output loads, a rerun reuses the stages."""

import json

import pytest
import yaml
from scipy.stats import binomtest
from transformers import CLIPModel, CLIPTextModel

from hf_negationclip.apps.demo import DemoConfig, run_demo

pytestmark = pytest.mark.slow  # the whole demo on a 1,000-image world: the longest test by far


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    # the small preset: big enough that the baseline sees colours and the fine-tunes pass the exclusion plateau
    # (measured with these settings: ours 0.84 on controlled NegRefCOCOg, the baseline 0.04)
    cfg = DemoConfig(
        out=str(out),
        images=1000,
        epochs=20,
        batch_size=64,
        finetune_epochs=3,  # ours trains twice the epochs (its recipe's epochs_scale): 6
        finetune_batch_size=32,
        n_items=100,
        segment_steps=300,
        show_progress=False,
    )
    return out, cfg, run_demo(cfg)


def test_every_stage_writes_its_outputs(demo, check_png):
    out, cfg, results = demo
    assert set(results["models"]) == {"baseline", "paper", "ours", "ours-lora"}
    for label in results["models"]:
        metrics = results["models"][label]["metrics"]
        assert metrics["world-probes/negation_probe_accuracy"]["n"] == cfg.n_items
        for key in (
            "world-probes/negation_probe_accuracy",
            "scene-negrefcocog-controlled/accuracy",
            "scene-valse-existence-controlled/accuracy",
        ):
            value, n, (lo, hi) = metrics[key]["value"], metrics[key]["n"], metrics[key]["ci95"]
            assert 0 < n <= cfg.n_items and metrics[key]["chance"] == 0.5
            correct = round(value * n)
            assert value == pytest.approx(correct / n, abs=1e-9), (label, key, value, n)  # a share of n items
            wilson = binomtest(correct, n).proportion_ci(method="wilson")
            if key.startswith("world-probes/"):  # the demo's own interval
                assert (lo, hi) == pytest.approx((wilson.low, wilson.high), abs=1e-3), (label, key)
            elif 0 < correct < n:  # the harness's interval: a real width, near Wilson's
                assert lo < value < hi and abs(lo - wilson.low) < 0.06 and abs(hi - wilson.high) < 0.06, (label, key)
            else:
                assert lo <= value <= hi, (label, key)
    assert json.loads((out / "results.json").read_text())["best"] == results["best"] != "baseline"
    report = (out / "report.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| negation probe (controlled pairs) |"))
    expected = [
        results["models"][label]["metrics"]["world-probes/negation_probe_accuracy"] for label in results["models"]
    ]
    assert row.split(" | ")[1:3] == ["0.500", str(cfg.n_items)]
    assert [cell.split(" [")[0] for cell in row.strip(" |").split(" | ")[3:]] == [f"{e['value']:.3f}" for e in expected]
    # one bar colour per model (matplotlib's default cycle): every metric at 120 dpi and 4.5 inches high; the
    # headline rows as horizontal bars, 9 inches wide, a group of bars per row
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]
    check_png(out / "eval" / "results.png", height=540, min_width=720, colours=colours)
    assert check_png(out / "results.png", width=1080, colours=colours).height > 540
    assert "](results.png)" in report


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


def test_the_downstream_stage_scores_every_text_tower_in_one_decoder(demo):
    out, _, results = demo
    seg = results["downstream"]["segmentation"]
    assert set(seg["encoders"]) == set(results["models"]) and seg["encoders"]["baseline"]["trained_with"]
    for label, entry in seg["encoders"].items():
        for kind in ("affirmative", "negated"):
            assert entry[kind]["n"] > 0 and entry[kind]["pointing"]["n"] > 0, (label, kind)
            assert entry[kind]["pointing"]["chance"] == pytest.approx(0.5, abs=0.1)
        if label != "baseline":
            assert "negated_delta" in entry
    # the decoder reads its text: with the tower it was trained with it points at the named object, not its rival
    point = lambda label, kind: seg["encoders"][label][kind]["pointing"]["value"]  # noqa: E731
    assert point("baseline", "affirmative") >= 0.65  # measured 0.76 (chance 0.5)
    # and ours' tower, swapped in, turns the baseline's pick of the excluded object around (measured 0.23 -> 0.60)
    assert point("baseline", "negated") <= 0.4 and point("ours", "negated") >= point("baseline", "negated") + 0.2
    assert 0 < seg["text_blind"]["affirmative"]["miou"] < 1
    report = (out / "report.md").read_text()
    section = report.split("## Downstream: CLIPSeg referring segmentation")[1].split("## Every metric")[0]
    assert all(f"| {label}" in section for label in results["models"]) and "text-blind reference" in section
    assert (out / "segment" / "segmenter" / "model.safetensors").is_file()


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
