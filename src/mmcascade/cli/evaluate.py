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
    think_tokens: int = 256,
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
            "reasoner": make_reasoner(reasoner, url=reasoner_url),
            "think_settings": GenerationSettings(max_new_tokens=think_tokens),
            "trace_cache": TraceCache(default_trace_cache_path()),
        }
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
