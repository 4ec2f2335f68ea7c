"""Qdrant Edge backend: exact against brute-force MaxSim before and after the graph is built, store
checks at open/create, payloads, and durability of ``add`` across a SIGKILL.

The generic add/search/delete contract is covered by ``test_conformance.py``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

pytest.importorskip("qdrant_edge")

from mmcascade.index._qdrant_common import ID_KEY, QdrantOptions, mean_vectors, point_id
from mmcascade.index.base import SearchHit, StoreSpec
from mmcascade.index.qdrant_edge import QdrantEdgeBackend
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
        assert len(query_hits) == top_k
        assert len({hit.id for hit in query_hits}) == top_k
        for hit, expected in zip(query_hits, best.values.tolist(), strict=True):
            assert hit.score == pytest.approx(float(query_scores[row_of[hit.id]]), abs=tol)
            assert hit.score == pytest.approx(expected, abs=tol)
        if tol <= 1e-4:  # float32 storage: no near-ties to reorder
            assert [hit.id for hit in query_hits] == [ids[row] for row in best.indices.tolist()]


@pytest.mark.parametrize(("datatype", "tol"), [("float16", 1e-2), ("float32", 1e-4)])
def test_top_k_equals_brute_force_maxsim(tmp_path: Path, datatype: str, tol: float) -> None:
    ids, docs, queries = clustered()
    with QdrantEdgeBackend.create(tmp_path / "index", SPEC, multivector_datatype=datatype, **TEST_OPTIONS) as index:
        index.add(ids, docs)
        assert_brute_force_top_k(index.search(queries, 10), ids, docs, queries, 10, tol)
        # One query alone takes the single-request path; same answer as in the batch.
        assert index.search(queries[:1], 10)[0] == index.search(queries, 10)[0]


def test_results_stay_exact_after_optimize_builds_the_graph(tmp_path: Path) -> None:
    ids, docs, queries = clustered()
    # Tiny thresholds, so the graph really gets built for 300 docs and search walks it instead of scanning.
    options = {
        **TEST_OPTIONS,
        "multivector_datatype": "float32",
        "indexing_threshold_kb": 1,
        "full_scan_threshold_kb": 1,
    }
    with QdrantEdgeBackend.create(tmp_path / "index", SPEC, **options) as index:
        index.add(ids, docs)
        before = index.search(queries, 10)
        assert index.info().indexed_vectors_count == 0
        assert index.optimize()
        assert index.info().indexed_vectors_count > 0
        after = index.search(queries, 10)
        assert_brute_force_top_k(after, ids, docs, queries, 10, 1e-4)
        assert [[hit.id for hit in hits] for hits in after] == [[hit.id for hit in hits] for hits in before]
        # Writes after optimize land in a fresh segment and are found too.
        index.add(["new"], docs[:1])
        assert index.search(docs[:1], 2)[0][0].id in {"new", ids[0]}
        assert index.count() == len(ids) + 1


def test_open_checks_the_spec_and_the_store_file(tmp_path: Path) -> None:
    path = tmp_path / "index"
    ids, docs, _ = clustered(n_docs=20)
    with QdrantEdgeBackend.create(path, SPEC) as index:
        index.add(ids, docs)
    with pytest.raises(ValueError, match="dim 16"):
        QdrantEdgeBackend.open(path, StoreSpec(dim=16, num_vectors=NUM_VECTORS))
    with pytest.raises(ValueError, match="asked for 4 of dim"):
        QdrantEdgeBackend.open(path, StoreSpec(dim=DIM, num_vectors=4))
    with pytest.raises(ValueError, match="multivector_datatype is fixed"):
        QdrantEdgeBackend.open(path, SPEC, multivector_datatype="float32")
    with pytest.raises(ValueError, match="unknown Qdrant option"):
        QdrantEdgeBackend.open(path, SPEC, prefetchh=10)
    # Search-time options may change at open.
    with QdrantEdgeBackend.open(path, SPEC, prefetch=50, hnsw_ef=64) as index:
        assert (index.options.prefetch, index.options.hnsw_ef) == (50, 64)
        assert index.count() == len(ids)
    stored = json.loads((path / STORE_FILE).read_text())
    assert (stored["dim"], stored["num_vectors"], stored["options"]["prefetch"]) == (DIM, NUM_VECTORS, 200)
    with pytest.raises(ValueError, match="missing"):
        QdrantEdgeBackend.open(tmp_path / "nowhere", SPEC)
    (path / STORE_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        QdrantEdgeBackend.open(path, SPEC)


def test_create_refuses_an_existing_store(tmp_path: Path) -> None:
    path = tmp_path / "index"
    index = QdrantEdgeBackend.create(path, SPEC)
    with pytest.raises(ValueError, match=r"already holds files.*open it.*delete the index"):
        QdrantEdgeBackend.create(path, SPEC)
    with pytest.raises(ValueError, match="open elsewhere"):  # the write-ahead log is locked
        QdrantEdgeBackend.open(path, SPEC)
    index.close()
    QdrantEdgeBackend.open(path, SPEC).close()


def test_payloads_round_trip_and_the_id_key_never_leaks(tmp_path: Path) -> None:
    path = tmp_path / "index"
    ids, docs, _ = clustered(n_docs=3)
    payloads = [{"title": "é/ü", "tags": [1, 2], "nested": {"x": 1.5, "none": None}}, {}, {"id": "not the doc id"}]
    with QdrantEdgeBackend.create(path, SPEC) as index:
        index.add(ids, docs, payloads)
        with pytest.raises(ValueError, match=ID_KEY):
            index.add(["x"], docs[:1], [{ID_KEY: "spoof"}])
    with QdrantEdgeBackend.open(path, SPEC) as index:
        for row, doc_id in enumerate(ids):
            (hit,) = index.search(docs[row], 1)[0]
            assert (hit.id, hit.payload) == (doc_id, payloads[row])
            assert ID_KEY not in hit.payload
    assert point_id(ids[0]) == point_id(ids[0]) != point_id(ids[1])


def test_closed_index_and_bad_options_raise_value_errors(tmp_path: Path) -> None:
    index = QdrantEdgeBackend.create(tmp_path / "index", SPEC)
    index.close()
    index.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        index.count()
    for bad in ({"prefetch": 0}, {"hnsw_ef": "64"}, {"batch_size": True}, {"multivector_datatype": "bfloat16"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            QdrantOptions.from_options(bad)
    vectors = torch.tensor([[[3.0, 4.0], [3.0, 4.0]]])  # (1, 2, 2)
    assert torch.allclose(mean_vectors(vectors), torch.tensor([[0.6, 0.8]]))


def test_add_is_durable_when_the_process_is_killed_right_after(tmp_path: Path) -> None:
    path = tmp_path / "index"
    child = textwrap.dedent(
        f"""
        import os, signal, torch
        from mmcascade.index.base import StoreSpec
        from mmcascade.index.qdrant_edge import QdrantEdgeBackend
        index = QdrantEdgeBackend.create({str(path)!r}, StoreSpec({DIM}, {NUM_VECTORS}), batch_size=16)
        vectors = torch.nn.functional.normalize(torch.randn(50, {NUM_VECTORS}, {DIM}, generator=torch.Generator().manual_seed(1)), dim=-1)
        index.add([f"doc{{i}}" for i in range(50)], vectors, [{{"i": i}} for i in range(50)])
        os.kill(os.getpid(), signal.SIGKILL)  # no flush, no close
        """
    )
    result = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60)
    assert result.returncode == -signal.SIGKILL, result.stderr
    vectors = torch.nn.functional.normalize(
        torch.randn(50, NUM_VECTORS, DIM, generator=torch.Generator().manual_seed(1)), dim=-1
    )  # (50, D, d), as in the child
    with QdrantEdgeBackend.open(path, SPEC) as index:
        assert index.count() == 50
        assert all(index.contains([f"doc{i}" for i in range(50)]))
        (hit,) = index.search(vectors[7], 1)[0]
        assert (hit.id, hit.payload) == ("doc7", {"i": 7})
