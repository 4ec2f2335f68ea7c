"""The Index facade: budgets stored at build time, manifests, model checks, locking, interrupted creates."""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import replace

import pytest
import torch
from PIL import Image

from mmcascade.data.collections import SkippedRecord, SourceRecord, read_collection
from mmcascade.data.items import Item
from mmcascade.index import delete_index, list_indexes
from mmcascade.index.folders import STORE_DIR
from mmcascade.index.lock import LOCK_NAME
from mmcascade.search import Index
from mmcascade.search import index as index_module

CAPTIONS = ["a large red circle on the left", "a small blue square in the middle", "a large green star on the right"]


@pytest.fixture(scope="module")
def embedder():
    from mmcascade import Embedder

    return Embedder.from_pretrained("starter")


def test_the_doc_budget_chosen_at_build_time_is_what_is_stored(embedder, tmp_path):
    with Index.create("small", "starter", backend="exact", doc_budget=8, data_dir=tmp_path, embedder=embedder) as index:
        index.add(CAPTIONS, ids=["a", "b", "c"], payloads=[{"i": 0}, {"i": 1}, {"i": 2}])
        assert index.store.spec.num_vectors == 8
        expected = embedder.encode_documents(CAPTIONS, doc_budget=8)  # (3, 8, dim)
        stored = index.store._search_matrix()[0]
        assert torch.allclose(stored, expected, atol=1e-5)
        hits = index.search(CAPTIONS[1], top_k=3, query_budget=4)
        assert hits[0].id == "b" and hits[0].payload == {"i": 1}
        queries = embedder.encode_queries([CAPTIONS[1]], query_budget=4)
        assert hits[0].score == pytest.approx(float(embedder.similarity(queries, expected[1:2])), abs=1e-4)
    manifest = json.loads((tmp_path / "small" / "manifest.json").read_text())
    assert (manifest["doc_budget"], manifest["query_vectors"], manifest["backend"]) == (8, 16, "exact")


def test_budgets_out_of_range_are_refused(embedder, tmp_path):
    with pytest.raises(ValueError, match="doc_budget=65 is out of range: this model makes 1..64"):
        Index.create("x", "starter", doc_budget=65, data_dir=tmp_path, embedder=embedder)
    with Index.create("x", "starter", backend="exact", data_dir=tmp_path, embedder=embedder) as index:
        for budget in (0, 17, True):
            with pytest.raises(ValueError, match="query_budget"):
                index.search("a red circle", query_budget=budget)
        with pytest.raises(ValueError, match="top_k"):
            index.search("a red circle", top_k=0)


def test_creating_an_existing_index_is_refused_and_an_interrupted_create_is_replaced(embedder, tmp_path):
    Index.create("twice", "starter", backend="exact", data_dir=tmp_path, embedder=embedder).close()
    with pytest.raises(ValueError, match="already exists"):
        Index.create("twice", "starter", backend="exact", data_dir=tmp_path, embedder=embedder)
    (tmp_path / "killed" / STORE_DIR).mkdir(parents=True)  # a create killed before its manifest
    (tmp_path / "killed" / STORE_DIR / "junk").write_text("x")
    assert list_indexes(tmp_path) == ["twice"]
    with Index.create("killed", "starter", backend="exact", data_dir=tmp_path, embedder=embedder) as index:
        assert index.count() == 0
    assert list_indexes(tmp_path) == ["killed", "twice"]


def test_build_skips_stored_ids_repeated_ids_and_reports_bad_records(embedder, tmp_path):
    loads = []

    def record(doc_id: str, text: str) -> SourceRecord:
        def load() -> Item:
            loads.append(doc_id)
            return Item(text=text)

        return SourceRecord(doc_id, f"src:{doc_id}", load, {"text": text})

    def broken() -> Item:
        raise ValueError("image x.png is not a readable image")

    with Index.create("b", "starter", backend="exact", data_dir=tmp_path, embedder=embedder) as index:
        first = index.build([record("a", CAPTIONS[0]), record("b", CAPTIONS[1])], batch_size=1)
        assert (first.added, first.already_indexed, first.skipped) == (2, 0, [])
        loads.clear()
        records = [
            record("a", CAPTIONS[0]),
            SkippedRecord("items.jsonl:3", "not valid JSON"),
            record("c", CAPTIONS[2]),
            record("c", "a repeated id"),
            SourceRecord("d", "src:d", broken, {}),
        ]
        second = index.build(records, batch_size=2)
    assert loads == ["c"]  # stored ids are never decoded again; a repeated id is indexed once
    assert (second.added, second.already_indexed) == (1, 1)
    assert [(skip.source, skip.reason) for skip in second.skipped] == [
        ("items.jsonl:3", "not valid JSON"),
        ("src:c", "id 'c' repeats src:c; only the first is indexed"),
        ("src:d", "image x.png is not a readable image"),
    ]


def test_a_second_writer_is_refused_while_one_holds_the_lock(embedder, tmp_path):
    with Index.create("locked", "starter", backend="exact", data_dir=tmp_path, embedder=embedder) as index:
        with (index.folder / LOCK_NAME).open("a+") as other_process:
            fcntl.flock(other_process, fcntl.LOCK_EX)
            with pytest.raises(ValueError, match="being written by another process"):
                index.add(["x"], ids=["x"])
            with pytest.raises(ValueError, match="being written by another process"):
                delete_index("locked", tmp_path)
        index.add(["x"], ids=["x"])
        assert index.count() == 1


