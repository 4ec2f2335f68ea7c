"""What the two Qdrant backends share: point ids, the reserved payload key, the dense first-stage
vector, and the options.

Both backends store each document as two named vectors:

- ``"mean"``: the mean of the document's vectors, L2-normalised; dense, cosine, with an HNSW graph.
  It finds ``prefetch`` candidates per query.
- ``"mv"``: all ``num_vectors`` vectors; a MaxSim multivector with the HNSW graph disabled (``m=0``),
  so it is only used to rescore the candidates exactly.

HNSW built directly over the multivectors reached recall@10 of 0.05-0.24 on 100k documents; the two
stages reach ~1.0 at ~1 ms/query (``/work/shared/notes/performance.md``).
"""

from __future__ import annotations

import os
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from mmcascade.index.base import Payload, SearchHit, StoreBusyError

# Qdrant point ids must be ints or UUIDs: a document's id maps to a UUID-5 under this namespace, and
# the original string id is kept in the payload under ID_KEY.
ID_NAMESPACE = uuid.UUID("6f1c8a52-3d0e-4b7a-9c2f-5e8d1a4b7c30")
ID_KEY = "_mmcascade_id"
MEAN_VECTOR = "mean"
MULTI_VECTOR = "mv"

MULTIVECTOR_DATATYPES = ("float16", "float32")
# Options that only change how searches (and upload batches) run; ``open`` may override them. Every
# other option shapes the stored collection and is fixed when the index is created.
RUNTIME_OPTIONS = frozenset({"prefetch", "hnsw_ef", "batch_size"})


def point_id(doc_id: str) -> str:
    """The Qdrant point id (a UUID string) of a document id; the same id always gives the same UUID."""
    return str(uuid.uuid5(ID_NAMESPACE, doc_id))


def mean_vectors(vectors: torch.Tensor) -> torch.Tensor:
    """The dense first-stage vector of each document or query: ``(n, D, d) -> (n, d)``, L2-normalised."""
    return torch.nn.functional.normalize(vectors.float().mean(dim=1), dim=-1)  # (n, d)


def stored_payload(backend: str, doc_id: str, payload: Payload) -> Payload:
    """The payload as stored: the user's keys plus the document id under :data:`ID_KEY`."""
    if ID_KEY in payload:
        raise ValueError(f"{backend}: payload of {doc_id!r} uses the reserved key {ID_KEY!r}; rename that key")
    return {**payload, ID_KEY: doc_id}


def search_hit(backend: str, score: float, payload: Payload | None) -> SearchHit:
    """A hit with the original document id and the user's payload (the id key stripped)."""
    payload = dict(payload or {})
    doc_id = payload.pop(ID_KEY, None)
    if not isinstance(doc_id, str):
        raise ValueError(
            f"{backend}: a stored point has no {ID_KEY!r} in its payload; the collection was not written by "
            "mmcascade or is damaged: rebuild the index"
        )
    return SearchHit(id=doc_id, score=float(score), payload=payload)


@dataclass(frozen=True)
class QdrantOptions:
    """Options of both Qdrant backends.

    Search time (``open`` may override them):
        prefetch: candidates the dense ``"mean"`` stage passes to MaxSim rescoring (at least ``top_k``).
        hnsw_ef: HNSW beam width of the dense stage; None = Qdrant's default (at least the prefetch).
        batch_size: points per upsert request in :meth:`add`.

    Fixed at create:
        hnsw_m, hnsw_ef_construct: graph of the dense stage (``hnsw_m=0`` disables it: the stage scans).
        full_scan_threshold_kb: below this many KB of dense vectors in a segment, search scans instead
            of walking the graph (10,000 KB = 20k vectors of dim 128; Qdrant's default).
        indexing_threshold_kb: a segment whose largest vector storage (the multivectors) exceeds this
            many KB gets the graph when optimised; None = Qdrant's default (10,000 KB, ~2,500 documents
            of 16 x 128 float16), 0 = never build it.
        multivector_datatype: storage of the ``"mv"`` vectors, ``"float16"`` (half the disk, recall
            0.999 vs 1.0 measured) or ``"float32"``.
    """

    prefetch: int = 200
    hnsw_m: int = 16
    hnsw_ef_construct: int = 100
    hnsw_ef: int | None = None
    multivector_datatype: str = "float16"
    batch_size: int = 256
    full_scan_threshold_kb: int = 10_000
    indexing_threshold_kb: int | None = None

    def __post_init__(self) -> None:
        minimums = {
            "prefetch": 1,
            "hnsw_m": 0,
            "hnsw_ef_construct": 4,
            "hnsw_ef": 1,
            "batch_size": 1,
            "full_scan_threshold_kb": 0,
            "indexing_threshold_kb": 0,
        }
        for name, minimum in minimums.items():
            value = getattr(self, name)
            if value is None and name in ("hnsw_ef", "indexing_threshold_kb"):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"Qdrant option {name} must be an int >= {minimum}; got {value!r}")
        if self.multivector_datatype not in MULTIVECTOR_DATATYPES:
            raise ValueError(
                f"Qdrant option multivector_datatype must be one of {', '.join(MULTIVECTOR_DATATYPES)}; "
                f"got {self.multivector_datatype!r}"
            )

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> QdrantOptions:
        """Options from keyword arguments; an unknown name is a ValueError listing the known ones."""
        known = [option.name for option in fields(cls)]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(f"unknown Qdrant option(s) {', '.join(unknown)}; known: {', '.join(known)}")
        return cls(**options)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def prefetch_limit(self, top_k: int) -> int:
        return max(self.prefetch, top_k)


