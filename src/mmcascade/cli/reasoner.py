"""``mmcascade reasoner ...``: reasoner jobs (teacher traces for distillation)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import typer

from mmcascade.budget import DEFAULT_TRACE_TOKENS, MAX_TOKEN_BUDGET
from mmcascade.cli.errors import exit_on_user_error
from mmcascade.data.synthetic.teacher import teacher_traces_from_records
from mmcascade.reasoner import GenerationSettings, TraceCache, default_trace_cache_path, factory
from mmcascade.reasoner.teacher import generate_teacher_traces

app = typer.Typer(help="Reasoner jobs: teacher traces for distilling a student reasoner.", no_args_is_help=True)


@app.command("traces")
def traces(
    input_path: Path = typer.Option(
        ..., "--input", help="Items JSONL (a starter-format records JSONL with --templated-teacher)."
    ),
    out: Path = typer.Option(
        ..., "--out", help="Distillation JSONL to write (appended to and resumed with --reasoner)."
    ),
    reasoner: str = typer.Option(
        None, help="Teacher reasoner: a local VLM folder / Hub id, or the served model with --reasoner-url."
    ),
    reasoner_url: str = typer.Option(None, help="OpenAI-compatible server, e.g. http://localhost:8000/v1."),
    templated_teacher: bool = typer.Option(
        False,
        "--templated-teacher",
        help="Write traces from the starter data's ground-truth annotations (a stand-in for a large VLM teacher).",
    ),
    task: str = typer.Option("retrieval", help="Prompt kind: retrieval, classification, vqa, grounding, document."),
    think_tokens: int = typer.Option(DEFAULT_TRACE_TOKENS, min=1, max=MAX_TOKEN_BUDGET, help="Reasoning token budget."),
    batch_size: int = typer.Option(32, min=1, help="Items per generation batch (and per write to --out)."),
    cache: bool = typer.Option(True, help="Use the trace cache ($MMCASCADE_CACHE/traces.sqlite)."),
) -> None:
    """Write teacher traces ({"item", "trace", "task"} per line) for SFT of a student reasoner."""
    with exit_on_user_error():
        if templated_teacher == bool(reasoner or reasoner_url):
            raise ValueError("pass either --reasoner (with --reasoner-url for a server) or --templated-teacher")
        if templated_teacher:
            _templated(input_path, out)
        else:
            _generated(input_path, out, reasoner, reasoner_url, task, think_tokens, batch_size, cache)


def _templated(input_path: Path, out: Path) -> None:
    summary = teacher_traces_from_records(input_path, out)
    by_task = ", ".join(f"{name} {count}" for name, count in summary["by_task"].items())
    typer.echo(f"wrote {summary['written']} trace(s) to {out} ({by_task})")
    skipped = summary["skipped"]
    if skipped:
        typer.secho(f"skipped {len(skipped)} record(s):", fg=typer.colors.YELLOW, err=True)
        for entry in skipped[:10]:
            typer.echo(f"  {input_path}:{entry['line']}: {entry['reason']}", err=True)
        if len(skipped) > 10:
            typer.echo(f"  ... and {len(skipped) - 10} more", err=True)


def _generated(
    input_path: Path,
    out: Path,
    reasoner: str | None,
    reasoner_url: str | None,
    task: str,
    think_tokens: int,
    batch_size: int,
    use_cache: bool,
) -> None:
    model = factory.make_reasoner(reasoner, url=reasoner_url)
    settings = GenerationSettings(max_new_tokens=think_tokens)
    with contextlib.ExitStack() as stack:
        trace_cache = stack.enter_context(TraceCache(default_trace_cache_path())) if use_cache else None
        summary = generate_teacher_traces(
            model,
            input_path,
            out,
            task=task,
            settings=settings,
            cache=trace_cache,
            batch_size=batch_size,
            on_batch=lambda done, total: typer.echo(f"  {done}/{total} item(s)", err=True),
        )
    typer.echo(
        f"wrote {summary['written']} trace(s) to {out}: {summary['items']} item(s), "
        f"{summary['already_done']} already there, {summary['duplicates']} duplicate(s), "
        f"{summary['incomplete']} incomplete trace(s) left out"
    )
