"""Where indexes live: the data directory, one folder per named index, listing and deleting them.

Folder layout::

    <data_dir>/<name>/manifest.json    what built the index (model, fingerprint, budgets, backend)
    <data_dir>/<name>/store/           the backend's files
    <data_dir>/<name>/.write.lock      held while a process writes

The manifest is written last when an index is created, so a folder without one is a create that
was interrupted; creating the index again replaces it.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from mmcascade.index.lock import write_lock
from mmcascade.index.manifest import MANIFEST_NAME
from mmcascade.models import cache_root

DATA_DIR_ENV = "MMCASCADE_DATA_DIR"
STORE_DIR = "store"
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def default_data_dir() -> Path:
    """``$MMCASCADE_DATA_DIR``, else ``indexes/`` in the cache root (:func:`mmcascade.models.cache_root`)."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser()
    return cache_root() / "indexes"


def index_folder(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """The folder of index ``name`` under ``data_dir`` (default :func:`default_data_dir`)."""
    check_index_name(name)
    return Path(data_dir).expanduser() / name if data_dir is not None else default_data_dir() / name


def check_index_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
        raise ValueError(
            f"index name {name!r} is not valid: use letters, digits, '.', '_' and '-' (starting with a letter or digit)"
        )
    return name


def list_indexes(data_dir: str | os.PathLike | None = None) -> list[str]:
    """Names of the indexes under ``data_dir``."""
    root = index_folder("x", data_dir).parent
    if not root.is_dir():
        return []
    return sorted(folder.name for folder in root.iterdir() if (folder / MANIFEST_NAME).is_file())


def delete_index(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Remove index ``name`` and its files; returns the folder that was removed."""
    folder = index_folder(name, data_dir)
    if not folder.exists():
        raise FileNotFoundError(f"no index named {name!r} in {folder.parent}")
    with write_lock(folder, name, refusal="not deleting it"):
        (folder / MANIFEST_NAME).unlink(missing_ok=True)  # first: a half-deleted folder no longer counts as an index
        shutil.rmtree(folder)
    return folder


def folder_bytes(folder: Path) -> int:
    """Bytes the folder's files occupy on disk (allocated blocks: Qdrant preallocates sparse files)."""
    return sum(file.stat().st_blocks * 512 for file in folder.rglob("*") if file.is_file())
