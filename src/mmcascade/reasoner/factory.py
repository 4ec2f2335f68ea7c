"""Build a reasoner from what a user names on the command line or in a config."""

from __future__ import annotations

from typing import Any

from mmcascade.reasoner.base import Reasoner


def make_reasoner(model: str | None = None, *, url: str | None = None, **options: Any) -> Reasoner:
    """``url`` given: an OpenAI-compatible server serving ``model``; else a local VLM folder / Hub id ``model``."""
    if url:
        if not model:
            raise ValueError("--reasoner-url needs --reasoner: the model name the server serves")
        from mmcascade.reasoner.remote import OpenAIReasoner

        return OpenAIReasoner(url, model, **options)
    if not model:
        raise ValueError("thinking needs a reasoner: pass --reasoner (a local VLM folder or Hub id) or --reasoner-url")
    from mmcascade.reasoner.local import load_reasoner

    return load_reasoner(model, **options)
