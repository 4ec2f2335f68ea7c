"""Build a reranker from what a user names on the command line or in a config."""

from __future__ import annotations

import os
from typing import Any

from mmcascade.reasoner.pipeline import TraceStore
from mmcascade.rerank.base import Reranker
from mmcascade.rerank.prompts import load_rerank_template


def make_reranker(
    model: str | os.PathLike | None,
    *,
    url: str | None = None,
    template: str | os.PathLike | None = None,
    cache: TraceStore | None = None,
    **options: Any,
) -> Reranker:
    """``url`` given: an OpenAI-compatible server serving ``model`` (logprobs); else a local generative model
    (a folder, Hub id, or ``starter`` for the starter reasoner). ``options`` go to the judge."""
    if not model:
        raise ValueError("reranking needs a model: pass --reranker (a generative VLM folder, Hub id or 'starter')")
    if url:
        from mmcascade.rerank.remote import OpenAIJudge

        judge = OpenAIJudge(url, os.fspath(model), **options)
    else:
        from mmcascade.rerank.local import LocalJudge

        judge = LocalJudge.from_pretrained(model, **options)
    return Reranker(judge, template=load_rerank_template(template), cache=cache)
