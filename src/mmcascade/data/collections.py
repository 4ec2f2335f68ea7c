"""Read a collection to index: a folder of images (with optional captions) or a JSONL of items.

Records are yielded lazily and their images are decoded only when :meth:`SourceRecord.load` is
called, so a resumed build skips what is already indexed without touching those files. A record that
cannot be read becomes a :class:`SkippedRecord` (file, line, reason) instead of stopping the build.

Each record carries a :class:`ContentFingerprint`, so a build can tell a document that changed since it
was indexed (another image under the same file name, an edited JSONL line) from one already indexed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mmcascade.data.items import ITEM_KEYS, Item, item_from_json, load_image

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
CaptionMode = Literal["embed", "payload"]


_FINGERPRINT_CHARS = 32  # hex characters kept of each sha256 (128 bits)
_READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class ContentFingerprint:
    """What a record held when it was read: its fields (text, caption, instruction, payload...) and image files.

    Two levels, so checking an indexed collection stays cheap: :meth:`stat` hashes the fields with each
    image file's size and ``mtime_ns`` (one ``stat`` per file, nothing read), :meth:`sha256` hashes the
    fields with the files' bytes (read, never decoded). :meth:`matches` compares the stat first and reads
    the files only when it differs, so a touched or copied file with the same bytes is not a change.
    The resolved image paths are not part of it: moving a collection (with relative paths) changes nothing.
    """

    fields: str  # canonical JSON of everything but the image files
    files: tuple[Path, ...] = ()

    @classmethod
    def of(cls, fields: Mapping[str, Any], files: Sequence[str | os.PathLike] = ()) -> ContentFingerprint:
        return cls(json.dumps(fields, sort_keys=True, ensure_ascii=False), tuple(Path(file) for file in files))

    def stat(self) -> str:
        """Hash of the fields and each file's size and mtime (a missing file hashes as missing)."""
        digest = hashlib.sha256(self.fields.encode())
        for file in self.files:
            try:
                status = file.stat()
                digest.update(f"\0{status.st_size}:{status.st_mtime_ns}".encode())
            except OSError:
                digest.update(b"\0missing")
        return digest.hexdigest()[:_FINGERPRINT_CHARS]

    def sha256(self) -> str:
        """Hash of the fields and each file's bytes; raises OSError when a file cannot be read."""
        digest = hashlib.sha256(self.fields.encode())
        for file in self.files:
            digest.update(b"\0")
            with file.open("rb") as handle:
                while chunk := handle.read(_READ_CHUNK):
                    digest.update(chunk)
        return digest.hexdigest()[:_FINGERPRINT_CHARS]

    def as_dict(self) -> dict[str, str]:
        """What an index stores with the document (see :meth:`matches`)."""
        return {"stat": self.stat(), "sha256": self.sha256()}

    def matches(self, stored: Mapping[str, Any]) -> bool:
        """Whether the content is still what :meth:`as_dict` recorded (a file that cannot be read: no)."""
        if stored.get("stat") == self.stat():
            return True
        try:
            return stored.get("sha256") == self.sha256()
        except OSError:
            return False


@dataclass(frozen=True)
class SourceRecord:
    """A document to index: its id, where it came from, how to load it, and its payload.

    ``fingerprint`` describes its content (None: unknown, never reported as changed); ``positional_id``
    is True when the id is the record's position (a JSONL line without ``"id"``), which shifts when lines
    above it are added or removed.
    """

    id: str
    source: str  # "path/to/file.png" or "items.jsonl:12", for error reports
    load: Callable[[], Item]
    payload: dict[str, Any]
    fingerprint: ContentFingerprint | None = None
    positional_id: bool = False


@dataclass(frozen=True)
class SkippedRecord:
    """A record that could not be read, with the reason."""

    source: str
    reason: str


def read_collection(
    path: str | os.PathLike, *, captions: CaptionMode = "embed", instruction: str | None = None
) -> Iterator[SourceRecord | SkippedRecord]:
    """Records of a folder of images or a ``.jsonl`` file of items (see :func:`read_image_folder`, :func:`read_jsonl`)."""
    path = Path(path).expanduser()
    if path.is_dir():
        return read_image_folder(path, captions=captions, instruction=instruction)
    if path.is_file():
        if path.suffix.lower() not in (".jsonl", ".ndjson"):
            raise ValueError(f"{path}: pass a folder of images or a .jsonl file of items")
        return read_jsonl(path, instruction=instruction)
    raise FileNotFoundError(f"collection not found: {path}")


def count_collection(path: str | os.PathLike) -> int:
    """How many records :func:`read_collection` will yield (for progress bars); cheap, decodes nothing."""
    path = Path(path).expanduser()
    if path.is_dir():
        return sum(1 for _ in _image_files(path))
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


