"""The one markdown table writer: ``results.json``-style results -> "| metric | chance | n | model... |"."""

from __future__ import annotations

from collections.abc import Sequence


def _cell(entry: dict | None) -> str:
    if not entry:
        return ""
    ci = entry.get("ci95")
    return f"{entry['value']:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def markdown_table(results: dict, rows: Sequence[tuple[str, str]] | None = None) -> str:
    """One row per metric, one column per model ("value [lo, hi]"), chance and n of the first model that has it.

    ``rows``: ``(results key, label)`` pairs to show, in that order (a key no
    model has is left out); default: every metric of every model, keys as labels.
    """
    models = results["models"]
    labels = list(models)
    if rows is None:
        rows = [(m, m) for m in dict.fromkeys(m for lab in labels for m in models[lab]["metrics"])]
    lines = ["| metric | chance | n | " + " | ".join(labels) + " |", "|---|---|---|" + "---|" * len(labels)]
    for key, name in rows:
        entries = [models[lab]["metrics"].get(key) for lab in labels]
        first = next((e for e in entries if e), None)
        if first is None:
            continue
        chance = "" if first.get("chance") is None else f"{first['chance']:.3f}"
        lines.append(f"| {name} | {chance} | {first['n']} | " + " | ".join(_cell(e) for e in entries) + " |")
    return "\n".join(lines) + "\n"
