"""The demo's choice of ``best/``: the highest worst negation family among the fine-tunes that keep affirmation."""

import pytest

from hf_negationclip.apps.demo import KEPT, NEGATION_FAMILIES, choose_best, lost_affirmation, worst_negation_family


def _results(**models: dict[str, float]) -> dict:
    """Results with every negation family at 0.9 and every kept row at 1.0, then the given values per model."""
    out = {"models": {}}
    for label, values in models.items():
        metrics = {key: {"value": 0.9} for key in NEGATION_FAMILIES}
        metrics.update({key: {"value": 1.0} for key, _ in KEPT})
        metrics.update({key: {"value": v} for key, v in values.items()})
        out["models"][label] = {"metrics": metrics}
    return out


FLIP = "world-probes/caption_flip_accuracy"
PROBE = "world-probes/negation_probe_accuracy"
MCQ_AFF = "scene-negbench-mcq-controlled/affirmation_accuracy"
R1 = "world-probes/image_to_text_r@1"


def test_the_worst_family_decides_not_the_mean():
    # "high" is better on average but fails one family; "even" has no weak family
    results = _results(baseline={FLIP: 0.4}, high={PROBE: 1.0, FLIP: 0.2}, even={FLIP: 0.85})
    assert worst_negation_family(results)["high"] == (FLIP, 0.2)
    best, why = choose_best(results)
    assert best == "even"
    assert "0.850" in why and "high 0.200" in why and "kept affirmation" in why


def test_a_fine_tune_that_loses_affirmation_is_not_chosen():
    results = _results(baseline={}, lossy={FLIP: 0.95, MCQ_AFF: 0.90}, kept={FLIP: 0.85})
    assert lost_affirmation(results, "lossy") == [f"{MCQ_AFF} 0.900 < 95% of 1.000"]
    assert lost_affirmation(results, "kept") == []
    best, why = choose_best(results)
    assert best == "kept" and "not eligible" in why and "lossy" in why


def test_when_every_fine_tune_loses_affirmation_the_report_says_so():
    results = _results(baseline={}, a={R1: 0.5, FLIP: 0.7}, b={MCQ_AFF: 0.5, FLIP: 0.8})
    best, why = choose_best(results)
    assert best == "b" and "every fine-tune lost affirmation" in why


def test_ties_on_the_worst_family_go_to_the_higher_mean_and_no_fine_tune_is_an_error():
    results = _results(baseline={}, a={FLIP: 0.8}, b={FLIP: 0.8, PROBE: 1.0})
    assert choose_best(results)[0] == "b"
    with pytest.raises(ValueError, match="no fine-tuned model"):
        choose_best(_results(baseline={}))
