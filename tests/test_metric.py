import evaluate
import pytest

from hf_negationclip import metric_path


@pytest.fixture(scope="module")
def metric():
    return evaluate.load(str(metric_path()))


def test_metric_path_is_shipped_module():
    assert (metric_path() / "negation_accuracy.py").is_file()


def test_hand_computed_accuracy_ties_wrong_and_breakdowns(metric):
    out = metric.compute(
        predictions=[0, 1, -1, 1],
        references=[0, 0, 1, 1],
        num_choices=2,
        groups={"cue": ["not", "no", "not", "not"], "position": ["front", "end", "end", "middle"]},
        bootstrap=0,
    )
    assert out["accuracy"] == 0.5 and out["chance"] == 0.5 and out["n"] == 4 and out["ci95"] is None
    assert out["breakdown"]["cue"] == {"no": {"accuracy": 0.0, "n": 1}, "not": {"accuracy": 2 / 3, "n": 3}}
    assert out["breakdown"]["position"]["end"] == {"accuracy": 0.0, "n": 2}  # the tie (-1) counts as wrong
    mixed = metric.compute(predictions=[0, 3], references=[0, 2], num_choices=[2, 4], bootstrap=0)
    assert mixed["accuracy"] == 0.5 and mixed["chance"] == pytest.approx((1 / 2 + 1 / 4) / 2)


def test_bootstrap_interval_brackets_the_accuracy(metric):
    out = metric.compute(predictions=[0] * 30 + [1] * 10, references=[0] * 40, num_choices=2, bootstrap=500, seed=1)
    lo, hi = out["ci95"]
    assert lo < 0.75 < hi and 0.5 < lo and hi < 0.95


def test_clear_errors(metric):
    with pytest.raises(ValueError, match="empty"):
        metric.compute(predictions=[], references=[], num_choices=2)
    with pytest.raises(ValueError):
        metric.compute(predictions=[0, 1], references=[0], num_choices=2)
    with pytest.raises(ValueError, match="unknown template"):
        metric.compute(predictions=[0], references=[0], num_choices=2, groups={"template": ["negative"]})
    with pytest.raises(ValueError, match="has 1 labels for 2"):
        metric.compute(predictions=[0, 1], references=[0, 1], num_choices=2, groups={"cue": ["no"]})
    with pytest.raises(ValueError, match="index a candidate"):
        metric.compute(predictions=[2], references=[0], num_choices=2)
