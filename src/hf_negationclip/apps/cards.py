"""Card templates (model and dataset cards), rendered with Jinja, filled from a run's real files.

The templates live in the repository's top-level ``model_cards/`` folder; the
package reaches them through the ``hf_negationclip/model_cards`` link, so they
ship inside the wheel as package data and an installed user renders the same
cards as a checkout. It is an application module: the library (corpus,
benchmarks, training, ...) never imports it; ``cli``, ``demo`` and ``hub``
call it after the library has written the files a card describes:

- :func:`write_model_card` writes ``RUN_DIR/README.md`` from the run's
  ``training_config.json`` and ``results.json`` (``model-index`` included); the
  trainer calls it on every save, and it is idempotent (same files, same bytes).
- :func:`write_dataset_card` writes ``FOLDER/README.md`` for a parquet folder
  laid out as ``<config>/<split>-*.parquet`` (or given ``configs``), with
  ``configs:``, features and row counts filled in, from any template in
  ``model_cards/``; :func:`write_corpus_card` and :func:`write_negrefcocog_card`
  use it for the package's two dataset exports (the library writes the parquet
  files, the applications write the cards).

:data:`PAPER_CITATION` is the one citation of the paper; every card cites it.
"""

from __future__ import annotations

import json
import logging
import re
from importlib import resources
from pathlib import Path

logger = logging.getLogger(__name__)

MODEL_CARD_TEMPLATE = "negationclip_model_card.md.j2"
#: the paper whose method the package implements (cited in every card)
PAPER_CITATION = """@inproceedings{park2025negationclip,
  title     = {Know "No" Better: A Data-Driven Approach for Enhancing Negation Awareness in CLIP},
  author    = {Park, Junsung and Lee, Jungbeom and Song, Jongyoon and Yu, Sangwon and Jung, Dahuin and Yoon, Sungroh},
  booktitle = {Proceedings of the IEEE/CVF International Conference on Computer Vision (ICCV)},
  year      = {2025},
  eprint    = {2501.10913},
  archivePrefix = {arXiv}
}"""
PAPER_URL = "https://arxiv.org/abs/2501.10913"
# keys under which a training config may name its starting checkpoint, most specific first
_BASE_KEYS = ("base_model", "model_name_or_path", "base", "init_from", "model", "preset")
HUB_ID_PATTERN = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def template_dir() -> Path:
    """The folder holding the ``*.md.j2`` card templates."""
    return Path(str(resources.files("hf_negationclip") / "model_cards"))


