"""``mmcascade index build|add|info|list|delete``: persistent indexes under the data directory, built
resumably with progress (``mmcascade demo`` builds through the same :func:`build_index`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, get_args

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from mmcascade.cli import options
from mmcascade.cli.errors import exit_on_user_error
from mmcascade.data.collections import CaptionMode, count_collection, read_collection
from mmcascade.index import delete_index, index_folder, list_indexes
from mmcascade.index.backends import DEFAULT_BACKEND, get_backend
from mmcascade.index.manifest import MANIFEST_NAME
from mmcascade.search import BuildReport, Index

app = typer.Typer(help="Build and manage indexes.", no_args_is_help=True)

MAX_LISTED_SKIPS = 50
CAPTION_MODES: tuple[str, ...] = get_args(CaptionMode)


@app.command("build")
def build(
    name: str = typer.Argument(..., help="Index name."),
    input_path: Path = typer.Option(
        ..., "--input", "-i", help="A folder of images (+ same-named .txt captions) or a JSONL of items."
    ),
    model: str = typer.Option(None, help="Embedder folder, Hub id, or 'starter' (the default for a new index)."),
    backend: str = typer.Option(
        "qdrant-edge", help="qdrant-edge (embedded, default), exact, or qdrant (client/server)."
    ),
    doc_budget: int = typer.Option(None, help="Document vectors to store per document (default: all the model makes)."),
    batch_size: int = typer.Option(16, min=1, help="Documents encoded per batch."),
    captions: str = typer.Option(
        "embed", help="Folder captions: 'embed' them with the image, or keep them in the 'payload' only."
    ),
    instruction: str = typer.Option(None, help="Document instruction for items without one."),
    query_instruction: str = typer.Option(None, help="Default query instruction stored in the index."),
    backend_option: list[str] = typer.Option(
        [], "--backend-option", help="key=value, e.g. url=http://localhost:6333 or prefetch=400 (repeatable)."
    ),
    replace_changed: bool = typer.Option(
        False, "--replace-changed", help="Re-encode documents whose file or line changed since they were indexed."
    ),
    data_dir: options.DataDir = None,
) -> None:
    """Build index NAME from a collection; re-running it resumes (adds what is missing, duplicates nothing)."""
    with exit_on_user_error():
        build_index(
            name,
            input_path,
            model=model,
            backend=backend,
            doc_budget=doc_budget,
            batch_size=batch_size,
            captions=captions,
            instruction=instruction,
            query_instruction=query_instruction,
            backend_options=parse_backend_options(backend_option),
            data_dir=data_dir,
            create=True,
            replace_changed=replace_changed,
        )


@app.command("add")
def add(
    name: str = typer.Argument(..., help="Index name."),
    input_path: Path = typer.Option(
        ..., "--input", "-i", help="A folder of images (+ .txt captions) or a JSONL of items."
    ),
    batch_size: int = typer.Option(16, min=1, help="Documents encoded per batch."),
    captions: str = typer.Option("embed", help="Folder captions: 'embed' or 'payload'."),
    instruction: str = typer.Option(None, help="Document instruction for items without one."),
    replace_changed: bool = typer.Option(
        False, "--replace-changed", help="Re-encode documents whose file or line changed since they were indexed."
    ),
    data_dir: options.DataDir = None,
) -> None:
    """Add a collection to an existing index (ids already present are skipped; changed ones are reported)."""
    with exit_on_user_error():
        build_index(
            name,
            input_path,
            batch_size=batch_size,
            captions=captions,
            instruction=instruction,
            data_dir=data_dir,
            create=False,
            replace_changed=replace_changed,
        )


@app.command("info")
def info(
    name: str = typer.Argument(..., help="Index name."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    data_dir: options.DataDir = None,
) -> None:
    """Show what built an index, its budgets, backend, size and document count."""
    with exit_on_user_error(), Index.open(name, data_dir=data_dir) as index:
        details = index.info()
    if as_json:
        typer.echo(json.dumps(details, indent=2))
        return
    table = Table(title=f"index {name}", show_header=False)
    for key in (
        "folder",
        "count",
        "model",
        "model_fingerprint",
        "backend",
        "backend_options",
        "dim",
        "doc_budget",
        "query_vectors",
        "query_instruction",
        "document_instruction",
        "bytes_on_disk",
        "created_at",
    ):
        value = details[key]
        table.add_row(key, f"{value / 2**20:.1f} MiB" if key == "bytes_on_disk" else str(value))
    Console().print(table)


@app.command("list")
def list_command(data_dir: options.DataDir = None) -> None:
    """List the indexes in the data directory."""
    with exit_on_user_error():
        if data_dir is not None and data_dir.exists() and not data_dir.is_dir():
            raise ValueError(f"--data-dir {data_dir} is a file, not a folder of indexes")
        for name in list_indexes(data_dir):
            typer.echo(name)


@app.command("delete")
def delete(
    name: str = typer.Argument(..., help="Index name."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    data_dir: options.DataDir = None,
) -> None:
    """Delete an index and all its files."""
    if not yes:
        typer.confirm(f"Delete index {name!r} and all its files?", abort=True)
    with exit_on_user_error():
        folder = delete_index(name, data_dir)
    typer.echo(f"deleted {folder}")


def parse_backend_options(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` strings -> a dict; values are read as JSON when they parse (``400``, ``true``), else kept as text."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, separator, raw = pair.partition("=")
        if not separator or not key.strip():
            raise ValueError(f"--backend-option {pair!r} must look like key=value, e.g. prefetch=400")
        try:
            options[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            options[key.strip()] = raw
    return options


def build_index(
    name: str,
    input_path: Path,
    *,
    model: str | None = None,
    backend: str | None = None,
    doc_budget: int | None = None,
    batch_size: int = 16,
    captions: str = "embed",
    instruction: str | None = None,
    query_instruction: str | None = None,
    backend_options: dict[str, Any] | None = None,
    data_dir: str | os.PathLike | None = None,
    create: bool = True,
    console: Console | None = None,
    replace_changed: bool = False,
) -> BuildReport:
    """Create index ``name`` if needed (``create=True``), then add every record of ``input_path`` not yet in it
    (and re-encode the changed ones with ``replace_changed``)."""
    console = console or Console(stderr=True)
    if captions not in CAPTION_MODES:  # checked here: a folder's reader sees it only once it reads a caption
        raise ValueError(f"--captions must be {' or '.join(map(repr, CAPTION_MODES))}; got {captions!r}")
    records = read_collection(input_path, captions=captions)  # fails early on a missing input
    total = count_collection(input_path)
    index = _open_or_create(
        name, create, model, backend, doc_budget, instruction, query_instruction, backend_options, data_dir, console
    )
    with index:
        if instruction is not None and instruction != index.manifest.document_instruction:
            raise ValueError(
                f"index {name!r} stores documents with instruction {index.manifest.document_instruction!r}; "
                f"--instruction {instruction!r} would mix two encodings in one index"
            )
        console.print(f"indexing [bold]{escape(str(input_path))}[/] into [bold]{escape(name)}[/] ({index.store.name})")
        _ = index.embedder  # load the model before the bar starts moving
        if console.is_terminal:
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=console,
            ) as progress:
                task = progress.add_task("documents", total=total)
                report = index.build(
                    records,
                    batch_size=batch_size,
                    on_progress=lambda n: progress.advance(task, n),
                    replace_changed=replace_changed,
                )
        else:  # logs and pipes: one line per durable step, so a watcher knows what is already stored
            done = 0

            def log_line(n: int) -> None:
                nonlocal done
                done += n
                console.print(f"documents {done}/{total}", highlight=False)

            report = index.build(records, batch_size=batch_size, on_progress=log_line, replace_changed=replace_changed)
        count = index.count()
    print_report(report, count, console)
    return report


def print_report(report: BuildReport, count: int, console: Console) -> None:
    replaced = f", replaced {report.replaced} changed" if report.replaced else ""
    console.print(
        f"added {report.added}{replaced}, already indexed {report.already_indexed}, skipped {len(report.skipped)}; "
        f"the index holds {count} documents"
    )
    if report.changed and not report.replaced:
        console.print(
            f"[yellow]{len(report.changed)} documents changed since they were indexed: "
            f"{escape(_listed(report.changed))} "
            "(re-run with --replace-changed to re-encode them)[/]"
        )
    if report.positional_ids:
        console.print(
            f'[yellow]{report.positional_ids} JSONL lines have no "id": their ids are their line numbers '
            "(line-N), which shift when lines above them are added or removed (a later build would index "
            'them again); give every line an "id"[/]'
        )
    if report.skipped:
        table = Table(title=f"skipped records ({len(report.skipped)})")
        table.add_column("record")
        table.add_column("reason")
        for record in report.skipped[:MAX_LISTED_SKIPS]:
            table.add_row(escape(record.source), escape(record.reason))
        if len(report.skipped) > MAX_LISTED_SKIPS:
            table.add_row("...", f"{len(report.skipped) - MAX_LISTED_SKIPS} more")
        console.print(table)


def _listed(ids: list[str]) -> str:
    shown = ", ".join(ids[:MAX_LISTED_SKIPS])
    return shown + (f" and {len(ids) - MAX_LISTED_SKIPS} more" if len(ids) > MAX_LISTED_SKIPS else "")


def _open_or_create(
    name: str,
    create: bool,
    model: str | None,
    backend: str | None,
    doc_budget: int | None,
    instruction: str | None,
    query_instruction: str | None,
    backend_options: dict[str, Any] | None,
    data_dir: str | os.PathLike | None,
    console: Console,
) -> Index:
    exists = (index_folder(name, data_dir) / MANIFEST_NAME).is_file()
    if not exists:
        if not create:
            return Index.open(name, data_dir=data_dir)  # raises the "no such index" error
        get_backend(backend or DEFAULT_BACKEND).validate_options(**(backend_options or {}))  # before any folder
        console.print(f"loading model [bold]{escape(model or 'starter')}[/]")
        return Index.create(
            name,
            model or "starter",
            backend=backend or DEFAULT_BACKEND,
            doc_budget=doc_budget,
            backend_options=backend_options,
            query_instruction=query_instruction,
            document_instruction=instruction,
            data_dir=data_dir,
        )
    index = Index.open(name, model=model, data_dir=data_dir, write=True)
    manifest = index.manifest
    conflicts = [
        f"--{flag} {given!r} (the index has {stored!r})"
        for flag, given, stored in (
            ("backend", backend, manifest.backend),
            ("doc-budget", doc_budget, manifest.doc_budget),
            ("query-instruction", query_instruction, manifest.query_instruction),
        )
        if given is not None and given != stored
    ]
    if backend_options and backend_options != manifest.backend_options:
        conflicts.append(f"--backend-option {backend_options} (the index has {manifest.backend_options})")
    if conflicts:
        index.close()
        raise ValueError(
            f"index {name!r} already exists with other settings: {'; '.join(conflicts)}. Re-run with the same "
            f"settings to resume, or `mmcascade index delete {name}` to start over"
        )
    console.print(f"index [bold]{escape(name)}[/] exists with {index.count()} documents: adding what is missing")
    return index
