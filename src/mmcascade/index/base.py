"""The index seam: a store of multi-vector documents with ids and JSON payloads.

A backend holds no model. It stores ``(id, vectors (D, d), payload)`` records, upserts by id (adding an
id twice keeps one record: the last one), deletes by id, and returns MaxSim top-k hits for
``(n_q, Q, d)`` queries. Every backend must pass ``tests/index/test_conformance.py``.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

Payload = dict[str, Any]


@dataclass(frozen=True)
class SearchHit:
    """One result: the document id, its MaxSim score and its payload."""

    id: str
    score: float
    payload: Payload = field(default_factory=dict)


class StoreBusyError(ValueError):
    """``open`` found the store held by another process or index object (engines such as Qdrant Edge
    admit one at a time); :func:`mmcascade.index.lock.open_when_free` retries it."""


@dataclass(frozen=True)
class StoreSpec:
    """What every record of a store looks like: ``num_vectors`` vectors of ``dim`` floats."""

    dim: int
    num_vectors: int

    def __post_init__(self) -> None:
        for name in ("dim", "num_vectors"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")


class IndexBackend(ABC):
    """Storage and search for multi-vector documents; see the module docstring for the contract."""

    name: ClassVar[str]

    def __init__(self, path: Path, spec: StoreSpec):
        self.path = path
        self.spec = spec

    # ----------------------------------------------------------------- lifecycle
    @classmethod
    def validate_options(cls, **options: Any) -> None:
        """Raise the ValueError :meth:`create` would raise for these options, creating nothing (so a bad
        option is refused before an index folder exists). A backend that takes options overrides this."""
        if options:
            raise ValueError(f"the {cls.name} backend takes no options; got {sorted(options)}")

    @classmethod
    @abstractmethod
    def create(cls, path: str | os.PathLike, spec: StoreSpec, **options: Any) -> IndexBackend:
        """A new, empty store in ``path`` (which must not hold one yet)."""

    @classmethod
    @abstractmethod
    def open(cls, path: str | os.PathLike, spec: StoreSpec, **options: Any) -> IndexBackend:
        """The store previously created in ``path`` with the same spec and options.

        Raises :class:`StoreBusyError` (never the engine's own error) if another process holds it.
        """

    def flush(self) -> None:  # noqa: B027 - optional for backends that write through
        """Make every accepted write durable."""

    def optimize(self) -> bool:
        """Build search structures after a bulk write (e.g. an HNSW graph); True if anything was built.

        Called once at the end of every build; a backend that needs no such step keeps this default.
        """
        return False

    def close(self) -> None:  # noqa: B027 - optional for backends without resources
        """Release files and handles; the object is unusable afterwards."""

    def __enter__(self) -> IndexBackend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ----------------------------------------------------------------- data
    @abstractmethod
    def add(self, ids: Sequence[str], vectors: torch.Tensor, payloads: Sequence[Payload] | None = None) -> None:
        """Upsert ``ids`` with ``vectors (n, num_vectors, dim)`` and JSON ``payloads``; durable on return."""

    @abstractmethod
    def delete(self, ids: Sequence[str]) -> int:
        """Remove these ids (unknown ids are ignored); returns how many were removed."""

    @abstractmethod
    def contains(self, ids: Sequence[str]) -> list[bool]:
        """Whether each id is stored."""

    @abstractmethod
    def get_payloads(self, ids: Sequence[str]) -> list[Payload | None]:
        """The stored payload of each id (None for an id that is not stored), without the vectors."""

    @abstractmethod
    def count(self) -> int:
        """How many documents are stored."""

    @abstractmethod
    def search(self, queries: torch.Tensor, top_k: int) -> list[list[SearchHit]]:
        """MaxSim top-``top_k`` for each ``(n_q, Q, dim)`` query, best first."""

    # ----------------------------------------------------------------- helpers for implementations
    def check_add(
        self, ids: Sequence[str], vectors: torch.Tensor, payloads: Sequence[Payload] | None
    ) -> tuple[list[str], torch.Tensor, list[Payload]]:
        """Validate an :meth:`add` call; returns ids, float32 vectors and payloads (``{}`` when None)."""
        ids = [check_id(doc_id) for doc_id in ids]
        if len(set(ids)) != len(ids):
            seen: set[str] = set()
            duplicates = sorted({doc_id for doc_id in ids if doc_id in seen or seen.add(doc_id)})
            raise ValueError(f"ids must be unique within one add call; repeated: {duplicates[:5]}")
        vectors = torch.as_tensor(vectors)
        expected = (len(ids), self.spec.num_vectors, self.spec.dim)
        if tuple(vectors.shape) != expected:
            raise ValueError(
                f"vectors must have shape (n_ids, num_vectors, dim) = {expected} for this index; "
                f"got {tuple(vectors.shape)}"
            )
        if not vectors.is_floating_point():
            raise ValueError(f"vectors must be floating point; got {vectors.dtype}")
        if not bool(torch.isfinite(vectors).all()):
            raise ValueError("vectors contain NaN or infinity; nothing was added")
        if payloads is None:
            payloads = [{} for _ in ids]
        payloads = list(payloads)
        if len(payloads) != len(ids):
            raise ValueError(f"got {len(payloads)} payloads for {len(ids)} ids")
        for doc_id, payload in zip(ids, payloads, strict=True):
            check_payload(doc_id, payload)
        return ids, vectors.detach().to("cpu", torch.float32).contiguous(), payloads

    def check_queries(self, queries: torch.Tensor, top_k: int) -> torch.Tensor:
        """Validate a :meth:`search` call; returns ``(n_q, Q, dim)`` float32 queries."""
        queries = torch.as_tensor(queries)
        if queries.ndim == 2:
            queries = queries.unsqueeze(0)
        if queries.ndim != 3 or queries.shape[-1] != self.spec.dim or queries.shape[1] < 1:
            raise ValueError(
                f"queries must have shape (n_queries, n_vectors, {self.spec.dim}); got {tuple(queries.shape)}"
            )
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive int; got {top_k!r}")
        return queries.detach().to("cpu", torch.float32).contiguous()


def check_id(doc_id: Any) -> str:
    """Document ids are non-empty strings (a file's relative path, a JSONL ``id``)."""
    if not isinstance(doc_id, str) or not doc_id:
        raise ValueError(f"document ids must be non-empty strings; got {doc_id!r}")
    return doc_id


def check_payload(doc_id: str, payload: Any) -> None:
    if not isinstance(payload, dict):
        raise ValueError(f"payload of {doc_id!r} must be a dict; got {type(payload).__name__}")
    try:
        json.dumps(payload)
    except (TypeError, ValueError) as error:
        raise ValueError(f"payload of {doc_id!r} is not JSON-serialisable: {error}") from error
