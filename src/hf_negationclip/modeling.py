"""NegationCLIP model, model presets and the offline CLIP processor.

``NegationCLIPModel`` is a :class:`transformers.CLIPModel` that adds no weights
and keeps ``CLIPConfig`` (``model_type: clip``), so its checkpoints load in plain
``CLIPModel``, ``AutoModel``, ``CLIPTextModel`` (e.g. as a Stable Diffusion text
encoder) and any downstream code, with no ``trust_remote_code``.

Presets live in one place, :data:`PRESETS`: ``tiny`` (a from-scratch CLIP small
enough to pre-train on two CPU cores) and the real OpenAI checkpoints with the
paper's fine-tuning recipe attached.
"""
from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer
from transformers.utils import logging as hf_logging

logger = logging.getLogger(__name__)

#: ids of the real OpenAI CLIP tokenizer; every config must keep them (text pooling reads EOS)
BOS_TOKEN_ID = 49406
EOS_TOKEN_ID = 49407
VOCAB_SIZE = 49408
MAX_TEXT_LENGTH = 77
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


@dataclass(frozen=True)
class FinetuneDefaults:
    """The paper's NegationCLIP recipe (text tower only, InfoNCE on negated captions)."""

    learning_rate: float = 1e-6
    batch_size: int = 512
    epochs: int = 15
    weight_decay: float = 0.1
    train_fraction: float = 0.8
    freeze_vision: bool = True
    freeze_final_text_layer_norm: bool = True


@dataclass(frozen=True)
class ModelPreset:
    """A named starting point: a Hub checkpoint, or a config built from scratch (``tiny``)."""

    name: str
    checkpoint: str | None  # Hub id; None = built from ``config()``
    image_size: int
    finetune: FinetuneDefaults = field(default_factory=FinetuneDefaults)
    description: str = ""

    def config(self) -> CLIPConfig:
        if self.checkpoint is not None:
            return CLIPConfig.from_pretrained(self.checkpoint)
        return tiny_clip_config(self.image_size)

    def to_dict(self) -> dict:
        return asdict(self)