def render_template(name: str, **context) -> str:
    """Render ``model_cards/<name>`` with ``context``; a missing variable is an error, not a blank."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    try:
        template = env.get_template(name)
    except jinja2.TemplateNotFound as err:
        known = sorted(p.name for p in template_dir().glob("*.j2"))
        raise FileNotFoundError(f"no card template {name!r} in {template_dir()}; known: {known}") from err
    return template.render(**context)


def is_hub_id(name: str | None) -> bool:
    """``org/name`` that is not an existing local path (a local folder is never published as a base)."""
    return bool(name) and bool(HUB_ID_PATTERN.fullmatch(str(name))) and not Path(str(name)).exists()


def _read_json(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err


# ---------------------------------------------------------------------------- base model
def resolve_base_model(training_config: dict, override: str | None = None, _depth: int = 0) -> dict:
    """Where a run started: ``{"hub_id": str | None, "description": str}``.

    A preset name maps to its Hub checkpoint (``tiny`` to none: trained from
    scratch); a local checkpoint folder is followed through its own
    ``training_config.json`` to describe it, but never becomes ``hub_id``.
    ``override`` (``--base_model ORG/NAME``) must be a Hub id.
    """
    if override:
        if not is_hub_id(override):
            raise ValueError(f"base model {override!r} must be a Hub id like ORG/NAME, not a local path")
        return {"hub_id": override, "description": f"[`{override}`](https://huggingface.co/{override})"}
    name = next((str(training_config[k]) for k in _BASE_KEYS if training_config.get(k)), None)
    if name is None:
        return {"hub_id": None, "description": "an unnamed starting point"}
    from ..modeling import PRESETS

    preset = PRESETS.get(name) or next((p for p in PRESETS.values() if p.checkpoint == name), None)
    if preset is not None and preset.checkpoint is None:
        return {"hub_id": None, "description": f"random initialisation (the `{preset.name}` preset)"}
    if preset is not None:
        name = preset.checkpoint
    if is_hub_id(name):
        return {"hub_id": name, "description": f"[`{name}`](https://huggingface.co/{name})"}
    parent = _read_json(Path(name) / "training_config.json") if Path(name).is_dir() and _depth < 3 else None
    if parent is not None:
        inner = resolve_base_model(parent, None, _depth + 1)
        return {
            "hub_id": None,
            "description": f"a local checkpoint (`{Path(name).name}`) itself trained from {inner['description']}",
        }
    return {"hub_id": None, "description": f"a local checkpoint (`{Path(name).name}`)"}


def _scene_world_dir(training_config: dict) -> Path | None:
    """The scene world a run trained on, found by its ``world.json`` near any path in the config."""
    for key, value in training_config.items():
        if not isinstance(value, str) or not key.endswith(("_dir", "_file", "_path")) or key == "output_dir":
            continue
        for folder in [Path(value), *list(Path(value).parents)[:3]]:
            for candidate in (folder, folder / "world"):  # a corpus folder usually sits beside its world
                if (candidate / "world.json").is_file():
                    return candidate
    return None


# ------------------------------------------------------------------------------ results
def load_run_results(run_dir: str | Path, model_label: str | None = None) -> dict | None:
    """This run's entry of ``results.json`` (run folder, else its parent), or ``metrics.json`` converted.

    Returns ``{"label", "metrics": {"<task>/<metric>": {...}}, "others": {label: metrics}, "source": path}``
    or ``None`` when the run has no evaluation yet.
    """
    run_dir = Path(run_dir)
    for path in (run_dir / "results.json", run_dir.parent / "results.json"):
        results = _read_json(path)
        if results is not None:
            return {**_pick_model(results, run_dir, model_label, path), "source": str(path)}
    metrics = _read_json(run_dir / "metrics.json")
    if metrics is None:
        return None
    # the pretrain evaluator's flat file: {name: {"value", "chance", "n"}} plus bookkeeping numbers
    converted = {
        (k if "/" in k else f"world/{k}"): v for k, v in metrics.items() if isinstance(v, dict) and "value" in v
    }
    return {"label": run_dir.name, "metrics": converted, "others": {}, "source": str(run_dir / "metrics.json")}


def _pick_model(results: dict, run_dir: Path, label: str | None, path: Path) -> dict:
    models = results.get("models")
    if not isinstance(models, dict) or not models:
        raise ValueError(f"{path} has no 'models' mapping (see the results.json schema)")
    if label is None:
        by_path = [k for k, v in models.items() if v.get("path") and _same_path(v["path"], run_dir, path.parent)]
        by_name = [k for k in models if k == run_dir.name]
        # the demo's best/ is a copy of the fine-tune that results.json names under "best"
        by_best = [results["best"]] if results.get("best") in models and _is_best_copy(run_dir, path.parent) else []
        candidates = by_path or by_name or by_best or (list(models) if len(models) == 1 else [])
        if len(candidates) != 1:
            raise ValueError(
                f"cannot tell which model of {path} is {run_dir}: pass model_label (one of {sorted(models)})"
            )
        label = candidates[0]
    if label not in models:
        raise KeyError(f"model {label!r} is not in {path}; known: {sorted(models)}")
    return {
        "label": label,
        "metrics": models[label].get("metrics", {}),
        "others": {k: v.get("metrics", {}) for k, v in models.items() if k != label},
    }


def _is_best_copy(run_dir: Path, base: Path) -> bool:
    """``run_dir`` is the ``best/`` folder beside ``results.json`` (``hf-negationclip demo`` writes both)."""
    try:
        return run_dir.resolve() == (base / "best").resolve()
    except OSError:
        return False


def _same_path(recorded: str, run_dir: Path, base: Path) -> bool:
    """A recorded model path names ``run_dir`` (absolute, or relative to results.json's folder or to here)."""
    candidates = [Path(recorded)] if Path(recorded).is_absolute() else [base / recorded, Path(recorded)]
    try:
        return any(c.resolve() == run_dir.resolve() for c in candidates)
    except OSError:
        return False


def result_rows(results: dict | None) -> list[dict]:
    """One row per ``<task>/<metric>``: value, chance, n, ci95 and the other models' values."""
    if not results:
        return []
    rows = []
    for key, entry in sorted(results["metrics"].items()):
        if not isinstance(entry, dict) or "value" not in entry:
            continue
        task, _, metric = key.rpartition("/")
        rows.append(
            {
                "key": key,
                "task": task or "eval",
                "metric": metric,
                "value": float(entry["value"]),
                "chance": entry.get("chance"),
                "n": entry.get("n"),
                "ci95": entry.get("ci95"),
                "others": {
                    label: m[key]["value"]
                    for label, m in sorted(results["others"].items())
                    if isinstance(m.get(key), dict) and "value" in m[key]
                },
            }
        )
    return rows


# ---------------------------------------------------------------------------- model card
def model_card_context(
    run_dir: str | Path,
    *,
    repo_id: str | None = None,
    base_model: str | None = None,
    model_label: str | None = None,
    dataset_ids: dict[str, str] | None = None,
    adapter: bool = False,
    negation_finetuned: bool | None = None,
) -> dict:
    """Everything the model card template needs, read from the run folder's real files.

    ``negation_finetuned`` (default: read from the config, see
    :func:`is_negation_finetune`) tells a NegationCLIP fine-tune from a
    baseline trained on affirmative captions only.
    """
    from huggingface_hub import EvalResult, ModelCardData

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists() and not (run_dir / "adapter" / "adapter_config.json").exists():
        raise FileNotFoundError(f"{run_dir} holds no checkpoint (config.json): is it a run folder?")
    config = _read_json(run_dir / "training_config.json") or {}
    base = resolve_base_model(config, base_model)
    results = load_run_results(run_dir, model_label)
    rows = result_rows(results)
    dataset_ids = dict(dataset_ids or {})
    # the repo's name on the Hub; else the run's label in results.json (the demo's best/ is "ours", not "best")
    model_name = repo_id.split("/")[-1] if repo_id else (results["label"] if results else run_dir.resolve().name)
    eval_results = [
        EvalResult(
            task_type="zero-shot-image-classification",
            task_name=r["task"],
            dataset_type=dataset_ids.get(r["task"], r["task"]),
            dataset_name=r["task"],
            metric_type=r["metric"],
            metric_name=r["metric"],
            metric_value=r["value"],
        )
        for r in rows
    ]
    card_data = ModelCardData(
        model_name=model_name,
        license="mit",
        library_name="peft" if adapter else "transformers",
        pipeline_tag="zero-shot-image-classification",
        base_model=base["hub_id"],
        datasets=sorted({v for v in dataset_ids.values() if is_hub_id(v)}) or None,
        tags=["clip", "negation", "negationclip", "hf-negationclip", *(["lora"] if adapter else [])],
        eval_results=eval_results or None,
    )
    world = _scene_world_dir(config)
    public = public_training_config(config, base)
    return {
        "card_data": card_data.to_yaml(),
        "model_name": model_name,
        "repo_id": repo_id or f"path/to/{run_dir.name}",
        "on_hub": repo_id is not None,
        "base": base,
        "adapter": adapter,
        "has_text_encoder": (run_dir / "text_encoder" / "config.json").exists(),
        "negation_finetuned": is_negation_finetune(config) if negation_finetuned is None else negation_finetuned,
        "vision_frozen": (
            any(config.get(k) for k in ("lock_image_tower", "freeze_vision", "lock_image"))
            or config.get("train") in ("text", "lora-text")
        ),
        "vision_head_only": config.get("train") == "text+vision-head",
        "vision_top_only": config.get("train") == "text+vision-top",
        "vision_top_lora": config.get("train") == "lora-text+vision-top",
        "lora": adapter or str(config.get("train", "")).startswith("lora") or (run_dir / "adapter").is_dir(),
        "recipe": {k: v for k, v in public.items() if not isinstance(v, (dict, list))},
        "recipe_nested": {k: v for k, v in public.items() if isinstance(v, (dict, list))},
        "data_paths": {
            k: v
            for k, v in public.items()
            if isinstance(v, str) and k.endswith(("_dir", "_file")) and k != "output_dir"
        },
        "scene_world": world is not None or config.get("preset") == "tiny",
        "world": _read_json(world / "world.json") if world else None,
        "rows": rows,
        "results_label": results["label"] if results else None,
        "other_labels": sorted({label for r in rows for label in r["others"]}),
        "results_source": Path(results["source"]).name if results else None,
        "plots": sorted(p.name for p in run_dir.glob("*.png")),
        "dataset_ids": sorted({v for v in dataset_ids.values() if is_hub_id(v)}),
        "citation": PAPER_CITATION,
        "paper_url": PAPER_URL,
    }


def is_negation_finetune(training_config: dict) -> bool:
    """Whether a run trained on negated captions (the corpus file, its field or a corpus folder in its config)."""
    # the fine-tuning config always carries corpus_dir / corpus_file (maybe null); pre-training has neither
    if "corpus_dir" in training_config or "corpus_file" in training_config:
        return True
    if training_config.get("caption_field") == "updated_caption":
        return True
    return any(isinstance(v, str) and "negated_captions" in v for v in training_config.values())


def public_training_config(training_config: dict, base: dict) -> dict:
    """``training_config.json`` fit for the Hub: the base as its Hub id, local paths cut to their last two parts."""
    return {k: _public_value(k, v, base) for k, v in sorted(training_config.items())}


def _public_value(key: str, value, base: dict):
    """A config value fit for a public card: the base as its Hub id, local folders by their last two parts."""
    if key in _BASE_KEYS and base["hub_id"] and not is_hub_id(str(value)) and value not in ("tiny",):
        return base["hub_id"]
    if isinstance(value, str) and Path(value).is_absolute():
        return ".../" + "/".join(Path(value).parts[-2:])
    return value


def render_model_card(run_dir: str | Path, **kwargs) -> str:
    """The NegationCLIP model card (``README.md`` text) for a run folder; see :func:`model_card_context`."""
    return render_template(MODEL_CARD_TEMPLATE, **model_card_context(run_dir, **kwargs))


def write_model_card(run_dir: str | Path, out_dir: str | Path | None = None, **kwargs) -> Path:
    """Write ``README.md`` (into ``out_dir``, default the run folder); same run files give the same bytes."""
    text = render_model_card(run_dir, **kwargs)
    target = Path(out_dir or run_dir) / "README.md"
    _write_atomic(target, text)
    return target


def _write_atomic(target: Path, text: str) -> None:
    """Write via a temporary file and a rename, so a crash never leaves half a card."""
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text)
    tmp.replace(target)


