"""Heads for the unified Think-Then-Embed model: the backbone stays frozen (it also reasons), only the head trains.

Both heads read one entry of the backbone's ``hidden_states`` (see :attr:`Head.source_layer`) and never append
anything to the backbone's input, so the backbone's computation is exactly the one generation uses.

- ``attention_pooler``: learned query vectors per side cross-attend to the hidden states.
- ``self_attention``: a few decoder layers (initialised from the backbone's last layers) run over the hidden
  states of an intermediate layer with the side's meta tokens appended; the meta tokens' outputs are the vectors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mmcascade.embedder.heads.base import Head, Side, check_side, project_and_normalize, register_head


def _check_positive(config: Any, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1; got {value}")


def _check_source_layer(source_layer: int, num_backbone_layers: int | None) -> None:
    if isinstance(source_layer, bool) or not isinstance(source_layer, int):
        raise ValueError(f"source_layer must be an int; got {source_layer!r}")
    if num_backbone_layers is not None and not -(num_backbone_layers + 1) <= source_layer <= num_backbone_layers:
        raise ValueError(
            f"source_layer={source_layer} is out of range for a backbone with {num_backbone_layers} layers: "
            f"valid values are {-(num_backbone_layers + 1)}..{num_backbone_layers} "
            "(0 = embeddings, -1 = after the final norm)"
        )


class _SideQueries(nn.Module):
    """One learned ``(n, H)`` block per side: rows ``[:Nq]`` for queries, ``[Nq:]`` for documents."""

    def __init__(self, hidden_size: int, num_query_tokens: int, num_document_tokens: int, init_std: float):
        super().__init__()
        self.num_query_tokens = num_query_tokens
        n_tokens = num_query_tokens + num_document_tokens
        self.embeddings = nn.Parameter(torch.randn(n_tokens, hidden_size) * init_std)  # (Nq + Nd, H)

    def forward(self, side: Side) -> torch.Tensor:
        check_side(side)
        n_query = self.num_query_tokens
        return self.embeddings[:n_query] if side == "query" else self.embeddings[n_query:]  # (n, H)


# ---------------------------------------------------------------------------------------------- attention pooler
@dataclass
class AttentionPoolerConfig:
    """Learned queries (``num_query_tokens`` / ``num_document_tokens`` per side) cross-attend to ``source_layer``."""

    hidden_size: int
    num_query_tokens: int = 16
    num_document_tokens: int = 64
    num_heads: int = 8
    source_layer: int = -1
    projection_dim: int | None = None
    normalize: bool = True
    init_std: float = 0.02

    def __post_init__(self) -> None:
        _check_positive(self, "hidden_size", "num_query_tokens", "num_document_tokens", "num_heads", "projection_dim")
        _check_source_layer(self.source_layer, None)
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")


@register_head
class AttentionPoolerHead(Head):
    """Multi-vector attention pooling: ``(B, L, H)`` -> ``(B, n_side, dim)``."""

    head_type = "attention_pooler"
    config_class = AttentionPoolerConfig

    def __init__(self, config: AttentionPoolerConfig):
        super().__init__(config)
        self.queries = _SideQueries(
            config.hidden_size, config.num_query_tokens, config.num_document_tokens, config.init_std
        )
        self.attention = nn.MultiheadAttention(config.hidden_size, config.num_heads, batch_first=True)
        dim = config.projection_dim
        self.projection = nn.Linear(config.hidden_size, dim) if dim else None

    @property
    def source_layer(self) -> int:
        return self.config.source_layer

    def num_vectors(self, side: Side) -> int:
        check_side(side)
        return self.config.num_query_tokens if side == "query" else self.config.num_document_tokens

    @property
    def output_dim(self) -> int:
        return self.config.projection_dim or self.config.hidden_size

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor, side: Side) -> torch.Tensor:
        batch = hidden_states.shape[0]
        queries = self.queries(side).to(hidden_states.dtype).expand(batch, -1, -1)  # (B, n, H)
        padding = ~attention_mask.to(torch.bool)  # (B, L): True = ignore
        pooled, _ = self.attention(
            queries, hidden_states, hidden_states, key_padding_mask=padding, need_weights=False
        )  # (B, n, H)
        return project_and_normalize(pooled, self.projection, self.config.normalize)  # (B, n, dim)


# ---------------------------------------------------------------------------------------------- self-attention head
@dataclass
class SelfAttentionHeadConfig:
    """``num_layers`` decoder layers over the hidden states of ``source_layer`` plus the side's meta tokens.

    The decoder shape (``num_heads`` ... ``qk_norm``) must match the backbone's for ``init_from_backbone``;
    ``Embedder.from_pretrained(head="self_attention")`` fills it from the backbone. Left as None, it defaults
    to a standalone shape (64-wide heads, no GQA, 4x MLP).
    """

    hidden_size: int
    num_layers: int = 2
    source_layer: int = -8
    num_query_tokens: int = 16
    num_document_tokens: int = 64
    causal: bool = False
    projection_dim: int | None = None
    normalize: bool = True
    init_std: float = 0.02
    # Copy the backbone's last num_layers layers and final norm into the head when it is first built.
    init_from_backbone: bool = True
    num_backbone_layers: int | None = None  # checks source_layer and num_layers when known
    num_heads: int | None = None
    num_kv_heads: int | None = None
    head_dim: int | None = None
    intermediate_size: int | None = None
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1e6
    attention_bias: bool = True
    qk_norm: bool = False

    def __post_init__(self) -> None:
        _check_positive(
            self,
            "hidden_size",
            "num_layers",
            "num_query_tokens",
            "num_document_tokens",
            "projection_dim",
            "num_backbone_layers",
            "num_heads",
            "num_kv_heads",
            "head_dim",
            "intermediate_size",
        )
        _check_source_layer(self.source_layer, self.num_backbone_layers)
        if self.num_backbone_layers is not None and self.num_layers > self.num_backbone_layers:
            raise ValueError(
                f"num_layers={self.num_layers} is larger than the backbone's {self.num_backbone_layers} layers"
            )
        if self.num_heads is None:
            self.num_heads = max(1, self.hidden_size // 64)
        if self.head_dim is None:
            if self.hidden_size % self.num_heads:
                raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
            self.head_dim = self.hidden_size // self.num_heads
        if self.num_kv_heads is None:
            self.num_kv_heads = self.num_heads
        if self.intermediate_size is None:
            self.intermediate_size = 4 * self.hidden_size
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for RoPE; got {self.head_dim}")


class RMSNorm(nn.Module):
    """Root-mean-square norm, computed in float32 like the Qwen models it loads weights from."""

    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        input_dtype = states.dtype
        states = states.float()
        states = states * torch.rsqrt(states.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * states.to(input_dtype)


def _rotate_half(states: torch.Tensor) -> torch.Tensor:
    first, second = states.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


class SelfAttention(nn.Module):
    """Grouped-query attention with RoPE; parameter names match a Qwen2/Qwen3 decoder layer's ``self_attn``."""

    def __init__(self, config: SelfAttentionHeadConfig):
        super().__init__()
        hidden, heads, kv_heads, head_dim = config.hidden_size, config.num_heads, config.num_kv_heads, config.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.q_proj = nn.Linear(hidden, heads * head_dim, bias=config.attention_bias)
        self.k_proj = nn.Linear(hidden, kv_heads * head_dim, bias=config.attention_bias)
        self.v_proj = nn.Linear(hidden, kv_heads * head_dim, bias=config.attention_bias)
        self.o_proj = nn.Linear(heads * head_dim, hidden, bias=False)
        if config.qk_norm:
            self.q_norm = RMSNorm(head_dim, config.rms_norm_eps)
            self.k_norm = RMSNorm(head_dim, config.rms_norm_eps)
        else:
            self.q_norm = self.k_norm = None

    def forward(
        self, states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, allowed: torch.Tensor
    ) -> torch.Tensor:
        batch, length, _ = states.shape
        query = self.q_proj(states).view(batch, length, self.num_heads, self.head_dim)  # (B, L, heads, d)
        key = self.k_proj(states).view(batch, length, self.num_kv_heads, self.head_dim)  # (B, L, kv, d)
        value = self.v_proj(states).view(batch, length, self.num_kv_heads, self.head_dim)  # (B, L, kv, d)
        if self.q_norm is not None:
            query, key = self.q_norm(query), self.k_norm(key)
        query, key, value = query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)  # (B, *, L, d)
        query = query * cos + _rotate_half(query) * sin
        key = key * cos + _rotate_half(key) * sin
        groups = self.num_heads // self.num_kv_heads
        key = key.repeat_interleave(groups, dim=1)  # (B, heads, L, d): kv head j serves query heads j*g..j*g+g-1
        value = value.repeat_interleave(groups, dim=1)  # (B, heads, L, d)
        attended = F.scaled_dot_product_attention(
            query, key, value, attn_mask=allowed, scale=self.head_dim**-0.5
        )  # (B, heads, L, d)
        attended = attended.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim)  # (B, L, heads*d)
        return self.o_proj(attended)  # (B, L, H)


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))``; parameter names match a Qwen decoder layer's ``mlp``."""

    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(states)) * self.up_proj(states))


