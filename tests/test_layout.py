"""The package's data flow, read from every module's imports (ast, no import executed).

world / real files -> corpus, benchmarks -> training -> evaluation -> apps; modeling, io and launch sit beside the
stages. A module never imports from further down that chain, and the library never imports ``apps``.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "hf_negationclip"

# What each part of the package must never import (first component below hf_negationclip).
FORBIDDEN = {
    "world": {"corpus", "benchmarks", "training", "evaluation", "modeling", "apps", "launch"},  # nothing but io
    "io": {"world", "corpus", "benchmarks", "training", "evaluation", "modeling", "apps", "launch"},
    "launch": {"world", "corpus", "benchmarks", "training", "evaluation", "modeling", "apps", "io"},
    "modeling": {"world", "corpus", "benchmarks", "training", "evaluation", "apps"},
    "corpus": {"training", "evaluation", "apps"},
    "benchmarks": {"training", "evaluation", "apps"},
    "training": {"evaluation", "apps"},
    "evaluation": {"apps"},
    "text": {"world", "corpus", "benchmarks", "training", "evaluation", "modeling", "apps", "launch", "io"},
    "downstream": {"apps"},
}


def _module_name(path: Path) -> list[str]:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _imports(path: Path) -> set[str]:
    """The parts of our package that ``path`` imports anywhere (top level or inside functions)."""
    parts = _module_name(path)
    package = parts if path.name == "__init__.py" else parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)]
            if node.module:
                found.add(".".join([*base, node.module]))
            else:  # from . import a, b
                found.update(".".join([*base, alias.name]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "hf_negationclip":
            found.add(node.module.partition(".")[2])
        elif isinstance(node, ast.Import):
            found.update(a.name.partition(".")[2] for a in node.names if a.name.split(".")[0] == "hf_negationclip")
    return {name.split(".")[0] for name in found if name}


def _violations() -> set[tuple[str, str]]:
    out = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = _module_name(path)
        if not parts:
            continue  # the package's __init__ re-exports the library
        for target in _imports(path) & FORBIDDEN.get(parts[0], set()):
            out.add((".".join(parts), target))
    return out


def test_the_parser_sees_relative_absolute_and_function_level_imports(tmp_path, monkeypatch):
    fake = tmp_path / "hf_negationclip"
    (fake / "world").mkdir(parents=True)
    (fake / "world" / "render.py").write_text(
        "from ..io import read_json\nfrom . import language\n"
        "def f():\n    import hf_negationclip.training.loop\n    from hf_negationclip.apps import cards\n"
    )
    monkeypatch.setitem(globals(), "PACKAGE", fake)
    assert _imports(fake / "world" / "render.py") == {"io", "world", "training", "apps"}
    assert _violations() == {("world.render", "training"), ("world.render", "apps")}


def test_every_part_of_the_package_has_a_rule():
    parts = {_module_name(p)[0] for p in PACKAGE.rglob("*.py") if _module_name(p)}
    assert parts - {"apps"} <= set(FORBIDDEN)  # a new subpackage gets a place in the flow here


def test_no_module_imports_from_further_down_the_flow():
    unexpected = _violations()
    assert not unexpected, "imports against the flow: " + ", ".join(f"{m} -> {t}" for m, t in sorted(unexpected))
