"""The SQLite trace cache: round trips, persistence, chunked lookups, and concurrent writers."""

from __future__ import annotations

import hashlib
import multiprocessing
import pickle
import sqlite3
import sys
import threading
from pathlib import Path

import pytest

from mmcascade.reasoner.cache import (
    LOOKUP_CHUNK,
    SCHEMA_VERSION,
    TraceCache,
    TraceCacheStats,
    default_trace_cache_path,
)


def key(name: object) -> str:
    """A key shaped like the pipeline's (hex sha256)."""
    return hashlib.sha256(str(name).encode()).hexdigest()


@pytest.fixture
def cache_path(tmp_path: Path) -> Path:
    return tmp_path / "nested" / "folder" / "traces.sqlite"


def test_round_trip_returns_only_hits(cache_path: Path) -> None:
    with TraceCache(cache_path) as cache:
        cache.put_many({key(1): "first trace", key(2): "ünïcode ✓ trace"})
        assert cache.get_many([key(1), key(2), key(3)]) == {key(1): "first trace", key(2): "ünïcode ✓ trace"}
        assert cache.get_many([]) == {}
        assert cache.get_many((key(3),)) == {}
        cache.put_many({})  # a no-op
        assert len(cache) == 2


def test_persists_across_reopen_and_creates_folders(cache_path: Path) -> None:
    with TraceCache(cache_path) as cache:
        cache.put_many({key("a"): "alpha"}, model="m1")
    assert cache_path.is_file()
    with TraceCache(cache_path) as reopened:
        assert reopened.get_many([key("a")]) == {key("a"): "alpha"}
        assert reopened.stats().per_model == {"m1": 1}
        journal_mode = sqlite3.connect(cache_path).execute("PRAGMA journal_mode").fetchone()[0]
        assert journal_mode == "wal"


def test_put_replaces_text_and_model(cache_path: Path) -> None:
    with TraceCache(cache_path) as cache:
        cache.put_many({key(1): "old", key(2): "kept"}, model="m1")
        cache.put_many({key(1): "new"}, model="m2")
        assert cache.get_many([key(1), key(2)]) == {key(1): "new", key(2): "kept"}
        assert len(cache) == 2
        assert cache.stats().per_model == {"m1": 1, "m2": 1}


def test_get_many_chunks_beyond_the_variable_limit(cache_path: Path) -> None:
    count = 2 * LOOKUP_CHUNK + 300  # several chunks, more than SQLite's old 999-variable limit
    entries = {key(index): f"trace {index}" for index in range(count)}
    with TraceCache(cache_path) as cache:
        cache.put_many(entries)
        wanted = [*entries, *(key(f"missing {index}") for index in range(50)), key(0)]  # a repeat, too
        assert cache.get_many(wanted) == entries
        assert (cache.hits, cache.misses) == (count, 50)


def test_counters_count_distinct_hits_and_misses(cache_path: Path) -> None:
    with TraceCache(cache_path) as cache:
        assert (cache.hits, cache.misses) == (0, 0)
        cache.put_many({key(1): "x"})
        cache.get_many([key(1), key(2)])
        cache.get_many([key(1), key(1), key(3)])
        assert (cache.hits, cache.misses) == (2, 2)
    with TraceCache(cache_path) as reopened:  # counters belong to the object, not the file
        assert (reopened.hits, reopened.misses) == (0, 0)


def test_stats(cache_path: Path) -> None:
    with TraceCache(cache_path) as cache:
        empty = cache.stats()
        assert isinstance(empty, TraceCacheStats)
        assert (empty.count, empty.text_bytes, empty.per_model) == (0, 0, {})
        cache.put_many({key(1): "abc", key(2): "é"}, model="m1")  # "é" is 2 UTF-8 bytes
        cache.put_many({key(3): "xyz"})
        stats = cache.stats()
        assert stats.count == 3
        assert stats.text_bytes == 3 + 2 + 3
        assert stats.file_bytes > 0
        assert stats.per_model == {"m1": 2, None: 1}


def test_clear_by_model_and_all(cache_path: Path) -> None:
    with TraceCache(cache_path) as cache:
        cache.put_many({key(1): "a", key(2): "b"}, model="m1")
        cache.put_many({key(3): "c"}, model="m2")
        assert cache.clear(model="m1") == 2
        assert cache.get_many([key(1), key(2), key(3)]) == {key(3): "c"}
        assert cache.clear(model="unknown") == 0
        assert cache.clear() == 1
        assert len(cache) == 0


def test_rejects_bad_arguments(cache_path: Path) -> None:
    with TraceCache(cache_path) as cache:
        with pytest.raises(TypeError, match="str texts"):
            cache.put_many({key(1): None})  # type: ignore[dict-item]
        with pytest.raises(TypeError, match="str keys"):
            cache.put_many({1: "text"})  # type: ignore[dict-item]
        with pytest.raises(TypeError, match="model"):
            cache.put_many({key(1): "text"}, model=3)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="sequence of keys"):
            cache.get_many(key(1))
        assert len(cache) == 0  # nothing half-written


