"""Heads: hidden states -> vectors. Each saves its own config (JSON) and weights (safetensors)."""

from mmcascade.embedder.heads.base import Head, Side, build_head, load_head, register_head
from mmcascade.embedder.heads.fusion import FusionHead, FusionHeadConfig
from mmcascade.embedder.heads.meta_tokens import MetaTokenConfig, MetaTokenHead
from mmcascade.embedder.heads.pooling import LastTokenPooling, MeanPooling, PoolingConfig
from mmcascade.embedder.heads.unified import (
    AttentionPoolerConfig,
    AttentionPoolerHead,
    SelfAttentionHead,
    SelfAttentionHeadConfig,
)

__all__ = [
    "AttentionPoolerConfig",
    "AttentionPoolerHead",
    "FusionHead",
    "FusionHeadConfig",
    "Head",
    "LastTokenPooling",
    "MeanPooling",
    "MetaTokenConfig",
    "MetaTokenHead",
    "PoolingConfig",
    "SelfAttentionHead",
    "SelfAttentionHeadConfig",
    "Side",
    "build_head",
    "load_head",
    "register_head",
]
