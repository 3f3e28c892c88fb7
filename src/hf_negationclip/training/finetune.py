"""NegationCLIP fine-tuning: what trains, data sources and outputs, on the one loop of :mod:`.loop`.

A recipe of :mod:`.recipes` (``paper``, ``ours``, ``ours-lora``) fills every
option the user leaves unset.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from ..launch import launch_state
from ..modeling import PRESETS, NegationCLIPModel, encode_texts, load_checkpoint
from .config import SaveHook, TrainingConfig, run_save_hook
from .data import (
    ImageTextData,
    load_image_text_dataset,
    load_negated_corpus,
    negated_captions_path,
    skip_unreadable,
    split_by_image,
)
from .loop import plot_history, train_contrastive
from .losses import RETAIN_ON, LossWeights
from .recipes import RECIPES, get_recipe

logger = logging.getLogger(__name__)

TRAIN_PARTS: tuple[str, ...] = (
    "text",
    "text+vision-head",
    "text+vision-top",
    "vision",
    "both",
    "lora-text",
    "lora-vision",
    "lora-both",
    "lora-text+vision-top",
)
#: train parts that leave (most of) the vision body frozen -> what its cached features are (the model's forward
#: keyword): the CLS state below the vision head (final LayerNorm + projection), which the head turns into the
#: image embedding in each step (a frozen head for text runs, a training one for text+vision-head), so runs from
#: one baseline share one store, whatever they train; for text+vision-top (the last encoder block trains too)
#: every token's state below that block ("image_embeds", the projected embeddings, is still accepted)
FROZEN_VISION_FEATURES: dict[str, str] = {
    "text": "vision_cls",
    "lora-text": "vision_cls",
    "text+vision-head": "vision_cls",
    "text+vision-top": "vision_states",
    "lora-text+vision-top": "vision_states",
}
#: the model's method that makes each kind of cached image feature from pixels
_FEATURE_MAKERS = {
    "image_embeds": "image_embeddings",
    "vision_cls": "vision_cls_states",
    "vision_states": "vision_block_inputs",
}


@dataclass
class FinetuneConfig(TrainingConfig):
    """Arguments of ``hf-negationclip finetune`` (saved as ``training_config.json``). Unset options come from ``recipe``."""

    preset: str = field(
        default="runs/pretrain", metadata={"help": "model to fine-tune: checkpoint folder, Hub id or preset name"}
    )
    output_dir: str = field(
        default="runs/finetune", metadata={"help": "where the checkpoint, adapter, logs and metrics go"}
    )
    recipe: str = field(
        default="ours", metadata={"help": f"defaults for unset options: {' | '.join(RECIPES)} ('tiny' = ours)"}
    )
    corpus_dir: str | None = field(
        default=None, metadata={"help": "folder of negated_captions_<split>.json (the corpus output)"}
    )
    corpus_file: str | None = field(
        default=None, metadata={"help": "the negated-caption file itself (overrides corpus_dir)"}
    )
    dataset: str | None = field(
        default=None, metadata={"help": "instead of a corpus: a datasets folder (save_to_disk or parquet) or name"}
    )
    image_column: str = field(default="image", metadata={"help": "image column of --dataset"})
    text_column: str = field(
        default="text", metadata={"help": "text column of --dataset (a string or a list of strings)"}
    )
    train: str | None = field(default=None, metadata={"help": f"what trains: {' | '.join(TRAIN_PARTS)}"})
    lora_r: int | None = field(default=None, metadata={"help": "LoRA rank"})
    lora_alpha: int | None = field(default=None, metadata={"help": "LoRA alpha"})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout"})
    lora_target_modules: str | None = field(
        default=None,
        metadata={"help": "peft target_modules regex (default: attention projections of the chosen towers)"},
    )
    val_fraction: float | None = field(
        default=None, metadata={"help": "fraction of the images held out for validation"}
    )
    minimal_pairs_only: bool | None = field(
        default=None,
        metadata={
            "help": "train only on negated captions that have "
            "minimal-pair distractor images (the exclusion term's data)"
        },
    )
    affirmative_ratio: float | None = field(
        default=None, metadata={"help": "fraction of picks that use the original affirmative caption instead"}
    )
    contrastive_weight: float | None = field(
        default=None, metadata={"help": "weight of the InfoNCE term (global batch)"}
    )
    hard_negative_weight: float | None = field(
        default=None, metadata={"help": "weight of the hard-negative term (original caption as extra negative)"}
    )
    mcq_weight: float | None = field(default=None, metadata={"help": "weight of the NegBench-style MCQ term"})
    exclusion_weight: float | None = field(
        default=None, metadata={"help": "weight of the exclusion term (caption vs its distractor images)"}
    )
    exclusion_scale: float | None = field(
        default=None, metadata={"help": "logit scale of the exclusion term (0 = the model's own)"}
    )
    square_weight: float | None = field(
        default=None,
        metadata={
            "help": "weight of the square term: both directions of negation on (image, distractor) x "
            "(caption, its affirmative flip); needs distractors and flips (mcq_wrong) in the corpus"
        },
    )
    square_scale: float | None = field(
        default=None, metadata={"help": "logit scale of the square term (0 = the model's own)"}
    )
    square_sides: str | None = field(
        default=None,
        metadata={
            "help": "sides of the square that train: i (image: caption over flip), d (distractor: flip over "
            "caption), f (flip: distractor over image), o (side i on the caption's own image where the square's "
            "image is an added pair's rendered positive); a letter given twice weighs its side twice (iddfo)"
        },
    )
    clause_ratio: float | None = field(
        default=None,
        metadata={
            "help": "share of the negated picks of an epoch that train as their negation clause alone "
            "('No blue star here' against its flip 'A blue star here', same image and distractor)"
        },
    )
    retain_flips: bool | None = field(
        default=None, metadata={"help": "the retain term also holds the flips at their starting embeddings"}
    )
    image_retain_weight: float | None = field(
        default=None,
        metadata={
            "help": "weight of the image-retain term: every image a step encodes (distractors and bare images "
            "included) keeps the starting model's embedding (1 - cosine); for runs whose vision side trains "
            "(e.g. --train text+vision-head)"
        },
    )
    image_relation_weight: float | None = field(
        default=None,
        metadata={
            "help": "weight of the image-relations term: every image a step encodes keeps the starting model's "
            "similarities to the batch's affirmative texts (KL of the two softmax rankings, both directions), "
            "not its position: the images may move where no affirmative text looks"
        },
    )
    joint_relation_weight: float | None = field(
        default=None,
        metadata={
            "help": "weight of the joint-relations term: the image-relations ranking, of the batch's affirmative "
            "texts as the text tower embeds them now, against both starting towers (holds the two towers "
            "against each other where each alone stays put)"
        },
    )
    retain_weight: float | None = field(
        default=None,
        metadata={"help": "weight of the retain term (affirmative captions keep the starting model's embeddings)"},
    )
    negated_retain_weight: float | None = field(
        default=None,
        metadata={
            "help": "weight of the negated-retain term: each negated caption stays near the starting model's "
            "embedding of its affirmative original (keeps what it affirms)"
        },
    )
    retain_on: str | None = field(
        default=None,
        metadata={
            "help": "texts the retain term holds: originals (every "
            "caption's affirmative original, an extra text row each) | "
            "picks (the batch's affirmative picks: --affirmative_ratio, "
            "no extra rows)"
        },
    )
    cache_image_features: bool = field(
        default=True,
        metadata={
            "help": "when the vision tower is frozen (train text or "
            "lora-text), encode every image once and train on the "
            "cached embeddings (much faster, far less memory)"
        },
    )
    export_text_encoder: bool = field(
        default=True, metadata={"help": "also write text_encoder/ (CLIPTextModel + tokenizer)"}
    )
    # recipe-controlled options inherited from PretrainConfig: None = take the recipe's value
    epochs: int | None = field(default=None, metadata={"help": "passes over the images"})
    batch_size: int | None = field(default=None, metadata={"help": "global batch size (images per forward pass)"})
    learning_rate: float | None = field(default=None, metadata={"help": "peak AdamW learning rate"})
    warmup_ratio: float | None = field(default=None, metadata={"help": "fraction of steps of linear warm-up"})
    eval_steps: int = field(default=0, metadata={"help": "evaluate every N steps (0: at the start and end only)"})
    best_metric: str | None = field(
        default=None,
        metadata={
            "help": "keep the best weights by this (val_loss or an evaluator metric; lower is better for "
            "names ending in 'loss'; '' = the last)"
        },
    )
    group_by_length: bool | None = field(
        default=None, metadata={"help": "batch texts of similar token counts together: less padding, faster steps"}
    )

    def __post_init__(self) -> None:
        self.recipe, recipe = get_recipe(self.recipe)
        for name, value in recipe.options().items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        super().__post_init__()
        if self.eval_steps < 0:
            raise ValueError("eval_steps must be >= 0")
        if self.train not in TRAIN_PARTS:
            raise ValueError(f"unknown train part {self.train!r}; choose one of {', '.join(TRAIN_PARTS)}")
        if self.retain_on not in RETAIN_ON:
            raise ValueError(f"retain_on must be originals or picks, not {self.retain_on!r}")
        if not 0 <= self.val_fraction < 1 or not 0 <= self.affirmative_ratio <= 1 or not 0 <= self.clause_ratio <= 1:
            raise ValueError("val_fraction must be in [0, 1), affirmative_ratio and clause_ratio in [0, 1]")
        if self.lora_r < 1 or self.lora_alpha <= 0 or not 0 <= self.lora_dropout < 1:
            raise ValueError("lora_r must be >= 1, lora_alpha > 0 and lora_dropout in [0, 1)")
        self.loss_weights()  # validates the weights

    def loss_weights(self) -> LossWeights:
        return LossWeights(
            contrastive=self.contrastive_weight,
            hard_negative=self.hard_negative_weight,
            mcq=self.mcq_weight,
            exclusion=self.exclusion_weight,
            exclusion_scale=self.exclusion_scale,
            square=self.square_weight,
            square_scale=self.square_scale,
            square_sides=self.square_sides,
            retain=self.retain_weight,
            retain_on=self.retain_on,
            retain_flips=self.retain_flips,
            negated_retain=self.negated_retain_weight,
            image_retain=self.image_retain_weight,
            image_relations=self.image_relation_weight,
            joint_relations=self.joint_relation_weight,
        )

    @property
    def corpus_path(self) -> Path:
        if self.corpus_file:
            return Path(self.corpus_file)
        if not self.corpus_dir:
            raise ValueError("finetune needs --corpus_dir, --corpus_file or --dataset")
        return negated_captions_path(self.corpus_dir, self.split)

    @classmethod
    def from_file(cls, path: str | os.PathLike, **overrides) -> FinetuneConfig:
        """A config from a YAML or JSON file, with keyword overrides; unknown keys are an error."""
        values = {**read_config_file(path), **overrides}
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown option(s) in {path}: {', '.join(unknown)}")
        return cls(**values)


def read_config_file(path: str | os.PathLike) -> dict:
    """A flat mapping of options from a ``.yaml``/``.yml`` or ``.json`` file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such config file: {path}")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        values = yaml.safe_load(text)
    else:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a mapping of option names to values")
    return values


