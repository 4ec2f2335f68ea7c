"""Persistent multi-vector indexes: one protocol, three backends (exact, qdrant-edge, qdrant)."""

from mmcascade.index.backends import DEFAULT_BACKEND, backend_names, get_backend
from mmcascade.index.base import IndexBackend, SearchHit, StoreSpec
from mmcascade.index.index import BuildReport, Index, delete_index, list_indexes
from mmcascade.index.manifest import IndexManifest, default_data_dir

__all__ = [
    "DEFAULT_BACKEND",
    "BuildReport",
    "Index",
    "IndexBackend",
    "IndexManifest",
    "SearchHit",
    "StoreSpec",
    "backend_names",
    "default_data_dir",
    "delete_index",
    "get_backend",
    "list_indexes",
]
