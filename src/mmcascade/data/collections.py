"""Read a collection to index: a folder of images (with optional captions) or a JSONL of items.

Records are yielded lazily and their images are decoded only when :meth:`SourceRecord.load` is
called, so a resumed build skips what is already indexed without touching those files. A record that
cannot be read becomes a :class:`SkippedRecord` (file, line, reason) instead of stopping the build.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mmcascade.data.items import Item, as_item, load_image

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
CaptionMode = Literal["embed", "payload"]


@dataclass(frozen=True)
class SourceRecord:
    """A document to index: its id, where it came from, how to load it, and its payload."""

    id: str
    source: str  # "path/to/file.png" or "items.jsonl:12", for error reports
    load: Callable[[], Item]
    payload: dict[str, Any]


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
    embedded with the image (``captions="embed"``) or only stored in the payload (``"payload"``).
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
        yield SourceRecord(relative, relative, _image_loader(file, text, instruction), payload)


def read_jsonl(path: Path, *, instruction: str | None = None) -> Iterator[SourceRecord | SkippedRecord]:
    """One record per line: ``{"id", "text", "image" | "images", "instruction", "payload"}``.

    Image paths are relative to the JSONL file's folder. ``id`` defaults to ``"line-N"``; ``payload``
    defaults to the line's text and its image paths made absolute (so hits can be shown and reranked from anywhere).
    """
    root = path.parent
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            source = f"{path.name}:{number}"
            try:
                record = _parse_line(line, root, number, instruction)
            except ValueError as error:
                yield SkippedRecord(source, str(error))
                continue
            doc_id, loader, payload = record
            yield SourceRecord(doc_id, source, loader, payload)


_JSONL_KEYS = frozenset({"id", "text", "image", "images", "instruction", "payload"})


def _parse_line(
    line: str, root: Path, number: int, instruction: str | None
) -> tuple[str, Callable[[], Item], dict[str, Any]]:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON ({error.msg} at column {error.colno})") from error
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    unknown = set(value) - _JSONL_KEYS
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}; valid: {sorted(_JSONL_KEYS)}")
    doc_id = value.get("id", f"line-{number}")
    if isinstance(doc_id, int) and not isinstance(doc_id, bool):
        doc_id = str(doc_id)
    if not isinstance(doc_id, str) or not doc_id:
        raise ValueError(f"'id' must be a non-empty string or an int; got {doc_id!r}")
    images = value.get("images", value.get("image")) or []
    if isinstance(images, str):
        images = [images]
    if not isinstance(images, list) or not all(isinstance(image, str) for image in images):
        raise ValueError("'image' must be a path string and 'images' a list of path strings")
    fields = {key: value[key] for key in ("text", "instruction") if key in value}
    if "image" in value and "images" in value:
        raise ValueError("give either 'image' or 'images', not both")
    as_item({**fields, "images": images})  # validates text/instruction/placeholders now, without decoding
    paths = [root / image for image in images]
    payload = value.get("payload")
    if payload is None:
        # the document's content, with absolute image paths, so a result can be shown or reranked from anywhere
        payload = {"text": value["text"]} if "text" in value else {}
        absolute = [os.path.abspath(path) for path in paths]
        if "image" in value:
            payload["image"] = absolute[0]
        elif "images" in value:
            payload["images"] = absolute
    elif not isinstance(payload, dict):
        raise ValueError(f"'payload' must be an object; got {type(payload).__name__}")

    def load() -> Item:
        decoded = [load_image(image_path) for image_path in paths]
        return as_item({**fields, "images": decoded}).with_instruction(instruction)

    return doc_id, load, payload


def _image_loader(file: Path, text: str | None, instruction: str | None) -> Callable[[], Item]:
    def load() -> Item:
        return Item(text=text, images=(load_image(file),), instruction=instruction)

    return load


def _image_files(folder: Path) -> Iterator[Path]:
    for root, directories, files in os.walk(folder):
        directories[:] = sorted(directory for directory in directories if not directory.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES:
                yield Path(root) / name
