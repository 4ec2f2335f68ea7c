"""``mmcascade train ...``: training commands (embedder, reasoner SFT, reranker), one option set for all."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import typer

from mmcascade.cli.errors import exit_on_user_error
from mmcascade.training.rerank_train import train_reranker_from_config
from mmcascade.training.sft import train_reasoner_from_config
from mmcascade.training.trainer import train_from_config
from mmcascade.utils.config import parse_override

app = typer.Typer(help="Train and distil models.", no_args_is_help=True)

CONFIG_HELP = "Training config (YAML)."
RESUME_HELP = "'latest' (newest checkpoint in the output dir, if any), 'none', or a checkpoint folder."
SET_HELP = "Override a config key, e.g. --set training.max_steps=10 (repeatable)."


def _train(train_from_config: Callable[..., Path], config: Path, resume: str, overrides: list[str]) -> None:
    """Run a trainer's ``*_from_config`` with the CLI's resume and --set overrides; print the final folder."""
    with exit_on_user_error():
        parsed = dict(parse_override(text) for text in overrides)
        final = train_from_config(config, resume_from=None if resume == "none" else resume, overrides=parsed)
    typer.echo(f"final model: {final}")


@app.command("embedder")
def train_embedder(
    config: Path = typer.Option(..., "--config", "-c", help=CONFIG_HELP),
    resume: str = typer.Option("latest", help=RESUME_HELP),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
) -> None:
    """Train an embedder contrastively (InfoNCE or Matryoshka multi-vector), resumable, GradCache-enabled."""
    _train(train_from_config, config, resume, overrides)


@app.command("reasoner")
def train_reasoner(
    config: Path = typer.Option(..., "--config", "-c", help=CONFIG_HELP),
    resume: str = typer.Option("latest", help=RESUME_HELP),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
) -> None:
    """Fine-tune a generative reasoner on a teacher's traces (SFT, loss on the trace tokens only), LoRA or full."""
    _train(train_reasoner_from_config, config, resume, overrides)


@app.command("reranker")
def train_reranker(
    config: Path = typer.Option(..., "--config", "-c", help=CONFIG_HELP),
    resume: str = typer.Option("latest", help=RESUME_HELP),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
) -> None:
    """Train a generative VLM as a yes/no reranker on training records (query, positive, negatives), LoRA or full."""
    _train(train_reranker_from_config, config, resume, overrides)
