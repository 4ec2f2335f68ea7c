"""Turn the CLI's expected failures into one ``error: ...`` line and exit code 2, not a traceback.

Expected failures are what a user's input or machine causes: a bad option value, a missing or unreadable
file, an unknown model, a server that cannot be reached, a missing optional extra. A traceback is kept
for what is left: bugs.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import typer

#: the project's own errors that describe the user's setup, not a bug: (module, class). They are looked up
#: among the loaded modules (an error of a module never imported cannot have been raised), so the command
#: table, which wraps every command in :func:`exit_on_user_error`, imports none of them.
DOMAIN_ERRORS = (
    ("mmcascade.reasoner.pipeline", "ReasoningError"),  # a reasoner failed on a batch (server down, bad model)
    ("mmcascade.reasoner.remote", "RemoteReasonerError"),  # an OpenAI-compatible server failed or was unreachable
)
#: libraries whose errors wrap a network failure (an OSError in the chain: connection refused, no such host)
NETWORK_LIBRARIES = frozenset({"httpx", "httpcore", "qdrant_client", "requests", "urllib3", "aiohttp", "grpc"})
#: top-level module of an optional dependency -> the extra that installs it
OPTIONAL_EXTRAS = {
    "accelerate": "train",
    "peft": "train",
    "yaml": "train",
    "qdrant_client": "qdrant",
    "qdrant_edge": "qdrant",
    "matplotlib": "eval",
    "pyarrow": "eval",
    "datasets": "eval",
    "fastapi": "server",
    "uvicorn": "server",
    "multipart": "server",
    "ray": "ray",
    "gguf": "starter",
    "sklearn": "starter",
}


@contextlib.contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Run a command body; an expected failure prints one ``error: ...`` line (stderr) and exits with 2."""
    try:
        yield
    except typer.Exit:
        raise
    except Exception as error:
        message = user_error_message(error)
        if message is None:
            raise
        typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from error


def user_error_message(error: BaseException) -> str | None:
    """The one-line message of an expected failure, or None for an error that is a bug."""
    if isinstance(error, ImportError):
        return _missing_dependency(error)
    if isinstance(error, (ValueError, *_domain_error_types())):
        return one_line(str(error))
    if isinstance(error, OSError):
        return one_line(_os_error(error))
    if _library_of(error) in NETWORK_LIBRARIES and _caused_by_os_error(error):
        return one_line(f"could not connect: {error} (is the server running, and is its URL right?)")
    return None


def one_line(text: str) -> str:
    """``text`` on one line (a multi-line message, e.g. a YAML parser's, has its lines joined)."""
    return " ".join(line.strip() for line in text.splitlines() if line.strip()) or "(no message)"


def _missing_dependency(error: ImportError) -> str | None:
    module = (error.name or "").partition(".")[0]
    if module == "mmcascade":
        return None  # an import of our own code failing is a bug
    if "pip install" in str(error):
        return one_line(str(error))
    extra = OPTIONAL_EXTRAS.get(module)
    hint = f"pip install 'mmcascade[{extra}]'" if extra else "pip install 'mmcascade[all]' installs every extra"
    return one_line(f"{error}; this needs an optional dependency: {hint}")


def _os_error(error: OSError) -> str:
    """``Permission denied: /path`` rather than ``[Errno 13] Permission denied: '/path'``."""
    if error.strerror and error.filename is not None:
        target = f"{error.filename} -> {error.filename2}" if error.filename2 is not None else str(error.filename)
        return f"{error.strerror}: {target}"
    return str(error) or type(error).__name__


def _domain_error_types() -> tuple[type[BaseException], ...]:
    loaded = ((sys.modules.get(module), name) for module, name in DOMAIN_ERRORS)
    return tuple(getattr(module, name) for module, name in loaded if module is not None)


def _library_of(error: BaseException) -> str:
    return type(error).__module__.partition(".")[0]


def _caused_by_os_error(error: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
