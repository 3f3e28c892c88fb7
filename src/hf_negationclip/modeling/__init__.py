"""NegationCLIP model, model presets, the offline CLIP processor, the checkpoint loader, the batched encoder and
OpenAI checkpoint conversion."""

from .checkpoints import load_checkpoint, resolve_checkpoint
from .convert_openai import (
    OPENAI_ARCHS,
    convert_openai_checkpoint,
    load_openai_state_dict,
    openai_clip_config,
    openai_to_hf_state_dict,
)
from .encode import EmbeddingCache, encode_images, encode_texts
from .model import (
    BOS_TOKEN_ID,
    CLIP_MEAN,
    CLIP_STD,
    EOS_TOKEN_ID,
    MAX_TEXT_LENGTH,
    PRESETS,
    VOCAB_SIZE,
    ModelPreset,
    NegationCLIPModel,
    build_model,
    feature_tensor,
    get_preset,
    load_processor,
    load_tokenizer,
    lora_target_regex,
    resolve_adapter_base,
    tiny_clip_config,
    tokenizer_files,
)

__all__ = [
    "BOS_TOKEN_ID",
    "CLIP_MEAN",
    "CLIP_STD",
    "EOS_TOKEN_ID",
    "EmbeddingCache",
    "MAX_TEXT_LENGTH",
    "ModelPreset",
    "NegationCLIPModel",
    "OPENAI_ARCHS",
    "PRESETS",
    "VOCAB_SIZE",
    "build_model",
    "convert_openai_checkpoint",
    "encode_images",
    "encode_texts",
    "feature_tensor",
    "get_preset",
    "load_checkpoint",
    "load_openai_state_dict",
    "load_processor",
    "load_tokenizer",
    "lora_target_regex",
    "openai_clip_config",
    "openai_to_hf_state_dict",
    "resolve_adapter_base",
    "resolve_checkpoint",
    "tiny_clip_config",
    "tokenizer_files",
]