def read_image_folder(
    folder: Path, *, captions: CaptionMode = "embed", instruction: str | None = None
) -> Iterator[SourceRecord | SkippedRecord]:
    """One record per image file under ``folder`` (recursive, sorted).

    The id is the file's path relative to ``folder``. A same-named ``.txt`` file is the caption: it is
    embedded with the image (``captions="embed"``) or only stored in the payload (``"payload"``). The
    fingerprint covers the image file, the caption, the caption mode and ``instruction``.
    """
    if captions not in ("embed", "payload"):
        raise ValueError(f"captions must be 'embed' or 'payload'; got {captions!r}")
    for file in _image_files(folder):
        relative = file.relative_to(folder).as_posix()
        caption_file = file.with_suffix(".txt")
        caption = None
        if caption_file.is_file():
            try:
                caption = caption_file.read_text(encoding="utf-8").strip() or None
            except (OSError, UnicodeDecodeError) as error:
                yield SkippedRecord(str(caption_file), f"unreadable caption: {error}")
                continue
        payload: dict[str, Any] = {"path": str(file.resolve())}
        if caption is not None:
            payload["caption"] = caption
        text = caption if captions == "embed" else None
        loader = _decoding_loader(Item(text=text, images=(file,)), instruction)
        fingerprint = ContentFingerprint.of(
            {"caption": caption, "captions": captions, "instruction": instruction}, [file]
        )
        yield SourceRecord(relative, relative, loader, payload, fingerprint)


def read_jsonl(path: Path, *, instruction: str | None = None) -> Iterator[SourceRecord | SkippedRecord]:
    """One record per line: ``{"id", "text", "image" | "images", "instruction", "payload"}``.

    Image paths are relative to the JSONL file's folder (:func:`~mmcascade.data.items.item_from_json` reads
    the item fields). ``payload`` defaults to the line's text and its image paths made absolute (so hits
    can be shown and reranked from anywhere).

    ``id`` defaults to ``"line-N"``, N the 1-based line number in the file (blank lines count). Such an id
    is positional (``SourceRecord.positional_id``): adding or removing a line above it shifts it, and a
    later build then indexes the record again under its new id. Give every line an ``"id"`` to keep ids
    stable. The fingerprint covers the whole line except ``id`` (so an edited payload counts as a change),
    the default ``instruction`` and the bytes of its image files.
    """
    root = path.parent
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            source = f"{path.name}:{number}"
            try:
                record = _parse_line(line, root, number, source, instruction)
            except ValueError as error:
                yield SkippedRecord(source, str(error))
                continue
            yield record


_JSONL_KEYS = frozenset({"id", *ITEM_KEYS, "payload"})


def _parse_line(line: str, root: Path, number: int, source: str, instruction: str | None) -> SourceRecord:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON ({error.msg} at column {error.colno})") from error
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    unknown = set(value) - _JSONL_KEYS
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}; valid: {sorted(_JSONL_KEYS)}")
    doc_id = _document_id(value, number)
    # checks text/instruction/placeholders and resolves image paths now, without decoding
    item = item_from_json({key: value[key] for key in ITEM_KEYS if key in value}, root, name="")
    fields = {key: field_value for key, field_value in value.items() if key != "id"}
    return SourceRecord(
        doc_id,
        source,
        _decoding_loader(item, instruction),
        _payload(value, item),
        ContentFingerprint.of({"line": fields, "instruction": instruction}, item.images),
        positional_id="id" not in value,
    )


def _document_id(value: dict[str, Any], number: int) -> str:
    doc_id = value.get("id", f"line-{number}")
    if isinstance(doc_id, int) and not isinstance(doc_id, bool):
        doc_id = str(doc_id)
    if not isinstance(doc_id, str) or not doc_id:
        raise ValueError(f"'id' must be a non-empty string or an int; got {doc_id!r}")
    return doc_id


def _payload(value: dict[str, Any], item: Item) -> dict[str, Any]:
    """The line's ``payload``; by default the document's content with absolute image paths, so a result can
    be shown or reranked from anywhere."""
    payload = value.get("payload")
    if payload is None:
        payload = {"text": value["text"]} if "text" in value else {}
        absolute = [os.path.abspath(path) for path in item.images]
        if value.get("image") is not None:
            payload["image"] = absolute[0]
        elif value.get("images") is not None:
            payload["images"] = absolute
    elif not isinstance(payload, dict):
        raise ValueError(f"'payload' must be an object; got {type(payload).__name__}")
    return payload


def _decoding_loader(item: Item, instruction: str | None) -> Callable[[], Item]:
    """``item`` with its image files decoded (on call) and ``instruction`` filled in where it has none."""

    def load() -> Item:
        decoded = tuple(load_image(path) for path in item.images)
        return Item(text=item.text, images=decoded, instruction=item.instruction).with_instruction(instruction)

    return load


def _image_files(folder: Path) -> Iterator[Path]:
    for root, directories, files in os.walk(folder):
        directories[:] = sorted(directory for directory in directories if not directory.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES:
                yield Path(root) / name
