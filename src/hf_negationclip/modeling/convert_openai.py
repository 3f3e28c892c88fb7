"""Convert OpenAI ``clip`` checkpoints (how NegationCLIP's authors released their weights) to transformers."""

from __future__ import annotations

import logging
import os
import re
import warnings
import zipfile
from pathlib import Path

import torch
from transformers import CLIPConfig

from .model import BOS_TOKEN_ID, EOS_TOKEN_ID, MAX_TEXT_LENGTH, VOCAB_SIZE, NegationCLIPModel, load_processor

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- OpenAI ``clip`` checkpoints

#: the OpenAI ViT architectures: (vision width, vision layers, patch, image size, text width, text layers, embed dim)
OPENAI_ARCHS: dict[str, tuple[int, int, int, int, int, int, int]] = {
    "ViT-B/32": (768, 12, 32, 224, 512, 12, 512),
    "ViT-B/16": (768, 12, 16, 224, 512, 12, 512),
    "ViT-L/14": (1024, 24, 14, 224, 768, 12, 768),
    "ViT-L/14@336px": (1024, 24, 14, 336, 768, 12, 768),
}


def _layer_count(state: dict, prefix: str) -> int:
    return len({k.split(".")[2 + prefix.count(".")] for k in state if k.startswith(prefix + ".resblocks.")})


#: the tensors every OpenAI-``clip`` ViT state dict holds (besides the ``resblocks`` of both transformers)
REQUIRED_KEYS: tuple[str, ...] = (
    "logit_scale",
    "token_embedding.weight",
    "positional_embedding",
    "ln_final.weight",
    "ln_final.bias",
    "text_projection",
    "visual.class_embedding",
    "visual.conv1.weight",
    "visual.positional_embedding",
    "visual.ln_pre.weight",
    "visual.ln_pre.bias",
    "visual.ln_post.weight",
    "visual.ln_post.bias",
    "visual.proj",
)
#: the tensors of each ``resblocks.<i>`` (OpenAI's fused q/k/v projection, then the rest)
_BLOCK_KEYS: tuple[str, ...] = ("attn.in_proj_weight", "attn.in_proj_bias") + tuple(
    f"{name}.{kind}"
    for name in ("attn.out_proj", "ln_1", "ln_2", "mlp.c_fc", "mlp.c_proj")
    for kind in ("weight", "bias")
)
_EXPECTED = "an OpenAI-clip ViT state dict (ViT-B/32, ViT-B/16, ViT-L/14, ViT-L/14@336px)"


def check_openai_state_dict(state: dict) -> None:
    """Raise ``ValueError`` (one line: what the tensors are, what is expected) unless ``state`` is a full ViT CLIP."""
    if "visual.attnpool.positional_embedding" in state or any(k.startswith("visual.layer1.") for k in state):
        raise ValueError(
            f"this is an OpenAI-clip ResNet state dict (visual.layer1.*, visual.attnpool.*), but only ViT "
            f"checkpoints convert (transformers' CLIPModel has no ResNet tower): expected {_EXPECTED}"
        )
    if any(k.startswith(("text_model.", "vision_model.")) for k in state):
        raise ValueError(
            "this is a transformers CLIPModel state dict (text_model.*, vision_model.*), which needs no conversion: "
            f"save it with CLIPModel.save_pretrained and load that folder; convert-openai expects {_EXPECTED}"
        )
    if not any(k.startswith(("visual.", "transformer.resblocks.", "token_embedding.")) for k in state):
        found = ", ".join(sorted(state)[:3])
        raise ValueError(f"this is not an OpenAI-clip state dict (its keys start {found}, ...): expected {_EXPECTED}")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    for prefix in ("transformer", "visual.transformer"):
        layers = _layer_count(state, prefix)
        if layers == 0:
            missing.append(f"{prefix}.resblocks.0.*")
        missing += [f"{prefix}.resblocks.{i}.{k}" for i in range(layers) for k in _BLOCK_KEYS]
        missing = [k for k in missing if k not in state]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ValueError(
            f"this OpenAI-clip state dict is incomplete: it lacks {missing[0]!r}{more}; expected {_EXPECTED}"
        )
    for key in ("visual.conv1.weight", "visual.positional_embedding", "text_projection", "visual.proj"):
        expected_dim = {"visual.conv1.weight": 4}.get(key, 2)
        if state[key].dim() != expected_dim:
            raise ValueError(
                f"this OpenAI-clip state dict has {key} of shape {list(state[key].shape)} "
                f"({expected_dim} dimensions expected): expected {_EXPECTED}"
            )


