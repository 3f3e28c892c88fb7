"""The one checkpoint loader: a preset name, a checkpoint folder (or LoRA adapter folder) or a Hub id.

Every command that takes a checkpoint (``pretrain`` / ``finetune --preset``,
``evaluate --model``, ``app --model``, the demo) goes through
:func:`load_checkpoint` (model + processor) or :func:`~.model.build_model`
(model), both of which resolve the name with :func:`resolve_checkpoint` first, so
a bad name fails in one plain line instead of the Hub client's repo-id
validation text.
"""

from __future__ import annotations

import os
from pathlib import Path

#: files that make a folder a checkpoint: a full model, or a LoRA adapter on a recorded base
CHECKPOINT_FILES = ("config.json", "adapter_config.json")
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")


def _is_hub_id(name: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if name.startswith((".", "/", "~")) or os.sep in name.strip("/").replace("/", "", 1):
        return False  # a path: ./x, /x, ~/x, a/b/c
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def resolve_checkpoint(name_or_path: str | os.PathLike) -> str:
    """What to pass to ``from_pretrained``: an existing checkpoint folder, a preset's Hub id, or a Hub id.

    Raises ``FileNotFoundError`` with one line: "no checkpoint at PATH (and it
    is not a Hub id)" for a missing path, "... is not a checkpoint folder" for a
    folder or file that holds no checkpoint. Presets built from scratch (``tiny``) are not checkpoints: see
    :func:`~.model.build_model`.
    """
    from .model import PRESETS

    name = str(name_or_path)
    preset = PRESETS.get(name)
    if preset is not None and preset.checkpoint is not None:
        return preset.checkpoint
    path = Path(name).expanduser()
    if path.is_dir():
        if not any((path / f).is_file() for f in CHECKPOINT_FILES):
            raise FileNotFoundError(f"{path} is not a checkpoint folder (no config.json)")
        return str(path)
    if path.exists():
        raise FileNotFoundError(f"no checkpoint at {name}: it is a file, not a checkpoint folder (with config.json)")
    if not _is_hub_id(name):
        raise FileNotFoundError(f"no checkpoint at {name} (and it is not a Hub id)")
    return name


def is_local(checkpoint: str) -> bool:
    return Path(checkpoint).expanduser().is_dir()


def hub_error(name: str) -> OSError:
    """The one-line error of a Hub id that could not be loaded."""
    return OSError(
        f"cannot load model {name!r} from the Hub: it is not in the local cache and the Hub cannot be "
        f"reached (offline?), or there is no such model; pass a checkpoint folder instead"
    )


def checkpoint_processor(checkpoint: str, model):
    """The checkpoint's own processor when it has one (a folder with processor files, or a Hub id),
    else the shipped tokenizer with images sized for ``model``."""
    from .model import load_processor

    path = Path(checkpoint).expanduser()
    if not path.is_dir() or any((path / f).is_file() for f in PROCESSOR_FILES):
        return load_processor(str(path) if path.is_dir() else checkpoint)
    return load_processor(image_size=model.config.vision_config.image_size)


def load_checkpoint(name_or_path: str | os.PathLike, seed: int = 0):
    """``(model, processor)`` of a preset, a checkpoint / adapter folder or a Hub id, with one-line errors.

    ``tiny`` (a preset built from scratch) gives fresh weights seeded with
    ``seed`` and the shipped processor sized for it.
    """
    from .model import PRESETS, build_model, load_processor

    name = str(name_or_path)
    preset = PRESETS.get(name)
    if preset is not None and preset.checkpoint is None:
        model = build_model(name, seed=seed)
        return model, load_processor(image_size=model.config.vision_config.image_size)
    model = build_model(name)
    checkpoint = resolve_checkpoint(name)
    try:
        return model, checkpoint_processor(checkpoint, model)
    except OSError as err:
        if is_local(checkpoint):
            raise
        raise hub_error(name) from err
