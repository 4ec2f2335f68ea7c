"""Single-vector heads: last-token and mean pooling."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmcascade.embedder.heads.base import Head, Side, check_side, project_and_normalize, register_head


@dataclass
class PoolingConfig:
    hidden_size: int
    projection_dim: int | None = None
    normalize: bool = True

    def __post_init__(self) -> None:
        if self.hidden_size < 1:
            raise ValueError(f"hidden_size must be >= 1; got {self.hidden_size}")
        if self.projection_dim is not None and self.projection_dim < 1:
            raise ValueError(f"projection_dim must be >= 1 or None; got {self.projection_dim}")


class _PoolingHead(Head):
    config_class = PoolingConfig

    def __init__(self, config: PoolingConfig):
        super().__init__(config)
        dim = config.projection_dim
        self.projection = nn.Linear(config.hidden_size, dim) if dim else None

    def num_vectors(self, side: Side) -> int:
        check_side(side)
        return 1

    @property
    def output_dim(self) -> int:
        return self.config.projection_dim or self.config.hidden_size

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor, side: Side) -> torch.Tensor:
        check_side(side)
        pooled = self.pool(hidden_states, attention_mask)  # (B, H)
        return project_and_normalize(pooled, self.projection, self.config.normalize).unsqueeze(1)  # (B, 1, dim)

    def pool(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@register_head
class LastTokenPooling(_PoolingHead):
    """The hidden state of each row's last real token (works with left or right padding)."""

    head_type = "last_token"

    def pool(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        length = attention_mask.shape[1]
        positions = torch.arange(length, device=attention_mask.device).expand_as(attention_mask)  # (B, L)
        last = torch.where(attention_mask.bool(), positions, -1).amax(dim=1)  # (B,)
        return hidden_states[torch.arange(hidden_states.shape[0], device=hidden_states.device), last]  # (B, H)


@register_head
class MeanPooling(_PoolingHead):
    """The mean of the hidden states of each row's real tokens."""

    head_type = "mean"

    def pool(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        weights = attention_mask.to(hidden_states.dtype).unsqueeze(-1)  # (B, L, 1)
        return (hidden_states * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)  # (B, H)
