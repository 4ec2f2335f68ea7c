"""One writer per index folder: an advisory ``flock`` on ``<folder>/.write.lock``; and readers that
wait, bounded, for a store whose engine admits one process at a time.

Readers never take the write lock. The exact backend reads a consistent state while a writer works;
Qdrant Edge and qdrant-client's local mode let one process open a store at a time (a lock on its
write-ahead log / folder, held until it is closed, with no read-only mode), so :func:`open_when_free`
retries such a store until it is free or ``MMCASCADE_LOCK_TIMEOUT`` seconds (default 30) pass, then
says who holds it. A second writer gets an error naming the index instead of waiting forever.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from mmcascade.index.base import StoreBusyError

LOCK_NAME = ".write.lock"
LOCK_TIMEOUT_ENV = "MMCASCADE_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT_S = 30.0
# A probe (``writer_active``) holds the lock for microseconds; a writer retries this long before
# concluding that another process is writing.
_CONTENDED_RETRY_S = 0.2
_POLL_S = 0.1

T = TypeVar("T")


@contextlib.contextmanager
def write_lock(folder: Path, name: str, *, refusal: str = "wait for it to finish") -> Iterator[None]:
    """Hold the index's write lock for the block; ValueError (``refusal`` says what to do) if another
    process holds it."""
    with (folder / LOCK_NAME).open("a+") as handle:
        deadline = time.monotonic() + _CONTENDED_RETRY_S
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError as error:
                if time.monotonic() >= deadline:
                    raise ValueError(f"index {name!r} is being written by another process; {refusal}") from error
                time.sleep(_CONTENDED_RETRY_S / 10)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def writer_active(folder: Path) -> bool:
    """Whether another process holds the index's write lock (a probe: it never waits)."""
    lock_file = folder / LOCK_NAME
    if not lock_file.is_file():
        return False
    with lock_file.open() as handle:  # read-only: a reader may not be allowed to write the folder
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def lock_timeout(wait: float | None = None) -> float:
    """Seconds to wait for a busy store: ``wait`` if given, else ``$MMCASCADE_LOCK_TIMEOUT``, else 30."""
    source = "wait"
    if wait is None:
        raw = os.environ.get(LOCK_TIMEOUT_ENV)
        if raw is None or not raw.strip():
            return DEFAULT_LOCK_TIMEOUT_S
        source = f"${LOCK_TIMEOUT_ENV}"
        try:
            wait = float(raw)
        except ValueError:
            wait = -1.0
    if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait < float("inf"):
        raise ValueError(f"{source} must be a number of seconds >= 0; got {wait!r}")
    return float(wait)


def open_when_free(
    open_store: Callable[[], T], folder: Path, name: str, *, write: bool = False, wait: float | None = None
) -> T:
    """``open_store()``, retried while it raises :class:`StoreBusyError`, for up to :func:`lock_timeout` seconds.

    A writer (``write=True``) checks the write lock first, and again while it waits: another writer is
    refused at once with the write lock's message, instead of after the timeout.
    Raises ValueError naming the index, who holds it and what to do.
    """
    timeout = lock_timeout(wait)
    deadline = time.monotonic() + timeout
    while True:
        if write:
            with write_lock(folder, name):
                pass
        try:
            return open_store()
        except StoreBusyError as error:
            if time.monotonic() >= deadline:
                raise ValueError(_busy_message(folder, name, timeout)) from error
        time.sleep(_POLL_S)


def _busy_message(folder: Path, name: str, timeout: float) -> str:
    longer = f"set {LOCK_TIMEOUT_ENV}=SECONDS to wait longer than {timeout:g} s"
    if writer_active(folder):
        return f"index {name!r} is being written by another process; wait for it to finish, or {longer}"
    return (
        f"index {name!r} is open in another process (its backend lets one process open it at a time); "
        f"close it there (a search or a Python session), or {longer}"
    )
