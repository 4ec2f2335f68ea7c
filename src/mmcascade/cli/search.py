"""``mmcascade search NAME``: query an index by text, image or both."""

from __future__ import annotations

import json
import os
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mmcascade.index import Index, SearchHit


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
    think_tokens: int = 256,
    task: str = "retrieval",
) -> list[SearchHit]:
    query = make_query(text, image)
    trace = None
    with Index.open(name, model=model, data_dir=data_dir) as index:
        if think:
            trace = think_about(
                query, index.manifest.query_instruction, instruction, reasoner, reasoner_url, think_tokens, task
            )
        hits = index.search(query, top_k=top_k, query_budget=query_budget, instruction=instruction, trace=trace)
    if as_json:
        print(json.dumps(hits_as_json(hits), indent=2))
    else:
        Console().print(hits_table(hits, title=f"{name}: {describe_query(text, image)}"))
    return hits


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
    from mmcascade.reasoner import GenerationSettings, TraceCache, default_trace_cache_path, reason
    from mmcascade.reasoner.factory import make_reasoner

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
        from mmcascade.data.items import load_image

        query["image"] = load_image(image)  # a missing or corrupt file fails here, with its name
    return query


def hits_as_json(hits: list[SearchHit]) -> list[dict]:
    return [
        {"id": hit.id, "score": hit.score, "rank": rank, "payload": hit.payload} for rank, hit in enumerate(hits, 1)
    ]


def hits_table(hits: list[SearchHit], title: str) -> Table:
    table = Table(title=escape(title))
    table.add_column("rank", justify="right")
    table.add_column("score", justify="right")
    table.add_column("id")
    table.add_column("caption / text")
    for rank, hit in enumerate(hits, 1):
        summary = hit.payload.get("caption") or hit.payload.get("text") or ""
        table.add_row(str(rank), f"{hit.score:.3f}", escape(hit.id), escape(str(summary)))
    return table


def describe_query(text: str | None, image: Path | None) -> str:
    parts = [repr(text)] if text else []
    if image is not None:
        parts.append(f"[image {image.name}]")
    return " + ".join(parts)
