"""``mmcascade search NAME``: query an index by text, image or both."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mmcascade.budget import Budget
from mmcascade.cli import options
from mmcascade.cli.errors import exit_on_user_error
from mmcascade.data.items import load_image
from mmcascade.index import SearchHit
from mmcascade.reasoner import GenerationSettings, TraceCache, default_trace_cache_path, reason
from mmcascade.reasoner.factory import make_reasoner
from mmcascade.rerank.factory import make_reranker
from mmcascade.search import Cascade, CascadeHit, Index

app = typer.Typer()


@app.command()
def search(
    name: str = typer.Argument(..., help="Index name."),
    text: str = typer.Option(None, help="Query text."),
    image: Path = typer.Option(None, help="Query image file."),
    instruction: str = typer.Option(None, help="Query instruction (default: the one stored in the index)."),
    top_k: int = typer.Option(10, "--top-k", "-k", min=1, help="Results to return."),
    query_budget: int = typer.Option(None, min=1, help="Query vectors to score with (default: all)."),
    as_json: bool = typer.Option(
        False,
        "--json",
        help='Print a JSON list of {"id", "score", "rank", "payload"}; with --rerank also "retrieval_rank", '
        '"rerank_score" (P(yes)) and "reasoning", and "warning" on a hit that could not be reranked.',
    ),
    model: str = typer.Option(None, help="Refuse to search unless the index was built with this model."),
    data_dir: options.DataDir = None,
    think: options.Think = False,
    reasoner: options.Reasoner = None,
    reasoner_url: options.ReasonerUrl = None,
    think_tokens: options.ThinkTokens = None,
    task: str = typer.Option("retrieval", help="Prompt kind: retrieval, classification, vqa, grounding, document."),
    rerank: options.Rerank = 0,
    retrieve_k: int = typer.Option(None, min=1, help="Hits retrieved before reranking (default: max(top-k, rerank))."),
    reranker: options.Reranker = None,
    reranker_url: options.RerankerUrl = None,
) -> None:
    """Search index NAME by text, image, or both; --rerank k reranks the top k with a reasoning reranker."""
    with exit_on_user_error():
        run_search(
            name,
            text=text,
            image=image,
            instruction=instruction,
            top_k=top_k,
            query_budget=query_budget,
            as_json=as_json,
            model=model,
            data_dir=data_dir,
            think=think,
            reasoner=reasoner,
            reasoner_url=reasoner_url,
            think_tokens=think_tokens,
            task=task,
            rerank=rerank,
            retrieve_k=retrieve_k,
            reranker=reranker,
            reranker_url=reranker_url,
        )


def run_search(
    name: str,
    *,
    text: str | None,
    image: Path | None,
    instruction: str | None,
    top_k: int,
    query_budget: int | None,
    as_json: bool,
    model: str | None = None,
    data_dir: str | os.PathLike | None = None,
    think: bool = False,
    reasoner: str | None = None,
    reasoner_url: str | None = None,
    think_tokens: int | None = None,
    task: str = "retrieval",
    rerank: int = 0,
    retrieve_k: int | None = None,
    reranker: str | None = None,
    reranker_url: str | None = None,
) -> list[CascadeHit]:
    """Search index ``name``; with ``rerank`` > 0 the first ``rerank`` hits are reranked (the cascade).

    ``think_tokens`` is the reasoning budget of whichever model reasons: the query reasoner (``think``,
    default 256) and the reranker (default 0: it judges without reasoning).
    """
    query = make_query(text, image)
    trace = None
    with contextlib.ExitStack() as stack:
        index = stack.enter_context(Index.open(name, model=model, data_dir=data_dir))
        budget = search_budget(index, top_k, query_budget, rerank, retrieve_k, think, think_tokens)
        judge = None
        if rerank:
            cache = stack.enter_context(TraceCache(default_trace_cache_path()))
            judge_name = options.generative_model(reranker, index.manifest.model, "--rerank", "--reranker")
            judge = make_reranker(judge_name, url=reranker_url, cache=cache)
        if think:
            trace = think_about(
                query,
                index.manifest.query_instruction,
                instruction,
                options.generative_model(reasoner, index.manifest.model, "--think", "--reasoner"),
                reasoner_url,
                budget.trace_tokens,
                task,
            )
        ranked = Cascade(index, judge).search(query, budget, instruction=instruction, trace=trace)
    print_warnings(ranked)
    hits = ranked[:top_k]
    if as_json:
        print(json.dumps(hits_as_json(hits), indent=2))
    else:
        Console().print(hits_table(hits, title=f"{name}: {describe_query(text, image)}"))
    return hits


def search_budget(
    index: Index,
    top_k: int,
    query_budget: int | None,
    rerank: int,
    retrieve_k: int | None,
    think: bool,
    think_tokens: int | None,
) -> Budget:
    """The CLI's budget: K defaults to max(top-k, rerank), capped at the index size (an explicit K is not capped).

    Errors name the options the user typed."""
    available = index.manifest.query_vectors
    if query_budget is not None and not 1 <= query_budget <= available:
        raise ValueError(
            f"--query-budget {query_budget} is out of range: index {index.name!r} was built with a model that "
            f"makes {available} query vector(s); pass 1..{available}, or leave it out to use all"
        )
    if retrieve_k is not None and rerank > retrieve_k:
        raise ValueError(
            f"--rerank {rerank} is larger than --retrieve-k {retrieve_k}: the reranker can only rerank what "
            "retrieval returns; raise --retrieve-k or lower --rerank"
        )
    count = index.count()
    if rerank > count:
        raise ValueError(f"--rerank {rerank} is larger than index {index.name!r}, which holds {count} document(s)")
    return options.reasoning_budget(
        think,
        think_tokens,
        query_vectors=query_budget,
        retrieve_k=retrieve_k if retrieve_k is not None else max(1, min(max(top_k, rerank), count)),
        rerank_k=rerank,
    )


def think_about(
    query: dict,
    stored_instruction: str | None,
    instruction: str | None,
    reasoner: str | None,
    reasoner_url: str | None,
    think_tokens: int,
    task: str,
):
    """The query's reasoning trace (cached in the trace cache); printed to stderr."""
    settings = GenerationSettings(max_new_tokens=think_tokens)
    model = make_reasoner(reasoner, url=reasoner_url)
    item = {**query, "instruction": instruction or stored_instruction} if (instruction or stored_instruction) else query
    with TraceCache(default_trace_cache_path()) as cache:
        (trace,) = reason(model, [item], task=task, settings=settings, cache=cache)
    console = Console(stderr=True)
    console.print(f"[bold]reasoning[/] ({model.model_id}): {escape(trace.answer or trace.think)}")
    if trace.problem:
        console.print(f"[yellow]trace: {escape(trace.problem)}[/]")
    return trace


