"""Training: contrastive embedder training with GradCache, LoRA/full fine-tuning, resumable checkpoints."""

from mmcascade.training.config import TrainConfig
from mmcascade.training.grad_cache import ContrastiveBatch, contrastive_step
from mmcascade.training.trainer import EmbedderTrainer, build_trainer, train_from_config

__all__ = [
    "ContrastiveBatch",
    "EmbedderTrainer",
    "TrainConfig",
    "build_trainer",
    "contrastive_step",
    "train_from_config",
]
