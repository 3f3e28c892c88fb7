"""Training CLIP with Accelerate: ONE loop (:func:`train_contrastive`) for pre-training and fine-tuning.

``pretrain`` (the biased baseline on affirmative captions) and ``finetune``
(NegationCLIP: recipes, text / vision / both / LoRA, extra loss terms) both
run it. Evaluation comes in as a callable, so this package never imports the
evaluation code.
"""

from .data import Caption, ImageTextData, TrainRecord, load_image_text_dataset, load_negated_corpus, split_by_image
from .finetune import RECIPES, TRAIN_PARTS, FinetuneConfig, configure_trainable, finetune, read_config_file
from .loop import plot_history, train_contrastive, validation_loss
from .losses import LossWeights, compute_loss, contrastive_loss, exclusion_loss, hard_negative_loss, mcq_loss
from .pretrain import PretrainConfig, pretrain

__all__ = [
    "Caption",
    "FinetuneConfig",
    "ImageTextData",
    "LossWeights",
    "PretrainConfig",
    "RECIPES",
    "TRAIN_PARTS",
    "TrainRecord",
    "compute_loss",
    "configure_trainable",
    "contrastive_loss",
    "exclusion_loss",
    "finetune",
    "hard_negative_loss",
    "load_image_text_dataset",
    "load_negated_corpus",
    "mcq_loss",
    "plot_history",
    "pretrain",
    "read_config_file",
    "split_by_image",
    "train_contrastive",
    "validation_loss",
]
