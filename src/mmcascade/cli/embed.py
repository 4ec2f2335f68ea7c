"""``mmcascade embed``: one item in, its vectors out."""

from __future__ import annotations

from pathlib import Path

import typer


def run_embed(
    model: str,
    text: str | None,
    image: Path | None,
    instruction: str | None,
    side: str,
    budget: int | None,
    output: Path | None,
) -> None:
    from safetensors.torch import save_file

    from mmcascade import Embedder, Item

    if side not in ("query", "document"):
        raise ValueError(f"--side must be 'query' or 'document'; got {side!r}")
    item = Item(text=text, images=(image,) if image else (), instruction=instruction)
    embedder = Embedder.from_pretrained(model)
    if side == "query":
        vectors = embedder.encode_queries([item], query_budget=budget)
    else:
        vectors = embedder.encode_documents([item], doc_budget=budget)
    vectors = vectors[0]  # (n_vectors, dim) or (dim,)
    if output is not None:
        save_file({"vectors": vectors.contiguous()}, str(output))
        typer.echo(f"wrote {tuple(vectors.shape)} vectors to {output}")
    else:
        typer.echo(f"shape: {tuple(vectors.shape)}")
        typer.echo(str(vectors))
