"""Options several commands share (declared once), and what they turn into: a Budget, a default reasoner.

``search`` and ``eval`` take the same reasoning and reranking options; ``index`` commands, ``search``
and ``demo`` the same ``--data-dir``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmcascade.budget import MAX_TOKEN_BUDGET, Budget
from mmcascade.models import companion_reasoner

DataDir = Annotated[
    Path | None,
    typer.Option(help="Where indexes live (default: $MMCASCADE_DATA_DIR, else indexes/ in the mmcascade cache)."),
]
Think = Annotated[
    bool, typer.Option("--think", help="Think-Then-Embed: a reasoner writes a trace the query is embedded with.")
]
Reasoner = Annotated[
    str | None,
    typer.Option(help="Reasoner: a local VLM folder / Hub id, or the served model with --reasoner-url."),
]
ReasonerUrl = Annotated[str | None, typer.Option(help="OpenAI-compatible server, e.g. http://localhost:8000/v1.")]
ThinkTokens = Annotated[
    int | None,
    typer.Option(
        min=0,
        max=MAX_TOKEN_BUDGET,
        help="Reasoning token budget: of the query reasoner with --think (default 256) and of the reranker per "
        "candidate with --rerank (default 0: judge without reasoning).",
    ),
]
Rerank = Annotated[
    int, typer.Option(min=0, help="Rerank the first K candidates with a reasoning reranker (the cascade); 0: off.")
]
Reranker = Annotated[
    str | None,
    typer.Option(help="Reranker: a generative VLM folder / Hub id, 'starter' (the default for the starter embedder)."),
]
RerankerUrl = Annotated[str | None, typer.Option(help="OpenAI-compatible server serving --reranker (logprobs needed).")]


def reasoning_budget(think: bool, think_tokens: int | None, **knobs: int | None) -> Budget:
    """The Budget of the shared options: ``--think-tokens`` is the trace budget of the query reasoner with
    ``--think`` (default :data:`~mmcascade.budget.DEFAULT_TRACE_TOKENS`) and the reranker's budget per pair
    (default 0). Checked here, so an error names the option the user typed rather than a Budget field."""
    if think and think_tokens == 0:
        raise ValueError("--think-tokens 0 leaves the query reasoner of --think nothing to reason with; pass 1 or more")
    tokens: dict[str, int] = {}
    if think_tokens is not None:
        tokens["think_tokens"] = think_tokens
        if think:
            tokens["trace_tokens"] = think_tokens
    return Budget(**tokens, **knobs)


def generative_model(given: str | None, embedder: str, option: str, model_option: str) -> str:
    """The reasoner / reranker to use: the one the user named, else the embedder's companion (the starter
    reasoner for the starter embedder); anything else has no default and is an error naming both options."""
    chosen = given or companion_reasoner(embedder)
    if chosen is None:
        raise ValueError(
            f"{option} needs {model_option}: the embedder {embedder!r} has no default reasoner; pass a generative "
            "VLM folder or Hub id (or a served model with the matching --...-url option)"
        )
    return chosen
