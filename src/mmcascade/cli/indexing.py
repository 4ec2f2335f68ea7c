"""What ``mmcascade index build/add`` and ``mmcascade demo`` run: a resumable build with progress."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from mmcascade.data.collections import count_collection, read_collection
from mmcascade.index import BuildReport, Index

MAX_LISTED_SKIPS = 50


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
) -> BuildReport:
    """Create index ``name`` if needed (``create=True``), then add every record of ``input_path`` not yet in it."""
    console = console or Console(stderr=True)
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
                report = index.build(records, batch_size=batch_size, on_progress=lambda n: progress.advance(task, n))
        else:  # logs and pipes: one line per durable step, so a watcher knows what is already stored
            done = 0

            def log_line(n: int) -> None:
                nonlocal done
                done += n
                console.print(f"documents {done}/{total}", highlight=False)

            report = index.build(records, batch_size=batch_size, on_progress=log_line)
        count = index.count()
    print_report(report, count, console)
    return report


def print_report(report: BuildReport, count: int, console: Console) -> None:
    console.print(
        f"added {report.added}, already indexed {report.already_indexed}, skipped {len(report.skipped)}; "
        f"the index holds {count} documents"
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
    from mmcascade.index.manifest import MANIFEST_NAME, index_folder

    exists = (index_folder(name, data_dir) / MANIFEST_NAME).is_file()
    if not exists:
        if not create:
            return Index.open(name, data_dir=data_dir)  # raises the "no such index" error
        console.print(f"loading model [bold]{escape(model or 'starter')}[/]")
        return Index.create(
            name,
            model or "starter",
            backend=backend or "qdrant-edge",
            doc_budget=doc_budget,
            backend_options=backend_options,
            query_instruction=query_instruction,
            document_instruction=instruction,
            data_dir=data_dir,
        )
    index = Index.open(name, model=model, data_dir=data_dir)
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
