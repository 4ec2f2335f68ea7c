"""HTTP servers (the ``server`` extra: ``pip install 'mmcascade[server]'``), one package per service.

:mod:`mmcascade.server.reasoner` serves any :class:`~mmcascade.reasoner.base.Reasoner` as an
OpenAI-compatible chat-completion endpoint, batching concurrent requests into one model call.
Importing this package does not import FastAPI; importing ``mmcascade.server.reasoner`` does, and
``mmcascade.server.create_reasoner_app`` imports it on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["create_reasoner_app"]

#: public names served from a sub-package that needs the ``server`` extra, imported on first access
_LAZY = {"create_reasoner_app": "mmcascade.server.reasoner"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
