"""Storage for multi-vector documents: one backend protocol, three backends (exact, qdrant-edge, qdrant),
the manifest of what built an index, and the folder layout with its write lock.

The model-aware :class:`~mmcascade.search.Index` lives in :mod:`mmcascade.search`; ``mmcascade.index.Index``
and ``BuildReport`` still resolve to it for one release.
"""

from __future__ import annotations

import importlib
from typing import Any

from mmcascade.index.backends import DEFAULT_BACKEND, backend_names, get_backend
from mmcascade.index.base import IndexBackend, SearchHit, StoreSpec
from mmcascade.index.folders import default_data_dir, delete_index, index_folder, list_indexes
from mmcascade.index.manifest import IndexManifest

_MOVED_TO_SEARCH = ("BuildReport", "Index")

__all__ = [
    "DEFAULT_BACKEND",
    "IndexBackend",
    "IndexManifest",
    "SearchHit",
    "StoreSpec",
    "backend_names",
    "default_data_dir",
    "delete_index",
    "get_backend",
    "index_folder",
    "list_indexes",
]


def __getattr__(name: str) -> Any:
    """``Index`` and ``BuildReport`` moved to :mod:`mmcascade.search` (an alias for one release)."""
    if name in _MOVED_TO_SEARCH:
        return getattr(importlib.import_module("mmcascade.search"), name)
    raise AttributeError(f"module 'mmcascade.index' has no attribute {name!r}")
