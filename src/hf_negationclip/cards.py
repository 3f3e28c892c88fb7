"""Card templates (model and dataset cards), rendered with Jinja.

The templates live in the repository's top-level ``model_cards/`` folder; the
package reaches them through the ``hf_negationclip/model_cards`` link, so they
ship inside the wheel as package data and an installed user renders the same
cards as a checkout. This module imports nothing else from the package, so any
stage (corpus, benchmarks, training, hub) may use it.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path


def template_dir() -> Path:
    """The folder holding the ``*.md.j2`` card templates."""
    return Path(str(resources.files("hf_negationclip") / "model_cards"))


def render_template(name: str, **context) -> str:
    """Render ``model_cards/<name>`` with ``context``; a missing variable is an error, not a blank."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(template_dir())), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    try:
        template = env.get_template(name)
    except jinja2.TemplateNotFound as err:
        known = sorted(p.name for p in template_dir().glob("*.j2"))
        raise FileNotFoundError(f"no card template {name!r} in {template_dir()}; known: {known}") from err
    return template.render(**context)
