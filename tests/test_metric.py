import math

import evaluate
import pytest

from hf_negationclip import metric_path
from hf_negationclip.evaluation import wilson_interval


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
        ci=False,
    )
    assert out["accuracy"] == 0.5 and out["chance"] == 0.5 and out["n"] == 4 and out["ci95"] is None
    assert out["breakdown"]["cue"] == {"no": {"accuracy": 0.0, "n": 1}, "not": {"accuracy": 2 / 3, "n": 3}}
    assert out["breakdown"]["position"]["end"] == {"accuracy": 0.0, "n": 2}  # the tie (-1) counts as wrong
    mixed = metric.compute(predictions=[0, 3], references=[0, 2], num_choices=[2, 4], ci=False)
    assert mixed["accuracy"] == 0.5 and mixed["chance"] == pytest.approx((1 / 2 + 1 / 4) / 2)


def _wilson_by_hand(k, n, z=1.959963984540054):
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [centre - half, centre + half]


def test_interval_is_wilson_the_same_as_the_package_and_does_not_collapse(metric):
    out = metric.compute(predictions=[0] * 30 + [1] * 10, references=[0] * 40, num_choices=2)
    assert out["ci95"] == pytest.approx(_wilson_by_hand(30, 40), abs=1e-9)
    assert out["ci95"] == pytest.approx(wilson_interval(30, 40), abs=1e-12)
    perfect = metric.compute(predictions=[1] * 100, references=[1] * 100, num_choices=2)["ci95"]
    assert perfect[1] == pytest.approx(1.0) and perfect[0] == pytest.approx(_wilson_by_hand(100, 100)[0])
    assert perfect[0] < 0.97  # a percentile bootstrap gives [1.00, 1.00] here
    assert wilson_interval(0, 0) == [0.0, 1.0]
    with pytest.raises(ValueError, match="0 <= k <= n"):
        wilson_interval(5, 3)


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
