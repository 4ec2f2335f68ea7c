"""Backend names -> classes, imported on first use (qdrant packages load only when asked for)."""

from __future__ import annotations

import importlib

from mmcascade.index.base import IndexBackend

DEFAULT_BACKEND = "qdrant-edge"

_BACKENDS = {
    "exact": ("mmcascade.index.exact", "ExactBackend", None),
    "qdrant-edge": ("mmcascade.index.qdrant_edge", "QdrantEdgeBackend", "qdrant-edge-py==0.9.0"),
    "qdrant": ("mmcascade.index.qdrant_server", "QdrantServerBackend", "mmcascade[qdrant]"),
}


def backend_names() -> list[str]:
    return list(_BACKENDS)


def get_backend(name: str) -> type[IndexBackend]:
    """The backend class called ``name`` (``exact``, ``qdrant-edge`` or ``qdrant``)."""
    if name not in _BACKENDS:
        raise ValueError(f"unknown index backend {name!r}; choose one of {', '.join(_BACKENDS)}")
    module_name, class_name, requirement = _BACKENDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if requirement is None or not (error.name or "").startswith("qdrant"):
            raise
        raise ValueError(f"the {name!r} backend needs {error.name}: pip install '{requirement}'") from error
    return getattr(module, class_name)
