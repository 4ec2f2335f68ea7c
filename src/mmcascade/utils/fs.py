"""Crash-safe writes: a file or folder appears complete or not at all."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh staging folder; on success it replaces ``target`` in one rename.

    If the process dies inside the block, ``target`` keeps its previous contents and only a
    ``.<name>.tmp-*`` staging folder is left behind. An existing target is moved aside first and
    removed only after the new folder is in place.
    """
    target = Path(target).expanduser().resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    backup = None
    if target.exists():
        backup = target.parent / f".{target.name}.old-{os.getpid()}"
        shutil.rmtree(backup, ignore_errors=True)
        os.replace(target, backup)
    os.replace(staging, target)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def write_text_atomically(path: Path, text: str) -> None:
    """Write to a temp file in the same folder, fsync, then rename over ``path``: it is complete or absent."""
    write_bytes_atomically(path, text.encode("utf-8"))


def write_bytes_atomically(path: Path, data: bytes) -> None:
    """:func:`write_text_atomically` for bytes (an image, a binary file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_lines_atomically(path: Path, lines: Iterable[str]) -> None:
    """Write ``lines`` (each without its newline) one per line, as :func:`write_text_atomically` does:
    the file (e.g. a JSONL file) is complete or absent."""
    write_text_atomically(path, "".join(line + "\n" for line in lines))
