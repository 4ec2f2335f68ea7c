"""The exact index: documents in safetensors shards on disk, scored by a full MaxSim scan.

It is the reference the approximate backends are measured against, and a fine choice up to a few
hundred thousand documents (see ``benchmarks/index.py``).

Layout of the store folder::

    mmcascade_store.json           the spec (dim, num_vectors) and options
    shard-00000001.safetensors     "vectors" (n, num_vectors, dim); metadata: ids and payloads (JSON)
    shard-00000002.safetensors     ...

Crash safety: a shard is written to a temporary file, fsynced and renamed into place, so a shard is
either complete or absent. An upsert writes the new shard *before* rewriting the older shard that held
the id, and on load the newest shard wins, so a kill between the two steps never loses a document or
duplicates one; a stale copy left by a kill is ignored, and removed when its id is next written or deleted.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from mmcascade.index.base import IndexBackend, Payload, SearchHit, StoreSpec
from mmcascade.index.storage import read_store_file, write_store_file
from mmcascade.scoring import maxsim_topk

_SHARD_PATTERN = re.compile(r"^shard-(\d{8})\.safetensors$")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ExactOptions:
    """``dtype``: storage and compute dtype of the vectors (float32 is the reference; bfloat16 halves the
    bytes and is ~1.7x faster on CPUs with avx512_bf16). ``compact_below``: shards with fewer documents
    than this are merged on :meth:`ExactBackend.flush` once there are more than ``max_small_shards``,
    into shards of at most ``merged_size`` documents."""

    dtype: str = "float32"
    compact_below: int = 4096
    max_small_shards: int = 16
    merged_size: int = 16384

    def __post_init__(self) -> None:
        if self.dtype not in _DTYPES:
            raise ValueError(f"exact backend: dtype must be one of {', '.join(_DTYPES)}; got {self.dtype!r}")
        for name in ("compact_below", "max_small_shards", "merged_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"exact backend: {name} must be a positive int; got {value!r}")


@dataclass
class _Shard:
    seq: int
    ids: list[str]  # every id physically in the file, stale copies included
    payloads: list[Payload]
    vectors: torch.Tensor  # (n, num_vectors, dim) in the storage dtype


class ExactBackend(IndexBackend):
    """Brute-force MaxSim over every stored document; exact by construction."""

    name = "exact"

    def __init__(self, path: Path, spec: StoreSpec, options: ExactOptions):
        super().__init__(path, spec)
        self.options = options
        self._dtype = _DTYPES[options.dtype]
        self._shards: dict[int, _Shard] = {}
        self._location: dict[str, tuple[int, int]] = {}  # id -> (shard seq, row) of its live copy
        self._matrix: tuple[torch.Tensor, list[tuple[int, int]]] | None = None  # search cache

    # ----------------------------------------------------------------- lifecycle
    @classmethod
    def validate_options(cls, **options: Any) -> None:
        _options(options)

    @classmethod
    def create(cls, path: str | os.PathLike, spec: StoreSpec, **options: Any) -> ExactBackend:
        path = Path(path)
        options_obj = _options(options)
        if path.exists() and any(path.iterdir()):
            raise ValueError(f"{path} already holds files: open the index, or delete it first")
        path.mkdir(parents=True, exist_ok=True)
        write_store_file(path, cls.name, spec, asdict(options_obj))
        return cls(path, spec, options_obj)

    @classmethod
    def open(cls, path: str | os.PathLike, spec: StoreSpec, **options: Any) -> ExactBackend:
        path = Path(path)
        stored_options = read_store_file(path, cls.name, spec)
        backend = cls(path, spec, _options({**stored_options, **options}))
        backend._load()
        return backend

    def flush(self) -> None:
        small = sorted(seq for seq, shard in self._shards.items() if len(shard.ids) < self.options.compact_below)
        if len(small) <= self.options.max_small_shards:
            return
        # Merge into shards of up to ``merged_size`` documents: memory for a merge stays bounded (the
        # merged copy and its serialised bytes), and no single file grows with the index.
        group: list[int] = []
        rows = 0
        for seq in small:
            size = len(self._shards[seq].ids)
            if group and rows + size > self.options.merged_size:
                if len(group) > 1:
                    self._compact(group)
                group, rows = [], 0
            group.append(seq)
            rows += size
        if len(group) > 1:
            self._compact(group)

    def close(self) -> None:
        self.flush()
        self._shards.clear()
        self._location.clear()
        self._matrix = None

    # ----------------------------------------------------------------- data
    def add(self, ids: Sequence[str], vectors: torch.Tensor, payloads: Sequence[Payload] | None = None) -> None:
        ids, vectors, payloads = self.check_add(ids, vectors, payloads)
        if not ids:
            return
        replaced = [doc_id for doc_id in ids if doc_id in self._location]
        seq = self._write_shard(ids, payloads, vectors.to(self._dtype))  # new copies first ...
        for row, doc_id in enumerate(ids):
            self._location[doc_id] = (seq, row)
        self._drop_stale(replaced)  # ... then the old ones go
        self._matrix = None

    def delete(self, ids: Sequence[str]) -> int:
        present = [doc_id for doc_id in dict.fromkeys(ids) if doc_id in self._location]
        for doc_id in present:
            del self._location[doc_id]
        self._drop_stale(present)
        self._matrix = None
        return len(present)

    def contains(self, ids: Sequence[str]) -> list[bool]:
        return [doc_id in self._location for doc_id in ids]

    def get_payloads(self, ids: Sequence[str]) -> list[Payload | None]:
        locations = [self._location.get(doc_id) if isinstance(doc_id, str) else None for doc_id in ids]
        return [None if at is None else dict(self._shards[at[0]].payloads[at[1]]) for at in locations]

    def count(self) -> int:
        return len(self._location)

    def search(self, queries: torch.Tensor, top_k: int) -> list[list[SearchHit]]:
        queries = self.check_queries(queries, top_k)  # (n_q, Q, dim)
        if not self._location:
            return [[] for _ in range(queries.shape[0])]
        matrix, rows = self._search_matrix()  # (n_docs, num_vectors, dim)
        scores, indices = maxsim_topk(queries.to(self._dtype), matrix, min(top_k, matrix.shape[0]))
        results = []
        for query_scores, query_indices in zip(scores.tolist(), indices.tolist(), strict=True):
            hits = []
            for score, index in zip(query_scores, query_indices, strict=True):
                seq, row = rows[index]
                shard = self._shards[seq]
                hits.append(SearchHit(id=shard.ids[row], score=float(score), payload=shard.payloads[row]))
            results.append(hits)
        return results

    # ----------------------------------------------------------------- internals
    def _search_matrix(self) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """All live vectors in one tensor (what the scan reads), with each row's (shard, row)."""
        if self._matrix is None:
            rows = sorted(self._location.values())
            by_shard: dict[int, list[int]] = {}
            for seq, row in rows:
                by_shard.setdefault(seq, []).append(row)
            if len(by_shard) == 1 and len(rows) == len(self._shards[rows[0][0]].ids):
                matrix = self._shards[rows[0][0]].vectors  # one fully live shard: no copy
            else:
                matrix = torch.empty((len(rows), self.spec.num_vectors, self.spec.dim), dtype=self._dtype)
                offset = 0
                for seq, shard_rows in by_shard.items():
                    shard = self._shards[seq]
                    block = matrix[offset : offset + len(shard_rows)]  # (n, num_vectors, dim)
                    if len(shard_rows) == len(shard.ids):
                        block.copy_(shard.vectors)
                        shard.vectors = block  # held once: the shard's own copy is freed as we go
                    else:  # stale rows stay in the shard until it is rewritten
                        torch.index_select(shard.vectors, 0, torch.tensor(shard_rows), out=block)
                    offset += len(shard_rows)
            self._matrix = (matrix, rows)
        return self._matrix

    def _load(self) -> None:
        for file in sorted(self.path.iterdir()):
            if file.name.startswith(".shard-"):
                file.unlink(missing_ok=True)  # a write killed before its rename
                continue
            match = _SHARD_PATTERN.match(file.name)
            if match:
                self._shards[int(match.group(1))] = self._read_shard(file, int(match.group(1)))
        for seq in sorted(self._shards):  # the newest copy of an id wins
            for row, doc_id in enumerate(self._shards[seq].ids):
                self._location[doc_id] = (seq, row)

    def _read_shard(self, file: Path, seq: int) -> _Shard:
        try:
            with safe_open(str(file), framework="pt") as handle:
                metadata = handle.metadata() or {}
                vectors = handle.get_tensor("vectors")
            ids, payloads = json.loads(metadata["ids"]), json.loads(metadata["payloads"])
        except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as error:
            raise ValueError(f"index shard {file} is unreadable ({error}); restore it or rebuild the index") from error
        expected = (len(ids), self.spec.num_vectors, self.spec.dim)
        if tuple(vectors.shape) != expected or len(payloads) != len(ids):
            raise ValueError(f"index shard {file} has vectors {tuple(vectors.shape)}, expected {expected}")
        return _Shard(seq, ids, payloads, vectors.to(self._dtype))

    def _write_shard(self, ids: list[str], payloads: list[Payload], vectors: torch.Tensor) -> int:
        seq = max(self._shards, default=0) + 1
        final = self.path / f"shard-{seq:08d}.safetensors"
        staging = self.path / f".shard-{seq:08d}.tmp"
        metadata = {"ids": json.dumps(ids), "payloads": json.dumps(payloads)}
        save_file({"vectors": vectors.contiguous()}, str(staging), metadata=metadata)
        _fsync(staging)
        os.replace(staging, final)
        _fsync(self.path)
        self._shards[seq] = _Shard(seq, list(ids), list(payloads), vectors)
        return seq

    def _drop_stale(self, ids: Sequence[str]) -> None:
        """Rewrite (or remove) every shard holding a copy of ``ids`` that is not the live one."""
        targets = set(ids)
        if not targets:
            return
        for seq in sorted(self._shards):
            shard = self._shards[seq]
            keep = [
                row
                for row, doc_id in enumerate(shard.ids)
                if doc_id not in targets or self._location.get(doc_id) == (seq, row)
            ]
            if len(keep) < len(shard.ids):
                self._replace_shard(seq, keep)

    def _replace_shard(self, seq: int, keep: list[int]) -> None:
        shard = self._shards.pop(seq)
        file = self.path / f"shard-{seq:08d}.safetensors"
        if keep:
            ids = [shard.ids[row] for row in keep]
            payloads = [shard.payloads[row] for row in keep]
            vectors = shard.vectors[torch.tensor(keep)]
            staging = self.path / f".shard-{seq:08d}.tmp"
            save_file(
                {"vectors": vectors.contiguous()},
                str(staging),
                {"ids": json.dumps(ids), "payloads": json.dumps(payloads)},
            )
            _fsync(staging)
            os.replace(staging, file)
            self._shards[seq] = _Shard(seq, ids, payloads, vectors)
            for row, doc_id in enumerate(ids):
                if self._location.get(doc_id, (None, None))[0] == seq:
                    self._location[doc_id] = (seq, row)
        else:
            file.unlink(missing_ok=True)
        _fsync(self.path)

    def _compact(self, seqs: list[int]) -> None:
        """Merge small shards into one; their live rows move, nothing else changes."""
        merging = set(seqs)
        live = [(doc_id, location) for doc_id, location in self._location.items() if location[0] in merging]
        live.sort(key=lambda pair: pair[1])
        if live:
            ids = [doc_id for doc_id, _ in live]
            payloads = [self._shards[seq].payloads[row] for _, (seq, row) in live]
            rows_by_shard: dict[int, list[int]] = {}
            for _, (seq, row) in live:
                rows_by_shard.setdefault(seq, []).append(row)
            vectors = torch.cat(
                [self._shards[seq].vectors[torch.tensor(rows)] for seq, rows in rows_by_shard.items()]
            )  # (n_live, num_vectors, dim), in the order of ``live``
            merged = self._write_shard(ids, payloads, vectors)  # the merged copy is newest: it wins on load
            for row, doc_id in enumerate(ids):
                self._location[doc_id] = (merged, row)
        for seq in seqs:
            self._shards.pop(seq)
            (self.path / f"shard-{seq:08d}.safetensors").unlink(missing_ok=True)
        _fsync(self.path)
        self._matrix = None


def _options(options: dict[str, Any]) -> ExactOptions:
    known = set(ExactOptions.__dataclass_fields__)
    unknown = set(options) - known
    if unknown:
        raise ValueError(f"exact backend: unknown options {sorted(unknown)}; valid: {sorted(known)}")
    return ExactOptions(**options)


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to disk, so a rename is durable."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    descriptor = os.open(path, flags)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
