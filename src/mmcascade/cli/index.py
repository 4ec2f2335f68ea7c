"""``mmcascade index build|add|info|list|delete``: persistent indexes under the data directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from mmcascade.cli.errors import exit_on_user_error

app = typer.Typer(help="Build and manage indexes.", no_args_is_help=True)

DATA_DIR_HELP = "Where indexes live (default: $MMCASCADE_DATA_DIR, else ~/.cache/mmcascade/indexes)."


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
    data_dir: Path = typer.Option(None, help=DATA_DIR_HELP),
) -> None:
    """Build index NAME from a collection; re-running it resumes (adds what is missing, duplicates nothing)."""
    from mmcascade.cli.indexing import build_index

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
    data_dir: Path = typer.Option(None, help=DATA_DIR_HELP),
) -> None:
    """Add a collection to an existing index (ids already present are skipped)."""
    from mmcascade.cli.indexing import build_index

    with exit_on_user_error():
        build_index(
            name,
            input_path,
            batch_size=batch_size,
            captions=captions,
            instruction=instruction,
            data_dir=data_dir,
            create=False,
        )


@app.command("info")
def info(
    name: str = typer.Argument(..., help="Index name."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    data_dir: Path = typer.Option(None, help=DATA_DIR_HELP),
) -> None:
    """Show what built an index, its budgets, backend, size and document count."""
    from rich.console import Console
    from rich.table import Table

    from mmcascade.index import Index

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
def list_command(data_dir: Path = typer.Option(None, help=DATA_DIR_HELP)) -> None:
    """List the indexes in the data directory."""
    from mmcascade.index import list_indexes

    with exit_on_user_error():
        for name in list_indexes(data_dir):
            typer.echo(name)


@app.command("delete")
def delete(
    name: str = typer.Argument(..., help="Index name."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    data_dir: Path = typer.Option(None, help=DATA_DIR_HELP),
) -> None:
    """Delete an index and all its files."""
    from mmcascade.index import delete_index

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
            raise typer.BadParameter(f"{pair!r} must look like key=value", param_hint="--backend-option")
        try:
            options[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            options[key.strip()] = raw
    return options
