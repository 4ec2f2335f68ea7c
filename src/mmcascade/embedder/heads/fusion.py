"""The ``fusion`` head: a small transformer over frozen feature rows, with MetaEmbed meta tokens at its end.

Built for backbones whose output rows are *features* rather than a language model's states (the
``starter-features`` backbone: MiniLM token states and EfficientNet grid cells side by side). The rows are
projected to the head's ``width``, given learned positions, and read together with the side's meta tokens
by ``num_layers`` bidirectional pre-norm transformer layers; the meta tokens' outputs, projected and
L2-normalised, are the multi-vector embedding (MaxSim over prefixes, as MetaEmbed's Matryoshka groups).
With ``pooled_skip`` a linear map of an attention-pooled row (at first the rows' mean: what a linear probe
reads) is added to every vector. The head reads ``source_layer`` states and appends nothing to the backbone's input, so a frozen backbone's
states can be cached (``training.cache_backbone_states``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmcascade.embedder.heads.base import Head, Side, check_side, project_and_normalize, register_head


@dataclass
class FusionHeadConfig:
    hidden_size: int  # the backbone's row width
    width: int = 256
    num_layers: int = 2
    num_heads: int = 4
    source_layer: int = -1
    num_query_tokens: int = 16
    num_document_tokens: int = 64
    max_positions: int = 512
    projection_dim: int | None = 128
    dropout: float = 0.0
    # Add a linear map of an attention-pooled row to every vector (before normalisation): the linear-probe path,
    # so the meta tokens learn corrections to a pooled summary instead of rebuilding it. The pooling weights
    # come from a learned linear score per row (zero at start: the plain mean), so it can pick summary rows.
    pooled_skip: bool = False
    normalize: bool = True
    init_std: float = 0.02

    def __post_init__(self) -> None:
        for name in ("hidden_size", "width", "num_layers", "num_heads", "num_query_tokens", "num_document_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        if self.width % self.num_heads:
            raise ValueError(f"width {self.width} is not divisible by num_heads {self.num_heads}")
        if self.projection_dim is not None and self.projection_dim < 1:
            raise ValueError(f"projection_dim must be >= 1 or null; got {self.projection_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {self.dropout}")


@register_head
class FusionHead(Head):
    """``(B, L, hidden)`` feature rows -> ``(B, n_side, dim)`` meta-token vectors."""

    head_type = "fusion"
    config_class = FusionHeadConfig

    def __init__(self, config: FusionHeadConfig):
        super().__init__(config)
        self.input_projection = nn.Linear(config.hidden_size, config.width)
        self.input_norm = nn.LayerNorm(config.width)
        self.positions = nn.Embedding(config.max_positions, config.width)
        nn.init.normal_(self.positions.weight, std=config.init_std)
        n_meta = config.num_query_tokens + config.num_document_tokens
        self.meta_tokens = nn.Parameter(torch.randn(n_meta, config.width) * config.init_std)  # (Nq + Nd, W)
        layer = nn.TransformerEncoderLayer(
            config.width,
            config.num_heads,
            dim_feedforward=4 * config.width,
            dropout=config.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.layers = nn.TransformerEncoder(layer, config.num_layers, enable_nested_tensor=False)
        self.output_norm = nn.LayerNorm(config.width)
        dim = config.projection_dim
        self.projection = nn.Linear(config.width, dim) if dim else None
        self.pooled_projection = nn.Linear(config.hidden_size, dim or config.width) if config.pooled_skip else None
        self.pool_scores = nn.Linear(config.hidden_size, 1) if config.pooled_skip else None
        if self.pool_scores is not None:
            nn.init.zeros_(self.pool_scores.weight)
            nn.init.zeros_(self.pool_scores.bias)

    @property
    def source_layer(self) -> int:
        return self.config.source_layer

    def num_vectors(self, side: Side) -> int:
        check_side(side)
        return self.config.num_query_tokens if side == "query" else self.config.num_document_tokens

    @property
    def output_dim(self) -> int:
        return self.config.projection_dim or self.config.width

    def side_meta_tokens(self, side: Side) -> torch.Tensor:
        n_query = self.config.num_query_tokens
        return self.meta_tokens[:n_query] if side == "query" else self.meta_tokens[n_query:]  # (n, W)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor, side: Side) -> torch.Tensor:
        check_side(side)
        batch, length, _ = hidden_states.shape
        if length > self.config.max_positions:
            raise ValueError(
                f"{length} input rows exceed the fusion head's max_positions={self.config.max_positions}: "
                "shorten the input (fewer images or max_text_tokens)"
            )
        real = attention_mask.to(device=hidden_states.device, dtype=torch.bool)  # (B, L)
        # Rows are left-padded: each row's first real entry is position 0.
        positions = (real.long().cumsum(dim=1) - 1).clamp(min=0)  # (B, L)
        rows = self.input_norm(self.input_projection(hidden_states)) + self.positions(positions)  # (B, L, W)
        meta = self.side_meta_tokens(side).to(rows.dtype).expand(batch, -1, -1)  # (B, n, W)
        states = torch.cat([rows, meta], dim=1)  # (B, L + n, W)
        ignore = torch.cat([~real, real.new_zeros((batch, meta.shape[1]))], dim=1)  # (B, L + n): True = padding
        states = self.layers(states, src_key_padding_mask=ignore)  # (B, L + n, W)
        vectors = self.output_norm(states[:, length:])  # (B, n, W)
        if self.projection is not None:
            vectors = self.projection(vectors)  # (B, n, dim)
        if self.pooled_projection is not None:
            scores = self.pool_scores(hidden_states).squeeze(-1).masked_fill(~real, float("-inf"))  # (B, L)
            weights = scores.softmax(dim=1).unsqueeze(-1)  # (B, L, 1), zero on padding
            pooled = (hidden_states * weights).sum(1)  # (B, H)
            vectors = vectors + self.pooled_projection(pooled).unsqueeze(1)  # (B, n, dim)
        return project_and_normalize(vectors, None, self.config.normalize)  # (B, n, dim)