# --------------------------------------------------------------------------- dataset card
def parquet_layout(folder: str | Path) -> dict[str, dict[str, list[str]]]:
    """``{config: {split: [relative parquet paths]}}`` for a folder laid out as ``<config>/<split>-*.parquet``."""
    folder = Path(folder)
    layout: dict[str, dict[str, list[str]]] = {}
    for path in sorted(folder.glob("*/*.parquet")):
        split = path.name.split("-")[0]
        layout.setdefault(path.parent.name, {}).setdefault(split, []).append(path.relative_to(folder).as_posix())
    if not layout:
        raise FileNotFoundError(f"no <config>/<split>-*.parquet files in {folder}")
    return layout


def config_files(folder: str | Path, config: dict) -> dict[str, list[Path]]:
    """``{split: [parquet files]}`` that one ``configs:`` entry names (a ``path`` may be a glob or a list of globs)."""
    files = {}
    for entry in config["data_files"]:
        patterns = [entry["path"]] if isinstance(entry["path"], str) else list(entry["path"])
        files[entry["split"]] = sorted({p for pattern in patterns for p in Path(folder).glob(pattern)})
    return files


def dataset_card_context(folder: str | Path, configs: list[dict] | None = None) -> dict:
    """``configs`` (the YAML list), ``stats`` (rows and files per config/split) and ``features`` per config.

    ``configs`` defaults to one config per ``<config>/`` folder (:func:`parquet_layout`); pass your own
    (``[{"config_name", "data_files": [{"split", "path"}]}]``) for other layouts or configs that share files.
    """
    import pyarrow.parquet as pq
    from datasets import Features

    folder = Path(folder)
    if configs is None:
        configs = [
            {"config_name": c, "data_files": [{"split": s, "path": f"{c}/{s}-*"} for s in sorted(splits)]}
            for c, splits in parquet_layout(folder).items()
        ]
    configs = [dict(c) for c in configs]
    stats, features = {}, {}
    for config in configs:
        name, files = config["config_name"], config_files(folder, config)
        empty = [split for split, paths in files.items() if not paths]
        if empty:
            raise ValueError(f"dataset config {name!r} names no file for split(s) {empty} in {folder}")
        stats[name] = {
            split: {"rows": sum(pq.ParquetFile(p).metadata.num_rows for p in paths), "files": len(paths)}
            for split, paths in files.items()
        }
        schema = pq.read_schema(next(iter(files.values()))[0])
        try:
            feats = Features.from_arrow_schema(schema)
            features[name] = {column: _feature_name(f) for column, f in feats.items()}
        except (ValueError, TypeError, KeyError):
            features[name] = {f.name: str(f.type) for f in schema}
    if configs and not any(c.get("default") for c in configs):
        configs[0]["default"] = True
    return {"configs": configs, "stats": stats, "features": features}