def merge_open_options(backend: str, stored: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """The options to open a store with: the stored ones, with ``given`` overriding only runtime options.

    A fixed option given with a different value than the stored one is a ValueError (it would not
    change the stored collection, only hide what it holds).
    """
    merged = dict(stored)
    for name, value in given.items():
        if name not in RUNTIME_OPTIONS and name in stored and stored[name] != value:
            raise ValueError(
                f"{backend}: option {name} is fixed when the index is created (stored: {stored[name]!r}, "
                f"given: {value!r}); open without it, or rebuild the index with the new value"
            )
        merged[name] = value
    return merged


# Ids looked up (or deleted) per request in contains/delete.
RETRIEVE_CHUNK = 4096


def is_document_id(doc_id: Any) -> bool:
    """Anything that is not a valid document id cannot be stored: contains says False, delete ignores it."""
    return isinstance(doc_id, str) and bool(doc_id)


def stored_ids(ids: Sequence[Any], retrieve: Callable[[list[str]], Iterable[Any]]) -> dict[str, bool]:
    """Which of the (valid, de-duplicated) ``ids`` are stored; ``retrieve(point_ids)`` returns the found records."""
    wanted = list(dict.fromkeys(doc_id for doc_id in ids if is_document_id(doc_id)))
    stored: set[str] = set()
    for start in range(0, len(wanted), RETRIEVE_CHUNK):
        records = retrieve([point_id(doc_id) for doc_id in wanted[start : start + RETRIEVE_CHUNK]])
        stored.update(str(record.id) for record in records)
    return {doc_id: point_id(doc_id) in stored for doc_id in wanted}


def stored_payloads(
    backend: str, ids: Sequence[Any], retrieve: Callable[[list[str]], Iterable[Any]]
) -> list[Payload | None]:
    """``get_payloads``: the user's payload of each id, None where it is not stored;
    ``retrieve(point_ids)`` returns the found records with their payloads."""
    wanted = list(dict.fromkeys(doc_id for doc_id in ids if is_document_id(doc_id)))
    found: dict[str, Payload] = {}
    for start in range(0, len(wanted), RETRIEVE_CHUNK):
        for record in retrieve([point_id(doc_id) for doc_id in wanted[start : start + RETRIEVE_CHUNK]]):
            hit = search_hit(backend, 0.0, record.payload)
            found[hit.id] = hit.payload
    return [found.get(doc_id) if is_document_id(doc_id) else None for doc_id in ids]


def contained(ids: Sequence[Any], found: dict[str, bool]) -> list[bool]:
    """``contains`` answers from a :func:`stored_ids` result, in the order of ``ids``."""
    return [found.get(doc_id, False) if is_document_id(doc_id) else False for doc_id in ids]


# ----------------------------------------------------------------- one process at a time
# Qdrant Edge flocks its write-ahead log and qdrant-client's local mode its folder, from open to close,
# with no read-only mode: a second opener (process or object) is refused. These turn that refusal into
# StoreBusyError (which open_when_free retries), and a second object in this process into an error at
# once (waiting for ourselves would never end).
_ENGINE_LOCK_TEXTS = ("WouldBlock", "already accessed by another instance")
_OPEN_HERE: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()


def is_engine_lock_error(error: BaseException) -> bool:
    """Whether the engine refused to open a store because another opener holds its lock."""
    return any(text in str(error) for text in _ENGINE_LOCK_TEXTS)


def busy_error(backend: str, path: Path) -> StoreBusyError:
    """The engine's lock refusal, said plainly (raise it ``from`` the engine's error)."""
    return StoreBusyError(
        f"the {backend} store in {path} is open elsewhere: another process holds it ({backend} lets one "
        "process open a store at a time); close it there, or wait until it is done"
    )


def check_not_open_here(backend: str, path: Path) -> None:
    """ValueError if another object of this process has the store at ``path`` open."""
    if _key(path) in _OPEN_HERE:
        raise ValueError(
            f"the {backend} store in {path} is open elsewhere in this process (another index object); "
            "close the other index object first"
        )


def mark_open_here(path: Path, store: Any) -> None:
    """Record ``store`` as this process's opener of ``path`` (until :func:`mark_closed_here` or it is collected)."""
    _OPEN_HERE[_key(path)] = store


def mark_closed_here(path: Path) -> None:
    _OPEN_HERE.pop(_key(path), None)


def _key(path: Path) -> str:
    return os.path.realpath(path)