class DecoderLayer(nn.Module):
    """Pre-norm decoder layer; ``load_state_dict`` of a Qwen2-style decoder layer fits it exactly."""

    def __init__(self, config: SelfAttentionHeadConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = SelfAttention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = SwiGLU(config.hidden_size, config.intermediate_size)

    def forward(
        self, states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, allowed: torch.Tensor
    ) -> torch.Tensor:
        states = states + self.self_attn(self.input_layernorm(states), cos, sin, allowed)  # (B, L, H)
        return states + self.mlp(self.post_attention_layernorm(states))  # (B, L, H)


@register_head
class SelfAttentionHead(Head):
    """The unified model's head: decoder layers over an intermediate layer's states plus meta tokens.

    The meta tokens are appended to the *head's* input, not the backbone's, so the frozen backbone computes
    exactly what it computes when reasoning. Positions use 1-D RoPE counted from each row's first real token,
    which is what the backbone's m-RoPE gives text (its three position axes coincide there).
    """

    head_type = "self_attention"
    config_class = SelfAttentionHeadConfig

    def __init__(self, config: SelfAttentionHeadConfig):
        super().__init__(config)
        self.meta_tokens = _SideQueries(
            config.hidden_size, config.num_query_tokens, config.num_document_tokens, config.init_std
        )
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        dim = config.projection_dim
        self.projection = nn.Linear(config.hidden_size, dim) if dim else None
        exponents = torch.arange(0, config.head_dim, 2, dtype=torch.float32) / config.head_dim
        self.register_buffer("inv_freq", 1.0 / (config.rope_theta**exponents), persistent=False)  # (d/2,)

    @property
    def source_layer(self) -> int:
        return self.config.source_layer

    @classmethod
    def options_from_backbone(cls, backbone: Any) -> dict[str, Any]:
        decoder = backbone.text_decoder()
        return {
            "num_backbone_layers": len(decoder.layers),
            "num_heads": decoder.num_heads,
            "num_kv_heads": decoder.num_kv_heads,
            "head_dim": decoder.head_dim,
            "intermediate_size": decoder.intermediate_size,
            "rms_norm_eps": decoder.rms_norm_eps,
            "rope_theta": decoder.rope_theta,
            "attention_bias": decoder.attention_bias,
            "qk_norm": decoder.qk_norm,
        }

    def initialise_from_backbone(self, backbone: Any) -> None:
        """Copy the backbone's last ``num_layers`` decoder layers and its final norm: head layer ``i`` gets
        backbone layer ``n - num_layers + i``."""
        decoder = backbone.text_decoder()
        n_backbone, n_head = len(decoder.layers), self.config.num_layers
        if n_head > n_backbone:
            raise ValueError(f"num_layers={n_head} is larger than the backbone's {n_backbone} layers")
        if self.config.hidden_size != backbone.hidden_size:
            raise ValueError(
                f"head hidden_size {self.config.hidden_size} does not match the backbone's {backbone.hidden_size}"
            )
        wanted = self.options_from_backbone(backbone)
        wanted.pop("num_backbone_layers")
        mismatched = {
            name: (getattr(self.config, name), value)
            for name, value in wanted.items()
            if getattr(self.config, name) != value
        }
        if mismatched:
            raise ValueError(
                f"the head's decoder shape differs from the backbone's (head, backbone): {mismatched}; build the "
                "head with SelfAttentionHead.options_from_backbone(backbone) or Embedder.from_pretrained"
            )
        with torch.no_grad():
            for head_layer, backbone_layer in zip(self.layers, decoder.layers[n_backbone - n_head :], strict=True):
                head_layer.load_state_dict(backbone_layer.state_dict(), strict=True)
            self.norm.load_state_dict(decoder.final_norm.state_dict(), strict=True)

    def num_vectors(self, side: Side) -> int:
        check_side(side)
        return self.config.num_query_tokens if side == "query" else self.config.num_document_tokens

    @property
    def output_dim(self) -> int:
        return self.config.projection_dim or self.config.hidden_size

    def encode_states(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor, side: Side | None
    ) -> torch.Tensor:
        """The head's final-norm outputs ``(B, L + n_side, H)`` (``(B, L, H)`` with ``side=None``: no meta tokens).

        With ``side=None``, ``causal=True`` and layers copied from the backbone, the outputs equal the
        backbone's last hidden state when ``source_layer = -(num_layers + 1)``.
        """
        batch = hidden_states.shape[0]
        real = attention_mask.to(device=hidden_states.device, dtype=torch.bool)  # (B, L)
        if side is not None:
            meta = self.meta_tokens(side).to(hidden_states.dtype)  # (n, H)
            hidden_states = torch.cat([hidden_states, meta.expand(batch, -1, -1)], dim=1)  # (B, L + n, H)
            real = torch.cat([real, real.new_ones((batch, meta.shape[0]))], dim=1)  # (B, L + n)
        length = hidden_states.shape[1]
        # Rows are left-padded: each row's first real token is position 0, as in the backbone.
        positions = (real.long().cumsum(dim=1) - 1).clamp(min=0)  # (B, L')
        angles = positions[..., None].float() * self.inv_freq  # (B, L', d/2)
        angles = torch.cat([angles, angles], dim=-1)[:, None]  # (B, 1, L', d)
        cos, sin = angles.cos().to(hidden_states.dtype), angles.sin().to(hidden_states.dtype)
        allowed = real[:, None, None, :]  # (B, 1, 1, L'): keys that are real tokens
        if self.config.causal:
            allowed = allowed & torch.ones(length, length, dtype=torch.bool, device=real.device).tril()
        # A padding row would attend to nothing (NaN); letting every position see itself keeps it finite and
        # changes no real row, which already sees itself.
        allowed = allowed | torch.eye(length, dtype=torch.bool, device=real.device)  # (B, 1, L', L')
        states = hidden_states
        for layer in self.layers:
            states = layer(states, cos, sin, allowed)  # (B, L', H)
        return self.norm(states)  # (B, L', H)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor, side: Side) -> torch.Tensor:
        check_side(side)
        states = self.encode_states(hidden_states, attention_mask, side)[:, -self.num_vectors(side) :]  # (B, n, H)
        return project_and_normalize(states, self.projection, self.config.normalize)  # (B, n, dim)
