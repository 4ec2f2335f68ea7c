"""Embedder: backbone + head, with query/document encoding and similarity."""

from mmcascade.embedder.embedder import Embedder, EmbedderConfig

__all__ = ["Embedder", "EmbedderConfig"]
