"""``mmcascade embed``: one item in, its vectors out."""

from __future__ import annotations

from pathlib import Path

import typer
from safetensors.torch import save_file

from mmcascade.cli.errors import exit_on_user_error
from mmcascade.data.items import Item
from mmcascade.embedder import Embedder

app = typer.Typer()


@app.command()
def embed(
    model: str = typer.Option(..., help="Embedder folder, VLM folder or Hub id."),
    text: str = typer.Option(None, help="Text of the item."),
    image: Path = typer.Option(None, help="Image file of the item.", exists=False),
    instruction: str = typer.Option(None, help="Task instruction."),
    side: str = typer.Option("query", help="query or document."),
    budget: int = typer.Option(None, help="Keep the first k vectors (multi-vector heads)."),
    output: Path = typer.Option(None, help="Write the vectors to this .safetensors file."),
) -> None:
    """Encode one item and print (or save) its vectors."""
    with exit_on_user_error():
        run_embed(model, text, image, instruction, side, budget, output)


def run_embed(
    model: str,
    text: str | None,
    image: Path | None,
    instruction: str | None,
    side: str,
    budget: int | None,
    output: Path | None,
) -> None:
    if side not in ("query", "document"):
        raise ValueError(f"--side must be 'query' or 'document'; got {side!r}")
    if output is not None:
        check_output_file(output)  # before loading the model
    item = Item(text=text, images=(image,) if image else (), instruction=instruction)
    embedder = Embedder.from_pretrained(model)
    if side == "query":
        vectors = embedder.encode_queries([item], query_budget=budget)
    else:
        vectors = embedder.encode_documents([item], doc_budget=budget)
    vectors = vectors[0]  # (n_vectors, dim); one vector for single-vector models
    if output is not None:
        save_file({"vectors": vectors.contiguous()}, str(output))
        typer.echo(f"wrote {tuple(vectors.shape)} vectors to {output}")
    else:
        typer.echo(f"shape: {tuple(vectors.shape)}")
        typer.echo(str(vectors))


def check_output_file(output: Path) -> None:
    """``--output`` must name a file in an existing folder (safetensors' own error names a temporary file)."""
    if output.is_dir():
        raise ValueError(f"--output {output} is a folder; name a file, e.g. {output / 'vectors.safetensors'}")
    if not output.parent.is_dir():
        raise FileNotFoundError(f"--output {output}: the folder {output.parent} does not exist; create it first")
