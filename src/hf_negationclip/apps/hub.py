"""Publish runs and datasets on the Hugging Face Hub, and read them back.

The last stage of the data flow: it may import everything below it; of the
applications, ``cli`` (push-model / push-dataset / pull) and ``space``
(``push_space`` hands its staged folder to :func:`push_folder`) call it, and
the library never does. Every push works the same way:

1. **stage**: copy what belongs on the Hub into a fresh folder (a run's
   checkpoint, processor, ``text_encoder/``, results, logs, plots and a model
   card generated from them; or a dataset folder with its card); nothing is
   sent yet, and ``dry_run`` stops here;
2. **push** (:func:`push_folder`, also used for Spaces): check the token
   (``hf auth login`` or ``HF_TOKEN``; never printed or written), refuse an
   existing repo without ``exist_ok``, create the repo, then upload the staged
   folder with ``HfApi.upload_folder``, huggingface_hub's own resumable,
   retrying, batch-committing uploader: a run folder lands in ONE commit whose
   message names the run. When the upload fails, a repo this call created is
   deleted again, so nothing is left half-written.

Reading back needs nothing of ours: ``NegationCLIPModel.from_pretrained(id)``,
``load_dataset(id, config)``, or :func:`pull` (``snapshot_download``), which
also works with ``HF_HUB_OFFLINE=1`` once the files are cached.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .cards import (
    HUB_ID_PATTERN,
    config_files,
    is_hub_id,
    load_run_results,
    public_training_config,  # noqa: F401 (re-exported)
    resolve_base_model,
    write_model_card,
)

logger = logging.getLogger(__name__)

REPO_TYPES = ("model", "dataset", "space")
# what a run folder publishes; everything else (checkpoints/ training states, pickles, caches) stays home
PROCESSOR_FILES = (
    "preprocessor_config.json",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
)
WEIGHT_FILES = (
    "config.json",
    "model.safetensors",
    "model-*.safetensors",
    "model.safetensors.index.json",
    "generation_config.json",
)
RUN_FILES = ("training_config.json", "results.json", "metrics.json", "train_log.jsonl", "*.png")
TEXT_ENCODER_FILES = ("config.json", "model.safetensors", "model-*.safetensors", "model.safetensors.index.json")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
# dataset folders: data and docs only (dataset scripts no longer load, pickles are unsafe)
DATASET_SUFFIXES = (".parquet", ".arrow", ".json", ".jsonl", ".csv", ".txt", ".md", ".png", ".jpg", ".jpeg")


class HubError(RuntimeError):
    """A push or pull that cannot go on; the message says what to do (the CLI prints it as ``error: ...``)."""


@dataclass
class StagedPush:
    """What a push sends (or, with ``dry_run``, would send)."""

    folder: Path
    repo_id: str
    repo_type: str
    files: list[str]
    card: str
    commit_message: str
    skipped: list[str] = field(default_factory=list)
    commit_url: str | None = None

    def tree(self) -> str:
        """The staged files as an indented tree with sizes."""
        lines, seen = [f"{self.repo_id} ({self.repo_type})"], set()
        for rel in self.files:
            parts = rel.split("/")
            for depth in range(len(parts) - 1):
                folder = "/".join(parts[: depth + 1])
                if folder not in seen:
                    seen.add(folder)
                    lines.append(f"{'  ' * (depth + 1)}{parts[depth]}/")
            size = (self.folder / rel).stat().st_size
            lines.append(f"{'  ' * len(parts)}{parts[-1]}  ({_human(size)})")
        return "\n".join(lines)


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _copy_matching(src: Path, dst: Path, patterns: tuple[str, ...]) -> list[str]:
    copied = []
    for pattern in patterns:
        for path in sorted(src.glob(pattern)):
            if path.is_file() and not (dst / path.name).exists():
                dst.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, dst / path.name)
                copied.append(path.name)
    return copied


def _listing(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _check_repo_id(repo_id: str) -> None:
    if not HUB_ID_PATTERN.fullmatch(str(repo_id)):
        raise ValueError(f"repo_id must look like ORG/NAME (letters, digits, '-', '_', '.'), got {repo_id!r}")


# ------------------------------------------------------------------------------------------- staging
def stage_model(
    run_dir: str | Path,
    stage_dir: str | Path,
    repo_id: str,
    *,
    adapter: bool = False,
    base_model: str | None = None,
    model_label: str | None = None,
    dataset_ids: dict[str, str] | None = None,
) -> StagedPush:
    """Copy what a run publishes into ``stage_dir`` (which must be empty) and write its model card there.

    Full model: the checkpoint and processor files, ``text_encoder/``, the
    run's ``training_config.json``, ``results.json``, logs and plots.
    ``adapter=True``: the PEFT adapter from ``RUN_DIR/adapter/`` at the repo
    root instead of the weights, its ``base_model_name_or_path`` rewritten to
    the base's Hub id (``base_model``, or the run's own base when that is a Hub id).
    """
    run_dir, stage = Path(run_dir), Path(stage_dir)
    _check_repo_id(repo_id)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    if not (run_dir / "config.json").exists():
        found = sorted(str(p.parent) for p in run_dir.glob("*/config.json") if p.parent.name != "text_encoder")
        hint = f"; checkpoints inside it: {', '.join(found)}" if found else ""
        raise FileNotFoundError(f"{run_dir} holds no checkpoint (config.json){hint}")
    stage.mkdir(parents=True, exist_ok=True)
    if any(stage.iterdir()):
        raise ValueError(f"staging folder {stage} is not empty")
    base = base_model
    if adapter:
        base = _stage_adapter(run_dir, stage, base_model)
        _copy_matching(run_dir, stage, PROCESSOR_FILES)
    else:
        _copy_matching(run_dir, stage, WEIGHT_FILES + PROCESSOR_FILES)
        if (run_dir / "text_encoder" / "config.json").exists():
            _copy_matching(run_dir / "text_encoder", stage / "text_encoder", TEXT_ENCODER_FILES + PROCESSOR_FILES)
        if (run_dir / "tokenizer" / "tokenizer_config.json").exists():  # diffusers layout: tokenizer/ beside it
            _copy_matching(run_dir / "tokenizer", stage / "tokenizer", PROCESSOR_FILES)
    _copy_matching(run_dir, stage, RUN_FILES)
    _stage_training_config(stage, base)
    _stage_results(run_dir, stage, model_label)
    card = write_model_card(
        run_dir,
        stage,
        repo_id=repo_id,
        base_model=base,
        model_label=model_label,
        dataset_ids=dataset_ids,
        adapter=adapter,
    ).read_text()
    files = _listing(stage)
    skipped = sorted(set(_listing(run_dir)) - set(files) - {"README.md"})
    return StagedPush(
        stage, repo_id, "model", files, card, f"Upload NegationCLIP run {run_dir.resolve().name}", skipped
    )


def _stage_training_config(stage: Path, base_model: str | None) -> None:
    """Rewrite the staged ``training_config.json`` without local paths (the base named by Hub id when known)."""
    path = stage / "training_config.json"
    if path.exists():
        config = json.loads(path.read_text())
        public = public_training_config(config, resolve_base_model(config, base_model))
        path.write_text(json.dumps(public, indent=2) + "\n")


def _stage_results(run_dir: Path, stage: Path, model_label: str | None) -> None:
    """The run's ``results.json`` (found beside or above the run), model paths cut to their folder names."""
    found = load_run_results(run_dir, model_label)
    if found is None or not found["source"].endswith("results.json"):
        return
    results = json.loads(Path(found["source"]).read_text())
    for entry in results.get("models", {}).values():
        if isinstance(entry, dict) and entry.get("path") and not is_hub_id(entry["path"]):
            entry["path"] = Path(entry["path"]).name  # a local path means nothing on the Hub
    (stage / "results.json").write_text(json.dumps(results, indent=2) + "\n")


