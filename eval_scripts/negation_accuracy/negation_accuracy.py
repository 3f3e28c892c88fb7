"""negation_accuracy: accuracy of multiple-choice negation benchmarks, with chance, a Wilson interval and breakdowns.

Predictions are the index of the chosen candidate, or -1 for a tie (a tie is
always wrong). Optional group columns (``cue``, ``position``, ``template`` or
any other name passed in ``groups``) give one accuracy per group value. The
95% interval is the Wilson score interval (scipy), the package's one interval
method (``hf_negationclip.evaluation.stats.wilson_interval``): it does not
collapse to [1, 1] when every item is right and needs no resampling.
"""

import datasets
import evaluate
import numpy as np
from scipy.stats import binomtest

_DESCRIPTION = """Accuracy for negation benchmarks (NegRefCOCOg, VALSE existence, NegBench MCQ, CC-Neg):
the chance level, a 95% Wilson score interval and per-group accuracies (cue, position, template)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): chosen candidate per item, -1 for a tie (counted wrong).
    references (list of int): index of the right candidate per item.
    num_choices (int or list of int, optional): candidates per item; gives the chance level and checks the indices.
    chance (float, optional): the chance level, when it is not 1 / num_choices (e.g. recall at k).
    groups (dict of str -> list of str, optional): group label per item, e.g. {"cue": [...], "position": [...]}.
    ci (bool, optional): compute the 95% Wilson interval (default True; False gives ci95 None).
Returns:
    accuracy, chance, n, ci95 [lo, hi], breakdown {group: {value: {accuracy, n}}}.
Examples:
    >>> metric = evaluate.load("eval_scripts/negation_accuracy")
    >>> metric.compute(predictions=[0, 1, -1], references=[0, 0, 1], num_choices=2, ci=False)["accuracy"]
    0.3333333333333333
"""

_CITATION = ""

#: labels the package's group columns may take; any other value is almost always a bug upstream
KNOWN_LABELS = {
    "position": {"front", "middle", "end", "none"},
    "template": {"affirmation", "negation", "hybrid"},
}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class NegationAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, num_choices=None, chance=None, groups=None, ci=True):
        pred = np.asarray(predictions, dtype=np.int64)
        ref = np.asarray(references, dtype=np.int64)
        if pred.shape != ref.shape:
            raise ValueError(f"predictions and references differ in length ({len(pred)} vs {len(ref)})")
        if len(ref) == 0:
            raise ValueError("no predictions to score: the input is empty")
        chance = _chance(num_choices, chance, len(ref))
        if num_choices is not None:
            k = np.broadcast_to(np.asarray(num_choices, dtype=np.int64), ref.shape)
            if (ref < 0).any() or (ref >= k).any():
                raise ValueError("references must index a candidate (0 <= reference < num_choices)")
            if (pred < -1).any() or (pred >= k).any():
                raise ValueError("predictions must index a candidate or be -1 (a tie)")
        correct = (pred == ref) & (pred >= 0)
        return {
            "accuracy": float(correct.mean()),
            "chance": chance,
            "n": int(len(ref)),
            "ci95": _wilson(int(correct.sum()), len(correct)) if ci else None,
            "breakdown": _breakdown(correct, groups or {}),
        }


def _chance(num_choices, chance, n):
    if chance is not None:
        if not 0 <= float(chance) <= 1:
            raise ValueError(f"chance must lie in [0, 1], got {chance}")
        return float(chance)
    if num_choices is None:
        return None
    k = np.broadcast_to(np.asarray(num_choices, dtype=np.float64), (n,))
    if (k < 1).any():
        raise ValueError("num_choices must be >= 1")
    return float(np.mean(1.0 / k))


def _wilson(k, n, confidence=0.95):
    """Wilson score interval; the same call as hf_negationclip.evaluation.stats.wilson_interval (a test checks)."""
    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return [float(ci.low), float(ci.high)]


def _breakdown(correct, groups):
    out = {}
    for name, labels in groups.items():
        labels = ["none" if v is None else str(v) for v in labels]
        if len(labels) != len(correct):
            raise ValueError(f"group {name!r} has {len(labels)} labels for {len(correct)} predictions")
        unknown = sorted(set(labels) - KNOWN_LABELS.get(name, set(labels)))
        if unknown:
            raise ValueError(f"unknown {name} label(s) {unknown}; expected {sorted(KNOWN_LABELS[name])}")
        arr = np.asarray(labels)
        out[name] = {
            v: {"accuracy": float(correct[arr == v].mean()), "n": int((arr == v).sum())} for v in sorted(set(labels))
        }
    return out
