"""Tiny RANDOM generative models built from configs (no Hub): a causal LM and a LLaVA-style image-text-to-text model.

A word-level tokenizer over a few hundred words keeps generation fast on CPU;
their output is garbage by construction, which is what the tests need.
"""

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from hf_negationclip import world as scene_world

WORDS = [
    "[PAD]",
    "[UNK]",
    "<s>",
    "</s>",
    "<image>",
    "a",
    "an",
    "the",
    "no",
    "not",
    "yes",
    "with",
    "without",
    "is",
    "there",
    "in",
    "image",
    "caption",
    "of",
    "and",
    "on",
    "photo",
    ".",
    ",",
    ":",
    '"',
    "?",
    "USER",
    "ASSISTANT",
    "answer",
    "object",
    "rewrite",
    "background",
    *scene_world.SHAPES,
    *scene_world.COLORS,
    *scene_world.SIZES,
]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(dict.fromkeys(WORDS))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        bos_token="<s>",
        eos_token="</s>",
        extra_special_tokens={"image_token": "<image>"},
    )


def _llama(tok) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )


def save_tiny_lm(out: Path) -> Path:
    torch.manual_seed(0)
    tok = tiny_tokenizer()
    LlamaForCausalLM(_llama(tok)).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def save_tiny_llava(out: Path) -> Path:
    torch.manual_seed(0)
    tok = tiny_tokenizer()
    vision = CLIPVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=30,
        patch_size=6,
        projection_dim=16,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=_llama(tok),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
    )
    LlavaForConditionalGeneration(config).save_pretrained(out)
    images = CLIPImageProcessor(size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30})
    LlavaProcessor(
        image_processor=images,
        tokenizer=tok,
        patch_size=6,
        vision_feature_select_strategy="default",
        image_token="<image>",
        num_additional_image_tokens=1,
    ).save_pretrained(out)
    return out
