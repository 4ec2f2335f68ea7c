"""The contract every index backend keeps, checked against a brute-force MaxSim reference."""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest
import torch

from mmcascade.index.backends import get_backend
from mmcascade.index.base import StoreBusyError, StoreSpec
from mmcascade.index.folders import STORE_DIR, index_folder
from mmcascade.index.manifest import IndexManifest
from mmcascade.scoring import maxsim
from mmcascade.search import Index

DIM, N_VECTORS = 16, 4
SPEC = StoreSpec(dim=DIM, num_vectors=N_VECTORS)

# Approximate backends may store float16; scores are compared at this tolerance.
SCORE_TOLERANCE = 2e-2


def unit_vectors(*shape: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    vectors = torch.randn(*shape, generator=generator)
    return torch.nn.functional.normalize(vectors, dim=-1)


def clustered_documents(n: int, seed: int = 0) -> torch.Tensor:
    """Documents in a few well separated clusters, so the true top-k is unambiguous."""
    centres = unit_vectors(6, N_VECTORS, DIM, seed=seed)  # (6, D, d)
    noise = 0.35 * unit_vectors(n, N_VECTORS, DIM, seed=seed + 1)
    return torch.nn.functional.normalize(centres[torch.arange(n) % 6] + noise, dim=-1)  # (n, D, d)


def brute_force(queries: torch.Tensor, documents: torch.Tensor, ids: list[str], k: int) -> list[list[str]]:
    scores = maxsim(queries, documents)  # (n_q, n_d)
    order = scores.argsort(dim=1, descending=True)[:, :k]
    return [[ids[index] for index in row] for row in order.tolist()]


@pytest.fixture
def store(backend_name: str, tmp_path):
    backend = get_backend(backend_name).create(tmp_path / "store", SPEC)
    yield backend
    backend.close()


def test_empty_store_counts_zero_and_finds_nothing(store):
    assert store.count() == 0
    assert store.search(unit_vectors(2, 3, DIM, seed=1), top_k=5) == [[], []]
    assert store.contains(["a"]) == [False]


def test_search_matches_brute_force_maxsim(store):
    documents = clustered_documents(48)
    ids = [f"doc-{index}" for index in range(48)]
    store.add(ids, documents, [{"n": index} for index in range(48)])
    queries = torch.nn.functional.normalize(
        documents[[3, 17, 40]] + 0.05 * unit_vectors(3, N_VECTORS, DIM, seed=9), dim=-1
    )
    hits = store.search(queries, top_k=5)
    expected_scores = maxsim(queries, documents)
    assert [[hit.id for hit in row][:1] for row in hits] == [["doc-3"], ["doc-17"], ["doc-40"]]
    for query_index, row in enumerate(hits):
        assert len(row) == 5
        reference = brute_force(queries[query_index : query_index + 1], documents, ids, 5)[0]
        assert [hit.id for hit in row] == reference
        for hit in row:
            index = int(hit.id.split("-")[1])
            assert hit.score == pytest.approx(float(expected_scores[query_index, index]), abs=SCORE_TOLERANCE)
            assert hit.payload == {"n": index}
        assert [hit.score for hit in row] == sorted((hit.score for hit in row), reverse=True)


def test_fewer_query_vectors_than_stored_is_a_budget_prefix(store):
    documents = clustered_documents(24)
    ids = [str(index) for index in range(24)]
    store.add(ids, documents)
    queries = documents[[5, 11], :2]  # (2, 2, d): a query budget of 2
    hits = store.search(queries, top_k=3)
    assert [[hit.id for hit in row] for row in hits] == brute_force(queries, documents, ids, 3)


def test_top_k_larger_than_the_store_returns_everything(store):
    store.add(["a", "b", "c"], clustered_documents(3))
    (row,) = store.search(clustered_documents(1, seed=5), top_k=10)
    assert sorted(hit.id for hit in row) == ["a", "b", "c"]


def test_add_is_an_upsert_by_id(store):
    documents = clustered_documents(12)
    store.add([f"d{index}" for index in range(12)], documents, [{"v": 1}] * 12)
    store.add(["d0"], documents[6:7], [{"v": 2}])  # d0 now looks like d6
    assert store.count() == 12
    (row,) = store.search(documents[6:7], top_k=2)
    assert {hit.id for hit in row} == {"d0", "d6"}
    assert {hit.id: hit.payload for hit in row}["d0"] == {"v": 2}
    assert row[0].score == pytest.approx(row[1].score, abs=SCORE_TOLERANCE)


def test_payloads_by_id_follow_adds_upserts_and_deletes(store):
    documents = clustered_documents(3)
    store.add(["a", "b", "c"], documents, [{"n": 1}, {"n": 2}, {}])
    assert store.get_payloads(["a", "zz", "c"]) == [{"n": 1}, None, {}]
    store.add(["a"], documents[1:2], [{"n": 9}])
    store.delete(["b"])
    assert store.get_payloads(["b", "a"]) == [None, {"n": 9}]
    assert store.get_payloads([]) == []


def test_delete_removes_ids_and_ignores_unknown_ones(store):
    documents = clustered_documents(10)
    store.add([f"d{index}" for index in range(10)], documents)
    assert store.delete(["d3", "d4", "nope", "d3"]) == 2
    assert store.count() == 8
    assert store.contains(["d3", "d4", "d5"]) == [False, False, True]
    (row,) = store.search(documents[3:4], top_k=10)
    assert {hit.id for hit in row} == {f"d{index}" for index in range(10)} - {"d3", "d4"}


def test_reopen_keeps_documents_payloads_and_results(backend_name, tmp_path):
    documents = clustered_documents(30)
    ids = [f"doc/{index}.png" for index in range(30)]
    payloads = [{"caption": f"caption {index}", "tags": [index, "x"]} for index in range(30)]
    backend_class = get_backend(backend_name)
    with backend_class.create(tmp_path / "store", SPEC) as store:
        store.add(ids[:20], documents[:20], payloads[:20])
        store.add(ids[20:], documents[20:], payloads[20:])
        store.delete([ids[0]])
        before = store.search(documents[[1, 25]], top_k=4)
    with backend_class.open(tmp_path / "store", SPEC) as store:
        assert store.count() == 29
        after = store.search(documents[[1, 25]], top_k=4)
        assert [[hit.id for hit in row] for row in after] == [[hit.id for hit in row] for row in before]
        assert after[0][0].payload == payloads[1]
        assert store.contains([ids[0], ids[29]]) == [False, True]


def test_create_refuses_an_existing_store_and_open_refuses_a_missing_or_mismatched_one(backend_name, tmp_path):
    backend_class = get_backend(backend_name)
    with backend_class.create(tmp_path / "store", SPEC) as store:
        store.add(["a"], clustered_documents(1))
    with pytest.raises(ValueError, match="store"):
        backend_class.create(tmp_path / "store", SPEC)
    with pytest.raises(ValueError, match="dim|vectors"):
        backend_class.open(tmp_path / "store", StoreSpec(dim=DIM * 2, num_vectors=N_VECTORS))
    with pytest.raises(ValueError, match="missing|no .* index|does not exist|build"):
        backend_class.open(tmp_path / "elsewhere", SPEC)


@pytest.mark.parametrize(
    ("ids", "vectors", "payloads", "message"),
    [
        (["a", "b"], torch.zeros(2, N_VECTORS + 1, DIM), None, "shape"),
        (["a"], torch.zeros(1, N_VECTORS, DIM - 1), None, "shape"),
        (["a", "a"], torch.zeros(2, N_VECTORS, DIM), None, "unique"),
        ([""], torch.zeros(1, N_VECTORS, DIM), None, "non-empty"),
        ([7], torch.zeros(1, N_VECTORS, DIM), None, "strings"),
        (["a"], torch.full((1, N_VECTORS, DIM), float("nan")), None, "NaN"),
        (["a"], torch.zeros(1, N_VECTORS, DIM), ["not a dict"], "dict"),
        (["a"], torch.zeros(1, N_VECTORS, DIM), [{"x": object()}], "JSON"),
        (["a"], torch.zeros(1, N_VECTORS, DIM), [{}, {}], "payloads"),
    ],
)
def test_bad_adds_are_refused_and_store_nothing(store, ids, vectors, payloads, message):
    with pytest.raises(ValueError, match=message):
        store.add(ids, vectors, payloads)
    assert store.count() == 0


def test_bad_queries_are_refused(store):
    store.add(["a"], clustered_documents(1))
    with pytest.raises(ValueError, match="queries must have shape"):
        store.search(torch.zeros(1, 2, DIM + 1), top_k=1)
    with pytest.raises(ValueError, match="top_k"):
        store.search(torch.zeros(1, 2, DIM), top_k=0)


def test_a_second_object_in_this_process_reads_or_is_refused_at_once(backend_name, tmp_path):
    backend_class = get_backend(backend_name)
    with backend_class.create(tmp_path / "store", SPEC) as store:
        store.add(["a"], clustered_documents(1))
        started = time.monotonic()
        try:
            second = backend_class.open(tmp_path / "store", SPEC)
        except ValueError as error:  # never StoreBusyError: waiting for ourselves would never end
            assert not isinstance(error, StoreBusyError)
            assert "open elsewhere in this process" in str(error) and "close the other index object" in str(error)
        else:
            with second:
                assert second.count() == 1
        assert time.monotonic() - started < 1
    with backend_class.open(tmp_path / "store", SPEC) as store:  # closing released it
        assert store.count() == 1


# Another process writing, as `mmcascade index build` does: the index opened for writing, the write
# lock held, one document added and flushed; it holds on until ``release`` is set.
WRITER = """
from mmcascade.index.lock import write_lock
from mmcascade.search import Index

with Index.open(name, data_dir=data_dir, write=True) as index, write_lock(index.folder, name):
    index.store.add(["new"], vectors)
    index.store.flush()
    ready.set()
    release.wait(60)
"""
# Children fork from a server that imported torch and the backends once: ~0.1 s a child, not ~5.
_PROCESSES = multiprocessing.get_context("forkserver")
_PROCESSES.set_forkserver_preload(["torch", "mmcascade.search", "mmcascade.index.qdrant_edge", "qdrant_client"])


def model_free_index(data_dir, backend_name: str, ids: list[str], documents: torch.Tensor) -> None:
    """Index ``"shared"`` holding ``documents``, with a manifest but no model (the stores are all we search)."""
    folder = index_folder("shared", data_dir)
    folder.mkdir(parents=True)
    with get_backend(backend_name).create(folder / STORE_DIR, SPEC) as store:
        store.add(ids, documents)
    IndexManifest(
        name="shared",
        model="none",
        model_fingerprint="none",
        backend=backend_name,
        dim=DIM,
        doc_budget=N_VECTORS,
        query_vectors=N_VECTORS,
    ).save(folder)


def test_another_process_writing_never_surfaces_an_engine_error(backend_name, tmp_path):
    documents = clustered_documents(12)
    ids = [f"d{index}" for index in range(12)]
    model_free_index(tmp_path, backend_name, ids, documents)
    ready, release = _PROCESSES.Event(), _PROCESSES.Event()
    shared = {"name": "shared", "data_dir": str(tmp_path), "vectors": clustered_documents(1, seed=7)}
    writer = _PROCESSES.Process(target=exec, args=(WRITER, {**shared, "ready": ready, "release": release}))
    writer.start()
    try:
        assert ready.wait(60), "the writing process did not start"
        # A second writer meets the write lock before the engine: refused at once, with the lock's words.
        started = time.monotonic()
        with pytest.raises(ValueError, match="'shared' is being written by another process; wait for it to finish"):
            Index.open("shared", data_dir=tmp_path, write=True, wait=10)
        assert time.monotonic() - started < 2
        # A reader reads a consistent state, or waits and then says who holds the index: never the engine's words.
        try:
            reader = Index.open("shared", data_dir=tmp_path, wait=0.3)
        except ValueError as error:
            assert backend_name != "exact"
            assert "'shared' is being written by another process" in str(error)
            assert "MMCASCADE_LOCK_TIMEOUT" in str(error)
        else:
            with reader:
                assert reader.count() in (12, 13)
                (row,) = reader.store.search(documents[3:4], top_k=1)
                assert row[0].id == "d3"
        # A reader that waits long enough gets in once the writer is done, and sees what it wrote.
        threading.Timer(0.3, release.set).start()
        with Index.open("shared", data_dir=tmp_path, wait=30) as reader:
            assert reader.count() == 13
            assert reader.store.contains(["new"]) == [True]
    finally:
        release.set()
        writer.join(30)
    assert writer.exitcode == 0
