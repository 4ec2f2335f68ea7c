"""Qdrant backend through qdrant-client, in local mode (no server in tests): exact against brute-force
MaxSim, store checks at open/create, payloads, option handling.

The generic add/search/delete contract is covered by ``test_conformance.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("qdrant_client")

from mmcascade.index._qdrant_common import ID_KEY
from mmcascade.index.base import SearchHit, StoreSpec
from mmcascade.index.qdrant_server import LOCAL_FOLDER, QdrantServerBackend
from mmcascade.index.storage import STORE_FILE
from mmcascade.scoring import maxsim

DIM, NUM_VECTORS = 32, 8
SPEC = StoreSpec(dim=DIM, num_vectors=NUM_VECTORS)
# 10 clusters of 30: a query's MaxSim top-10 lies in its own cluster, which a prefetch of 100 covers.
TEST_OPTIONS = {"prefetch": 100}


def clustered(n_docs: int = 300, n_clusters: int = 10, n_queries: int = 12, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(n_clusters, DIM, generator=generator), dim=-1)
    cluster = torch.arange(n_docs) % n_clusters
    noise = 0.2 * torch.randn(n_docs, NUM_VECTORS, DIM, generator=generator)
    docs = torch.nn.functional.normalize(centres[cluster][:, None, :] + noise, dim=-1)  # (n_docs, D, d)
    source = torch.randint(0, n_docs, (n_queries,), generator=generator)
    noise = 0.1 * torch.randn(n_queries, NUM_VECTORS, DIM, generator=generator)
    queries = torch.nn.functional.normalize(docs[source] + noise, dim=-1)  # (n_q, Q, d)
    ids = [f"folder/doc {i}.png" for i in range(n_docs)]
    return ids, docs, queries


def assert_brute_force_top_k(
    hits: list[list[SearchHit]], ids: list[str], docs: torch.Tensor, queries: torch.Tensor, top_k: int, tol: float
) -> None:
    """Each hit list is a MaxSim top-k up to ``tol``: right scores for its ids, and the k best scores."""
    scores = maxsim(queries, docs)  # (n_q, n_docs)
    row_of = {doc_id: row for row, doc_id in enumerate(ids)}
    assert len(hits) == queries.shape[0]
    for query_hits, query_scores in zip(hits, scores, strict=True):
        best = query_scores.topk(top_k)
        assert len({hit.id for hit in query_hits}) == len(query_hits) == top_k
        for hit, expected in zip(query_hits, best.values.tolist(), strict=True):
            assert hit.score == pytest.approx(float(query_scores[row_of[hit.id]]), abs=tol)
            assert hit.score == pytest.approx(expected, abs=tol)
        if tol <= 1e-4:
            assert [hit.id for hit in query_hits] == [ids[row] for row in best.indices.tolist()]


@pytest.mark.parametrize(("datatype", "tol"), [("float16", 1e-2), ("float32", 1e-4)])
def test_top_k_equals_brute_force_maxsim(tmp_path: Path, datatype: str, tol: float) -> None:
    ids, docs, queries = clustered()
    with QdrantServerBackend.create(tmp_path / "index", SPEC, multivector_datatype=datatype, **TEST_OPTIONS) as index:
        index.add(ids, docs)
        hits = index.search(queries, 10)
        assert_brute_force_top_k(hits, ids, docs, queries, 10, tol)
        assert index.search(queries[:1], 10)[0] == hits[0]
        assert index.optimize() is False  # local mode builds no graph: nothing to wait for
        assert index.search(queries, 10) == hits


def test_local_mode_lives_in_the_index_folder(tmp_path: Path) -> None:
    path = tmp_path / "index"
    ids, docs, _ = clustered(n_docs=20)
    with QdrantServerBackend.create(path, SPEC, collection="pages") as index:
        index.add(ids, docs)
        # Local mode locks its folder: a second object on it gets a clear error, not a RuntimeError.
        with pytest.raises(ValueError, match="open elsewhere"):
            QdrantServerBackend.open(path, SPEC)
    assert (path / LOCAL_FOLDER).is_dir()
    stored = json.loads((path / STORE_FILE).read_text())
    assert (stored["options"]["url"], stored["options"]["collection"]) == (None, "pages")
    assert "api_key" not in stored["options"]
    with QdrantServerBackend.open(path, SPEC) as index:
        assert (index.collection, index.count()) == ("pages", len(ids))


def test_open_checks_the_spec_and_the_options(tmp_path: Path) -> None:
    path = tmp_path / "index"
    QdrantServerBackend.create(path, SPEC).close()
    with pytest.raises(ValueError, match="dim 16"):
        QdrantServerBackend.open(path, StoreSpec(dim=16, num_vectors=NUM_VECTORS))
    with pytest.raises(ValueError, match="asked for 4 of dim"):
        QdrantServerBackend.open(path, StoreSpec(dim=DIM, num_vectors=4))
    with pytest.raises(ValueError, match="hnsw_m is fixed"):
        QdrantServerBackend.open(path, SPEC, hnsw_m=32)
    with pytest.raises(ValueError, match="collection is fixed"):
        QdrantServerBackend.open(path, SPEC, collection="other")
    with QdrantServerBackend.open(path, SPEC, prefetch=7) as index:
        assert index.options.prefetch == 7
    with pytest.raises(ValueError, match="missing"):
        QdrantServerBackend.open(tmp_path / "nowhere", SPEC)
    with pytest.raises(ValueError, match="already holds files"):
        QdrantServerBackend.create(path, SPEC)
    with pytest.raises(ValueError, match="api_key needs url"):
        QdrantServerBackend.create(tmp_path / "other", SPEC, api_key="secret")


def test_payloads_round_trip_and_the_id_key_never_leaks(tmp_path: Path) -> None:
    path = tmp_path / "index"
    ids, docs, _ = clustered(n_docs=3)
    payloads = [{"title": "é/ü", "tags": [1, 2], "nested": {"x": 1.5, "none": None}}, {}, {"id": "not the doc id"}]
    with QdrantServerBackend.create(path, SPEC) as index:
        index.add(ids, docs, payloads)
        with pytest.raises(ValueError, match=ID_KEY):
            index.add(["x"], docs[:1], [{ID_KEY: "spoof"}])
    with QdrantServerBackend.open(path, SPEC) as index:
        for row, doc_id in enumerate(ids):
            (hit,) = index.search(docs[row], 1)[0]
            assert (hit.id, hit.payload) == (doc_id, payloads[row])
        assert index.contains([ids[0], "absent", 5]) == [True, False, False]
        assert index.delete([ids[0], ids[0], "absent"]) == 1
        assert index.count() == 2
    index.close()
    with pytest.raises(ValueError, match="closed"):
        index.count()
