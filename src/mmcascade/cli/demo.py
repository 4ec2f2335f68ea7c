"""``mmcascade demo``: index the bundled demo collection with the starter model and search it.

The collection (``mmcascade/assets/demo``) holds coloured-shape scenes, handwritten digits and
textile photos the starter model never saw in training. The demo runs text queries (scene captions
in a wording other than the stored one) and an image query (the same scene redrawn with other pixel
jitter and background), and says where the expected image ranked.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from mmcascade.cli import options
from mmcascade.cli.errors import exit_on_user_error
from mmcascade.cli.index import build_index
from mmcascade.cli.search import hits_table
from mmcascade.data.synthetic import scenes
from mmcascade.index import delete_index, index_folder
from mmcascade.index.manifest import MANIFEST_NAME
from mmcascade.search import Index

app = typer.Typer()

INDEX_NAME = "demo"
DOCUMENT_INSTRUCTION = "Represent the image."
QUERY_INSTRUCTION = "Find the image that matches the caption."
# Scenes of the bundled collection used as queries, and the caption style each text query uses.
TEXT_QUERIES = (
    ("scenes/scene-06.png", "anchored"),
    ("scenes/scene-12.png", "right_of"),
    ("scenes/scene-20.png", "sequence"),
)
IMAGE_QUERY = "scenes/scene-10.png"


@dataclass(frozen=True)
class DemoQuery:
    label: str
    item: Any
    instruction: str
    expected: str


def demo_collection() -> Path:
    """The bundled demo collection folder."""
    folder = Path(__file__).resolve().parent.parent / "assets" / "demo"
    if not (folder / "manifest.json").is_file():
        raise FileNotFoundError(f"the demo collection is missing from {folder}: run scripts/build_demo_collection.py")
    return folder


@app.command()
def demo(
    data_dir: options.DataDir = None,
    backend: str = typer.Option("qdrant-edge", help="Index backend."),
) -> None:
    """The main job in one command: index the bundled demo collection with the starter model and search it."""
    with exit_on_user_error():
        run_demo(data_dir=data_dir, backend=backend)


def run_demo(data_dir: str | os.PathLike | None = None, backend: str = "qdrant-edge") -> None:
    console = Console()
    started = time.perf_counter()
    collection = demo_collection()
    folder = index_folder(INDEX_NAME, data_dir)
    if (folder / MANIFEST_NAME).is_file():
        try:  # the demo owns this index: rebuild it when the model or settings changed
            with Index.open(INDEX_NAME, model="starter", data_dir=data_dir) as index:
                stale = index.manifest.backend != backend
        except ValueError:
            stale = True
        if stale:
            delete_index(INDEX_NAME, data_dir)
    build_index(
        INDEX_NAME,
        collection,
        model="starter",
        backend=backend,
        captions="payload",  # captions are shown with the results, not embedded: search sees pixels only
        instruction=DOCUMENT_INSTRUCTION,
        query_instruction=QUERY_INSTRUCTION,
        data_dir=data_dir,
        console=console,
    )
    with Index.open(INDEX_NAME, data_dir=data_dir) as index:
        for query in demo_queries(collection):
            search_started = time.perf_counter()
            hits = index.search(query.item, top_k=3, instruction=query.instruction)
            milliseconds = 1000 * (time.perf_counter() - search_started)
            console.print(hits_table(hits, title=f"{query.label}  ({milliseconds:.0f} ms)"))
            ranked = [hit.id for hit in index.search(query.item, top_k=index.count(), instruction=query.instruction)]
            rank = ranked.index(query.expected) + 1 if query.expected in ranked else None
            verdict = "[green]found first[/]" if rank == 1 else f"[yellow]ranked {rank}[/]"
            console.print(f"expected {escape(query.expected)}: {verdict}\n")
    console.print(
        f"demo finished in {time.perf_counter() - started:.0f} s; the index is kept in {folder}. Try:\n"
        f"  {installed_command()} search {INDEX_NAME} --text 'a small red star on the left'"
        + (f" --data-dir {data_dir}" if data_dir else "")
    )


def installed_command() -> str:
    """How to call ``mmcascade`` from a new shell: the bare name when it is on PATH, else the script's path
    (e.g. ``.venv/bin/mmcascade`` after ``make demo``, whose venv a new shell has not activated)."""
    running = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    on_path = shutil.which("mmcascade")
    if running is None or running.name != "mmcascade":
        return "mmcascade" if on_path else f"{sys.executable} -m mmcascade"
    if on_path and Path(on_path).resolve() == running:
        return "mmcascade"
    try:
        relative = os.path.relpath(running)
    except ValueError:  # another drive (Windows)
        return str(running)
    return relative if not relative.startswith("..") else str(running)


def demo_queries(collection: Path) -> list[DemoQuery]:
    """Text queries in caption styles other than the stored one, and one redrawn-scene image query."""
    manifest = json.loads((collection / "manifest.json").read_text())
    by_image = {item["image"]: item for item in manifest["items"]}
    queries = []
    for image, style in TEXT_QUERIES:
        caption = scenes.caption(_scene(by_image[image]), style=style)
        queries.append(DemoQuery(f"text: {caption!r}", caption, QUERY_INSTRUCTION, image))
    redrawn = scenes.Scene(
        objects=_scene(by_image[IMAGE_QUERY]).objects, jitter=((3, -4), (-2, 5), (4, 2)), background=(236, 240, 250)
    )
    queries.append(
        DemoQuery(f"image: {IMAGE_QUERY} redrawn", {"image": scenes.render(redrawn)}, DOCUMENT_INSTRUCTION, IMAGE_QUERY)
    )
    return queries


def _scene(item: dict[str, Any]) -> scenes.Scene:
    return scenes.Scene(objects=tuple(scenes.SceneObject(**obj) for obj in item["objects"]))