def make_query(text: str | None, image: Path | None) -> dict:
    """A query item from the CLI options; an empty query is an error, a missing image names the file."""
    if (text is None or not text.strip()) and image is None:
        raise ValueError("empty query: pass --text, --image, or both")
    query: dict = {}
    if text is not None and text.strip():
        query["text"] = text
    if image is not None:
        query["image"] = load_image(image)  # a missing or corrupt file fails here, with its name
    return query


def print_warnings(hits: Sequence[CascadeHit]) -> None:
    """One stderr line per hit the cascade could not rerank (e.g. its image file moved since indexing)."""
    console = Console(stderr=True)
    for hit in hits:
        if hit.warning:
            console.print(f"[yellow]warning: {escape(hit.warning)}[/]", highlight=False)


def hits_as_json(hits: Sequence[CascadeHit | SearchHit]) -> list[dict]:
    """``{"id", "score", "rank", "payload"}`` per hit; reranked searches add ``retrieval_rank``,
    ``rerank_score`` (P(yes), null for hits past the rerank depth or not reranked) and ``reasoning``, and a
    hit that could not be reranked has a ``warning``."""
    rows = []
    for rank, hit in enumerate(hits, 1):
        if isinstance(hit, CascadeHit):
            row = {"id": hit.id, "score": hit.retrieval_score, "rank": rank, "payload": dict(hit.payload)}
            if any(isinstance(other, CascadeHit) and other.reranked for other in hits):
                row |= {
                    "retrieval_rank": hit.retrieval_rank,
                    "rerank_score": hit.rerank_score,
                    "reasoning": hit.reasoning,
                }
            if hit.warning:
                row["warning"] = hit.warning
        else:
            row = {"id": hit.id, "score": hit.score, "rank": rank, "payload": hit.payload}
        rows.append(row)
    return rows


def hits_table(hits: Sequence[CascadeHit | SearchHit], title: str) -> Table:
    reranked = any(isinstance(hit, CascadeHit) and hit.reranked for hit in hits)
    table = Table(title=escape(title))
    table.add_column("rank", justify="right")
    table.add_column("score", justify="right")
    if reranked:
        table.add_column("P(yes)", justify="right")
    table.add_column("id")
    table.add_column("caption / text")
    for rank, hit in enumerate(hits, 1):
        summary = hit.payload.get("caption") or hit.payload.get("text") or ""
        score = hit.retrieval_score if isinstance(hit, CascadeHit) else hit.score
        cells = [str(rank), f"{score:.3f}"]
        if reranked:
            rerank_score = hit.rerank_score if isinstance(hit, CascadeHit) else None
            cells.append("" if rerank_score is None else f"{rerank_score:.3f}")
        table.add_row(*cells, escape(hit.id), escape(str(summary)))
    return table


def describe_query(text: str | None, image: Path | None) -> str:
    parts = [repr(text)] if text else []
    if image is not None:
        parts.append(f"[image {image.name}]")
    return " + ".join(parts)
