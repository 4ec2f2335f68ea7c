"""``mmcascade serve reasoner``: a local reasoner behind an OpenAI-compatible HTTP endpoint.

FastAPI and uvicorn come with the ``server`` extra; they are imported only when a command runs, so a missing
extra is one clear error.
"""

from __future__ import annotations

from typing import NoReturn

import typer

from mmcascade.cli.errors import exit_on_user_error
from mmcascade.reasoner.local import load_reasoner

app = typer.Typer(help="Serve models over HTTP.", no_args_is_help=True)

SERVER_EXTRA_HINT = "install the server extra: pip install 'mmcascade[server]'"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


@app.command("reasoner")
def reasoner(
    model: str = typer.Option(..., help="Reasoner VLM: a checkpoint folder or Hub id."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0 for all; there is no authentication)."),
    port: int = typer.Option(8000, min=1, max=65535, help="Port to listen on."),
    max_batch: int = typer.Option(32, min=1, help="Most requests generated together in one batch."),
    batch_window_ms: float = typer.Option(10.0, min=0, help="How long a request waits for others to batch with."),
    served_model_name: str = typer.Option(None, help="The model name clients send (default: --model as given)."),
    log_level: str = typer.Option("info", help="uvicorn log level: critical, error, warning, info, debug."),
) -> None:
    """Serve a reasoner at http://HOST:PORT/v1 (chat completions, OpenAI-compatible, batched)."""
    with exit_on_user_error():
        run_serve_reasoner(
            model,
            host=host,
            port=port,
            max_batch=max_batch,
            batch_window_s=batch_window_ms / 1000,
            served_model_name=served_model_name,
            log_level=log_level,
        )


def run_serve_reasoner(
    model: str,
    *,
    host: str,
    port: int,
    max_batch: int,
    batch_window_s: float,
    served_model_name: str | None,
    log_level: str,
) -> None:
    """Load the reasoner, build the app and run uvicorn in the foreground until interrupted."""
    if log_level not in LOG_LEVELS:
        raise ValueError(f"--log-level must be one of {', '.join(LOG_LEVELS)}; got {log_level!r}")
    # Check the optional dependencies before loading a model, which can take minutes.
    try:
        import uvicorn

        from mmcascade.server.reasoner import create_reasoner_app
    except ImportError as error:
        _fail(f"serving needs FastAPI and uvicorn ({error}); {SERVER_EXTRA_HINT}")
    typer.echo(f"loading reasoner {model} ...", err=True)
    loaded = load_reasoner(model)
    name = served_model_name or model
    url_host = f"[{host}]" if ":" in host else host
    typer.echo(f"serving {name!r} at http://{url_host}:{port}/v1 (max batch {max_batch})", err=True)
    app = create_reasoner_app(loaded, name, max_batch=max_batch, batch_window_s=batch_window_s)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)