def _stage_adapter(run_dir: Path, stage: Path, base_model: str | None) -> str:
    """Stage ``RUN_DIR/adapter/`` at the repo root, its base named by Hub id; returns that id."""
    src = run_dir / "adapter"
    if not (src / "adapter_config.json").exists():
        raise FileNotFoundError(f"--adapter: {src}/adapter_config.json does not exist (was the run trained with LoRA?)")
    cfg = json.loads((src / "adapter_config.json").read_text())
    recorded = cfg.get("base_model_name_or_path")
    base = base_model or recorded
    if not is_hub_id(base):
        raise ValueError(
            f"the adapter's base is {recorded!r}, not a Hub id: publish the base first and pass "
            "--base_model ORG/NAME so that users can load the adapter on top of it"
        )
    copied = _copy_matching(src, stage, ADAPTER_FILES)
    if "adapter_model.safetensors" not in copied:
        raise FileNotFoundError(f"{src} has no adapter_model.safetensors")
    cfg["base_model_name_or_path"] = base  # peft records the local path it trained from
    (stage / "adapter_config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return base


def stage_dataset(folder: str | Path, stage_dir: str | Path, repo_id: str) -> StagedPush:
    """Copy a dataset folder (``<config>/<split>-*.parquet`` + ``README.md`` with ``configs:``) into ``stage_dir``."""
    from huggingface_hub import DatasetCard

    folder, stage = Path(folder), Path(stage_dir)
    _check_repo_id(repo_id)
    readme = folder / "README.md"
    if not readme.exists():
        raise FileNotFoundError(
            f"{readme} is missing: write the dataset card first (hf_negationclip.apps.cards.write_dataset_card)"
        )
    card = DatasetCard.load(readme)
    configs = card.data.to_dict().get("configs") or []
    if not configs:
        raise ValueError(f"{readme} has no 'configs:' in its YAML front matter: load_dataset could not find the data")
    for config in configs:
        for split, paths in config_files(folder, config).items():
            if not paths:
                raise ValueError(f"{readme}: config {config['config_name']!r} names no file for split {split!r}")
    stage.mkdir(parents=True, exist_ok=True)
    if any(stage.iterdir()):
        raise ValueError(f"staging folder {stage} is not empty")
    skipped = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or path.suffix.lower() not in DATASET_SUFFIXES:
            skipped.append(rel.as_posix())
            continue
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, stage / rel)
    return StagedPush(
        stage,
        repo_id,
        "dataset",
        _listing(stage),
        readme.read_text(),
        f"Upload dataset {folder.resolve().name}",
        skipped,
    )


