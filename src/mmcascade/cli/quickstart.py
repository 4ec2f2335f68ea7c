"""``mmcascade quickstart``: the smallest end-to-end run (embed -> score at several budgets).

Until a trained starter model exists, the default model is a tiny random Qwen2-VL built offline,
so the scores show the mechanics (shapes, budgets, MaxSim), not retrieval quality.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import typer
from PIL import Image, ImageDraw
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from transformers.utils import logging as transformers_logging

from mmcascade.backbones.testing import build_tiny_checkpoint
from mmcascade.cli.errors import exit_on_user_error
from mmcascade.embedder import Embedder
from mmcascade.models import resolve_model

app = typer.Typer()


@app.command()
def quickstart(
    model: str = typer.Option(
        None,
        help="Embedder or VLM checkpoint (folder or Hub id). Default: the starter model (a tiny random Qwen2-VL if it is not built).",
    ),
    workdir: Path = typer.Option(None, help="Where the tiny checkpoint is built (default: a temporary folder)."),
    tiny: bool = typer.Option(False, help="Use a tiny random Qwen2-VL even when the starter model is available."),
) -> None:
    """Embed a few captions and images and score them with MaxSim at several budgets."""
    with exit_on_user_error():
        run_quickstart(model, workdir, tiny)


def demo_images() -> dict:
    """Three simple scenes drawn with PIL (no files or downloads needed)."""
    scenes = {}
    for name, colour, shape in [
        ("red circle", "red", "ellipse"),
        ("blue square", "blue", "rectangle"),
        ("green triangle", "green", "polygon"),
    ]:
        image = Image.new("RGB", (112, 112), "white")
        draw = ImageDraw.Draw(image)
        if shape == "polygon":
            draw.polygon([(56, 16), (100, 96), (12, 96)], fill=colour)
        else:
            getattr(draw, shape)([20, 20, 92, 92], fill=colour)
        scenes[name] = image
    return scenes


def run_quickstart(model: str | None, workdir: Path | None, tiny: bool = False) -> None:
    transformers_logging.disable_progress_bar()
    console = Console()
    torch.manual_seed(0)
    if model is None and not tiny:
        try:
            model = str(resolve_model("starter-embedder"))
        except FileNotFoundError:
            console.print("[yellow]the starter model is not built; using a tiny random model[/]")
    if model is None:
        folder = Path(workdir or tempfile.mkdtemp(prefix="mmcascade-quickstart-")) / "tiny-qwen2-vl"
        build_tiny_checkpoint("qwen2_vl", folder)
        console.print(f"[bold]model[/]: tiny random Qwen2-VL built at {folder} (random weights: mechanics only)")
        embedder = Embedder.from_pretrained(
            folder, head="meta_tokens", head_options={"num_query_tokens": 4, "num_document_tokens": 16}
        )
    else:
        embedder = Embedder.from_pretrained(model)
        console.print(f"[bold]model[/]: {model}")
    images = demo_images()
    find, represent = "Find the image that matches the caption.", "Represent the image."
    documents = [{"image": image, "instruction": represent} for image in images.values()]
    queries = [
        {"text": "a red circle", "instruction": find},
        {"text": "a blue square", "instruction": find},
        {"image": images["green triangle"], "instruction": represent},
    ]
    query_vectors = embedder.encode_queries(queries)
    document_vectors = embedder.encode_documents(documents)
    console.print(f"queries {tuple(query_vectors.shape)}  documents {tuple(document_vectors.shape)}")
    budgets = [(None, None)]
    if embedder.is_multi_vector:
        n_query, n_document = embedder.num_vectors("query"), embedder.num_vectors("document")
        budgets = [(1, 1), (max(1, n_query // 2), max(1, n_document // 2)), (n_query, n_document)]
    query_names = ["'a red circle'", "'a blue square'", "[green triangle image]"]
    for query_budget, doc_budget in budgets:
        scores = embedder.similarity(query_vectors, document_vectors, query_budget=query_budget, doc_budget=doc_budget)
        label = "cosine" if query_budget is None else f"MaxSim at budget ({query_budget},{doc_budget})"
        table = Table(title=label)
        table.add_column("query")
        for name in images:
            table.add_column(name, justify="right")
        for query_name, row in zip(query_names, scores.tolist(), strict=True):
            best = max(row)
            table.add_row(escape(query_name), *[f"[bold]{s:.3f}[/]" if s == best else f"{s:.3f}" for s in row])
        console.print(table)
