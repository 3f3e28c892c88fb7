"""Text towers out of CLIP / NegationCLIP checkpoints, and into diffusers pipeline folders (:func:`swap_text_encoder`)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

PIPELINE_TEXT_COMPONENTS = ("text_encoder", "tokenizer")


# --------------------------------------------------------------------------- loading text towers


def load_text_tower(checkpoint: str | os.PathLike):
    """A ``CLIPTextModel`` + its tokenizer from a NegationCLIP / CLIP checkpoint (full model, LoRA adapter
    folder, or an exported ``text_encoder/`` folder or its parent)."""
    from transformers import AutoConfig, CLIPTextModel

    from ...modeling import NegationCLIPModel, load_tokenizer

    path = Path(str(checkpoint))
    if (path / "adapter_config.json").is_file():
        model = NegationCLIPModel.from_pretrained(path)
        return _text_from_clip(model), _tokenizer_of(path, load_tokenizer)
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise OSError(f"cannot read a CLIP checkpoint from {checkpoint}: {err}") from None
    if config.model_type == "clip_text_model":
        text = CLIPTextModel.from_pretrained(path)
        tok_dir = path.parent / "tokenizer" if (path.parent / "tokenizer").is_dir() else path
        return text, _tokenizer_of(tok_dir, load_tokenizer)
    if config.model_type != "clip":
        raise ValueError(f"{checkpoint} is a {config.model_type!r} checkpoint, not CLIP")
    model = NegationCLIPModel.from_pretrained(path)
    return _text_from_clip(model), _tokenizer_of(path, load_tokenizer)


def _text_from_clip(model):
    from transformers import CLIPTextModel

    text = CLIPTextModel(model.config.text_config)
    text.load_state_dict(model.text_model.state_dict())
    return text


def _tokenizer_of(path: Path, fallback):
    from transformers import CLIPTokenizer

    if (path / "tokenizer_config.json").is_file():
        return CLIPTokenizer.from_pretrained(path)
    return fallback()


# --------------------------------------------------------------------------- pipelines


def _resolve_pipeline(pipeline: str | os.PathLike) -> Path:
    path = Path(str(pipeline))
    if path.is_dir():
        return path
    if path.exists() or str(pipeline).count("/") != 1:
        raise FileNotFoundError(f"pipeline {pipeline} is neither a folder nor a Hub id (ORG/NAME)")
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(pipeline), allow_patterns=["*.json", "*.txt", "*.safetensors", "*.model"]))


def check_pipeline_folder(folder: Path) -> dict:
    """``model_index.json`` of a diffusers pipeline folder that has a ``unet/`` (one-line errors otherwise)."""
    if not (folder / "unet" / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no unet/config.json: not a text-to-image diffusers pipeline folder")
    index = folder / "model_index.json"
    if not index.is_file():
        raise FileNotFoundError(f"{folder} has no model_index.json: not a diffusers pipeline folder")
    return json.loads(index.read_text())


def check_text_width(unet_config: dict, text_hidden_size: int, where: str = "") -> None:
    """``unet.config.cross_attention_dim`` must equal the text tower's hidden size."""
    cross = unet_config.get("cross_attention_dim")
    if isinstance(cross, (list, tuple)):
        cross = cross[0] if len(set(cross)) == 1 else cross
    if cross != text_hidden_size:
        raise ValueError(
            f"text tower width {text_hidden_size} does not fit the UNet's cross_attention_dim {cross}{where} "
            f"(e.g. a ViT-B text tower (512) into Stable Diffusion 1.x's ViT-L slot (768))"
        )


def swap_text_encoder(pipeline: str | os.PathLike, text_encoder: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write ``out``: the pipeline's components (hard-linked when possible, else copied) with ``text_encoder/``
    and ``tokenizer/`` replaced by the text tower of ``text_encoder`` (a CLIP checkpoint)."""
    src = _resolve_pipeline(pipeline)
    index = check_pipeline_folder(src)
    out = Path(out)
    if out.resolve() == src.resolve():
        raise ValueError("--out must differ from --pipeline")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"output folder {out} is not empty")
    unet_config = json.loads((src / "unet" / "config.json").read_text())
    width = _config_text_width(text_encoder)
    if width is not None:  # fail before loading any weights
        check_text_width(unet_config, width, f" of {src}")
    text, tokenizer = load_text_tower(text_encoder)
    check_text_width(unet_config, text.config.hidden_size, f" of {src}")
    out.mkdir(parents=True, exist_ok=True)
    for entry in sorted(src.iterdir()):
        if entry.name in PIPELINE_TEXT_COMPONENTS or entry.name.startswith("."):
            continue
        if entry.is_dir():
            shutil.copytree(entry, out / entry.name, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry, out / entry.name)
    text.save_pretrained(out / "text_encoder", safe_serialization=True)
    from ...modeling.model import save_tokenizer_with_vocab

    save_tokenizer_with_vocab(tokenizer, out / "tokenizer")
    if index.get("text_encoder") != ["transformers", "CLIPTextModel"] or index.get("tokenizer") != [
        "transformers",
        "CLIPTokenizer",
    ]:
        index.update(text_encoder=["transformers", "CLIPTextModel"], tokenizer=["transformers", "CLIPTokenizer"])
        (out / "model_index.json").unlink(missing_ok=True)
        (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return out


def _config_text_width(checkpoint) -> int | None:
    """The text hidden size a checkpoint's config.json names (None when it names none, e.g. an adapter)."""
    config = Path(str(checkpoint)) / "config.json"
    if not config.is_file():
        return None
    data = json.loads(config.read_text())
    if data.get("model_type") == "clip_text_model":
        return data.get("hidden_size")
    return (data.get("text_config") or {}).get("hidden_size")


def _link_or_copy(src, dst) -> str:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return str(dst)