def openai_clip_config(state: dict, arch: str | None = None) -> CLIPConfig:
    """A ``CLIPConfig`` read off the shapes of an OpenAI-``clip`` state dict (heads = width / 64, as OpenAI does)."""
    check_openai_state_dict(state)
    v_width, _, patch, _ = state["visual.conv1.weight"].shape
    grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    t_width = state["ln_final.weight"].shape[0]
    found = (
        v_width,
        _layer_count(state, "visual.transformer"),
        patch,
        patch * grid,
        t_width,
        _layer_count(state, "transformer"),
        state["text_projection"].shape[1],
    )
    if arch is not None:
        if arch not in OPENAI_ARCHS:
            raise ValueError(f"unknown --arch {arch!r}; known: {sorted(OPENAI_ARCHS)}")
        if OPENAI_ARCHS[arch] != found:
            raise ValueError(
                f"the checkpoint does not match {arch}: expected {OPENAI_ARCHS[arch]}, found {found} "
                "(vision width, layers, patch, image size, text width, layers, embed dim)"
            )
    return arch_clip_config(
        found,
        vocab_size=state["token_embedding.weight"].shape[0],
        context_length=state["positional_embedding"].shape[0],
    )


def arch_clip_config(
    arch: str | tuple[int, ...], vocab_size: int = VOCAB_SIZE, context_length: int = MAX_TEXT_LENGTH
) -> CLIPConfig:
    """The ``CLIPConfig`` of an OpenAI ViT architecture: a name of :data:`OPENAI_ARCHS` or its 7 numbers."""
    v_width, v_layers, patch, size, t_width, t_layers, dim = OPENAI_ARCHS[arch] if isinstance(arch, str) else arch
    text = dict(
        vocab_size=vocab_size,
        hidden_size=t_width,
        intermediate_size=4 * t_width,
        num_hidden_layers=t_layers,
        num_attention_heads=max(t_width // 64, 1),
        max_position_embeddings=context_length,
        bos_token_id=BOS_TOKEN_ID,
        eos_token_id=EOS_TOKEN_ID,
        pad_token_id=EOS_TOKEN_ID,
        hidden_act="quick_gelu",
    )
    vision = dict(
        hidden_size=v_width,
        intermediate_size=4 * v_width,
        num_hidden_layers=v_layers,
        num_attention_heads=max(v_width // 64, 1),
        image_size=size,
        patch_size=patch,
        hidden_act="quick_gelu",
    )
    # projection_dim in both sub-configs too: CLIP{Text,Vision}ModelWithProjection read it there (default 512)
    text["projection_dim"] = vision["projection_dim"] = dim
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=dim)


def _convert_blocks(state: dict, src: str, dst: str, layers: int) -> dict:
    out = {}
    for i in range(layers):
        s, d = f"{src}.resblocks.{i}", f"{dst}.encoder.layers.{i}"
        for kind in ("weight", "bias"):
            q, k, v = state[f"{s}.attn.in_proj_{kind}"].chunk(3, dim=0)
            out.update(
                {
                    f"{d}.self_attn.q_proj.{kind}": q,
                    f"{d}.self_attn.k_proj.{kind}": k,
                    f"{d}.self_attn.v_proj.{kind}": v,
                    f"{d}.self_attn.out_proj.{kind}": state[f"{s}.attn.out_proj.{kind}"],
                    f"{d}.layer_norm1.{kind}": state[f"{s}.ln_1.{kind}"],
                    f"{d}.layer_norm2.{kind}": state[f"{s}.ln_2.{kind}"],
                    f"{d}.mlp.fc1.{kind}": state[f"{s}.mlp.c_fc.{kind}"],
                    f"{d}.mlp.fc2.{kind}": state[f"{s}.mlp.c_proj.{kind}"],
                }
            )
    return out


def openai_to_hf_state_dict(state: dict, config: CLIPConfig) -> dict:
    """Rename (and split / transpose) an OpenAI-``clip`` ViT state dict into ``CLIPModel`` keys."""
    out = {
        "logit_scale": state["logit_scale"],
        "text_model.embeddings.token_embedding.weight": state["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": state["positional_embedding"],
        "text_model.final_layer_norm.weight": state["ln_final.weight"],
        "text_model.final_layer_norm.bias": state["ln_final.bias"],
        "text_projection.weight": state["text_projection"].T,
        "vision_model.embeddings.class_embedding": state["visual.class_embedding"],
        "vision_model.embeddings.patch_embedding.weight": state["visual.conv1.weight"],
        "vision_model.embeddings.position_embedding.weight": state["visual.positional_embedding"],
        "vision_model.pre_layrnorm.weight": state["visual.ln_pre.weight"],
        "vision_model.pre_layrnorm.bias": state["visual.ln_pre.bias"],
        "vision_model.post_layernorm.weight": state["visual.ln_post.weight"],
        "vision_model.post_layernorm.bias": state["visual.ln_post.bias"],
        "visual_projection.weight": state["visual.proj"].T,
    }
    out.update(_convert_blocks(state, "transformer", "text_model", config.text_config.num_hidden_layers))
    out.update(_convert_blocks(state, "visual.transformer", "vision_model", config.vision_config.num_hidden_layers))
    return {k: v.contiguous() for k, v in out.items()}


_SIZE_MISMATCH = re.compile(
    r"size mismatch for (\S+): copying a param with shape torch\.Size\((\[.*?\])\) from checkpoint, "
    r"the shape in current model is torch\.Size\((\[.*?\])\)"
)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive (``torch.jit.save``, OpenAI's ``clip.load(jit=True)`` files): a zip with ``code/``."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.split("/")[1:2] == ["code"] or name.endswith("/constants.pkl") for name in archive.namelist())


def load_openai_state_dict(path: str | os.PathLike) -> dict:
    """Tensors of an OpenAI-``clip`` ``.pth``/``.pt`` state dict, through ``torch.load(weights_only=True)`` only."""
    import pickle

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    if _is_torchscript(path):
        raise ValueError(
            f"{path} is a TorchScript archive (clip.load(..., jit=True)), not a state dict: expected a weights-only "
            "state dict; save one with clip.load(name, jit=False) and torch.save(model.state_dict(), FILE)"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns before it raises; the error below says it all
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", _ANSI.sub("", str(err)))
        what = f" (it needs {found.group(1)})" if found else ""
        raise ValueError(
            f"refusing to load {path}: it holds pickled Python objects, not only tensors{what}; expected a "
            "weights-only state dict: torch.save(model.state_dict(), FILE)"
        ) from None
    except Exception as err:  # RuntimeError / EOFError for a truncated or foreign file, ...
        first = _ANSI.sub("", str(err)).strip().splitlines()
        raise ValueError(
            f"refusing to load {path}: not a weights-only torch state dict ({type(err).__name__}: "
            f"{first[0] if first else ''}); expected the .pt/.pth of torch.save(model.state_dict(), FILE)"
        ) from None
    for wrapper in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"{path} holds a {type(state).__name__} without tensors, not a state dict: expected {_EXPECTED}"
        )
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def convert_openai_checkpoint(
    checkpoint: str | os.PathLike, out_dir: str | os.PathLike, arch: str | None = None
) -> Path:
    """Convert an OpenAI-``clip`` ViT checkpoint into a ``NegationCLIPModel`` folder (safetensors + processor)."""
    state = load_openai_state_dict(checkpoint)
    try:
        config = openai_clip_config(state, arch)
        config.architectures = ["NegationCLIPModel"]
        model = NegationCLIPModel(config)
        missing, unexpected = model.load_state_dict(openai_to_hf_state_dict(state, config), strict=False)
    except ValueError as err:
        raise ValueError(f"{checkpoint}: {err}") from None
    except RuntimeError as err:  # size mismatch: tensors that disagree about the widths
        found = _SIZE_MISMATCH.search(str(err))
        detail = (
            f"{found.group(1)} would be {found.group(2)} but the other tensors' widths need {found.group(3)}"
            if found
            else str(err).strip().splitlines()[-1].strip()
        )
        raise ValueError(
            f"{checkpoint}: an OpenAI-clip ViT state dict whose tensor shapes disagree ({detail}); expected {_EXPECTED}"
        ) from None
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"{checkpoint}: conversion left missing keys {missing[:5]} / unexpected keys {unexpected[:5]}")
    out = Path(out_dir)
    model.save_pretrained(out, safe_serialization=True)
    load_processor(image_size=config.vision_config.image_size).save_pretrained(out)
    return out
