"""``mmcascade`` console script: the command table; each command lives in its own module."""

from __future__ import annotations

from typing import Any, ClassVar

import click
import typer

from mmcascade import __version__
from mmcascade.cli.errors import exit_on_user_error
from mmcascade.cli.lazy import LazyCommands


class MmcascadeCommands(LazyCommands):
    lazy: ClassVar[dict[str, tuple[str, str]]] = {
        "quickstart": (
            "mmcascade.cli.quickstart:app",
            "Embed a few captions and images and score them with MaxSim at several budgets.",
        ),
        "embed": ("mmcascade.cli.embed:app", "Encode one item and print (or save) its vectors."),
        "demo": (
            "mmcascade.cli.demo:app",
            "The main job in one command: index the bundled demo collection with the starter model and search it.",
        ),
        "index": ("mmcascade.cli.index:app", "Build and manage indexes."),
        "search": (
            "mmcascade.cli.search:app",
            "Search index NAME by text, image, or both; --rerank k reranks the top k with a reasoning reranker.",
        ),
        "eval": (
            "mmcascade.cli.evaluate:app",
            "Evaluate a model on MMEB-V2-format datasets at several budgets; resumable, cached, reported.",
        ),
        "reasoner": ("mmcascade.cli.reasoner:app", "Reasoner jobs: teacher traces for distilling a student reasoner."),
        "mine": (
            "mmcascade.cli.mine:app",
            "Mine hard negatives with the retriever and a reasoning reranker, dropping likely false negatives.",
        ),
        "train": ("mmcascade.cli.train:app", "Train and distil models."),
        "serve": ("mmcascade.cli.serve:app", "Serve models over HTTP."),
    }
    groups: ClassVar[frozenset[str]] = frozenset({"index", "reasoner", "train", "serve"})

    def invoke(self, ctx: click.Context) -> Any:
        """Every command (and the import of its module) runs inside :func:`exit_on_user_error`: an expected
        failure is one line and exit code 2 even where a command forgot its own ``with``."""
        with exit_on_user_error():
            return super().invoke(ctx)


app = typer.Typer(
    name="mmcascade",
    cls=MmcascadeCommands,
    help="Reasoning-augmented multimodal retrieval: embed, index, search, rerank.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main() -> None:
    """Reasoning-augmented multimodal retrieval."""
    from transformers.utils import logging as transformers_logging  # only once a command runs

    transformers_logging.disable_progress_bar()  # rich shows our own progress; no weight-loading bars


@app.command()
def version() -> None:
    """Print the installed version."""
    typer.echo(__version__)


if __name__ == "__main__":
    app()
