"""A persistent trace cache: generated reasoning text by key, in one SQLite file.

Evaluation and indexing must never pay twice for the same trace, so the reasoning pipeline looks
every prompt up here before generating (:meth:`TraceCache.get_many`) and stores what it generated
(:meth:`TraceCache.put_many`). Keys are opaque strings (the pipeline uses hex sha256 digests of
model, settings and prompt); values are the raw generated text.

The store is plain stdlib :mod:`sqlite3`: one table ``traces(key, text, model, created)`` plus a
``schema_version`` table, in WAL mode so readers never block the writer, with a busy timeout so
concurrent writers (threads or processes) wait for each other instead of failing.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from mmcascade.models import cache_root

#: the schema this code writes; a file with a higher version was written by a newer mmcascade
SCHEMA_VERSION = 1
#: how long a writer waits for another connection's write lock before giving up
BUSY_TIMEOUT_S = 30.0
#: keys per ``SELECT ... IN (...)``; well under SQLite's bound-variable limit (999 before 3.32)
LOOKUP_CHUNK = 500
CACHE_FILE_NAME = "traces.sqlite"

_CREATE_TABLES = (
    "CREATE TABLE schema_version (version INTEGER NOT NULL)",
    "CREATE TABLE traces (key TEXT PRIMARY KEY, text TEXT NOT NULL, model TEXT, created REAL)",
)


def default_trace_cache_path() -> Path:
    """``traces.sqlite`` in the cache root (:func:`mmcascade.models.cache_root`)."""
    return cache_root() / CACHE_FILE_NAME


@dataclass(frozen=True)
class TraceCacheStats:
    """What a :class:`TraceCache` holds.

    ``text_bytes`` counts the UTF-8 bytes of the stored traces; ``file_bytes`` is the size on disk
    (database file plus its write-ahead log); ``per_model`` counts traces by the ``model`` they were
    stored with (``None`` for traces stored without one).
    """

    count: int
    text_bytes: int
    file_bytes: int
    per_model: dict[str | None, int] = field(default_factory=dict)


class TraceCache:
    """Generated traces by key, persisted in a SQLite file shared by threads and processes.

    Use it as ``with TraceCache(path) as cache: ...`` or call :meth:`close` when done.

    Concurrency design:

    * **Threads** share *one* connection per process, guarded by a lock: every call holds the lock
      for the duration of one short SQL transaction (milliseconds, even for 10,000 keys). A single
      connection keeps :meth:`close` deterministic and leaks nothing when callers come from thread
      pools, and the GIL would leave little to gain from a connection per thread.
    * **Processes** each open their own connection to the same file; SQLite's file locks serialise
      writers. The file is in WAL mode (readers see a consistent snapshot and never block or get
      blocked by the writer), every write is one ``BEGIN IMMEDIATE`` transaction, and a
      ``busy_timeout`` of :data:`BUSY_TIMEOUT_S` makes a writer wait for the lock instead of failing.
      WAL needs shared memory between processes, so keep the file on a local disk, not NFS.
    * **Forked children** (``multiprocessing`` "fork", DataLoader workers) notice the new process id
      and open a fresh connection and lock; the parent's connection is never touched in the child.
      A pickled cache (``spawn``) reopens the same path.

    Durability: ``synchronous=NORMAL`` under WAL cannot corrupt the file, but a power loss may drop
    the last few writes, which for a cache only means regenerating them.

    ``hits`` and ``misses`` count the distinct keys :meth:`get_many` found and did not find since
    this object was created (for benchmarks and logs).

    Args:
        path: the SQLite file; it and its parent folders are created if missing.

    Raises:
        ValueError: ``path`` is a folder, is not a SQLite database (or is corrupt), is a SQLite
            database of something else, or was written by a newer schema version.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path).expanduser()
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        self._pid = os.getpid()
        # connections inherited from a parent process: kept alive (never closed) in a forked child
        self._inherited: list[sqlite3.Connection] = []
        self._connection: sqlite3.Connection | None = self._open()

    # ----------------------------------------------------------------------------- public API

    def get_many(self, keys: Sequence[str]) -> dict[str, str]:
        """The cached text for each key that is present (misses are simply absent from the result).

        Looks keys up in chunks of :data:`LOOKUP_CHUNK` within one read transaction, so the result
        is one consistent snapshot however many keys are asked for. Duplicate keys count once.
        """
        if isinstance(keys, (str, bytes)):
            raise TypeError(f"get_many takes a sequence of keys, not a single {type(keys).__name__}: {keys!r}")
        unique = list(dict.fromkeys(keys))
        found: dict[str, str] = {}
        with self._session() as connection:
            if unique:
                connection.execute("BEGIN")
                try:
                    for start in range(0, len(unique), LOOKUP_CHUNK):
                        chunk = unique[start : start + LOOKUP_CHUNK]
                        placeholders = ",".join("?" * len(chunk))
                        found.update(
                            connection.execute(f"SELECT key, text FROM traces WHERE key IN ({placeholders})", chunk)
                        )
                finally:
                    connection.execute("COMMIT")
            self.hits += len(found)
            self.misses += len(unique) - len(found)
        return found

    def put_many(self, entries: Mapping[str, str], model: str | None = None) -> None:
        """Store (or replace) every ``key -> text`` in ``entries`` in one transaction.

        Args:
            entries: the traces by key; an existing key's text, model and time are replaced.
            model: optional metadata (which model wrote these), for :meth:`stats` and :meth:`clear`.

        Raises:
            TypeError: a key or text is not a ``str``, or ``model`` is neither ``str`` nor ``None``.
        """
        if model is not None and not isinstance(model, str):
            raise TypeError(f"model must be a str or None; got {type(model).__name__} {model!r}")
        for key, text in entries.items():
            if not isinstance(key, str) or not isinstance(text, str):
                raise TypeError(
                    f"trace cache entries must map str keys to str texts; got {type(key).__name__} key {key!r} "
                    f"-> {type(text).__name__} value"
                )
        if not entries:
            return
        created = time.time()
        rows = [(key, text, model, created) for key, text in entries.items()]
        with self._session() as connection, _write_transaction(connection):
            connection.executemany(
                "INSERT OR REPLACE INTO traces (key, text, model, created) VALUES (?, ?, ?, ?)", rows
            )

    def clear(self, model: str | None = None) -> int:
        """Delete every trace, or only those stored with ``model``; returns how many were deleted."""
        with self._session() as connection, _write_transaction(connection):
            if model is None:
                cursor = connection.execute("DELETE FROM traces")
            else:
                cursor = connection.execute("DELETE FROM traces WHERE model = ?", (model,))
            return cursor.rowcount

    def stats(self) -> TraceCacheStats:
        """How many traces, how many bytes of text and on disk, and how many traces per model."""
        with self._session() as connection:
            rows = connection.execute(
                "SELECT model, COUNT(*), COALESCE(SUM(LENGTH(CAST(text AS BLOB))), 0) FROM traces GROUP BY model"
            ).fetchall()
        file_bytes = sum(
            file.stat().st_size for file in (self.path, self.path.with_name(self.path.name + "-wal")) if file.is_file()
        )
        return TraceCacheStats(
            count=sum(count for _, count, _ in rows),
            text_bytes=sum(size for _, _, size in rows),
            file_bytes=file_bytes,
            per_model={model: count for model, count, _ in rows},
        )

    def close(self) -> None:
        """Close the connection (idempotent); later calls on this object raise ``ValueError``."""
        with self._lock:
            if self._connection is not None and self._pid == os.getpid():
                self._connection.close()
            self._connection = None

    @property
    def closed(self) -> bool:
        return self._connection is None

    def __len__(self) -> int:
        with self._session() as connection:
            return connection.execute("SELECT COUNT(*) FROM traces").fetchone()[0]

    def __enter__(self) -> TraceCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __reduce__(self) -> tuple[type[TraceCache], tuple[Path]]:
        # a connection cannot cross processes: an unpickled cache (spawn workers) reopens the file
        return (type(self), (self.path,))

    def __repr__(self) -> str:
        state = " (closed)" if self.closed else ""
        return f"TraceCache({str(self.path)!r}){state}"

    # ----------------------------------------------------------------------------- internals

    @contextmanager
    def _session(self) -> Iterator[sqlite3.Connection]:
        """The connection, held under the lock; reopened once in a forked child."""
        if self._pid != os.getpid():
            self._reopen_after_fork()
        with self._lock:
            if self._connection is None:
                raise ValueError(f"{self!r} is closed; open a new TraceCache({str(self.path)!r})")
            yield self._connection

    def _reopen_after_fork(self) -> None:
        # Another thread of the parent may have held the lock at fork time, so the child gets a new
        # lock; the parent's connection is kept referenced so the child never closes it.
        self._lock = threading.Lock()
        self._pid = os.getpid()
        if self._connection is not None:
            self._inherited.append(self._connection)
            self._connection = self._open()

    def _open(self) -> sqlite3.Connection:
        if self.path.is_dir():
            raise ValueError(f"trace cache path {self.path} is a folder; give a file path such as {CACHE_FILE_NAME}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions; every transaction here is explicit
        connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        try:
            connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            # the schema check comes first: it only reads an existing file, so another program's
            # database is refused before anything (such as the journal mode) is changed in it
            self._check_schema(connection)
            self._set_wal(connection)
            connection.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.DatabaseError as error:
            connection.close()
            if _is_not_a_database(error):
                raise ValueError(
                    f"{self.path} is not a readable SQLite trace cache ({error}); delete the file "
                    "(it only holds cached traces, which are regenerated on demand) or pick another path"
                ) from error
            raise
        except BaseException:
            connection.close()
            raise
        return connection

    def _set_wal(self, connection: sqlite3.Connection) -> None:
        # Switching a fresh file to WAL needs a brief exclusive lock. The busy handler normally waits
        # for it (8 processes racing to open a new file never failed in testing), but should SQLite
        # still answer "locked", retry within the busy timeout rather than fail the open.
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                connection.execute("PRAGMA journal_mode = WAL").fetchone()
                return
            except sqlite3.OperationalError as error:
                if not _is_busy(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _check_schema(self, connection: sqlite3.Connection) -> None:
        if not self._read_tables(connection):
            # a new (empty) file: create the schema unless another process just did
            with _write_transaction(connection):
                if not self._read_tables(connection):
                    for statement in _CREATE_TABLES:
                        connection.execute(statement)
                    connection.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        tables = self._read_tables(connection)
        if "schema_version" not in tables or "traces" not in tables:
            raise ValueError(
                f"{self.path} is a SQLite database but not a trace cache (it holds tables {sorted(tables)}); "
                "pass another path, or delete the file if it is a stale cache"
            )
        row = connection.execute("SELECT MAX(version) FROM schema_version").fetchone()
        version = row[0] if row else None
        if not isinstance(version, int):
            raise ValueError(
                f"{self.path} has no valid schema version ({version!r}); delete the file (it only holds cached traces)"
            )
        if version > SCHEMA_VERSION:
            raise ValueError(
                f"{self.path} was written by a newer mmcascade (trace cache schema version {version}; this "
                f"version reads up to {SCHEMA_VERSION}); upgrade mmcascade, or use another path or delete the file"
            )

    @staticmethod
    def _read_tables(connection: sqlite3.Connection) -> set[str]:
        return {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


@contextmanager
def _write_transaction(connection: sqlite3.Connection) -> Iterator[None]:
    """One write transaction that takes the write lock up front (waiting up to the busy timeout).

    ``BEGIN IMMEDIATE`` rather than a deferred ``BEGIN``: a deferred transaction that read first
    and then writes fails at once with "database is locked" when another process wrote meanwhile.
    """
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _is_not_a_database(error: sqlite3.DatabaseError) -> bool:
    name = getattr(error, "sqlite_errorname", "")  # Python >= 3.11
    if name in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
        return True
    message = str(error).lower()
    return "not a database" in message or "malformed" in message


def _is_busy(error: sqlite3.OperationalError) -> bool:
    message = str(error).lower()
    return "locked" in message or "busy" in message
