"""Reasoner SFT configuration: one small dataclass per concern, read from YAML with strict keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from mmcascade.training.config import LoraConfig


@dataclass
class ReasonerModelConfig:
    """The generative backbone to fine-tune: a folder, Hub id or alias (e.g. ``starter-reasoner-base``)."""

    name_or_path: str
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    processor_options: dict[str, Any] = field(default_factory=dict)
    trust_remote_code: bool = False


@dataclass
class ReasonerDataConfig:
    """``train``: a JSONL of ``{"item": {...}, "trace": "...", "task": "retrieval"}`` lines (image paths
    relative to the file); ``task`` is used where a line names none. Traces longer than
    ``max_target_tokens`` are cut (and then carry no end-of-turn token)."""

    train: str
    task: str = "retrieval"
    max_target_tokens: int | None = None
    template_dir: str | None = None

    def __post_init__(self) -> None:
        if self.max_target_tokens is not None and self.max_target_tokens < 1:
            raise ValueError(f"max_target_tokens must be >= 1 or null; got {self.max_target_tokens}")


@dataclass
class ReasonerFinetuneConfig:
    """``full``: every backbone weight trains; ``lora``: low-rank adapters on ``lora.target_modules`` of the
    language model. ``freeze`` adds fnmatch name patterns (e.g. ``vision.*``) kept frozen in either mode;
    ``train`` re-enables patterns."""

    mode: Literal["full", "lora"] = "lora"
    freeze: list[str] = field(default_factory=list)
    train: list[str] = field(default_factory=list)
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class ReasonerOptimConfig:
    """Batches, schedule (AdamW, linear warmup then linear decay) and checkpointing.

    ``batch_size`` examples make one optimizer step; they run through the model ``micro_batch_size`` at a
    time (gradient accumulation, token-weighted so the step equals one full-batch step)."""

    output_dir: str = "runs/reasoner"
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 8
    micro_batch_size: int | None = None
    learning_rate: float = 2e-5
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    max_grad_norm: float | None = 1.0
    seed: int = 0
    save_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 10
    progress_bar: bool = True
    autocast: Literal["bfloat16"] | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "save_every", "log_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        for name in ("micro_batch_size", "max_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or null; got {value}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0; got {self.learning_rate}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1); got {self.warmup_ratio}")


@dataclass
class ReasonerTrainConfig:
    model: ReasonerModelConfig
    data: ReasonerDataConfig
    finetune: ReasonerFinetuneConfig = field(default_factory=ReasonerFinetuneConfig)
    training: ReasonerOptimConfig = field(default_factory=ReasonerOptimConfig)
