"""``mmcascade eval``: the MMEB-V2-compatible harness (see :mod:`mmcascade.evaluation.harness`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from mmcascade.budget import MATRYOSHKA_BUDGETS, Budget
from mmcascade.cli import options
from mmcascade.cli.errors import exit_on_user_error
from mmcascade.data.synthetic.mini_benchmark import ensure_mini_benchmark
from mmcascade.evaluation.harness import run_eval
from mmcascade.reasoner import GenerationSettings, TraceCache, default_trace_cache_path
from mmcascade.reasoner.factory import make_reasoner
from mmcascade.rerank.factory import make_reranker
from mmcascade.search import RerankStage

app = typer.Typer()


@app.command("eval")
def evaluate(
    config: Path = typer.Argument(None, help="Eval yaml in VLM2Vec's format (default: the bundled mini benchmark)."),
    model: str = typer.Option("starter", help="Embedder folder, Hub id, or 'starter'."),
    out: Path = typer.Option(None, help="Output folder (default: eval-results/<model name>)."),
    budgets: str = typer.Option(None, help=f"Budgets as QxD pairs (default: {MATRYOSHKA_BUDGETS}, those that fit)."),
    datasets: str = typer.Option(None, help="Comma-separated dataset names (default: all in the config)."),
    ties: str = typer.Option("pessimistic", help="pessimistic (default), optimistic or random."),
    data_root: Path = typer.Option(None, help="Root of the config's relative paths (default: the config's folder)."),
    batch_size: int = typer.Option(16, min=1, help="Items encoded per batch."),
    seed: int = typer.Option(0, help="Seed of random tie breaking."),
    think: options.Think = False,
    reasoner: options.Reasoner = None,
    reasoner_url: options.ReasonerUrl = None,
    think_tokens: options.ThinkTokens = None,
    rerank: options.Rerank = 0,
    reranker: options.Reranker = None,
    reranker_url: options.RerankerUrl = None,
) -> None:
    """Evaluate a model on MMEB-V2-format datasets at several budgets; resumable, cached, reported."""
    with exit_on_user_error():
        run_eval_command(
            config,
            model=model,
            out=out,
            budgets=budgets,
            datasets=datasets,
            ties=ties,
            data_root=data_root,
            batch_size=batch_size,
            seed=seed,
            think=think,
            reasoner=reasoner,
            reasoner_url=reasoner_url,
            think_tokens=think_tokens,
            rerank=rerank,
            reranker=reranker,
            reranker_url=reranker_url,
        )


def run_eval_command(
    config: Path | None,
    *,
    model: str,
    out: Path | None,
    budgets: str | None,
    datasets: str | None,
    ties: str,
    data_root: Path | None,
    batch_size: int,
    seed: int,
    think: bool = False,
    reasoner: str | None = None,
    reasoner_url: str | None = None,
    think_tokens: int | None = None,
    rerank: int = 0,
    reranker: str | None = None,
    reranker_url: str | None = None,
) -> None:
    console = Console(stderr=True)
    if ties not in ("pessimistic", "optimistic", "random"):
        raise ValueError(f"--ties must be pessimistic, optimistic or random; got {ties!r}")
    costs = options.reasoning_budget(think, think_tokens, rerank_k=rerank, retrieve_k=max(1, rerank))
    vector_budgets = None if budgets is None else Budget.parse_many(_listed("--budgets", budgets, "1x1,4x8"))
    dataset_names = None if datasets is None else _listed("--datasets", datasets, "MiniDocs").split(",")
    out = out or Path("eval-results") / (Path(model).name or model)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; pass a folder for the results")
    if config is None:
        folder = ensure_mini_benchmark()
        config = folder / "mmeb.yaml"
        console.print(f"no config given: the bundled mini benchmark in {escape(str(folder))}")
    thinking: dict[str, Any] = {}
    if think:
        thinking = {
            "reasoner": make_reasoner(
                options.generative_model(reasoner, model, "--think", "--reasoner"), url=reasoner_url
            ),
            "think_settings": GenerationSettings(max_new_tokens=costs.trace_tokens),
            "trace_cache": TraceCache(default_trace_cache_path()),
        }
    if rerank:
        judge = make_reranker(
            options.generative_model(reranker, model, "--rerank", "--reranker"),
            url=reranker_url,
            cache=TraceCache(default_trace_cache_path()),
        )
        thinking["rerank"] = RerankStage.from_budget(judge, costs)
    run = run_eval(
        config,
        model,
        out,
        budgets=vector_budgets,
        datasets=dataset_names,
        data_root=data_root,
        ties=ties,  # type: ignore[arg-type]
        batch_size=batch_size,
        seed=seed,
        log=lambda line: console.print(escape(line), highlight=False),
        **thinking,
    )
    print((run.out_dir / "report.md").read_text())
    console.print(
        f"encoding {run.encoding_seconds:.1f} s ({len(run.encoded_from_cache)} dataset(s) from the cache), "
        f"scoring {run.scoring_seconds:.1f} s; results in {escape(str(run.out_dir))}"
    )


def _listed(option: str, text: str, example: str) -> str:
    """A comma-separated option's value, stripped; an empty value or item is an error (not "the default")."""
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise ValueError(
            f"{option} {text!r} has an empty entry; pass a comma-separated list such as {example}, "
            "or leave the option out for the default"
        )
    return ",".join(items)
