"""Convert OpenAI ``clip`` checkpoints (how NegationCLIP's authors released their weights) to transformers."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from transformers import CLIPConfig

from .model import BOS_TOKEN_ID, EOS_TOKEN_ID, NegationCLIPModel, load_processor

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


def openai_clip_config(state: dict, arch: str | None = None) -> CLIPConfig:
    """A ``CLIPConfig`` read off the shapes of an OpenAI-``clip`` state dict (heads = width / 64, as OpenAI does)."""
    if "visual.conv1.weight" not in state:
        raise ValueError("not an OpenAI CLIP ViT state dict (no visual.conv1.weight; ResNet CLIPs are not supported)")
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
    text = dict(
        vocab_size=state["token_embedding.weight"].shape[0],
        hidden_size=t_width,
        intermediate_size=4 * t_width,
        num_hidden_layers=found[5],
        num_attention_heads=max(t_width // 64, 1),
        max_position_embeddings=state["positional_embedding"].shape[0],
        bos_token_id=BOS_TOKEN_ID,
        eos_token_id=EOS_TOKEN_ID,
        pad_token_id=EOS_TOKEN_ID,
        hidden_act="quick_gelu",
    )
    vision = dict(
        hidden_size=v_width,
        intermediate_size=4 * v_width,
        num_hidden_layers=found[1],
        num_attention_heads=max(v_width // 64, 1),
        image_size=found[3],
        patch_size=patch,
        hidden_act="quick_gelu",
    )
    # projection_dim in both sub-configs too: CLIP{Text,Vision}ModelWithProjection read it there (default 512)
    text["projection_dim"] = vision["projection_dim"] = found[6]
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=found[6])


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


def load_openai_state_dict(path: str | os.PathLike) -> dict:
    """Tensors of an OpenAI-``clip`` ``.pth``/``.pt`` state dict, through ``torch.load(weights_only=True)`` only."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle.UnpicklingError, RuntimeError for TorchScript archives, ...
        raise ValueError(
            f"refusing to load {path}: not a plain weights-only state dict ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}). TorchScript archives: load them with "
            "clip.load(..., jit=False) and torch.save(model.state_dict()) first"
        ) from err
    for wrapper in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not state:
        raise ValueError(f"{path} does not hold a state dict")
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def convert_openai_checkpoint(
    checkpoint: str | os.PathLike, out_dir: str | os.PathLike, arch: str | None = None
) -> Path:
    """Convert an OpenAI-``clip`` ViT checkpoint into a ``NegationCLIPModel`` folder (safetensors + processor)."""
    state = load_openai_state_dict(checkpoint)
    config = openai_clip_config(state, arch)
    config.architectures = ["NegationCLIPModel"]
    model = NegationCLIPModel(config)
    missing, unexpected = model.load_state_dict(openai_to_hf_state_dict(state, config), strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"conversion left missing keys {missing[:5]} / unexpected keys {unexpected[:5]}")
    out = Path(out_dir)
    model.save_pretrained(out, safe_serialization=True)
    load_processor(image_size=config.vision_config.image_size).save_pretrained(out)
    return out
