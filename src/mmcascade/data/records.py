"""Training records: one JSON object per line, checked in full before training starts.

Format (one line per example)::

    {"query": SIDE, "positive": SIDE, "negatives": [SIDE, ...], "meta": {...}}

where SIDE is ``{"text": str, "image": str, "instruction": str}`` with ``text`` or ``image`` (or
both) present (``null`` counts as absent), ``image`` a path relative to the JSONL file's folder (or
absolute); :func:`mmcascade.data.items.item_from_json` reads it. ``negatives``
(zero or more) and ``meta`` (any JSON object) are optional; no other keys are allowed, so a typo
is an error rather than silently dropped data.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, overload

from mmcascade.data.items import Item, item_from_json, json_type
from mmcascade.utils.fs import write_text_atomically

RECORD_KEYS = ("query", "positive", "negatives", "meta")
SIDE_KEYS = ("text", "image", "instruction")
MAX_PROBLEMS_SHOWN = 10

OnError = Literal["raise", "skip"]


@dataclass(frozen=True)
class TrainingRecord:
    """One training example: a query, its positive document and optional hard negatives.

    Image paths in the items are absolute (resolved against the JSONL file's folder on reading).
    ``line`` is the 1-based line the record was read from (0 for records built in code).
    """

    query: Item
    positive: Item
    negatives: tuple[Item, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)
    line: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "negatives", tuple(self.negatives))


@dataclass(frozen=True)
class RecordProblem:
    """Why line ``line`` (1-based) of a records file was rejected."""

    line: int
    reason: str

    def format(self, path: str | os.PathLike) -> str:
        return f"{path}:{self.line}: {self.reason}"


@dataclass(frozen=True)
class RecordSet(Sequence[TrainingRecord]):
    """The valid records of a file (a sequence of :class:`TrainingRecord`) and the lines rejected."""

    path: Path
    records: tuple[TrainingRecord, ...]
    problems: tuple[RecordProblem, ...] = ()

    @overload
    def __getitem__(self, index: int) -> TrainingRecord: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[TrainingRecord]: ...

    def __getitem__(self, index: int | slice) -> TrainingRecord | Sequence[TrainingRecord]:
        return self.records[index]

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[TrainingRecord]:
        return iter(self.records)


def read_records(path: str | os.PathLike, *, check_images: bool = True, on_error: OnError = "raise") -> RecordSet:
    """Read and validate every line of a JSONL records file.

    Args:
        path: the ``.jsonl`` file.
        check_images: also check that every image file exists (cheap; images are not decoded).
        on_error: ``"raise"`` (default) raises one ValueError listing the first problems as
            ``path:line: reason`` and their total; ``"skip"`` keeps the valid records and lists
            the rejected lines in :attr:`RecordSet.problems`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a line is invalid (with ``on_error="raise"``), or no line holds a valid record.
    """
    _check_on_error(on_error)
    path = _existing_file(path)
    records: list[TrainingRecord] = []
    problems: list[RecordProblem] = []
    for result in _scan(path, check_images=check_images):
        (problems if isinstance(result, RecordProblem) else records).append(result)
    if problems and on_error == "raise":
        raise ValueError(_problems_message(path, problems, n_valid=len(records)))
    if not records:
        raise ValueError(_no_records_message(path, problems))
    return RecordSet(path=path, records=tuple(records), problems=tuple(problems))


def iter_records(
    path: str | os.PathLike, *, check_images: bool = True, on_error: OnError = "raise"
) -> Iterator[TrainingRecord]:
    """Stream the records of a JSONL file, one line at a time.

    Same checks as :func:`read_records`, but ``on_error="raise"`` stops at the first invalid line
    (``path:line: reason``) and ``on_error="skip"`` drops invalid lines silently; use
    :func:`read_records` to see every problem at once.
    """
    _check_on_error(on_error)
    path = _existing_file(path)
    problems: list[RecordProblem] = []
    n_valid = 0
    for result in _scan(path, check_images=check_images):
        if isinstance(result, RecordProblem):
            if on_error == "raise":
                raise ValueError(
                    f"{result.format(path)}\nFix this line, or pass on_error='skip' to drop invalid lines."
                )
            problems.append(result)
            continue
        n_valid += 1
        yield result
    if n_valid == 0:
        raise ValueError(_no_records_message(path, problems))


def write_records(path: str | os.PathLike, records: Iterable[TrainingRecord]) -> Path:
    """Write records as JSONL, atomically (a temp file in the same folder, then one rename).

    Image paths inside the file's folder are written relative to it, so the folder can be moved;
    other paths are written absolute. A relative path in an item is taken relative to the
    current directory, as :func:`mmcascade.data.items.load_image` does. Images must be paths:
    a record holding bytes or a PIL image raises ValueError naming it.
    """
    path = Path(path)
    folder = Path(os.path.abspath(path.parent))
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for number, record in enumerate(records, start=1):
        try:
            lines.append(json.dumps(_record_to_json(record, folder), ensure_ascii=False))
        except ValueError as error:
            raise ValueError(f"record {number} cannot be written to {path}: {error}") from error
    write_text_atomically(folder / path.name, "".join(line + "\n" for line in lines))
    return path


def _check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip'; got {on_error!r}")


def _existing_file(path: str | os.PathLike) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"records file not found: {path}")
    return path


def _scan(path: Path, *, check_images: bool) -> Iterator[TrainingRecord | RecordProblem]:
    base = Path(os.path.abspath(path.parent))
    with path.open(encoding="utf-8-sig") as handle:  # -sig: tolerate a byte-order mark
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue  # blank lines (e.g. a trailing newline) are not records
            try:
                yield _parse_line(text, number, base, check_images)
            except _LineError as error:
                yield RecordProblem(line=number, reason=str(error))


class _LineError(ValueError):
    pass


def _parse_line(text: str, number: int, base: Path, check_images: bool) -> TrainingRecord:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise _LineError(f"malformed JSON: {error.msg} (column {error.colno})") from None
    if not isinstance(data, dict):
        raise _LineError(f"expected a JSON object, got {json_type(data)}")
    reasons = []
    unknown = sorted(set(data) - set(RECORD_KEYS))
    if unknown:
        reasons.append(f"unknown key(s) {unknown} (valid keys: {', '.join(RECORD_KEYS)})")
    reasons += [f"missing key '{key}'" for key in ("query", "positive") if key not in data]
    sides: dict[str, Item] = {}
    for key in ("query", "positive"):
        if key in data:
            _parse_side(data[key], key, base, check_images, sides, reasons)
    negatives = data.get("negatives", [])
    if not isinstance(negatives, list):
        reasons.append(f"'negatives' must be a list, got {json_type(negatives)}")
        negatives = []
    for index, negative in enumerate(negatives):
        _parse_side(negative, f"negatives[{index}]", base, check_images, sides, reasons)
    meta = data.get("meta", {})
    if not isinstance(meta, dict):
        reasons.append(f"'meta' must be an object, got {json_type(meta)}")
    if reasons:
        raise _LineError("; ".join(reasons))
    return TrainingRecord(
        query=sides["query"],
        positive=sides["positive"],
        negatives=tuple(sides[f"negatives[{index}]"] for index in range(len(negatives))),
        meta=meta,
        line=number,
    )


def _parse_side(
    value: Any, name: str, base: Path, check_images: bool, sides: dict[str, Item], reasons: list[str]
) -> None:
    try:
        sides[name] = item_from_json(value, base, name=name, keys=SIDE_KEYS, check_images=check_images)
    except ValueError as error:
        reasons.append(str(error))


_SKIP_ADVICE = "Fix these lines, or pass on_error='skip' to train on the valid records only."


def _problems_message(path: Path, problems: list[RecordProblem], n_valid: int, advice: str = _SKIP_ADVICE) -> str:
    shown = [f"  {problem.format(path)}" for problem in problems[:MAX_PROBLEMS_SHOWN]]
    if len(problems) > MAX_PROBLEMS_SHOWN:
        shown.append(f"  ... and {len(problems) - MAX_PROBLEMS_SHOWN} more")
    return f"{path}: {len(problems)} invalid record line(s) ({n_valid} valid):\n" + "\n".join(shown) + "\n" + advice


def _no_records_message(path: Path, problems: list[RecordProblem]) -> str:
    if not problems:
        return f"{path}: no records (the file is empty); write one JSON object per line"
    return _problems_message(path, problems, n_valid=0, advice="No line holds a valid record; fix the lines above.")


def _record_to_json(record: TrainingRecord, folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = {
        "query": _side_to_json(record.query, folder, "query"),
        "positive": _side_to_json(record.positive, folder, "positive"),
        "negatives": [
            _side_to_json(negative, folder, f"negatives[{index}]") for index, negative in enumerate(record.negatives)
        ],
    }
    if record.meta:
        data["meta"] = record.meta
    return data


def _side_to_json(item: Item, folder: Path, name: str) -> dict[str, str]:
    side: dict[str, str] = {}
    if item.text is not None:
        side["text"] = item.text
    if len(item.images) > 1:
        raise ValueError(f"{name} has {len(item.images)} images; the records format holds one image per side")
    if item.images:
        image = item.images[0]
        if not isinstance(image, (str, os.PathLike)):
            raise ValueError(f"{name} holds a {type(image).__name__} image; save it to a file and pass its path")
        absolute = Path(os.path.abspath(os.fspath(image)))
        side["image"] = absolute.relative_to(folder).as_posix() if absolute.is_relative_to(folder) else str(absolute)
    if item.instruction is not None:
        side["instruction"] = item.instruction
    return side
