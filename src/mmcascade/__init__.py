"""mmcascade: reasoning-augmented multimodal retrieval.

The package imports lazily: ``import mmcascade`` does not import torch or transformers until a
name that needs them is touched (``mmcascade.Embedder``, ``mmcascade.scoring`` ...).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "Embedder": "mmcascade.embedder",
    "Index": "mmcascade.search",
    "Item": "mmcascade.data.items",
    "load_backbone": "mmcascade.backbones",
}

if TYPE_CHECKING:
    from mmcascade.backbones import load_backbone
    from mmcascade.data.items import Item
    from mmcascade.embedder import Embedder
    from mmcascade.search import Index

__all__ = ["Embedder", "Index", "Item", "__version__", "load_backbone"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mmcascade' has no attribute {name!r}")
