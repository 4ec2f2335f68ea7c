"""The Qdrant backend through ``qdrant-client``: a Qdrant server or cluster, or the client's local mode.

The collection has the same two named vectors as the embedded backend (see
:mod:`mmcascade.index._qdrant_common`): HNSW over each document's mean vector prefetches candidates,
and MaxSim over the stored multivectors (no graph) rescores them, all in one ``query_points`` call.

Options, besides those of :class:`~mmcascade.index._qdrant_common.QdrantOptions`:

- ``url``: the server, e.g. ``http://localhost:6333``. None (the default) runs qdrant-client's local
  mode in ``<index folder>/local``: pure Python, no HNSW (every search scans), fine for tests and
  small collections. The CLI passes it as ``--backend qdrant --backend-option url=http://localhost:6333``.
- ``api_key``: the server's API key. It is never written to disk: give it again at every open.
- ``collection``: the collection's name on the server (default ``mmcascade``); fixed at create.

The index folder always holds ``mmcascade_store.json`` (spec, options, url and collection). With a
server, :meth:`QdrantServerBackend.create` refuses a collection that already exists, and upserts wait
until the server has applied them (``wait=True``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from qdrant_client import QdrantClient, models

from mmcascade.index._qdrant_common import (
    MEAN_VECTOR,
    MULTI_VECTOR,
    RETRIEVE_CHUNK,
    QdrantOptions,
    busy_error,
    check_not_open_here,
    contained,
    is_engine_lock_error,
    mark_closed_here,
    mark_open_here,
    mean_vectors,
    merge_open_options,
    point_id,
    search_hit,
    stored_ids,
    stored_payload,
    stored_payloads,
)
from mmcascade.index.base import IndexBackend, Payload, SearchHit, StoreSpec
from mmcascade.index.storage import read_store_file, write_store_file

LOCAL_FOLDER = "local"
DEFAULT_COLLECTION = "mmcascade"
_DATATYPES = {"float16": models.Datatype.FLOAT16, "float32": models.Datatype.FLOAT32}


class QdrantServerBackend(IndexBackend):
    """MaxSim search in a Qdrant collection (server, cluster or local mode): dense prefetch, multivector rescoring."""

    name = "qdrant"

    def __init__(
        self,
        path: Path,
        spec: StoreSpec,
        options: QdrantOptions,
        client: QdrantClient,
        collection: str,
        url: str | None,
    ):
        super().__init__(path, spec)
        self.options = options
        self.collection = collection
        self.url = url
        self._client: QdrantClient | None = client
        if url is None:
            mark_open_here(path, self)

    # ----------------------------------------------------------------- lifecycle
    @classmethod
    def validate_options(cls, **options: Any) -> None:
        given = dict(options)
        _connection_options(given)  # pops url, api_key and collection
        QdrantOptions.from_options(given)

    @classmethod
    def create(cls, path: str | os.PathLike, spec: StoreSpec, **options: Any) -> QdrantServerBackend:
        path = Path(path)
        url, api_key, collection = _connection_options(options)
        options_obj = QdrantOptions.from_options(options)
        if path.exists() and any(path.iterdir()):
            raise ValueError(
                f"{path} already holds files (an existing index?): open it with {cls.__name__}.open, "
                "or delete the index folder first"
            )
        path.mkdir(parents=True, exist_ok=True)
        client = _connect(path, url, api_key)
        try:
            if client.collection_exists(collection):
                raise ValueError(
                    f"collection {collection!r} already exists on {url or 'the local store'}: open the index, delete the collection, "
                    "or pass another collection=..."
                )
            client.create_collection(
                collection,
                vectors_config=_vectors_config(spec, options_obj),
                optimizers_config=(
                    models.OptimizersConfigDiff(indexing_threshold=options_obj.indexing_threshold_kb)
                    if options_obj.indexing_threshold_kb is not None
                    else None
                ),
            )
        except BaseException:
            client.close()
            raise
        stored = {**options_obj.to_dict(), "url": url, "collection": collection}
        write_store_file(path, cls.name, spec, stored)
        return cls(path, spec, options_obj, client, collection, url)

    @classmethod
    def open(cls, path: str | os.PathLike, spec: StoreSpec, **options: Any) -> QdrantServerBackend:
        path = Path(path)
        stored = read_store_file(path, cls.name, spec)
        stored_url, collection = stored.pop("url", None), stored.pop("collection", DEFAULT_COLLECTION)
        given = dict(options)
        # The server may have moved (a new url, a new key); the collection is part of the index.
        connection = {"url": given.pop("url", stored_url), "api_key": given.pop("api_key", None)}
        url, api_key, _ = _connection_options(connection)
        if given.get("collection", collection) != collection:
            raise ValueError(
                f"{cls.name}: option collection is fixed when the index is created (stored: {collection!r}, "
                f"given: {given['collection']!r}); open without it"
            )
        given.pop("collection", None)
        options_obj = QdrantOptions.from_options(merge_open_options(cls.name, stored, given))
        client = _connect(path, url, api_key)
        try:
            _check_collection(client, collection, spec, url)
        except BaseException:
            client.close()
            raise
        return cls(path, spec, options_obj, client, collection, url)

    def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            client.close()
            if self.url is None:
                mark_closed_here(self.path)

    def optimize(self, timeout_s: float = 3600.0) -> bool:
        """Wait until the server has finished optimising (building the graph); True if it had to wait.

        A server builds the HNSW graph in the background after upserts; local mode has none (returns
        False at once). Raises ValueError if the optimiser failed or ``timeout_s`` passes.
        """
        client = self._live()
        waited = False
        deadline = time.monotonic() + timeout_s
        while True:
            info = client.get_collection(self.collection)
            if info.status == models.CollectionStatus.RED:
                raise ValueError(
                    f"Qdrant's optimiser failed on collection {self.collection!r}: {info.optimizer_status}"
                )
            if info.status != models.CollectionStatus.YELLOW:  # GREEN: done; GREY: nothing scheduled
                return waited
            if time.monotonic() > deadline:
                raise ValueError(
                    f"collection {self.collection!r} still optimising after {timeout_s} s; "
                    "call optimize again or search anyway (results stay exact, only slower)"
                )
            waited = True
            time.sleep(0.5)

    # ----------------------------------------------------------------- data
    def add(self, ids: Sequence[str], vectors: torch.Tensor, payloads: Sequence[Payload] | None = None) -> None:
        ids, vectors, payloads = self.check_add(ids, vectors, payloads)  # vectors (n, num_vectors, dim)
        points_payloads = [stored_payload(self.name, doc_id, p) for doc_id, p in zip(ids, payloads, strict=True)]
        client = self._live()
        means = mean_vectors(vectors).tolist()  # (n, dim)
        multi = vectors.tolist()  # (n, num_vectors, dim)
        step = self.options.batch_size
        for start in range(0, len(ids), step):
            points = [
                models.PointStruct(
                    id=point_id(ids[row]),
                    vector={MEAN_VECTOR: means[row], MULTI_VECTOR: multi[row]},
                    payload=points_payloads[row],
                )
                for row in range(start, min(start + step, len(ids)))
            ]
            client.upsert(self.collection, points=points, wait=True)

    def delete(self, ids: Sequence[str]) -> int:
        present = [doc_id for doc_id, found in self._lookup(ids).items() if found]
        client = self._live()
        for start in range(0, len(present), RETRIEVE_CHUNK):
            chunk = [point_id(doc_id) for doc_id in present[start : start + RETRIEVE_CHUNK]]
            client.delete(self.collection, points_selector=models.PointIdsList(points=chunk), wait=True)
        return len(present)

    def contains(self, ids: Sequence[str]) -> list[bool]:
        return contained(ids, self._lookup(ids))

    def get_payloads(self, ids: Sequence[str]) -> list[Payload | None]:
        return stored_payloads(
            self.name,
            ids,
            lambda chunk: self._live().retrieve(self.collection, chunk, with_payload=True, with_vectors=False),
        )

    def count(self) -> int:
        return int(self._live().count(self.collection, exact=True).count)

    def search(self, queries: torch.Tensor, top_k: int) -> list[list[SearchHit]]:
        queries = self.check_queries(queries, top_k)  # (n_q, Q, dim)
        client = self._live()
        if queries.shape[0] == 0:
            return []
        means = mean_vectors(queries).tolist()  # (n_q, dim)
        multi = queries.tolist()  # (n_q, Q, dim)
        params = models.SearchParams(hnsw_ef=self.options.hnsw_ef) if self.options.hnsw_ef is not None else None
        requests = [
            models.QueryRequest(
                prefetch=[
                    models.Prefetch(
                        query=mean,
                        using=MEAN_VECTOR,
                        limit=self.options.prefetch_limit(top_k),
                        params=params,
                    )
                ],
                query=query,
                using=MULTI_VECTOR,
                limit=top_k,
                with_payload=True,
            )
            for mean, query in zip(means, multi, strict=True)
        ]
        # One request for all queries: a single round trip to a server.
        responses = client.query_batch_points(self.collection, requests=requests)
        return [
            [search_hit(self.name, point.score, point.payload) for point in response.points] for response in responses
        ]

    # ----------------------------------------------------------------- internals
    def _live(self) -> QdrantClient:
        if self._client is None:
            raise ValueError(f"the {self.name} index in {self.path} is closed; open it again")
        return self._client

    def _lookup(self, ids: Sequence[str]) -> dict[str, bool]:
        """Which of the (valid, de-duplicated) ids are stored."""
        return stored_ids(
            ids, lambda chunk: self._live().retrieve(self.collection, chunk, with_payload=False, with_vectors=False)
        )


def _connection_options(options: dict[str, Any]) -> tuple[str | None, str | None, str]:
    """Pops ``url``, ``api_key`` and ``collection`` from ``options`` and validates them."""
    url = options.pop("url", None)
    api_key = options.pop("api_key", None)
    collection = options.pop("collection", DEFAULT_COLLECTION)
    for name, value in (("url", url), ("api_key", api_key)):
        if value is not None and (not isinstance(value, str) or not value):
            raise ValueError(f"qdrant option {name} must be a non-empty string or None; got {value!r}")
    if not isinstance(collection, str) or not collection:
        raise ValueError(f"qdrant option collection must be a non-empty string; got {collection!r}")
    if api_key is not None and url is None:
        raise ValueError("qdrant option api_key needs url=... (local mode has no authentication)")
    return url, api_key, collection


def _connect(path: Path, url: str | None, api_key: str | None) -> QdrantClient:
    if url is not None:
        return _connect_server(url, api_key)
    check_not_open_here(QdrantServerBackend.name, path)
    try:
        return QdrantClient(path=str(path / LOCAL_FOLDER))
    except RuntimeError as error:
        if is_engine_lock_error(error):  # another process: local mode locks its folder until it closes
            raise busy_error(QdrantServerBackend.name, path) from error
        raise


def _connect_server(url: str, api_key: str | None) -> QdrantClient:
    """A client of the server at ``url``, checked by one request: an unreachable server is a ValueError that
    names the URL. (The client's own version check runs in a thread and only warns, even when the server is
    down: our request replaces it.)"""
    client = QdrantClient(url=url, api_key=api_key, check_compatibility=False)
    try:
        client.get_collections()
    except Exception as error:  # connection refused, DNS, TLS, auth: the client wraps them in several types
        client.close()
        raise ValueError(
            f"cannot reach the Qdrant server at {url} ({type(error).__name__}: {error}); is it running, and are the "
            "url and api_key options right?"
        ) from error
    return client


def _vectors_config(spec: StoreSpec, options: QdrantOptions) -> dict[str, models.VectorParams]:
    return {
        MEAN_VECTOR: models.VectorParams(
            size=spec.dim,
            distance=models.Distance.COSINE,
            hnsw_config=models.HnswConfigDiff(
                m=options.hnsw_m,
                ef_construct=options.hnsw_ef_construct,
                full_scan_threshold=options.full_scan_threshold_kb,
            ),
        ),
        MULTI_VECTOR: models.VectorParams(
            size=spec.dim,
            distance=models.Distance.DOT,
            multivector_config=models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM),
            datatype=_DATATYPES[options.multivector_datatype],
            hnsw_config=models.HnswConfigDiff(m=0),  # no graph: the multivectors only rescore candidates
        ),
    }


def _check_collection(client: QdrantClient, collection: str, spec: StoreSpec, url: str | None) -> None:
    where = url or "the local store"
    if not client.collection_exists(collection):
        raise ValueError(f"collection {collection!r} does not exist on {where}; rebuild the index")
    vectors = client.get_collection(collection).config.params.vectors
    if not isinstance(vectors, dict) or set(vectors) != {MEAN_VECTOR, MULTI_VECTOR}:
        raise ValueError(
            f"collection {collection!r} on {where} was not created by mmcascade "
            f"(expected named vectors {MEAN_VECTOR!r} and {MULTI_VECTOR!r}); rebuild the index"
        )
    sizes = {name: params.size for name, params in vectors.items()}
    if set(sizes.values()) != {spec.dim} or vectors[MULTI_VECTOR].multivector_config is None:
        raise ValueError(
            f"collection {collection!r} on {where} stores vectors of sizes {sizes}; the index spec says dim {spec.dim}"
        )
