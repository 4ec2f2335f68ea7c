"""HTTP servers (the ``server`` extra: ``pip install 'mmcascade[server]'``).

``reasoner_app.create_reasoner_app`` serves any :class:`~mmcascade.reasoner.base.Reasoner` as an
OpenAI-compatible chat-completion endpoint, batching concurrent requests into one model call.
Importing this package does not import FastAPI; importing ``mmcascade.server.reasoner_app`` does.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_reasoner_app"]


def __getattr__(name: str) -> Any:
    if name == "create_reasoner_app":
        from mmcascade.server.reasoner_app import create_reasoner_app

        return create_reasoner_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
