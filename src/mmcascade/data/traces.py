"""Distillation traces: the one reader and writer of the file a teacher writes and SFT reads.

A distillation file holds one JSON object per line::

    {"item": {"text": ..., "image": ... | "images": [...], "instruction": ...},
     "trace": "<think>...</think>\\nAnswer: ...", "task": "retrieval"}

``task`` is the prompt kind the trace answers (``retrieval``, ``vqa``, ``classification``, ...; a line
without one gets the reader's default). Image paths are written **relative to the file's folder** when
the image lies inside that folder (so the folder can be moved, like the records format), and
**absolute** otherwise; the reader resolves a relative path against the file's folder.

Writers: the templated teacher (:func:`mmcascade.data.synthetic.teacher.teacher_traces_from_records`,
one atomic write) and any reasoner (:func:`mmcascade.reasoner.teacher.generate_teacher_traces`, appended
batch by batch so a long run can be killed and resumed). Reader: SFT (:mod:`mmcascade.training.sft`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmcascade.data.items import Item, item_from_json, json_type
from mmcascade.utils.fs import write_lines_atomically

TRACE_KEYS = ("item", "trace", "task")


@dataclass(frozen=True)
class TraceRecord:
    """One line of a distillation file: the item a teacher saw, its trace and the prompt kind it answers.

    Image paths in ``item`` are absolute once read; ``line`` is the 1-based line it was read from (0 for
    records built in code).
    """

    item: Item
    trace: str
    task: str
    line: int = 0


@dataclass(frozen=True)
class TraceProblem:
    """Why line ``line`` (1-based) of a distillation file was rejected."""

    line: int
    reason: str


def iter_traces(path: str | os.PathLike, *, default_task: str = "retrieval") -> Iterator[TraceRecord | TraceProblem]:
    """Every non-blank line of ``path`` in order: a :class:`TraceRecord`, or a :class:`TraceProblem` saying
    why the line is not one (malformed JSON, a missing or unknown key, a wrong type, a missing image file).

    The task is not checked against the known prompt kinds: that is the reader's (it knows the templates).

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"traces file not found: {path}")
    base = Path(os.path.abspath(path.parent))
    with path.open(encoding="utf-8-sig") as handle:  # -sig: tolerate a byte-order mark
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                yield _parse_line(text, number, base, default_task)
            except ValueError as error:
                yield TraceProblem(line=number, reason=str(error))


def write_traces(path: str | os.PathLike, traces: Iterable[TraceRecord]) -> Path:
    """Write ``traces`` as a distillation file, atomically (:func:`mmcascade.utils.fs.write_lines_atomically`).

    Raises:
        ValueError: an item holds an image that is not a file path (bytes, a PIL image).
    """
    path = Path(path)
    folder = Path(os.path.abspath(path.parent))
    write_lines_atomically(folder / path.name, [trace_line(trace, folder) for trace in traces])
    return path


def append_traces(path: str | os.PathLike, traces: Iterable[TraceRecord]) -> int:
    """Append ``traces`` to ``path``, then flush and fsync: what is written survives a kill (a kill in the
    middle of a write leaves at most a half-written last line, which :func:`drop_partial_line` removes).
    Returns how many lines were appended."""
    path = Path(path)
    folder = Path(os.path.abspath(path.parent))
    lines = [trace_line(trace, folder) for trace in traces]
    with path.open("a", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in lines))
        handle.flush()
        os.fsync(handle.fileno())
    return len(lines)


def drop_partial_line(path: str | os.PathLike) -> None:
    """Cut a half-written last line (no newline: a kill while appending) off ``path``, if there is one."""
    path = Path(path)
    if not path.is_file():
        return
    content = path.read_bytes()
    if content and not content.endswith(b"\n"):
        with path.open("r+b") as handle:
            handle.truncate(content.rfind(b"\n") + 1)


def trace_line(trace: TraceRecord, folder: Path) -> str:
    """One line of a distillation file in ``folder`` (without the newline)."""
    side: dict[str, Any] = {}
    if trace.item.text is not None:
        side["text"] = trace.item.text
    images = [_image_path(image, folder) for image in trace.item.images]
    if len(images) == 1:
        side["image"] = images[0]
    elif images:
        side["images"] = images
    if trace.item.instruction is not None:
        side["instruction"] = trace.item.instruction
    return json.dumps({"item": side, "trace": trace.trace, "task": trace.task}, ensure_ascii=False)


def _image_path(image: Any, folder: Path) -> str:
    if not isinstance(image, (str, os.PathLike)):
        raise ValueError(f"a distillation item needs image paths; got a {type(image).__name__} image")
    absolute = Path(os.path.abspath(os.fspath(image)))
    return absolute.relative_to(folder).as_posix() if absolute.is_relative_to(folder) else str(absolute)


def _parse_line(text: str, number: int, base: Path, default_task: str) -> TraceRecord:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"malformed JSON: {error.msg} (column {error.colno})") from None
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {json_type(data)}")
    unknown = sorted(set(data) - set(TRACE_KEYS))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} (valid keys: {', '.join(TRACE_KEYS)})")
    for key in ("item", "trace"):
        if key not in data:
            raise ValueError(f"missing key '{key}'")
    trace, task = data["trace"], data.get("task", default_task)
    if not isinstance(trace, str):
        raise ValueError(f"'trace' must be a string, got {json_type(trace)}")
    if not isinstance(task, str):
        raise ValueError(f"'task' must be a string, got {json_type(task)}")
    item = item_from_json(data["item"], base, name="item", check_images=True)
    return TraceRecord(item=item, trace=trace, task=task, line=number)