def tiny_clip_config(image_size: int = 96) -> CLIPConfig:
    """A CLIP small enough to pre-train from scratch on the scene world on 2 CPU cores.

    The text tower keeps the real 49,408-token vocabulary and the real BOS/EOS
    ids: with ``eos_token_id == 2`` transformers would pool at the largest token
    id instead of at EOS.
    """
    text = dict(vocab_size=VOCAB_SIZE, hidden_size=128, intermediate_size=512, num_hidden_layers=3,
                num_attention_heads=4, max_position_embeddings=MAX_TEXT_LENGTH, bos_token_id=BOS_TOKEN_ID,
                eos_token_id=EOS_TOKEN_ID, pad_token_id=EOS_TOKEN_ID)
    # patch = a third of the image: one patch per cell of the scene world's 3x3 grid layout, so each object
    # lands on the same patch pixels wherever it stands (a tiny ViT has no translation prior to learn that)
    vision = dict(hidden_size=128, intermediate_size=512, num_hidden_layers=3, num_attention_heads=4,
                  image_size=image_size, patch_size=image_size // 3, num_channels=3)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=128)


PRESETS: dict[str, ModelPreset] = {
    "tiny": ModelPreset("tiny", None, 96, FinetuneDefaults(learning_rate=2e-4, batch_size=128, epochs=8, weight_decay=0.1),
                        "from-scratch CLIP for the embedded scene world (CPU minutes)"),
    **{name.split("/")[1]: ModelPreset(name, name, size, description=f"OpenAI CLIP {name.split('clip-')[1]}")
       for name, size in (("openai/clip-vit-base-patch32", 224), ("openai/clip-vit-base-patch16", 224),
                          ("openai/clip-vit-large-patch14", 224), ("openai/clip-vit-large-patch14-336", 336))},
}


def get_preset(name: str) -> ModelPreset:
    """Look a preset up by short name (``tiny``, ``clip-vit-base-patch32``) or Hub id."""
    for key, preset in PRESETS.items():
        if name in (key, preset.checkpoint):
            return preset
    raise KeyError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")


class NegationCLIPModel(CLIPModel):
    """A CLIP model fine-tuned to understand negation. Same weights and config as ``CLIPModel``.

    Example::

        >>> from PIL import Image
        >>> from hf_negationclip import NegationCLIPModel, load_processor, tiny_clip_config
        >>> model = NegationCLIPModel(tiny_clip_config())
        >>> processor = load_processor()
        >>> batch = processor(text=["a red circle", "a street with no cars"], images=[Image.new("RGB", (128, 128))],
        ...                   padding=True, return_tensors="pt")
        >>> model.similarity(batch["pixel_values"], batch["input_ids"], batch["attention_mask"]).shape
        torch.Size([1, 2])
    """

    config_class = CLIPConfig

    def lock_image_tower(self) -> None:
        """Freeze the vision tower and its projection (the paper trains the text side only)."""
        for module in (self.vision_model, self.visual_projection):
            module.requires_grad_(False)

    def lock_text_final_layer_norm(self) -> None:
        self.text_model.final_layer_norm.requires_grad_(False)

    @torch.no_grad()
    def similarity(self, pixel_values: torch.Tensor, input_ids: torch.Tensor,
                   attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Cosine similarity matrix (images x texts) of normalised embeddings."""
        img = torch.nn.functional.normalize(feature_tensor(self.get_image_features(pixel_values=pixel_values)), dim=-1)
        txt = torch.nn.functional.normalize(
            feature_tensor(self.get_text_features(input_ids=input_ids, attention_mask=attention_mask)), dim=-1)
        return img @ txt.T


    @torch.no_grad()
    def score(self, images, texts, processor=None, batch_size: int = 64) -> torch.Tensor:
        """Probabilities over ``texts`` for each image (``len(images) x len(texts)``, rows sum to 1).

        ``images`` are PIL images (or anything the processor takes), ``texts``
        strings; both are encoded in batches of ``batch_size``, so any number
        works. The softmax uses the model's own ``logit_scale``. Without a
        ``processor`` the shipped offline one (sized for this model) is used.
        """
        if not len(images) or not len(texts):
            raise ValueError("score needs at least one image and one text")
        processor = processor or load_processor(image_size=self.config.vision_config.image_size)
        was_training, device = self.training, next(self.parameters()).device
        self.eval()
        img, txt = [], []
        for start in range(0, len(images), batch_size):
            pixels = processor(images=list(images[start:start + batch_size]), return_tensors="pt")["pixel_values"]
            img.append(feature_tensor(self.get_image_features(pixel_values=pixels.to(device))).float())
        for start in range(0, len(texts), batch_size):
            tok = processor.tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                                      return_tensors="pt").to(device)
            txt.append(feature_tensor(self.get_text_features(**tok)).float())
        self.train(was_training)
        img = torch.nn.functional.normalize(torch.cat(img), dim=-1)
        txt = torch.nn.functional.normalize(torch.cat(txt), dim=-1)
        return (self.logit_scale.exp().float() * img @ txt.T).softmax(dim=-1).cpu()


def feature_tensor(features) -> torch.Tensor:
    """``get_*_features`` return a tensor in transformers 4 and may return an output object in 5."""
    if isinstance(features, torch.Tensor):
        return features
    return features.pooler_output


def build_model(name_or_path: str = "tiny", seed: int | None = None) -> NegationCLIPModel:
    """A fresh ``tiny`` model (seeded), or a checkpoint (preset name, Hub id or folder)."""
    preset = PRESETS.get(name_or_path)
    if preset is not None and preset.checkpoint is None:
        if seed is not None:
            torch.manual_seed(seed)
        return NegationCLIPModel(preset.config())
    checkpoint = preset.checkpoint if preset is not None else name_or_path
    return NegationCLIPModel.from_pretrained(checkpoint)


def tokenizer_files() -> tuple[Path, Path]:
    """Paths of the shipped OpenAI CLIP BPE files (vocab.json, merges.txt)."""
    root = resources.files("hf_negationclip") / "tokenizer"
    return Path(str(root / "vocab.json")), Path(str(root / "merges.txt"))


def load_tokenizer() -> CLIPTokenizer:
    vocab, merges = tokenizer_files()
    # transformers 5: vocab=/merges= (vocab_file= is silently ignored and gives a 3-token vocabulary)
    return CLIPTokenizer(vocab=str(vocab), merges=str(merges), model_max_length=MAX_TEXT_LENGTH)


def load_processor(name_or_path: str | os.PathLike | None = None, image_size: int | None = None) -> CLIPProcessor:
    """A ``CLIPProcessor``: the shipped tokenizer + an image processor for the tiny preset, or a saved one.

    ``name_or_path`` may be a preset name, a Hub id or a local folder. With
    ``None`` nothing is read from the network.
    """
    if name_or_path is not None:
        preset = PRESETS.get(str(name_or_path))
        if preset is None or preset.checkpoint is not None:
            return CLIPProcessor.from_pretrained(preset.checkpoint if preset else name_or_path)
        image_size = image_size or preset.image_size
    size = image_size or PRESETS["tiny"].image_size
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # silence "requires torchvision, falling back to PIL"
    try:
        from transformers import CLIPImageProcessor  # the lookup itself warns about torchvision

        image_processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                             image_mean=CLIP_MEAN, image_std=CLIP_STD)
    finally:
        hf_logging.set_verbosity(verbosity)
    return CLIPProcessor(image_processor=image_processor, tokenizer=load_tokenizer())
