"""The small JSON file each backend keeps next to its data: which backend, which spec, which options."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmcascade.index.base import StoreSpec
from mmcascade.utils.fs import write_text_atomically

STORE_FILE = "mmcascade_store.json"


def write_store_file(path: Path, backend: str, spec: StoreSpec, options: dict[str, Any]) -> None:
    """Write ``mmcascade_store.json`` atomically (temporary file + rename)."""
    payload = {"backend": backend, "dim": spec.dim, "num_vectors": spec.num_vectors, "options": options}
    write_text_atomically(path / STORE_FILE, json.dumps(payload, indent=2))


def read_store_file(path: Path, backend: str, spec: StoreSpec) -> dict[str, Any]:
    """The stored options, after checking the store exists and matches ``backend`` and ``spec``."""
    file = path / STORE_FILE
    if not file.is_file():
        raise ValueError(f"{path} holds no {backend} index store ({STORE_FILE} is missing); build the index first")
    try:
        payload = json.loads(file.read_text())
        stored = (payload["backend"], payload["dim"], payload["num_vectors"])
        options = dict(payload.get("options", {}))
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{file} is corrupt ({error}); rebuild the index") from error
    if stored[0] != backend:
        raise ValueError(f"{path} holds a {stored[0]!r} store, not {backend!r}")
    if stored[1:] != (spec.dim, spec.num_vectors):
        raise ValueError(
            f"{path} stores {stored[2]} vectors of dim {stored[1]} per document; "
            f"asked for {spec.num_vectors} of dim {spec.dim}"
        )
    return options
