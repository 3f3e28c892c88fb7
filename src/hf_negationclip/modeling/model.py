"""NegationCLIP model, model presets and the offline CLIP processor.

``NegationCLIPModel`` is a :class:`transformers.CLIPModel` that adds no weights
and keeps ``CLIPConfig`` (``model_type: clip``), so its checkpoints load in plain
``CLIPModel``, ``AutoModel``, ``CLIPTextModel`` (e.g. as a Stable Diffusion text
encoder) and any downstream code, with no ``trust_remote_code``.

Presets live in one place, :data:`PRESETS`: ``tiny`` (a from-scratch CLIP small
enough to pre-train on two CPU cores) and the real OpenAI checkpoints. How to
fine-tune them is a recipe of ``training.recipes`` (``paper``: the published one).
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer
from transformers.utils import logging as hf_logging

from ..text import clean_text

logger = logging.getLogger(__name__)

#: ids of the real OpenAI CLIP tokenizer; every config must keep them (text pooling reads EOS)
BOS_TOKEN_ID = 49406
EOS_TOKEN_ID = 49407
VOCAB_SIZE = 49408
MAX_TEXT_LENGTH = 77
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


@dataclass(frozen=True)
class ModelPreset:
    """A named starting point: a Hub checkpoint, or a config built from scratch (``tiny``)."""

    name: str
    checkpoint: str | None  # Hub id; None = built from ``config()``
    image_size: int
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
    text = dict(
        vocab_size=VOCAB_SIZE,
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=MAX_TEXT_LENGTH,
        bos_token_id=BOS_TOKEN_ID,
        eos_token_id=EOS_TOKEN_ID,
        pad_token_id=EOS_TOKEN_ID,
    )
    # patch = a third of the image: one patch per cell of the scene world's 3x3 grid layout, so each object
    # lands on the same patch pixels wherever it stands (a tiny ViT has no translation prior to learn that)
    vision = dict(
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=image_size // 3,
        num_channels=3,
    )
    # projection_dim goes into both sub-configs too: CLIP{Text,Vision}ModelWithProjection read it there (default 512)
    projection_dim = 128
    text["projection_dim"] = vision["projection_dim"] = projection_dim
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)


PRESETS: dict[str, ModelPreset] = {
    "tiny": ModelPreset(
        "tiny",
        None,
        96,
        description="from-scratch CLIP for the embedded scene world (CPU minutes)",
    ),
    **{
        name.split("/")[1]: ModelPreset(name, name, size, description=f"OpenAI CLIP {name.split('clip-')[1]}")
        for name, size in (
            ("openai/clip-vit-base-patch32", 224),
            ("openai/clip-vit-base-patch16", 224),
            ("openai/clip-vit-large-patch14", 224),
            ("openai/clip-vit-large-patch14-336", 336),
        )
    },
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

    def unfreeze_vision_head(self, last_blocks: int = 0) -> None:
        """Let the vision tower's final LayerNorm and projection train, with its ``last_blocks`` encoder blocks
        (the rest of the body stays as it is)."""
        self.vision_model.post_layernorm.requires_grad_(True)
        self.visual_projection.requires_grad_(True)
        self.logit_scale.requires_grad_(True)
        layers = list(self.vision_model.encoder.layers)
        for layer in layers[len(layers) - last_blocks :]:
            layer.requires_grad_(True)

    def lock_text_final_layer_norm(self) -> None:
        self.text_model.final_layer_norm.requires_grad_(False)

    def freeze(self, text: bool | None = None, vision: bool | None = None) -> NegationCLIPModel:
        """Freeze (``True``) or unfreeze (``False``) each tower with its projection; ``None`` leaves it as is.

        ``logit_scale`` trains while either tower does. Returns ``self``.
        """
        for flag, modules in (
            (text, (self.text_model, self.text_projection)),
            (vision, (self.vision_model, self.visual_projection)),
        ):
            if flag is not None:
                for module in modules:
                    module.requires_grad_(not flag)
        towers_train = any(p.requires_grad for m in (self.text_model, self.vision_model) for p in m.parameters())
        self.logit_scale.requires_grad_(towers_train)
        return self

    def add_lora(
        self,
        r: int = 8,
        lora_alpha: int = 16,
        lora_dropout: float = 0.0,
        target_modules: str | list[str] | None = None,
        towers: str = "text",
        **lora_kwargs,
    ):
        """Wrap the model in a peft ``PeftModel`` with LoRA adapters (peft's own argument names).

        ``target_modules`` defaults to the attention projections of ``towers``
        (``text``, ``vision`` or ``both``); ``text+vision-top`` adds adapters on
        the vision tower's last block (attention and MLP) and projection to
        the text targets, as ``--train text+vision-top`` trains those in full. Every base weight is frozen. The
        returned ``PeftModel`` saves the adapter folder; :meth:`merge_lora` (or
        ``merge_and_unload()``) folds the adapters back into this model.
        """
        from peft import LoraConfig, get_peft_model

        towers, top = towers.removesuffix("+vision-top"), towers.endswith("+vision-top")
        targets = target_modules if target_modules is not None else lora_target_regex(towers)
        if top:  # + the vision tower's last block and projection (the rest of its body stays frozen)
            targets = f"(?:{targets})|{vision_top_lora_regex(self.config.vision_config.num_hidden_layers)}"
        config = LoraConfig(
            r=r,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            target_modules=targets,
            **lora_kwargs,
        )
        return get_peft_model(self, config)

    def merge_lora(self) -> NegationCLIPModel:
        """Fold LoRA adapters injected by :meth:`add_lora` into the base weights and drop them (in place)."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        for name, module in list(self.named_modules()):
            if isinstance(module, BaseTunerLayer):
                module.merge()
                parent, _, child = name.rpartition(".")
                setattr(self.get_submodule(parent), child, module.get_base_layer())
        if hasattr(self, "peft_config"):
            del self.peft_config
        return self

    def export_text_encoder(self, out_dir: str | os.PathLike, tokenizer=None) -> Path:
        """Write the text tower in the diffusers layout: ``out_dir/text_encoder/`` + ``out_dir/tokenizer/``.

        ``text_encoder/`` holds a ``CLIPTextModel`` (safetensors) and, as before, the tokenizer files;
        ``tokenizer/`` holds the tokenizer with ``vocab.json`` + ``merges.txt`` as well, which the
        ``CLIPTokenizer`` named by a Stable Diffusion ``model_index.json`` reads. So
        ``StableDiffusionPipeline.from_pretrained(base, text_encoder=CLIPTextModel.from_pretrained(out_dir,
        subfolder="text_encoder"), tokenizer=CLIPTokenizer.from_pretrained(out_dir, subfolder="tokenizer"))``
        works. A path named ``text_encoder`` is taken as that subfolder (its parent gets ``tokenizer/``).
        Returns the ``text_encoder/`` folder.
        """
        from transformers import CLIPTextModel

        root = Path(out_dir)
        if root.name == "text_encoder":
            root = root.parent
        out = root / "text_encoder"
        text = CLIPTextModel(self.config.text_config)
        text.load_state_dict(self.text_model.state_dict())  # transformers 5: CLIPModel.text_model is a CLIPTextModel
        text.to(self.dtype).save_pretrained(out, safe_serialization=True)
        tokenizer = tokenizer or load_tokenizer()
        tokenizer.save_pretrained(out)
        save_tokenizer_with_vocab(tokenizer, root / "tokenizer")
        return out

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, merge_lora: bool = True, **kwargs):
        """Load our checkpoints, plain CLIP checkpoints, or a LoRA adapter folder.

        An adapter folder (``adapter_config.json``) is loaded on top of the base
        recorded in it (``base_model_name_or_path``: a Hub id or a folder) and,
        with ``merge_lora=True``, merged into a plain ``NegationCLIPModel``.
        """
        adapter = Path(str(pretrained_model_name_or_path)) / "adapter_config.json"
        if not adapter.is_file():
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        from peft import PeftModel

        base = resolve_adapter_base(adapter)
        try:
            base_model = super().from_pretrained(base, *args, **kwargs)
        except OSError as err:
            raise OSError(f"cannot load {base!r}, the base model of the LoRA adapter {adapter.parent}: {err}") from err
        model = PeftModel.from_pretrained(base_model, str(adapter.parent))
        return model.merge_and_unload() if merge_lora else model

    def forward(
        self,
        *args,
        image_embeds: torch.Tensor | None = None,
        vision_cls: torch.Tensor | None = None,
        vision_states: torch.Tensor | None = None,
        **kwargs,
    ):
        """``CLIPModel.forward``; given ``image_embeds`` (projected image features, e.g. cached once from a
        frozen vision tower) the vision tower is skipped and those are used instead of ``pixel_values``;
        given ``vision_cls`` (:meth:`vision_cls_states`, cached from a frozen vision body) only the vision
        head runs: its final LayerNorm and projection; given ``vision_states`` (:meth:`vision_block_inputs`:
        every token's state below the last encoder block) that block and the head run."""
        if sum(x is not None for x in (image_embeds, vision_cls, vision_states)) > 1:
            raise ValueError("pass one of image_embeds, vision_cls, vision_states")
        if vision_states is not None:
            image_embeds = self.head_embeddings(vision_states, "vision_states")
        elif vision_cls is not None:
            image_embeds = self.head_embeddings(vision_cls, "vision_cls")
        if image_embeds is None:
            return super().forward(*args, **kwargs)
        from transformers.models.clip.modeling_clip import CLIPOutput

        names = ("input_ids", "pixel_values", "attention_mask", "position_ids")
        kwargs.update(zip(names, args))
        if kwargs.get("pixel_values") is not None:
            raise ValueError("pass pixel_values or image_embeds, not both")
        text = feature_tensor(
            self.get_text_features(
                input_ids=kwargs.get("input_ids"),
                attention_mask=kwargs.get("attention_mask"),
                position_ids=kwargs.get("position_ids"),
            )
        )
        text_embeds = torch.nn.functional.normalize(text, dim=-1)
        image_embeds = torch.nn.functional.normalize(image_embeds.to(text_embeds.dtype), dim=-1)
        logits_per_text = self.logit_scale.exp() * text_embeds @ image_embeds.T
        return CLIPOutput(
            logits_per_image=logits_per_text.T,
            logits_per_text=logits_per_text,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
        )

    @torch.no_grad()
    def image_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Projected (unnormalised) image features, the input ``forward(image_embeds=...)`` takes."""
        return feature_tensor(self.get_image_features(pixel_values=pixel_values))

    @torch.no_grad()
    def vision_cls_states(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The vision tower's CLS state before its final LayerNorm: what ``forward(vision_cls=...)`` takes."""
        return self.vision_model(pixel_values=pixel_values).last_hidden_state[:, 0]

    def head_embeddings(self, features: torch.Tensor, kind: str) -> torch.Tensor:
        """Projected (unnormalised) image features from cached ``features`` of ``kind``: "vision_cls" (the CLS
        state below the head: final LayerNorm + projection) or "vision_states" (every token below the last
        encoder block: that block, then the head). With gradients: these are the parts that train on them."""
        features = features.to(self.dtype)
        if kind == "vision_states":
            features = self.vision_model.encoder.layers[-1](features, None)[:, 0]
        elif kind != "vision_cls":
            raise ValueError(f"unknown cached image features {kind!r}: vision_cls | vision_states")
        return self.visual_projection(self.vision_model.post_layernorm(features))

    @torch.no_grad()
    def vision_block_inputs(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Every token's state where the vision tower's last encoder block starts: what ``forward(vision_states=...)``
        takes ([n, tokens, hidden])."""
        vision = self.vision_model
        states = vision.pre_layrnorm(vision.embeddings(pixel_values))
        for layer in vision.encoder.layers[:-1]:
            states = layer(states, None)
        return states

    @torch.no_grad()
    def similarity(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Cosine similarity matrix (images x texts) of normalised embeddings."""
        img = torch.nn.functional.normalize(feature_tensor(self.get_image_features(pixel_values=pixel_values)), dim=-1)
        txt = torch.nn.functional.normalize(
            feature_tensor(self.get_text_features(input_ids=input_ids, attention_mask=attention_mask)), dim=-1
        )
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
        from .encode import encode_images, encode_texts

        processor = processor or load_processor(image_size=self.config.vision_config.image_size)
        img = encode_images(self, processor, list(images), batch_size)
        txt = encode_texts(self, processor, list(texts), batch_size)
        return (self.logit_scale.exp().float().cpu() * img @ txt.T).softmax(dim=-1)


def lora_target_regex(towers: str = "text") -> str:
    """peft ``target_modules`` regex for the attention projections of one or both CLIP towers."""
    names = {"text": "text_model", "vision": "vision_model", "both": "(text_model|vision_model)"}
    if towers not in names:
        raise ValueError(f"LoRA towers must be one of {sorted(names)}, got {towers!r}")
    return rf".*{names[towers]}\.encoder\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|out_proj)"


def vision_top_lora_regex(depth: int) -> str:
    """peft ``target_modules`` regex for the last block (attention and MLP) of a ``depth``-layer vision tower and its
    projection: what ``forward(vision_states=...)`` runs on cached states."""
    block = (
        rf".*vision_model\.encoder\.layers\.{depth - 1}\.(self_attn\.(q_proj|k_proj|v_proj|out_proj)|mlp\.(fc1|fc2))"
    )
    return rf"{block}|.*visual_projection"


def resolve_adapter_base(adapter_config: Path) -> str:
    """The base checkpoint of an adapter folder: a folder (absolute, or relative to cwd or the adapter) or a Hub id."""
    try:
        base = json.loads(adapter_config.read_text())["base_model_name_or_path"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{adapter_config} has no usable base_model_name_or_path") from err
    if not base:
        raise ValueError(f"{adapter_config} records no base model (base_model_name_or_path is empty)")
    for candidate in (Path(base), adapter_config.parent / base):
        if (candidate / "config.json").is_file():
            return str(candidate)
    looks_like_path = (
        Path(base).is_absolute()
        or base.startswith((".", "~"))
        or base.count("/") > 1
        or os.sep in base.replace("/", "")
    )
    if looks_like_path or not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", base):
        raise FileNotFoundError(
            f"the LoRA adapter in {adapter_config.parent} needs its base model {base!r}, which is "
            f"not a checkpoint folder here; pass the base explicitly or fix base_model_name_or_path"
        )
    return base  # a Hub id: transformers resolves (or reports) it


def feature_tensor(features) -> torch.Tensor:
    """``get_*_features`` return a tensor in transformers 4 and may return an output object in 5."""
    if isinstance(features, torch.Tensor):
        return features
    return features.pooler_output


def build_model(name_or_path: str = "tiny", seed: int | None = None) -> NegationCLIPModel:
    """A fresh ``tiny`` model (seeded), or a checkpoint (preset name, Hub id or folder; one-line errors)."""
    from .checkpoints import hub_error, is_local, resolve_checkpoint

    preset = PRESETS.get(str(name_or_path))
    if preset is not None and preset.checkpoint is None:
        if seed is not None:
            torch.manual_seed(seed)
        return NegationCLIPModel(preset.config())
    checkpoint = resolve_checkpoint(name_or_path)
    if is_local(checkpoint):
        return NegationCLIPModel.from_pretrained(checkpoint)
    try:
        return NegationCLIPModel.from_pretrained(checkpoint)
    except OSError as err:
        raise hub_error(str(name_or_path)) from err


def tokenizer_files() -> tuple[Path, Path]:
    """Paths of the shipped OpenAI CLIP BPE files (vocab.json, merges.txt)."""
    root = resources.files("hf_negationclip") / "tokenizer"
    return Path(str(root / "vocab.json")), Path(str(root / "merges.txt"))


def _cleaned(text, split_into_words: bool):
    """``clean_text`` on a text or a batch of texts; pre-split words and token ids pass unchanged."""
    if split_into_words or text is None:
        return text
    if isinstance(text, str):
        return clean_text(text)
    if isinstance(text, (list, tuple)) and all(isinstance(t, str) for t in text):
        return [clean_text(t) for t in text]
    return text


class OpenAICleanCLIPTokenizer(CLIPTokenizer):
    """``CLIPTokenizer`` that cleans text as OpenAI's tokenizer does first (:func:`hf_negationclip.text.clean_text`).

    Every way in (``__call__``, ``encode``, ``tokenize``, the processor's
    ``text=``) goes through ``_encode_plus``, so "isn’t" and "isn't", "&amp;"
    and "&" give the same ids. It adds no state and saves plain CLIP files
    (``tokenizer_class: CLIPTokenizer``): any CLIP code loads them, and
    :func:`load_processor` turns the loaded tokenizer into this class again.
    """

    def _encode_plus(self, text, text_pair=None, **kwargs):
        split = bool(kwargs.get("is_split_into_words"))
        return super()._encode_plus(_cleaned(text, split), _cleaned(text_pair, split), **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs):
        files = super().save_pretrained(save_directory, *args, **kwargs)
        for name in files:
            if str(name).endswith("tokenizer_config.json") and Path(name).is_file():
                config = json.loads(Path(name).read_text(encoding="utf-8"))
                if config.get("tokenizer_class") == type(self).__name__:
                    config["tokenizer_class"] = "CLIPTokenizer"  # plain CLIP files: no class of ours needed to load
                    Path(name).write_text(json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        return files


def with_text_cleaning(tokenizer):
    """The same tokenizer, cleaning text like OpenAI's (a ``CLIPTokenizer`` becomes :class:`OpenAICleanCLIPTokenizer`).

    The class is swapped in place (the subclass adds only methods), so a
    tokenizer loaded from any folder or Hub repo keeps everything it loaded.
    Another tokenizer class is returned as it is, with a warning.
    """
    if isinstance(tokenizer, OpenAICleanCLIPTokenizer):
        return tokenizer
    if type(tokenizer) is CLIPTokenizer:
        tokenizer.__class__ = OpenAICleanCLIPTokenizer
    else:
        logger.warning("%s is not a CLIPTokenizer: its text is not cleaned as OpenAI's", type(tokenizer).__name__)
    return tokenizer


def load_tokenizer() -> OpenAICleanCLIPTokenizer:
    """The shipped OpenAI CLIP BPE tokenizer (77 tokens), cleaning text as OpenAI's does."""
    vocab, merges = tokenizer_files()
    # transformers 5: vocab=/merges= (vocab_file= is silently ignored and gives a 3-token vocabulary)
    return OpenAICleanCLIPTokenizer(vocab=str(vocab), merges=str(merges), model_max_length=MAX_TEXT_LENGTH)


def save_tokenizer_with_vocab(tokenizer, out_dir: str | os.PathLike) -> Path:
    """``tokenizer.save_pretrained(out_dir)`` plus the BPE ``vocab.json`` + ``merges.txt`` (``#version: 0.2``).

    transformers 5 saves a fast CLIP tokenizer as ``tokenizer.json`` only; a slow ``CLIPTokenizer`` (as a
    diffusers ``model_index.json`` names it) and older transformers need the two BPE files.
    """
    out = Path(out_dir)
    tokenizer.save_pretrained(out)
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    if model.get("type") != "BPE":
        raise ValueError(f"expected a BPE (CLIP) tokenizer, got a {model.get('type')!r} model")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (out / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return out


def load_processor(name_or_path: str | os.PathLike | None = None, image_size: int | None = None) -> CLIPProcessor:
    """A ``CLIPProcessor``: the shipped tokenizer + an image processor for the tiny preset, or a saved one.

    ``name_or_path`` may be a preset name, a Hub id or a local folder. With
    ``None`` nothing is read from the network. Its tokenizer cleans text as
    OpenAI's does (ftfy, HTML unescaping, whitespace: :func:`with_text_cleaning`),
    whichever folder or repo it came from; it still saves plain CLIP files.
    """
    if name_or_path is not None:
        preset = PRESETS.get(str(name_or_path))
        if preset is None or preset.checkpoint is not None:
            processor = CLIPProcessor.from_pretrained(preset.checkpoint if preset else name_or_path)
            processor.tokenizer = with_text_cleaning(processor.tokenizer)
            return processor
        image_size = image_size or preset.image_size
    size = image_size or PRESETS["tiny"].image_size
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # silence "requires torchvision, falling back to PIL"
    try:
        from transformers import CLIPImageProcessor  # the lookup itself warns about torchvision

        image_processor = CLIPImageProcessor(
            size={"shortest_edge": size},
            crop_size={"height": size, "width": size},
            image_mean=CLIP_MEAN,
            image_std=CLIP_STD,
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    return CLIPProcessor(image_processor=image_processor, tokenizer=load_tokenizer())