def test_a_changed_model_is_refused_when_the_index_loads_it(embedder, tmp_path, monkeypatch):
    with Index.create("m", "starter", backend="exact", data_dir=tmp_path, embedder=embedder) as index:
        index.add(["x"], ids=["x"])
    manifest_file = tmp_path / "m" / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["model_fingerprint"] = "0" * 16  # as if the starter model had been retrained since
    manifest_file.write_text(json.dumps(manifest))
    with (
        Index.open("m", data_dir=tmp_path) as index,
        pytest.raises(ValueError, match="changed since index 'm' was built"),
    ):
        index.search("x")


def counted(records: list, loads: list[str]) -> list[SourceRecord]:
    """``records`` whose loads are logged in ``loads``."""

    def logging(record: SourceRecord) -> SourceRecord:
        def load() -> Item:
            loads.append(record.id)
            return record.load()

        return replace(record, load=load)

    return [logging(record) for record in records]


def test_a_changed_file_is_reported_and_re_encoded_only_when_asked(embedder, tmp_path, backend_name):
    backend = backend_name
    pics = tmp_path / "pics"
    pics.mkdir()
    for name, colour in (("a.png", "red"), ("b.png", "blue"), ("c.png", "green")):
        Image.new("RGB", (32, 32), colour).save(pics / name)
    red = Image.new("RGB", (32, 32), "red")
    loads: list[str] = []
    with Index.create("f", "starter", backend=backend, data_dir=tmp_path / "data", embedder=embedder) as index:
        first = index.build(read_collection(pics))
        assert (first.added, first.already_indexed, first.changed) == (3, 0, [])
        Image.new("RGB", (32, 32), "red").save(pics / "b.png")  # another image under an indexed name
        os.utime(pics / "c.png", ns=(1, 1))  # touched only: same bytes

        second = index.build(counted(list(read_collection(pics)), loads))
        assert (second.added, second.already_indexed, second.changed, second.replaced) == (0, 2, ["b.png"], 0)
        assert loads == []  # reported, not re-encoded: b.png still holds the blue vectors
        scores = {hit.id: hit.score for hit in index.search(red, top_k=3)}
        assert scores["a.png"] - scores["b.png"] > 0.01

        third = index.build(counted(list(read_collection(pics)), loads), replace_changed=True)
        assert (third.added, third.already_indexed, third.changed, third.replaced) == (0, 2, ["b.png"], 1)
        assert loads == ["b.png"]
        hits = index.search(red, top_k=3)
        assert {hit.id for hit in hits[:2]} == {"a.png", "b.png"}  # the new content is what is found
        assert hits[0].score == pytest.approx(hits[1].score, abs=5e-3)
        assert all(set(hit.payload) == {"path"} for hit in hits)  # the fingerprint stays out of the hits
        assert index.build(read_collection(pics)).already_indexed == 3


def test_documents_indexed_without_a_fingerprint_count_as_unchanged(embedder, tmp_path):
    lines = [{"id": "a", "text": CAPTIONS[0]}, {"text": CAPTIONS[1]}]
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    with Index.create("old", "starter", backend="exact", data_dir=tmp_path, embedder=embedder) as index:
        index.add(["something else"], ids=["a"], payloads=[{"text": "indexed before fingerprints"}])
        report = index.build(read_collection(tmp_path / "items.jsonl"))
        assert (report.added, report.already_indexed, report.changed, report.positional_ids) == (1, 1, [], 1)


def test_an_id_repeated_after_its_chunk_was_stored_is_a_repeat_not_a_change(embedder, tmp_path, monkeypatch):
    monkeypatch.setattr(index_module, "_EXISTENCE_CHECK_CHUNK", 1)
    lines = [{"id": "a", "text": CAPTIONS[0]}, {"id": "a", "text": CAPTIONS[1]}]
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    with Index.create("twice", "starter", backend="exact", data_dir=tmp_path, embedder=embedder) as index:
        report = index.build(read_collection(tmp_path / "items.jsonl"))
    assert (report.added, report.changed) == (1, [])
    assert [skip.source for skip in report.skipped] == ["items.jsonl:2"]


def test_a_create_racing_another_process_is_refused_and_clears_nothing(embedder, tmp_path):
    folder = tmp_path / "racing"
    (folder / STORE_DIR).mkdir(parents=True)
    (folder / STORE_DIR / "theirs").write_text("another process is creating this index")
    with (folder / LOCK_NAME).open("a+") as other_process:
        fcntl.flock(other_process, fcntl.LOCK_EX)
        with pytest.raises(ValueError, match="'racing' is being written by another process"):
            Index.create("racing", "starter", backend="exact", data_dir=tmp_path, embedder=embedder)
    assert (folder / STORE_DIR / "theirs").is_file()
    with Index.create("racing", "starter", backend="exact", data_dir=tmp_path, embedder=embedder) as index:
        assert index.count() == 0  # once free, the unfinished create is cleared and redone


def test_an_index_opened_for_writing_meets_the_write_lock_before_its_store(embedder, tmp_path):
    Index.create("w", "starter", data_dir=tmp_path, embedder=embedder).close()  # qdrant-edge: one opener at a time
    with (tmp_path / "w" / LOCK_NAME).open("a+") as other_process:
        fcntl.flock(other_process, fcntl.LOCK_EX)
        with pytest.raises(ValueError, match="'w' is being written by another process; wait for it to finish"):
            Index.open("w", data_dir=tmp_path, write=True, wait=10)
    with Index.open("w", data_dir=tmp_path, write=True), pytest.raises(ValueError, match="in this process"):
        Index.open("w", data_dir=tmp_path, wait=10)  # ourselves: refused at once, never waited for
