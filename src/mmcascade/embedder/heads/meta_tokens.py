"""MetaEmbed's meta-token head: learned tokens appended to the input; their last-layer states are the vectors."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmcascade.embedder.heads.base import Head, Side, check_side, project_and_normalize, register_head

LAYOUTS = ("joint", "separate")


@dataclass
class MetaTokenConfig:
    """``layout="joint"`` (MetaEmbed's code): both blocks [query tokens; document tokens] follow every input,
    a query reads its block's states, a document the final block's. ``"separate"``: each side gets only its
    own block. With causal attention, joint query vectors never see the document block, while document
    vectors see the query block before them."""

    hidden_size: int
    num_query_tokens: int = 16
    num_document_tokens: int = 64
    layout: str = "joint"
    projection_dim: int | None = None
    normalize: bool = True
    init_std: float = 0.02
    # Start every meta token at this vocabulary token's embedding (plus init_std noise), e.g. "[MASK]" for a
    # BERT-style backbone, whose mask tokens already gather context; None: pure noise.
    init_token: str | None = None

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}; got {self.layout!r}")
        for name in ("hidden_size", "num_query_tokens", "num_document_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        if self.projection_dim is not None and self.projection_dim < 1:
            raise ValueError(f"projection_dim must be >= 1 or None; got {self.projection_dim}")


@register_head
class MetaTokenHead(Head):
    head_type = "meta_tokens"
    config_class = MetaTokenConfig

    def __init__(self, config: MetaTokenConfig):
        super().__init__(config)
        n_tokens = config.num_query_tokens + config.num_document_tokens
        self.meta_embeddings = nn.Parameter(torch.randn(n_tokens, config.hidden_size) * config.init_std)
        dim = config.projection_dim
        self.projection = nn.Linear(config.hidden_size, dim) if dim else None

    def num_vectors(self, side: Side) -> int:
        check_side(side)
        return self.config.num_query_tokens if side == "query" else self.config.num_document_tokens

    def initialise_from(self, token_embedding: torch.Tensor) -> None:
        """Centre every meta token on ``token_embedding (H,)``, keeping the random offsets that tell them apart."""
        with torch.no_grad():
            self.meta_embeddings.add_(token_embedding.to(self.meta_embeddings.dtype))

    @property
    def output_dim(self) -> int:
        return self.config.projection_dim or self.config.hidden_size

    def appended_embeddings(self, side: Side) -> torch.Tensor:
        check_side(side)
        n_query = self.config.num_query_tokens
        if self.config.layout == "joint":
            return self.meta_embeddings  # (Nq + Nd, H): [query block; document block]
        return self.meta_embeddings[:n_query] if side == "query" else self.meta_embeddings[n_query:]

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor, side: Side) -> torch.Tensor:
        check_side(side)
        n_query, n_document = self.config.num_query_tokens, self.config.num_document_tokens
        if self.config.layout == "joint" and side == "query":
            states = hidden_states[:, -(n_query + n_document) : -n_document]  # (B, Nq, H)
        else:
            states = hidden_states[:, -self.num_vectors(side) :]  # (B, n, H)
        return project_and_normalize(states, self.projection, self.config.normalize)  # (B, n, dim)