def value_counts(folder: str | Path, config: dict, column: str) -> dict[str, int]:
    """How often each value of ``column`` occurs in one config's files (all splits), most common first."""
    from collections import Counter

    import pyarrow.parquet as pq

    counts: Counter = Counter()
    for paths in config_files(folder, config).values():
        for path in paths:
            counts.update(pq.read_table(path, columns=[column]).column(column).to_pylist())
    return dict(counts.most_common())


def _feature_name(feature) -> str:
    kind = type(feature).__name__
    dtype = getattr(feature, "dtype", None)
    return f"{kind}({dtype})" if kind == "Value" else kind


def write_dataset_card(
    folder: str | Path,
    template: str,
    context: dict | None = None,
    configs: list[dict] | None = None,
    **card_data,
) -> Path:
    """Render ``model_cards/<template>`` into ``FOLDER/README.md`` with valid YAML ``configs:``: THE dataset-card writer.

    The template gets ``card_data`` (the YAML front matter to put between
    ``---`` lines: ``configs``, plus ``card_data`` keyword arguments such as
    ``license``, ``pretty_name``, ``task_categories``), ``configs``, ``stats``
    (``{config: {split: {"rows", "files"}}}``), ``features``
    (``{config: {column: type}}``), ``citation`` / ``paper_url`` (the paper)
    and the caller's ``context``. ``configs`` defaults to one per
    ``<config>/`` folder (see :func:`dataset_card_context`). The written card
    is parsed back and every ``configs`` path checked against the folder.
    """
    from huggingface_hub import DatasetCard, DatasetCardData

    folder = Path(folder)
    auto = dataset_card_context(folder, configs)
    data = DatasetCardData(configs=auto["configs"], **card_data)
    paper = {"citation": PAPER_CITATION, "paper_url": PAPER_URL}
    text = render_template(template, **{**paper, **auto, **(context or {}), "card_data": data.to_yaml()})
    card = DatasetCard(text)  # raises on broken front matter
    for config in card.data.to_dict().get("configs") or []:
        for split, paths in config_files(folder, config).items():
            if not paths:
                raise ValueError(
                    f"dataset card config {config['config_name']!r} names no file for split {split!r} in {folder}"
                )
    target = folder / "README.md"
    _write_atomic(target, text)
    return target