def configure_trainable(model: NegationCLIPModel, cfg: FinetuneConfig):
    """Freeze what ``cfg.train`` leaves alone; for LoRA return the ``PeftModel`` (base weights frozen)."""
    if cfg.train in ("text", "text+vision-head", "text+vision-top"):  # the paper's text part: not its final LayerNorm
        model.freeze(text=False, vision=True)
        model.lock_text_final_layer_norm()
        if cfg.train != "text":  # + the vision tower's final LayerNorm and projection (and its last block)
            model.unfreeze_vision_head(last_blocks=int(cfg.train == "text+vision-top"))
    elif cfg.train == "vision":
        model.freeze(text=True, vision=False)
    elif cfg.train == "both":
        model.freeze(text=False, vision=False)
    else:
        return model.add_lora(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=cfg.lora_target_modules,
            towers=cfg.train.split("-", 1)[1],
        )
    return model


def _on_launch_device(model: NegationCLIPModel) -> torch.device:
    """Move ``model`` to this process's training device (the one the loop's Accelerator will use) and return it."""
    device = launch_state().device
    model.to(device)
    return device


def _frozen_image_encoder(
    model: NegationCLIPModel, kind: str = "image_embeds"
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Pixels -> the frozen part's image features on the training device (``kind``: projected embeddings, the
    CLS state below the vision head, or every token's state below the last block); what makes them never changes
    in this run."""
    device = _on_launch_device(model)
    features_of = getattr(model, _FEATURE_MAKERS[kind])

    def encode(pixels: torch.Tensor) -> torch.Tensor:
        was_training = model.training
        model.eval()
        features = features_of(pixels.to(device, model.dtype)).float().cpu()
        model.train(was_training)
        return features

    return encode


def _fingerprint(model: NegationCLIPModel, prefixes: tuple[str, ...], settings: dict) -> str:
    """A digest of ``settings`` and of the weights whose names start with ``prefixes``."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        if name.startswith(prefixes):
            digest.update(name.encode())
            digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _vision_fingerprint(model: NegationCLIPModel, processor, kind: str = "image_embeds") -> str:
    """Identity of what makes image features of ``kind``: the weights below them and the image processing."""
    if kind == "image_embeds":
        return _fingerprint(model, ("vision_model.", "visual_projection."), processor.image_processor.to_dict())
    below_head = ("vision_model.embeddings.", "vision_model.pre_layrnorm.", "vision_model.encoder.")
    return kind + ":" + _fingerprint(model, below_head, processor.image_processor.to_dict())


@torch.no_grad()
def _cls_states_from_block_inputs(model: NegationCLIPModel, states: dict, store: dict, batch_size: int = 1024) -> None:
    """Fill ``store`` (path -> CLS state below the vision head) for every path of ``states`` (path -> every token's
    state below the last block, of the same frozen body) it lacks: the last block's CLS output, as
    ``vision_cls_states`` computes it from pixels (no image is opened or preprocessed again)."""
    todo = [k for k in states if k not in store]
    if not todo:
        return
    device, was_training = _on_launch_device(model), model.training
    model.eval()
    last = model.vision_model.encoder.layers[-1]
    for i in range(0, len(todo), batch_size):
        chunk = todo[i : i + batch_size]
        inputs = torch.stack([states[k] for k in chunk]).to(device, model.dtype)
        store.update(zip(chunk, last(inputs, None)[:, 0].float().cpu()))
    model.train(was_training)
    logger.info("CLS states of %d images taken from the cached token states below the last block", len(todo))


def _starting_image_embeddings(model: NegationCLIPModel, kind: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """Cached images of ``kind`` -> this (starting) model's projected image embeddings: the image-retain anchors."""
    device = next(model.parameters()).device

    @torch.no_grad()
    def encode(images: torch.Tensor) -> torch.Tensor:
        images = images.to(device, model.dtype)
        if kind == "image_embeds":
            return images.float().cpu()
        if kind in ("vision_cls", "vision_states"):  # the head (and last block) of the starting model
            return model.head_embeddings(images, kind).float().cpu()
        return model.image_embeddings(images).float().cpu()

    return encode


def _text_fingerprint(model: NegationCLIPModel, processor) -> str:
    """Identity of what makes the retain term's anchors: the starting text tower's and projection's weights."""
    return "text:" + _fingerprint(model, ("text_model.", "text_projection."), processor.tokenizer.init_kwargs)


def _text_encoder(model: NegationCLIPModel, tokenizer) -> Callable[[list[str]], torch.Tensor]:
    """Texts -> the starting model's projected text features (the ``retain`` term's fixed anchors)."""
    _on_launch_device(model)

    def encode(texts: list[str]) -> torch.Tensor:
        return encode_texts(model, tokenizer, texts, batch_size=max(1, len(texts)), normalize=False)

    return encode


def load_records(cfg: FinetuneConfig, out: Path | None = None, shared: dict | None = None) -> list:
    """The training records of ``cfg`` (with ``skip_bad_images``: the readable ones, the rest listed in ``out``).

    ``shared`` (the store of runs from one baseline, as ``finetune``'s ``image_features``) keeps the corpus as
    read, per file version, so the runs of one demo read it once."""
    out = out or Path(cfg.output_dir)
    if cfg.dataset:
        records = load_image_text_dataset(cfg.dataset, cfg.image_column, cfg.text_column, cfg.split)
        return skip_unreadable(records, out, cfg.show_progress) if cfg.skip_bad_images else records
    path = Path(cfg.corpus_path)
    if shared is not None and path.is_file():
        stat = path.stat()
        key = f"corpus:{path.resolve()}:{cfg.images_path}:{stat.st_mtime_ns}:{stat.st_size}"
        if key not in shared:
            shared[key] = tuple(load_negated_corpus(path, cfg.images_path))
        records = list(shared[key])
    else:
        records = load_negated_corpus(path, cfg.images_path)
    if cfg.skip_bad_images:  # before the minimal-pairs filter: a caption whose distractors are all bad has none
        records = skip_unreadable(records, out, cfg.show_progress)
    if cfg.minimal_pairs_only:
        records = [r for r in records if r.caption.distractors]
        if not records:
            raise ValueError(f"{cfg.corpus_path} has no caption with distractors: build the corpus with distractors")
    return records


def _base_reference(cfg: FinetuneConfig, model: NegationCLIPModel, out: Path) -> str:
    """What ``adapter_config.json`` records as its base: an absolute folder or a Hub id a user can resolve."""
    if Path(cfg.preset, "config.json").is_file():
        return str(Path(cfg.preset).resolve())
    preset = PRESETS.get(cfg.preset)
    if preset is not None and preset.checkpoint is None:  # a fresh model: keep its starting weights
        model.save_pretrained(out / "base_model", safe_serialization=True)
        return str((out / "base_model").resolve())
    return preset.checkpoint if preset is not None else cfg.preset


def finetune(
    cfg: FinetuneConfig,
    evaluator: Callable | None = None,
    image_features: dict | None = None,
    on_save: SaveHook | None = None,
) -> dict:
    """Fine-tune ``cfg.preset`` on negated captions (or a dataset) and write every output.

    ``image_features``: a dict shared by several runs (the demo's three
    fine-tunes) that keeps the cached image features between them: keyed by a
    fingerprint of the frozen vision tower and image size, so only runs from
    the same vision weights reuse each other's features (a run of CLS states
    takes those of the token states a ``text+vision-top`` run left, one block
    up, without opening an image); the retain term's text anchors are kept
    there too, keyed by the starting text tower, and the corpus as read.

    ``cfg.output_dir`` gets: the merged checkpoint (``model.safetensors``,
    ``config.json``) and processor, ``adapter/`` for LoRA runs,
    ``training_config.json``, ``train_log.jsonl`` (loss and evaluation
    history), ``loss.png``, ``text_encoder/``, with an evaluator
    (``evaluator(model, processor) -> metrics``) ``metrics.json``, with
    ``skip_bad_images`` ``skipped_images.json``; then the main process calls
    ``on_save(output_dir)`` (the CLI and demo write the model card there).
    """
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = load_records(cfg, out, image_features)
    train_records, val_records = split_by_image(records, cfg.val_fraction, cfg.seed)
    model, processor = load_checkpoint(cfg.preset, seed=cfg.seed)
    (out / "training_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    encoder = store = None
    kind = FROZEN_VISION_FEATURES.get(cfg.train) if cfg.cache_image_features else None
    if kind is not None:
        encoder = _frozen_image_encoder(model, kind)
        if image_features is not None:
            store = image_features.setdefault(_vision_fingerprint(model, processor, kind), {})
            if kind == "vision_cls":  # the token states a text+vision-top run cached are one block below: no pixels
                states = image_features.get(_vision_fingerprint(model, processor, "vision_states"), {})
                _cls_states_from_block_inputs(model, states, store)
    data = ImageTextData(
        train_records,
        processor,
        cfg.cache_images,
        cfg.show_progress,
        cfg.affirmative_ratio,
        encoder,
        store,
        cfg.clause_ratio,
        kind or "image_embeds",
    )
    val_data = (
        ImageTextData(
            val_records,
            processor,
            cfg.cache_images,
            False,
            encoder=encoder,
            feature_store=store,
            image_kind=kind or "image_embeds",
        )
        if len(val_records)
        else None
    )
    if (
        cfg.image_retain_weight or cfg.image_relation_weight or cfg.joint_relation_weight
    ):  # the starting model's embedding of every image
        _on_launch_device(model)
        for dataset in (data, val_data):
            if dataset is not None:
                dataset.set_image_anchors(_starting_image_embeddings(model, dataset.image_kind))
    if cfg.retain_weight or cfg.negated_retain_weight or cfg.image_relation_weight or cfg.joint_relation_weight:
        encode = _text_encoder(model, processor.tokenizer)
        anchors = None
        if image_features is not None:
            anchors = image_features.setdefault(_text_fingerprint(model, processor), {})
        for dataset in (data, val_data):
            if dataset is not None:
                dataset.set_anchors(encode, flips=cfg.retain_flips, store=anchors)
    logger.info(
        "fine-tuning %s (%s) on %d images, validating on %d",
        cfg.preset,
        cfg.train,
        len(data),
        len(val_data) if val_data else 0,
    )
    base_ref = _base_reference(cfg, model, out) if cfg.train.startswith("lora") else None
    torch.manual_seed(cfg.seed)  # LoRA's initial A matrices: the same in a run and its resumed twin
    trainable = configure_trainable(model, cfg)
    during = None
    if evaluator is not None and cfg.best_metric and not cfg.best_metric.endswith("loss"):
        during = lambda m: evaluator(m, processor)  # noqa: E731 - the loop's evaluator takes the model only
    t0 = time.time()
    history = train_contrastive(
        trainable, data, cfg, cfg.loss_weights(), val_data, during, cfg.eval_steps, cfg.best_metric
    )
    train_seconds = time.time() - t0
    if not launch_state().is_main_process:  # every process holds the same weights; one writes them
        return {
            "output_dir": str(out),
            "history": history,
            "metrics": None,
            "train_seconds": train_seconds,
            "model": model,
        }
    if base_ref is not None:
        trainable.peft_config["default"].base_model_name_or_path = base_ref
        trainable.save_pretrained(out / "adapter")
        model = trainable.merge_and_unload()
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    if cfg.export_text_encoder:
        model.export_text_encoder(out / "text_encoder", processor.tokenizer)
    if history:
        plot_history(history, out / "loss.png", f"fine-tuning ({cfg.recipe} recipe, {cfg.train})")
    metrics = None
    if evaluator is not None:
        metrics = {**evaluator(model, processor), "train_seconds": round(train_seconds, 1), "train_images": len(data)}
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    run_save_hook(on_save, out)
    return {
        "output_dir": str(out),
        "history": history,
        "metrics": metrics,
        "train_seconds": train_seconds,
        "model": model,
    }
