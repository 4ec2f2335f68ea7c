"""``mmcascade eval``: the MMEB-V2-compatible harness (see :mod:`mmcascade.evaluation.harness`)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape


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
    from mmcascade.evaluation.budgets import parse_budgets
    from mmcascade.evaluation.harness import run_eval

    console = Console(stderr=True)
    if ties not in ("pessimistic", "optimistic", "random"):
        raise ValueError(f"--ties must be pessimistic, optimistic or random; got {ties!r}")
    if config is None:
        from mmcascade.evaluation.mini_benchmark import ensure_mini_benchmark

        folder = ensure_mini_benchmark()
        config = folder / "mmeb.yaml"
        console.print(f"no config given: the bundled mini benchmark in {escape(str(folder))}")
    out = out or Path("eval-results") / (Path(model).name or model)
    thinking = {}
    if think:
        from mmcascade.reasoner import GenerationSettings, TraceCache, default_trace_cache_path
        from mmcascade.reasoner.factory import make_reasoner

        thinking = {
            "reasoner": make_reasoner(reasoner or _starter_default(model, "--think", "--reasoner"), url=reasoner_url),
            "think_settings": GenerationSettings(max_new_tokens=think_tokens if think_tokens is not None else 256),
            "trace_cache": TraceCache(default_trace_cache_path()),
        }
    if rerank:
        from mmcascade.cascade import RerankStage
        from mmcascade.reasoner import TraceCache, default_trace_cache_path
        from mmcascade.rerank.factory import make_reranker

        judge = make_reranker(
            reranker or _starter_default(model, "--rerank", "--reranker"),
            url=reranker_url,
            cache=TraceCache(default_trace_cache_path()),
        )
        thinking["rerank"] = RerankStage(judge, rerank, think_tokens if think_tokens is not None else 0)
    run = run_eval(
        config,
        model,
        out,
        budgets=parse_budgets(budgets) if budgets else None,
        datasets=[name.strip() for name in datasets.split(",")] if datasets else None,
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


def _starter_default(model: str, option: str, model_option: str) -> str:
    """The starter reasoner serves the starter embedder; any other model needs the user to name one."""
    if model == "starter":
        return "starter"
    raise ValueError(f"{option} needs {model_option}: name a generative VLM folder or Hub id (or a served model)")
