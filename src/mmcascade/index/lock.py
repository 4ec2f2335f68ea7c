"""One writer per index folder: an advisory ``flock`` on ``<folder>/.write.lock``.

Readers never take it (every backend reads a consistent state while a writer works); a second writer
gets an error naming the index instead of waiting forever.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = ".write.lock"


@contextlib.contextmanager
def write_lock(folder: Path, name: str, *, refusal: str = "wait for it to finish") -> Iterator[None]:
    """Hold the index's write lock for the block; ValueError (``refusal`` says what to do) if another
    process holds it."""
    with (folder / LOCK_NAME).open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise ValueError(f"index {name!r} is being written by another process; {refusal}") from error
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