# ------------------------------------------------------------------ the package's own dataset cards
def write_corpus_card(folder: str | Path, license: str = "cc0-1.0") -> Path:
    """The card of a negated-caption parquet folder (``hf-negationclip export-corpus``; the demo's datasets/)."""
    from ..corpus.export import LICENSE_NOTE, corpus_card_configs

    folder = Path(folder)
    configs = corpus_card_configs(folder)
    combined = next(c for c in configs if c["config_name"] == "combined")
    return write_dataset_card(
        folder,
        "negation_captions_card.md.j2",
        {
            "forms": value_counts(folder, combined, "form"),
            "positions": value_counts(folder, combined, "position"),
            "cues": value_counts(folder, combined, "cue"),
            "license": license,
            "license_note": LICENSE_NOTE,
        },
        configs,
        license=license,
        language=["en"],
        pretty_name="Negated captions (hf-negationclip)",
        task_categories=["zero-shot-image-classification", "image-to-text"],
        tags=["negation", "clip", "synthetic", "minimal-pairs"],
    )


def write_negrefcocog_card(folder: str | Path) -> Path:
    """The card of a NegRefCOCOg parquet folder (``hf-negationclip negrefcocog``; the demo's datasets/): every
    config exported into it so far, with its samples, images, cues and cue positions."""
    from ..benchmarks.negrefcocog import CONFIGS, SPLIT

    folder = Path(folder)
    present = parquet_layout(folder)
    configs = [
        {"config_name": c, "data_files": [{"split": SPLIT, "path": f"{c}/{SPLIT}-*"}]} for c in CONFIGS if c in present
    ]
    if not configs:
        raise FileNotFoundError(f"no NegRefCOCOg config ({', '.join(CONFIGS)}) in {folder}")
    rows = []
    for config in configs:
        images = value_counts(folder, config, "image_id")
        rows.append(
            {
                "name": config["config_name"],
                "n": sum(images.values()),
                "images": len(images),
                "cue": value_counts(folder, config, "cue"),
                "position": value_counts(folder, config, "position"),
            }
        )
    return write_dataset_card(
        folder,
        "negrefcocog_card.md.j2",
        {"rows": rows, "split": SPLIT},
        configs,
        license="mit",
        language=["en"],
        pretty_name="NegRefCOCOg",
        task_categories=["zero-shot-image-classification"],
        tags=["negation", "clip", "referring-expressions"],
    )
