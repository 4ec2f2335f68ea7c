"""What built an index: ``manifest.json``.

The manifest records the model (as the user named it, plus a fingerprint of its files), the stored
document budget, the vector shape and the backend, so an index is only ever searched with the model
that built it.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from mmcascade.models import model_fingerprint  # re-exported for one release: its home is mmcascade.models
from mmcascade.utils.fs import write_text_atomically

__all__ = ["FORMAT_VERSION", "MANIFEST_NAME", "IndexManifest", "model_fingerprint", "now"]

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


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
        write_text_atomically(folder / MANIFEST_NAME, json.dumps(asdict(self), indent=2))

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


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
