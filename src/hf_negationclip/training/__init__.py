"""Training CLIP with Accelerate: ONE loop (:func:`train_contrastive`) for pre-training and fine-tuning.

``pretrain`` (the biased baseline on affirmative captions) and ``finetune``
(NegationCLIP: the recipes of :mod:`.recipes`, text / vision / both / LoRA,
extra loss terms) both run it. A batch is a :class:`Batch` made by one
collator (:mod:`.batch`); each loss term is one entry of ``losses.TERMS``.
Evaluation and the model card come in as callables (``evaluator``,
``on_save``), so this package never imports the evaluation code or the apps.
"""

from .batch import ROW_KINDS, Batch, BatchSpec, Pick, TokenCache, collate
from .config import SaveHook, TrainingConfig
from .data import (
    Caption,
    ImageTextData,
    TrainRecord,
    drop_unreadable_images,
    load_image_text_dataset,
    load_negated_corpus,
    split_by_image,
)
from .finetune import (
    FROZEN_VISION_FEATURES,
    TRAIN_PARTS,
    FinetuneConfig,
    configure_trainable,
    finetune,
    read_config_file,
)
from .loop import plot_history, train_contrastive, validation_loss
from .losses import (
    TERMS,
    LossTerm,
    LossWeights,
    batch_spec,
    compute_loss,
    contrastive_loss,
    exclusion_loss,
    hard_negative_loss,
    mcq_loss,
    retain_loss,
)
from .pretrain import PretrainConfig, pretrain
from .recipes import BUDGETS, RECIPE_ALIASES, RECIPES, Recipe, get_recipe

__all__ = [
    "BUDGETS",
    "Batch",
    "BatchSpec",
    "Caption",
    "FROZEN_VISION_FEATURES",
    "FinetuneConfig",
    "ImageTextData",
    "LossTerm",
    "LossWeights",
    "Pick",
    "PretrainConfig",
    "RECIPES",
    "RECIPE_ALIASES",
    "ROW_KINDS",
    "Recipe",
    "SaveHook",
    "TERMS",
    "TRAIN_PARTS",
    "TrainRecord",
    "TrainingConfig",
    "batch_spec",
    "TokenCache",
    "collate",
    "compute_loss",
    "configure_trainable",
    "contrastive_loss",
    "drop_unreadable_images",
    "exclusion_loss",
    "finetune",
    "get_recipe",
    "hard_negative_loss",
    "load_image_text_dataset",
    "load_negated_corpus",
    "mcq_loss",
    "plot_history",
    "pretrain",
    "read_config_file",
    "retain_loss",
    "split_by_image",
    "train_contrastive",
    "validation_loss",
]