# ------------------------------------------------------------------------------------------- pushing
def _token(token: str | None) -> str:
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise HubError("no Hugging Face token: run `hf auth login` or set HF_TOKEN (a token with write access)")
    return token


def _explain(err: Exception, what: str) -> HubError:
    """A one-line message for an HTTP or network failure (never echoing the token)."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    if isinstance(err, HfHubHTTPError) and err.response is not None:
        status = err.response.status_code
        if status == 401:
            return HubError(
                f"{what}: the Hub rejected the token (401): log in again with `hf auth login` or set a valid HF_TOKEN"
            )
        if status == 403:
            return HubError(f"{what}: the token may not write there (403): use a write token with access to it")
        if isinstance(err, RepositoryNotFoundError):
            return HubError(f"{what}: repository not found (404)")
        return HubError(f"{what}: the Hub answered {status}: {str(err).splitlines()[0]}")
    if isinstance(err, (httpx2.HTTPError, ConnectionError, TimeoutError)):
        return HubError(f"{what}: cannot reach the Hub ({type(err).__name__}: {err}); check the network or HF_ENDPOINT")
    return HubError(f"{what}: {type(err).__name__}: {err}")


def push_folder(
    folder: str | Path,
    repo_id: str,
    repo_type: str = "model",
    *,
    private: bool = False,
    revision: str | None = None,
    exist_ok: bool = False,
    commit_message: str | None = None,
    commit_description: str | None = None,
    token: str | None = None,
    space_sdk: str = "gradio",
):
    """Create ``repo_id`` and upload ``folder`` to it; returns huggingface_hub's ``CommitInfo``.

    Generic over ``repo_type`` ("model", "dataset", "space": Spaces are
    created with ``space_sdk``). An existing repo is an error unless
    ``exist_ok``; a repo this call created is deleted again if the upload
    fails. ``revision`` names a branch, created from ``main`` when missing.
    """
    import httpx2
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    folder = Path(folder)
    if repo_type not in REPO_TYPES:
        raise ValueError(f"repo_type must be one of {REPO_TYPES}, got {repo_type!r}")
    _check_repo_id(repo_id)
    if not folder.is_dir() or not any(folder.iterdir()):
        raise FileNotFoundError(f"nothing to upload: {folder} is missing or empty")
    api = HfApi(token=_token(token))
    failures = (HfHubHTTPError, httpx2.HTTPError, ConnectionError, TimeoutError)
    try:
        api.whoami()
        try:
            api.repo_info(repo_id, repo_type=repo_type)
            exists = True
        except RepositoryNotFoundError:
            exists = False
    except failures as err:
        raise _explain(err, f"checking {repo_type} repo {repo_id}") from None
    if exists and not exist_ok:
        raise HubError(
            f"{repo_type} repo {repo_id} already exists: pass --exist_ok (exist_ok=True) to add a commit to it"
        )
    created = False
    try:
        if not exists:
            api.create_repo(
                repo_id, repo_type=repo_type, private=private, space_sdk=space_sdk if repo_type == "space" else None
            )
            created = True
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id,
            repo_type=repo_type,
            folder_path=folder,
            revision=revision,
            commit_message=commit_message or f"Upload {folder.name}",
            commit_description=commit_description,
        )
    except (*failures, ValueError) as err:
        error = _explain(err, f"uploading to {repo_type} repo {repo_id}")
        if created:
            error = HubError(f"{error} ({_remove_created(api, repo_id, repo_type)})")
        else:  # commits are atomic; a large folder's earlier parts stay and a re-run skips them
            error = HubError(f"{error} (the failed commit changed nothing; running the same push again resumes it)")
        raise error from None
    logger.info("pushed %s to %s: %s", folder, repo_id, info.commit_url)
    return info


def _remove_created(api, repo_id: str, repo_type: str) -> str:
    """Delete a repo that this push created and could not fill; say what happened."""
    try:
        api.delete_repo(repo_id, repo_type=repo_type)
        return f"the new, empty repo {repo_id} was deleted again; nothing was written"
    except Exception as err:  # noqa: BLE001 -- best effort, the upload error is what matters
        return f"could not delete the new, empty repo {repo_id} ({type(err).__name__}): delete it by hand"


def _stage_and_push(
    stage_fn, stage_dir: str | Path | None, dry_run: bool, token: str | None, **push_kwargs
) -> StagedPush:
    """Stage into ``stage_dir`` (default: a fresh temporary folder), then push unless ``dry_run``.

    A temporary staging folder is removed after a push or a failure and kept
    after a dry run, so it can be inspected.
    """
    if not dry_run:
        _token(token)  # before copying gigabytes into a staging folder
    stage = Path(stage_dir) if stage_dir else Path(tempfile.mkdtemp(prefix="hf-negationclip-stage-"))
    keep = False
    try:
        staged = stage_fn(stage)
        if dry_run:
            keep = True
            return staged
        info = push_folder(
            staged.folder,
            staged.repo_id,
            staged.repo_type,
            commit_message=staged.commit_message,
            token=token,
            **push_kwargs,
        )
        staged.commit_url = info.commit_url
        return staged
    finally:
        if stage_dir is None and not keep:
            shutil.rmtree(stage, ignore_errors=True)


def push_model(
    run_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    adapter: bool = False,
    dry_run: bool = False,
    exist_ok: bool = False,
    base_model: str | None = None,
    model_label: str | None = None,
    dataset_ids: dict[str, str] | None = None,
    stage_dir: str | Path | None = None,
    token: str | None = None,
) -> StagedPush:
    """Stage a run folder (see :func:`stage_model`) and, unless ``dry_run``, push it in one commit."""
    return _stage_and_push(
        lambda stage: stage_model(
            run_dir,
            stage,
            repo_id,
            adapter=adapter,
            base_model=base_model,
            model_label=model_label,
            dataset_ids=dataset_ids,
        ),
        stage_dir,
        dry_run,
        token,
        private=private,
        revision=revision,
        exist_ok=exist_ok,
    )


def push_dataset(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    dry_run: bool = False,
    exist_ok: bool = False,
    stage_dir: str | Path | None = None,
    token: str | None = None,
) -> StagedPush:
    """Stage a dataset folder (see :func:`stage_dataset`) and, unless ``dry_run``, push it."""
    return _stage_and_push(
        lambda stage: stage_dataset(folder, stage, repo_id),
        stage_dir,
        dry_run,
        token,
        private=private,
        revision=revision,
        exist_ok=exist_ok,
    )


def pull(
    repo_id: str,
    repo_type: str = "model",
    *,
    revision: str | None = None,
    local_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    token: str | None = None,
) -> Path:
    """Download a repo (``snapshot_download``); with ``HF_HUB_OFFLINE=1`` it answers from the cache."""
    import httpx2
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    if repo_type not in REPO_TYPES:
        raise ValueError(f"repo_type must be one of {REPO_TYPES}, got {repo_type!r}")
    try:
        path = snapshot_download(
            repo_id, repo_type=repo_type, revision=revision, local_dir=local_dir, cache_dir=cache_dir, token=token
        )
    except LocalEntryNotFoundError as err:
        raise HubError(f"{repo_id} is not in the cache and the Hub cannot be reached (offline?): {err}") from None
    except (HfHubHTTPError, httpx2.HTTPError, ConnectionError, TimeoutError) as err:
        raise _explain(err, f"downloading {repo_type} repo {repo_id}") from None
    return Path(path)
