"""Training configuration: one small dataclass per concern, read from YAML with strict keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from mmcascade.losses.matryoshka import DEFAULT_GROUPS, check_group_temperatures


@dataclass
class ModelConfig:
    """What to train: a VLM/embedder folder or Hub id, and the head to attach to a plain VLM."""

    name_or_path: str
    head: str | None = None
    head_options: dict[str, Any] = field(default_factory=dict)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    processor_options: dict[str, Any] = field(default_factory=dict)
    trust_remote_code: bool = False


@dataclass
class DataConfig:
    train: str
    negatives_per_query: int | None = None  # None: the smallest count in the data (capped at 8)
    # Records with fewer hard negatives than negatives_per_query: an error, or topped up with the
    # positives of other records (random, fixed by the seed).
    fill_negatives: bool = False
    query_instruction: str | None = None
    document_instruction: str | None = None

    def __post_init__(self) -> None:
        if self.negatives_per_query is not None and self.negatives_per_query < 0:
            raise ValueError(f"negatives_per_query must be >= 0; got {self.negatives_per_query}")


@dataclass
class LossConfig:
    """The contrastive loss. ``temperature``: one number, or (matryoshka only) one per entry of ``groups``.
    ``score_normalization``: ``sum`` (MetaEmbed) or ``mean`` (MaxSim divided by the query vectors scored)."""

    type: Literal["matryoshka", "infonce"] = "matryoshka"
    temperature: float | list[float] = 0.03
    groups: list[tuple[int, int]] = field(default_factory=lambda: [tuple(group) for group in DEFAULT_GROUPS])
    weights: list[float] | None = None
    hard_negatives: Literal["own", "all"] = "own"
    score_normalization: Literal["sum", "mean"] = "sum"

    def __post_init__(self) -> None:
        if self.type == "infonce" and isinstance(self.temperature, list):
            raise ValueError(
                f"temperature {self.temperature} gives one value per group, which only type 'matryoshka' has; "
                "give one number for type 'infonce'"
            )
        if self.type == "matryoshka":
            check_group_temperatures(self.temperature, len(self.groups))


@dataclass
class LoraConfig:
    """Low-rank adapters: rank ``r``, scale ``alpha / r``, on the layers named in ``target_modules`` (the last
    part of a module name, e.g. ``q_proj``); null: the layers the backbone declares (``lora_target_modules``)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | None = None


@dataclass
class FinetuneConfig:
    """``full``: every backbone weight trains; ``lora``: low-rank adapters on ``lora.target_modules``;
    ``head``: the backbone is frozen. The head always trains. ``freeze`` adds name patterns (fnmatch,
    e.g. ``backbone.model.model.visual.*``) that stay frozen in any mode; ``train`` re-enables patterns."""

    mode: Literal["full", "lora", "head"] = "full"
    freeze: list[str] = field(default_factory=list)
    train: list[str] = field(default_factory=list)
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class OptimConfig:
    output_dir: str = "runs/embedder"
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 32
    micro_batch_size: int | None = None  # GradCache chunk; None or >= batch_size: one plain forward
    learning_rate: float = 1e-4
    head_learning_rate: float | None = None
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    max_grad_norm: float | None = 1.0
    seed: int = 0
    save_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 10
    progress_bar: bool = True
    autocast: Literal["bfloat16", "float16"] | None = None  # mixed precision for the forward passes
    # Frozen backbone + unified head (attention_pooler, self_attention): compute each item's source_layer
    # states once and train the head on them (training/state_cache.py); spilled to <output_dir>/state_cache/.
    cache_backbone_states: bool = False
    state_cache_dtype: Literal["float32", "bfloat16"] = "float32"
    state_cache_spill: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "save_every", "log_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        if self.micro_batch_size is not None and self.micro_batch_size < 1:
            raise ValueError(f"micro_batch_size must be >= 1 or null; got {self.micro_batch_size}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 or null; got {self.max_steps}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0; got {self.learning_rate}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1); got {self.warmup_ratio}")


@dataclass
class TrainConfig:
    model: ModelConfig
    data: DataConfig
    loss: LossConfig = field(default_factory=LossConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    training: OptimConfig = field(default_factory=OptimConfig)
