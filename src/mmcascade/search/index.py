"""The :class:`Index`: a named collection searched with one embedder, over a storage backend.

``mmcascade.index`` is storage only (backends, the manifest, the folder layout and its lock: see
:mod:`mmcascade.index.folders`); this facade adds the model: it encodes documents and queries with the
embedder that built the index (checked by fingerprint) and hands ``(n, V, d)`` vectors to the store.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from mmcascade import __version__
from mmcascade.data.collections import SkippedRecord, SourceRecord
from mmcascade.embedder import Embedder
from mmcascade.index.backends import DEFAULT_BACKEND, get_backend
from mmcascade.index.base import IndexBackend, Payload, SearchHit, StoreSpec
from mmcascade.index.folders import STORE_DIR, folder_bytes, index_folder, list_indexes
from mmcascade.index.lock import LOCK_NAME, open_when_free, write_lock
from mmcascade.index.manifest import MANIFEST_NAME, IndexManifest, now
from mmcascade.models import model_fingerprint, resolve_model

_EXISTENCE_CHECK_CHUNK = 512
# The payload key under which a built document keeps its source fingerprint (ContentFingerprint.as_dict);
# searches strip it, so hits show the user's payload only.
SOURCE_KEY = "_mmcascade_source"


@dataclass
class BuildReport:
    """What :meth:`Index.build` did.

    ``added``: new documents encoded. ``already_indexed``: ids present with the same content (or indexed
    before fingerprints were stored). ``changed``: ids present whose content changed since they were
    indexed; ``replaced`` of them were re-encoded (``replace_changed=True``), the others keep their old
    vectors. ``positional_ids``: records whose id is their line number (JSONL lines without ``"id"``).
    """

    added: int = 0
    already_indexed: int = 0
    skipped: list[SkippedRecord] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    replaced: int = 0
    positional_ids: int = 0


class Index:
    """A searchable multi-vector index built with one embedder.

    Use :meth:`create` for a new index and :meth:`open` for an existing one; then :meth:`add` or
    :meth:`build` documents and :meth:`search` them.
    """

    def __init__(self, folder: Path, manifest: IndexManifest, store: IndexBackend, embedder: Embedder | None = None):
        self.folder = folder
        self.manifest = manifest
        self.store = store
        self._embedder = embedder

    # ----------------------------------------------------------------- lifecycle
    @classmethod
    def create(
        cls,
        name: str,
        model: str | os.PathLike = "starter",
        *,
        backend: str = DEFAULT_BACKEND,
        doc_budget: int | None = None,
        backend_options: dict[str, Any] | None = None,
        query_instruction: str | None = None,
        document_instruction: str | None = None,
        data_dir: str | os.PathLike | None = None,
        embedder: Embedder | None = None,
    ) -> Index:
        """Create an empty index called ``name``.

        Args:
            model: the embedder (folder, Hub id or ``"starter"``) that encodes documents and queries.
            backend: ``"qdrant-edge"`` (embedded, default), ``"exact"`` or ``"qdrant"`` (client/server).
            doc_budget: document vectors to store per document (a Matryoshka prefix); default all.
            backend_options: e.g. ``{"prefetch": 400}`` or ``{"url": "http://localhost:6333"}``.
            query_instruction / document_instruction: defaults for items without an instruction.
            data_dir: where indexes live (default ``$MMCASCADE_DATA_DIR`` or the user cache).
            embedder: an already loaded embedder for ``model`` (saves loading it again).
        """
        folder = index_folder(name, data_dir)
        if (folder / MANIFEST_NAME).is_file():
            raise ValueError(
                f"index {name!r} already exists in {folder.parent}: add to it (`mmcascade index add`), "
                f"or delete it first (`mmcascade index delete {name}`)"
            )
        backend_class = get_backend(backend)
        model_path = resolve_model(model)
        embedder = embedder or Embedder.from_pretrained(model)
        available = embedder.num_vectors("document")
        if doc_budget is not None and (
            isinstance(doc_budget, bool) or not isinstance(doc_budget, int) or not 1 <= doc_budget <= available
        ):
            raise ValueError(
                f"doc_budget={doc_budget!r} is out of range: this model makes 1..{available} document vectors"
            )
        manifest = IndexManifest(
            name=name,
            model=os.fspath(model),
            model_fingerprint=model_fingerprint(model_path),
            backend=backend,
            dim=embedder.dim,
            doc_budget=doc_budget or available,
            query_vectors=embedder.num_vectors("query"),
            backend_options=dict(backend_options or {}),
            query_instruction=query_instruction,
            document_instruction=document_instruction,
            created_at=now(),
            mmcascade_version=__version__,
        )
        folder.mkdir(parents=True, exist_ok=True)
        # Under the write lock: two processes creating the same index must not clear each other's files.
        with write_lock(folder, name):
            if (folder / MANIFEST_NAME).is_file():
                raise ValueError(f"index {name!r} was just created by another process: add to it instead")
            _clear_unfinished_create(folder)
            store: IndexBackend | None = None
            try:
                store = backend_class.create(folder / STORE_DIR, _spec(manifest), **manifest.backend_options)
                manifest.save(folder)
            except BaseException:  # a refused option, an unreachable server, a kill: leave no empty index behind
                if store is not None:
                    store.close()
                shutil.rmtree(folder, ignore_errors=True)
                raise
        return cls(folder, manifest, store, embedder)

    @classmethod
    def open(
        cls,
        name: str,
        *,
        model: str | os.PathLike | None = None,
        data_dir: str | os.PathLike | None = None,
        backend_options: dict[str, Any] | None = None,
        embedder: Embedder | None = None,
        write: bool = False,
        wait: float | None = None,
    ) -> Index:
        """Open index ``name``. ``model``, if given, must be the model that built it (checked by fingerprint).

        ``write=True`` (to add or build next) refuses at once if another process is writing the index.
        A backend that lets one process open an index at a time (qdrant-edge, qdrant local mode) is
        waited for, up to ``wait`` seconds (default ``$MMCASCADE_LOCK_TIMEOUT`` or 30), then a
        ValueError says who holds it; the exact backend reads while another process writes.
        """
        folder = index_folder(name, data_dir)
        if not (folder / MANIFEST_NAME).is_file():
            available = list_indexes(folder.parent)
            hint = f"existing indexes: {', '.join(available)}" if available else "there are no indexes there yet"
            raise FileNotFoundError(
                f"no index named {name!r} in {folder.parent} ({hint}); build one with `mmcascade index build {name} --input PATH`"
            )
        manifest = IndexManifest.load(folder)
        if model is not None:
            fingerprint = model_fingerprint(resolve_model(model))
            if fingerprint != manifest.model_fingerprint:
                raise ValueError(
                    f"index {name!r} was built with model {manifest.model!r} (fingerprint {manifest.model_fingerprint}); "
                    f"{os.fspath(model)!r} is a different model (fingerprint {fingerprint}). Search with the model "
                    "that built the index, or build a new index with this one"
                )
        options = {**manifest.backend_options, **(backend_options or {})}
        backend_class = get_backend(manifest.backend)
        store = open_when_free(
            lambda: backend_class.open(folder / STORE_DIR, _spec(manifest), **options),
            folder,
            name,
            write=write,
            wait=wait,
        )
        return cls(folder, manifest, store, embedder)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def embedder(self) -> Embedder:
        """The model that built the index, loaded on first use and checked against the manifest."""
        if self._embedder is None:
            fingerprint = model_fingerprint(resolve_model(self.manifest.model))
            if fingerprint != self.manifest.model_fingerprint:
                raise ValueError(
                    f"the model {self.manifest.model!r} changed since index {self.name!r} was built (fingerprint "
                    f"{fingerprint}, index built with {self.manifest.model_fingerprint}); rebuild the index"
                )
            self._embedder = Embedder.from_pretrained(self.manifest.model)
        return self._embedder

    # ----------------------------------------------------------------- writing
    def add(
        self,
        items: Sequence[Any],
        *,
        ids: Sequence[str],
        payloads: Sequence[Payload] | None = None,
        batch_size: int = 16,
    ) -> int:
        """Encode ``items`` as documents and upsert them under ``ids``; returns how many were added."""
        if len(ids) != len(items):
            raise ValueError(f"got {len(ids)} ids for {len(items)} items")
        with write_lock(self.folder, self.name):
            vectors = self._encode_documents(list(items), batch_size)
            self.store.add(list(ids), vectors, payloads)
            self.store.flush()
        return len(ids)

    def build(
        self,
        records: Iterable[SourceRecord | SkippedRecord],
        *,
        batch_size: int = 16,
        on_progress: Callable[[int], None] | None = None,
        replace_changed: bool = False,
    ) -> BuildReport:
        """Add the records not yet indexed, in batches; bad records are skipped and reported.

        Every batch is durable once added, so a killed build resumes by running it again: ids already
        in the index are skipped without decoding their files. A present id whose content changed since
        it was indexed (its :class:`~mmcascade.data.collections.ContentFingerprint`, stored in the payload,
        differs) is listed in ``report.changed``, and re-encoded only with ``replace_changed=True``.
        """
        report = BuildReport()
        written: set[str] = set()  # ids encoded by this build: a later record with the same id is a repeat
        with write_lock(self.folder, self.name):
            for chunk in _chunks(records, _EXISTENCE_CHECK_CHUNK):
                sources, repeats = _split_repeated_ids(
                    [record for record in chunk if isinstance(record, SourceRecord)], written
                )
                report.skipped.extend(record for record in chunk if isinstance(record, SkippedRecord))
                report.skipped.extend(repeats)
                report.positional_ids += sum(
                    1 for record in chunk if isinstance(record, SourceRecord) and record.positional_id
                )
                to_encode, replacing = self._to_encode(sources, report, replace_changed)
                written.update(record.id for record in to_encode)
                if on_progress:
                    on_progress(len(chunk) - len(to_encode))
                for start in range(0, len(to_encode), batch_size):
                    batch = to_encode[start : start + batch_size]
                    stored = self._add_batch(batch, report)
                    replaced = sum(doc_id in replacing for doc_id in stored)
                    report.replaced += replaced
                    report.added += len(stored) - replaced
                    if on_progress:
                        on_progress(len(batch))
            self.store.flush()
            self.store.optimize()
        return report

    def delete(self, ids: Sequence[str]) -> int:
        """Remove documents by id; returns how many were removed."""
        with write_lock(self.folder, self.name):
            removed = self.store.delete(list(ids))
            self.store.flush()
        return removed

    # ----------------------------------------------------------------- reading
    def count(self) -> int:
        return self.store.count()

    def search(
        self,
        query: Any,
        *,
        top_k: int = 10,
        query_budget: int | None = None,
        instruction: str | None = None,
        trace: Any = None,
    ) -> list[SearchHit]:
        """Top-``top_k`` documents for one query (text, image or both), best first.

        ``trace``: a reasoning trace (Think-Then-Embed) embedded with the query; see ``mmcascade.reasoner``.
        """
        traces = None if trace is None else [trace]
        return self.search_many(
            [query], top_k=top_k, query_budget=query_budget, instruction=instruction, traces=traces
        )[0]

    def search_many(
        self,
        queries: Sequence[Any],
        *,
        top_k: int = 10,
        query_budget: int | None = None,
        instruction: str | None = None,
        batch_size: int = 16,
        traces: Sequence[Any] | None = None,
    ) -> list[list[SearchHit]]:
        """:meth:`search` for several queries, encoded in batches."""
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive int; got {top_k!r}")
        if query_budget is not None and (
            isinstance(query_budget, bool)
            or not isinstance(query_budget, int)
            or not 1 <= query_budget <= self.manifest.query_vectors
        ):
            raise ValueError(
                f"query_budget={query_budget!r} is out of range for index {self.name!r}: "
                f"its model makes 1..{self.manifest.query_vectors} query vectors"
            )
        vectors = self.embedder.encode_queries(
            list(queries),
            batch_size=batch_size,
            query_budget=query_budget,
            instruction=instruction or self.manifest.query_instruction,
            traces=traces,
        )  # (n, query_budget, dim)
        return [[_user_payload(hit) for hit in hits] for hits in self.store.search(vectors, top_k)]

    def info(self) -> dict[str, Any]:
        """The manifest plus the live document count and the bytes on disk."""
        return {
            **asdict(self.manifest),
            "count": self.count(),
            "folder": str(self.folder),
            "bytes_on_disk": folder_bytes(self.folder),
        }

    # ----------------------------------------------------------------- internals
    def _to_encode(
        self, records: list[SourceRecord], report: BuildReport, replace_changed: bool
    ) -> tuple[list[SourceRecord], set[str]]:
        """The records to encode (not stored yet, or changed when replacing) and the ids among them
        that replace a stored document; counts the rest in ``report``. Decodes nothing."""
        to_encode, replacing = [], set()
        for record, stored in zip(records, self.store.get_payloads([record.id for record in records]), strict=True):
            if stored is None:
                to_encode.append(record)
            elif _changed(record, stored):
                report.changed.append(record.id)
                if replace_changed:
                    to_encode.append(record)
                    replacing.add(record.id)
            else:
                report.already_indexed += 1
        return to_encode, replacing

    def _add_batch(self, batch: list[SourceRecord], report: BuildReport) -> list[str]:
        """Load, encode and store ``batch``; returns the ids stored (the others are in ``report.skipped``)."""
        loaded, items, payloads = [], [], []
        for record in batch:
            try:
                item, payload = record.load(), _stored_payload(record)
            except (ValueError, FileNotFoundError, OSError) as error:
                report.skipped.append(SkippedRecord(record.source, str(error)))
                continue
            loaded.append(record)
            items.append(item)
            payloads.append(payload)
        if not loaded:
            return []
        try:
            vectors = self._encode_documents(items, len(items))
        except ValueError:
            return self._add_one_by_one(loaded, items, payloads, report)
        self.store.add([record.id for record in loaded], vectors, payloads)
        return [record.id for record in loaded]

    def _add_one_by_one(
        self, records: list[SourceRecord], items: list[Any], payloads: list[Payload], report: BuildReport
    ) -> list[str]:
        """A batch the model refused: find the culprit(s), keep the rest."""
        added = []
        for record, item, payload in zip(records, items, payloads, strict=True):
            try:
                vectors = self._encode_documents([item], 1)
            except ValueError as error:
                report.skipped.append(SkippedRecord(record.source, f"the model cannot encode it: {error}"))
                continue
            self.store.add([record.id], vectors, [payload])
            added.append(record.id)
        return added

    def _encode_documents(self, items: list[Any], batch_size: int) -> torch.Tensor:
        return self.embedder.encode_documents(
            items,
            batch_size=batch_size,
            doc_budget=self.manifest.doc_budget,
            instruction=self.manifest.document_instruction,
        )  # (n, doc_budget, dim)


def _clear_unfinished_create(folder: Path) -> None:
    """Remove what a create killed before its manifest left behind (all but the held lock file)."""
    for entry in folder.iterdir():
        if entry.name == LOCK_NAME:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _spec(manifest: IndexManifest) -> StoreSpec:
    return StoreSpec(dim=manifest.dim, num_vectors=manifest.doc_budget)


def _chunks(records: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for record in records:
        chunk.append(record)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _split_repeated_ids(
    records: list[SourceRecord], written: set[str]
) -> tuple[list[SourceRecord], list[SkippedRecord]]:
    """The first record of each id, and the later ones as skipped (a collection that repeats an id indexes it
    once); an id in ``written`` (encoded earlier in this build) is a repeat too."""
    first: dict[str, SourceRecord] = {}
    repeats = []
    for record in records:
        if record.id in first:
            reason = f"id {record.id!r} repeats {first[record.id].source}; only the first is indexed"
            repeats.append(SkippedRecord(record.source, reason))
        elif record.id in written:
            reason = f"id {record.id!r} repeats a record indexed earlier in this build; only the first is indexed"
            repeats.append(SkippedRecord(record.source, reason))
        else:
            first[record.id] = record
    return list(first.values()), repeats


def _changed(record: SourceRecord, stored: Payload) -> bool:
    """Whether a stored document's content differs from ``record``'s; unknown on either side: unchanged."""
    fingerprint = stored.get(SOURCE_KEY)
    if record.fingerprint is None or not isinstance(fingerprint, dict):
        return False  # no fingerprint: indexed before they were stored, or added with Index.add
    return not record.fingerprint.matches(fingerprint)


def _stored_payload(record: SourceRecord) -> Payload:
    """The payload as stored: the record's, plus its fingerprint under :data:`SOURCE_KEY` (reads its files)."""
    if SOURCE_KEY in record.payload:
        raise ValueError(f"its payload uses the reserved key {SOURCE_KEY!r}; rename that key")
    if record.fingerprint is None:
        return record.payload
    return {**record.payload, SOURCE_KEY: record.fingerprint.as_dict()}


def _user_payload(hit: SearchHit) -> SearchHit:
    """``hit`` without the build's bookkeeping in its payload."""
    if SOURCE_KEY not in hit.payload:
        return hit
    return replace(hit, payload={key: value for key, value in hit.payload.items() if key != SOURCE_KEY})
