"""Where indexes live and what built them: the data directory and ``manifest.json``.

The manifest records the model (as the user named it, plus a fingerprint of its files), the stored
document budget, the vector shape and the backend, so an index is only ever searched with the model
that built it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
DATA_DIR_ENV = "MMCASCADE_DATA_DIR"
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# Files up to this size are hashed whole; bigger weight files by size plus their first and last MiB.
_FULL_HASH_BYTES = 64 * 2**20
_EDGE_BYTES = 2**20


@dataclass
class IndexManifest:
    """What an index holds and which model built it."""

    name: str
    model: str  # as the user gave it: a folder, a Hub id or an alias such as "starter"
    model_fingerprint: str
    backend: str
    dim: int
    doc_budget: int  # document vectors stored per document
    query_vectors: int  # query vectors the model produces (the largest query budget)
    backend_options: dict[str, Any] = field(default_factory=dict)
    query_instruction: str | None = None
    document_instruction: str | None = None
    created_at: str = ""
    mmcascade_version: str = ""
    format_version: int = FORMAT_VERSION

    def save(self, folder: Path) -> None:
        """Write ``manifest.json`` atomically."""
        staging = folder / f".{MANIFEST_NAME}.tmp"
        staging.write_text(json.dumps(asdict(self), indent=2))
        os.replace(staging, folder / MANIFEST_NAME)

    @classmethod
    def load(cls, folder: Path) -> IndexManifest:
        file = folder / MANIFEST_NAME
        try:
            payload = json.loads(file.read_text())
            known = {item.name for item in fields(cls)}
            manifest = cls(**{key: value for key, value in payload.items() if key in known})
        except (OSError, json.JSONDecodeError, TypeError) as error:
            raise ValueError(f"{file} is unreadable ({error}); rebuild the index or restore the file") from error
        if manifest.format_version > FORMAT_VERSION:
            raise ValueError(
                f"{file} has format_version {manifest.format_version}; this mmcascade reads up to {FORMAT_VERSION}"
            )
        return manifest


def default_data_dir() -> Path:
    """``$MMCASCADE_DATA_DIR``, else ``$XDG_CACHE_HOME/mmcascade/indexes`` (``~/.cache/...``)."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return cache / "mmcascade" / "indexes"


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


def model_fingerprint(folder: Path) -> str:
    """A short hash of a model folder's files: configs, tokenizers and weights.

    Weight files above 64 MiB are hashed by name, size and their first and last MiB, which tells
    checkpoints apart in practice without reading gigabytes.
    """
    digest = hashlib.sha256()
    for file in sorted(path for path in folder.rglob("*") if path.is_file()):
        relative = file.relative_to(folder).as_posix()
        if any(part.startswith(".") for part in file.relative_to(folder).parts) or relative.endswith(".md"):
            continue
        size = file.stat().st_size
        digest.update(f"{relative}\0{size}\0".encode())
        with file.open("rb") as handle:
            if size <= _FULL_HASH_BYTES:
                digest.update(handle.read())
            else:
                digest.update(handle.read(_EDGE_BYTES))
                handle.seek(size - _EDGE_BYTES)
                digest.update(handle.read(_EDGE_BYTES))
    return digest.hexdigest()[:16]


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