def test_closed_cache_raises_clearly(cache_path: Path) -> None:
    cache = TraceCache(cache_path)
    cache.close()
    cache.close()  # idempotent
    assert cache.closed
    with pytest.raises(ValueError, match="closed"):
        cache.get_many([key(1)])


def test_corrupt_file_names_the_file_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "traces.sqlite"
    path.write_bytes(b"this is not a database, just some text that happens to be long enough" * 20)
    with pytest.raises(ValueError, match=r"traces\.sqlite.*not a readable SQLite.*delete the file"):
        TraceCache(path)
    assert path.read_bytes().startswith(b"this is not")  # left untouched


def test_other_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE users (name TEXT)")
    with pytest.raises(ValueError, match=r"not a trace cache.*users"):
        TraceCache(path)


def test_newer_schema_version_is_refused(cache_path: Path) -> None:
    TraceCache(cache_path).close()
    with sqlite3.connect(cache_path) as connection:
        connection.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    connection.close()
    with pytest.raises(ValueError, match="newer mmcascade"):
        TraceCache(cache_path)


def test_folder_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is a folder"):
        TraceCache(tmp_path)


def test_default_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MMCASCADE_CACHE", str(tmp_path))
    assert default_trace_cache_path() == tmp_path / "traces.sqlite"
    monkeypatch.delenv("MMCASCADE_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert default_trace_cache_path() == Path.home() / ".cache" / "mmcascade" / "traces.sqlite"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # the one cache root honours XDG too
    assert default_trace_cache_path() == tmp_path / "xdg" / "mmcascade" / "traces.sqlite"


def test_pickled_cache_reopens_the_same_file(cache_path: Path) -> None:
    with TraceCache(cache_path) as cache:
        cache.put_many({key(1): "x"})
        with pickle.loads(pickle.dumps(cache)) as copy:
            assert copy.path == cache.path
            assert copy.get_many([key(1)]) == {key(1): "x"}


def test_threads_share_one_cache(cache_path: Path) -> None:
    errors: list[BaseException] = []
    with TraceCache(cache_path) as cache:

        def work(worker: int) -> None:
            try:
                for batch in range(10):
                    entries = {key((worker, batch, item)): f"{worker}/{batch}/{item}" for item in range(10)}
                    cache.put_many(entries, model=f"m{worker}")
                    assert cache.get_many(list(entries)) == entries
                    cache.get_many([key((other, 0, 0)) for other in range(8)])  # others' keys, present or not
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=work, args=(worker,)) for worker in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert len(cache) == 8 * 10 * 10
        assert cache.stats().per_model == {f"m{worker}": 100 for worker in range(8)}


def _write_from_process(path: str, worker: int) -> None:
    """One writer process: 200 distinct keys in batches of 20, reading back as it goes."""
    with TraceCache(path) as cache:
        written: dict[str, str] = {}
        for batch in range(10):
            entries = {key((worker, batch, item)): f"trace {worker}/{batch}/{item}" for item in range(20)}
            cache.put_many(entries, model=f"worker{worker}")
            written.update(entries)
            if cache.get_many(list(written)) != written:
                raise RuntimeError(f"worker {worker} lost its own writes after batch {batch}")
            cache.get_many([key((other, batch, 0)) for other in range(4)])  # others' keys, present or not


def test_concurrent_writer_processes(tmp_path: Path) -> None:
    # a fresh path: the four processes also race to create the schema and switch it to WAL
    path = tmp_path / "shared" / "traces.sqlite"
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_write_from_process, args=(str(path), worker)) for worker in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
    assert [process.exitcode for process in processes] == [0, 0, 0, 0]
    with TraceCache(path) as cache:
        assert len(cache) == 800
        assert cache.stats().per_model == {f"worker{worker}": 200 for worker in range(4)}
        expected = {key((3, batch, item)): f"trace 3/{batch}/{item}" for batch in range(10) for item in range(20)}
        assert cache.get_many(list(expected)) == expected


def _use_inherited_cache(cache: TraceCache) -> None:
    cache.put_many({key("child"): "from the child"})
    if cache.get_many([key("parent")]) != {key("parent"): "from the parent"}:
        raise RuntimeError("the forked child could not read the parent's trace")


@pytest.mark.skipif(sys.platform != "linux", reason="the fork start method is Linux-only here")
def test_forked_child_reopens_its_own_connection(cache_path: Path) -> None:
    with TraceCache(cache_path) as cache:
        cache.put_many({key("parent"): "from the parent"})
        process = multiprocessing.get_context("fork").Process(target=_use_inherited_cache, args=(cache,))
        process.start()
        process.join(timeout=60)
        assert process.exitcode == 0
        assert cache.get_many([key("child")]) == {key("child"): "from the child"}  # parent's connection still works
