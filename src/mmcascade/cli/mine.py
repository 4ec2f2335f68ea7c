"""``mmcascade mine``: reranker-mined hard negatives and false-negative filtering for a records file."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import typer
from rich.console import Console
from rich.markup import escape

from mmcascade.budget import MAX_TOKEN_BUDGET
from mmcascade.cli.errors import exit_on_user_error
from mmcascade.embedder import Embedder
from mmcascade.rerank import make_reranker
from mmcascade.training.mining import check_mining_settings, mine

app = typer.Typer()


@app.command("mine")
def mine_command(
    train: Path = typer.Option(..., "--train", help="Training records (JSONL) to mine hard negatives for."),
    out: Path = typer.Option(..., "--out", help="Where the mined records (JSONL, same format) are written."),
    model: str = typer.Option(..., "--model", help="The retriever: embedder folder, VLM folder, Hub id or 'starter'."),
    reranker: str = typer.Option(
        ...,
        "--reranker",
        help="The judge: generative VLM folder, Hub id, 'starter', or the served model with --reranker-url.",
    ),
    reranker_url: str = typer.Option(None, help="OpenAI-compatible server (logprobs), e.g. http://localhost:8000/v1."),
    top_n: int = typer.Option(20, "--top-n", min=1, help="Candidates retrieved and judged per query."),
    negatives: int = typer.Option(3, "--negatives", min=1, help="Hard negatives kept per query."),
    threshold: float = typer.Option(
        0.5, min=0.0, max=1.0, help="P(yes) at or above which an unlabelled candidate is a false negative (dropped)."
    ),
    margin: float = typer.Option(
        None, min=0.0, help="Also drop candidates scoring >= the positive's P(yes) minus this (off by default)."
    ),
    think_tokens: int = typer.Option(
        0, "--think-tokens", min=0, max=MAX_TOKEN_BUDGET, help="The reranker's reasoning budget (0: none)."
    ),
    keep_original_negatives: bool = typer.Option(
        False, "--keep-original-negatives", help="Also keep each record's own negatives, minus false negatives."
    ),
    state: Path = typer.Option(None, "--state", help="Resume file of reranker scores (default: <out>.scores.jsonl)."),
    report: Path = typer.Option(None, "--report", help="JSON report (default: <out>.report.json)."),
    batch_size: int = typer.Option(8, min=1, help="Items encoded per batch."),
    device: str = typer.Option(None, help="Where the models run, e.g. cuda or cpu (default: cuda when available)."),
) -> None:
    """Mine hard negatives with the retriever and a reasoning reranker, dropping likely false negatives.

    A killed run resumes from its state file without judging any pair twice.
    """
    with exit_on_user_error():
        run_mine(
            train,
            out,
            model=model,
            reranker=reranker,
            reranker_url=reranker_url,
            top_n=top_n,
            negatives=negatives,
            threshold=threshold,
            margin=margin,
            think_tokens=think_tokens,
            keep_original_negatives=keep_original_negatives,
            state=state,
            report=report,
            batch_size=batch_size,
            device=device,
        )


def run_mine(
    train: Path,
    out: Path,
    *,
    model: str,
    reranker: str,
    reranker_url: str | None = None,
    top_n: int = 20,
    negatives: int = 3,
    threshold: float = 0.5,
    margin: float | None = None,
    think_tokens: int = 0,
    keep_original_negatives: bool = False,
    state: Path | None = None,
    report: Path | None = None,
    batch_size: int = 8,
    device: str | None = None,
) -> None:
    console = Console(stderr=True)
    check_mining_settings(n_negatives=negatives, threshold=threshold, margin=margin)  # before loading any model
    if not train.is_file():
        raise FileNotFoundError(f"records file not found: {train} (--train)")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    console.print(f"loading the retriever {escape(model)} and the reranker {escape(reranker)}", highlight=False)
    retriever = Embedder.from_pretrained(model, device=device)
    judge_options = {} if reranker_url else {"batch_size": 16, "device": device}  # a server places its own model
    judge = make_reranker(reranker, url=reranker_url, **judge_options)
    result = mine(
        train,
        out,
        retriever=retriever,
        reranker=judge,
        retriever_id=os.path.abspath(model) if Path(model).exists() else model,
        top_n=top_n,
        n_negatives=negatives,
        threshold=threshold,
        margin=margin,
        think_tokens=think_tokens,
        keep_original_negatives=keep_original_negatives,
        state_path=state,
        report_path=report,
        batch_size=batch_size,
        log=lambda line: console.print(escape(line), highlight=False),
    )
    counts = result.counts
    typer.echo(
        f"mined {counts.queries} records ({counts.records_skipped} skipped): {counts.mined_negatives} hard negatives, "
        f"{counts.false_negatives_filtered} likely false negatives dropped, "
        f"{counts.records_without_mined_negatives} records without a mined negative"
    )
    if counts.original_negatives_kept:
        typer.echo(f"kept {counts.original_negatives_kept} original negatives")
    if counts.positives_below_threshold:
        typer.echo(f"{counts.positives_below_threshold} labelled positives scored below the threshold (see the report)")
    typer.echo(f"reranker pairs: {result.pairs_scored} judged now, {result.pairs_from_state} from {result.state_path}")
    typer.echo(f"wrote {result.out_path}")
    typer.echo(f"report: {result.report_path}")
    typer.echo(f"retrain the retriever on it: mmcascade train embedder -c CONFIG --set data.train={result.out_path}")
