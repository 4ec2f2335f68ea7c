"""Encode a dataset once per model and keep the vectors (safetensors + JSON, never pickle).

Queries are encoded at the model's full query vectors and candidates at its full document vectors,
so every budget is a prefix of the cached vectors: scoring a second budget costs no encoding.
A cache is reused only when its fingerprint (model fingerprint, every query and candidate item, the
size and mtime of every media file) matches; it is written atomically, so a kill leaves either the
old cache or none.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from mmcascade.evaluation.mmeb.dataset import EvalDataset
from mmcascade.utils.fs import atomic_directory

CACHE_VERSION = 1
_CHUNK = 256  # items per encode call: a failing item costs re-encoding at most this many, one by one


@dataclass
class EncodedDataset:
    """Cached vectors of one dataset: ``queries (n_q, Q, d)`` and ``candidates (n_c, D, d)``.

    ``query_failures`` / ``candidate_failures`` map a query id / candidate name to why it could not be
    encoded (an unreadable image, an item the model refuses); their rows are NaN and never scored.
    """

    queries: torch.Tensor
    candidates: torch.Tensor
    query_ids: list[str]
    candidate_names: list[str]
    query_failures: dict[str, str]
    candidate_failures: dict[str, str]
    from_cache: bool = False


def dataset_fingerprint(dataset: EvalDataset, model_fingerprint: str) -> str:
    """A hash of the model and of everything the encoder reads for this dataset."""
    digest = hashlib.sha256(f"v{CACHE_VERSION}\0{model_fingerprint}\0{dataset.name}\0".encode())
    items = [query.item for query in dataset.queries] + list(dataset.candidates.values())
    digest.update(json.dumps([query.query_id for query in dataset.queries]).encode())
    digest.update(json.dumps(list(dataset.candidates)).encode())
    for item in items:
        digest.update(json.dumps(item, sort_keys=True, default=str).encode())
        for path in _media_paths(item):
            try:
                stat = os.stat(path)
                digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
            except OSError:
                digest.update(f"{path}\0missing".encode())
    return digest.hexdigest()[:20]


def load_or_encode(
    dataset: EvalDataset,
    embedder: Any,
    cache_dir: Path,
    fingerprint: str,
    *,
    batch_size: int = 16,
    on_progress: Callable[[str], None] | None = None,
) -> EncodedDataset:
    """The dataset's vectors from ``cache_dir`` when the fingerprint matches, else encoded and cached."""
    cached = _read_cache(cache_dir, fingerprint)
    if cached is not None:
        return cached
    query_items = [query.item for query in dataset.queries]
    names = list(dataset.candidates)
    if on_progress:
        on_progress(f"{dataset.name}: encoding {len(query_items)} queries and {len(names)} candidates")
    queries, query_failures = encode_robustly(embedder, query_items, "query", batch_size)
    candidates, candidate_failures = encode_robustly(
        embedder, [dataset.candidates[name] for name in names], "document", batch_size
    )
    query_ids = [query.query_id for query in dataset.queries]
    encoded = EncodedDataset(
        queries=queries,
        candidates=candidates,
        query_ids=query_ids,
        candidate_names=names,
        query_failures={query_ids[index]: reason for index, reason in query_failures.items()},
        candidate_failures={names[index]: reason for index, reason in candidate_failures.items()},
    )
    _write_cache(cache_dir, fingerprint, encoded)
    return encoded


def encode_robustly(
    embedder: Any, items: Sequence[dict[str, Any]], side: str, batch_size: int
) -> tuple[torch.Tensor, dict[int, str]]:
    """``(n, vectors, dim)`` float32 vectors, NaN rows for items that fail, and why each failed."""
    vectors_per_item = embedder.num_vectors(side) if embedder.is_multi_vector else 1
    result = torch.full((len(items), vectors_per_item, embedder.dim), float("nan"))
    failures: dict[int, str] = {}
    for start in range(0, len(items), _CHUNK):
        chunk = list(range(start, min(start + _CHUNK, len(items))))
        try:
            result[chunk] = _encode(embedder, [items[index] for index in chunk], side, batch_size)
        except (ValueError, FileNotFoundError, OSError):
            for index in chunk:  # find the culprit(s); keep the rest
                try:
                    result[index : index + 1] = _encode(embedder, [items[index]], side, 1)
                except (ValueError, FileNotFoundError, OSError) as error:
                    failures[index] = str(error)
    return result, failures


def _encode(embedder: Any, items: list[dict[str, Any]], side: str, batch_size: int) -> torch.Tensor:
    encode = embedder.encode_queries if side == "query" else embedder.encode_documents
    return encode(items, batch_size=batch_size)  # (n, vectors, dim)


def _read_cache(cache_dir: Path, fingerprint: str) -> EncodedDataset | None:
    meta_file, vector_file = cache_dir / "cache.json", cache_dir / "vectors.safetensors"
    if not (meta_file.is_file() and vector_file.is_file()):
        return None
    try:
        meta = json.loads(meta_file.read_text())
        if meta.get("fingerprint") != fingerprint:
            return None
        tensors = load_file(str(vector_file))
        return EncodedDataset(
            queries=tensors["queries"],
            candidates=tensors["candidates"],
            query_ids=meta["query_ids"],
            candidate_names=meta["candidate_names"],
            query_failures=meta["query_failures"],
            candidate_failures=meta["candidate_failures"],
            from_cache=True,
        )
    except (OSError, ValueError, KeyError):
        return None  # an unreadable cache is rebuilt, never trusted


def _write_cache(cache_dir: Path, fingerprint: str, encoded: EncodedDataset) -> None:
    with atomic_directory(cache_dir) as staging:
        save_file(
            {"queries": encoded.queries.contiguous(), "candidates": encoded.candidates.contiguous()},
            str(staging / "vectors.safetensors"),
        )
        meta = {
            "fingerprint": fingerprint,
            "query_ids": encoded.query_ids,
            "candidate_names": encoded.candidate_names,
            "query_failures": encoded.query_failures,
            "candidate_failures": encoded.candidate_failures,
        }
        (staging / "cache.json").write_text(json.dumps(meta))


def _media_paths(item: dict[str, Any]) -> list[str]:
    images = item.get("images", item.get("image")) or []
    if isinstance(images, (str, os.PathLike)):
        images = [images]
    return [os.fspath(image) for image in images if isinstance(image, (str, os.PathLike))]
