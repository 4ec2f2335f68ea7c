"""Teacher traces from any reasoner, for distilling a small student reasoner.

:func:`generate_teacher_traces` asks any :class:`~mmcascade.reasoner.base.Reasoner` (a local VLM or an
OpenAI-compatible server) for the traces of a file of items, through
:func:`~mmcascade.reasoner.pipeline.reason`, and appends them batch by batch to a distillation file
(:mod:`mmcascade.data.traces`), so a long teacher run can be killed and resumed.

The templated teacher (traces written from the starter data's ground truth) moved to
:mod:`mmcascade.data.synthetic.teacher`; its names are re-exported here for one release.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mmcascade.data.items import Item, item_from_json
from mmcascade.data.synthetic.teacher import (
    MAX_SKIPPED_SHOWN,
    STARTER_TASK_KINDS,
    TEACHER_MODEL_ID,
    AnnotatedQuery,
    TemplatedTeacher,
    canonical_description,
    read_annotated_queries,
    teacher_traces_from_records,
)
from mmcascade.data.traces import TraceProblem, TraceRecord, append_traces, drop_partial_line, iter_traces
from mmcascade.reasoner.base import GenerationSettings, Reasoner
from mmcascade.reasoner.pipeline import TraceStore, image_digest, reason
from mmcascade.reasoner.prompts import task_kind

__all__ = [
    "MAX_SKIPPED_SHOWN",
    "STARTER_TASK_KINDS",
    "TEACHER_MODEL_ID",
    "AnnotatedQuery",
    "TemplatedTeacher",
    "canonical_description",
    "content_key",
    "generate_teacher_traces",
    "read_annotated_queries",
    "teacher_traces_from_records",
]

_Pending = tuple[str, Item, str]  # (content key, item, prompt kind)


def generate_teacher_traces(
    reasoner: Reasoner,
    items_jsonl: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    task: str = "retrieval",
    settings: GenerationSettings | None = None,
    cache: TraceStore | None = None,
    batch_size: int = 32,
    template_dir: str | os.PathLike | None = None,
    keep_incomplete: bool = False,
    on_batch: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Traces from any reasoner for the items of ``items_jsonl``, appended to ``out_path`` as they finish.

    Each input line is an item (``{"text", "image" | "images", "instruction"}``) or an object
    with an ``"item"`` (a distillation file can be fed back in); a line's own ``"task"`` overrides
    ``task``. Relative image paths are relative to ``items_jsonl``'s folder.

    Resumable: every ``batch_size`` items are generated (through
    :func:`~mmcascade.reasoner.pipeline.reason`, so ``cache`` is used and filled) and appended with
    a flush and fsync. On a new run, items whose content key (prompt kind, text, instruction and
    the bytes of each image) is already in ``out_path`` are skipped, and a half-written last line
    left by a kill is dropped. Items with the same key are generated and written once. An output
    file belongs to one reasoner and settings: the key does not include them.

    Incomplete traces (truncated by the token budget, malformed) are not written unless
    ``keep_incomplete``; with a ``cache`` a later run re-reads them instead of regenerating.

    Returns:
        ``{"out", "items", "already_done", "written", "incomplete", "duplicates"}`` (counts).

    Raises:
        FileNotFoundError: ``items_jsonl`` or one of its images does not exist.
        ValueError: a line of ``items_jsonl`` is not an item (naming the line).
        ReasoningError: the reasoner failed; the batches finished before it are in ``out_path``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
    task_kind(task)  # fail on an unknown task before any work
    out_path = Path(out_path).expanduser()
    done = _finished_keys(out_path)
    pending, counts = _pending_items(Path(items_jsonl).expanduser(), task, done)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.touch()  # the output exists even when nothing is left to generate
    written = incomplete = 0
    for start in range(0, len(pending), batch_size):
        traces, n_incomplete = _chunk_traces(
            reasoner,
            pending[start : start + batch_size],
            settings=settings,
            cache=cache,
            template_dir=template_dir,
            batch_size=batch_size,
            keep_incomplete=keep_incomplete,
        )
        written += append_traces(out_path, traces)
        incomplete += n_incomplete
        if on_batch is not None:
            on_batch(min(start + batch_size, len(pending)), len(pending))
    return {
        "out": str(out_path),
        "items": counts["items"],
        "already_done": counts["already_done"],
        "written": written,
        "incomplete": incomplete,
        "duplicates": counts["duplicates"],
    }


def content_key(item: Item, task: str) -> str:
    """What makes two distillation items the same: the prompt kind, text, instruction and image bytes."""
    digest = hashlib.sha256()
    parts = [task_kind(task), item.text or "", item.instruction or "", *map(image_digest, item.images)]
    for part in parts:
        encoded = part.encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "big"))
        digest.update(encoded)
    return digest.hexdigest()


def _pending_items(path: Path, task: str, done: set[str]) -> tuple[list[_Pending], dict[str, int]]:
    """The items still to generate (each content key once), and the counts of items, already done, duplicates."""
    pending: list[_Pending] = []
    seen = set(done)
    counts = {"items": 0, "already_done": 0, "duplicates": 0}
    for item, item_task in _read_items(path, task):
        counts["items"] += 1
        key = content_key(item, item_task)
        if key in done:
            counts["already_done"] += 1
        elif key in seen:
            counts["duplicates"] += 1
        else:
            seen.add(key)
            pending.append((key, item, item_task))
    return pending, counts


def _chunk_traces(
    reasoner: Reasoner, chunk: list[_Pending], *, keep_incomplete: bool, **reason_options: Any
) -> tuple[list[TraceRecord], int]:
    """The traces of one chunk to write, and how many were left out as incomplete."""
    traces, incomplete = [], 0
    # one reason() call per prompt kind within the chunk: a template belongs to one kind
    for chunk_task in dict.fromkeys(entry[2] for entry in chunk):
        group = [item for _, item, item_task in chunk if item_task == chunk_task]
        for item, trace in zip(group, reason(reasoner, group, task=chunk_task, **reason_options), strict=True):
            if not (trace.complete or keep_incomplete):
                incomplete += 1
                continue
            traces.append(TraceRecord(item=item, trace=trace.raw, task=chunk_task))
    return traces, incomplete


def _read_items(path: Path, default_task: str) -> Iterator[tuple[Item, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"items file not found: {path}")
    base = Path(os.path.abspath(path.parent))
    with path.open(encoding="utf-8-sig") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                data = json.loads(text)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: malformed JSON: {error.msg}") from None
            try:
                item, line_task = _item_of_line(data, base)
            except ValueError as error:
                raise ValueError(f"{path}:{number}: {error}") from None
            yield item, line_task or default_task


def _item_of_line(data: Any, base: Path) -> tuple[Item, str | None]:
    """An items-file line: an item, or an object with an ``"item"`` (and maybe a ``"task"``)."""
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object (an item, or an object with an 'item')")
    if "item" not in data:
        return item_from_json(data, base, name=""), None
    line_task = data.get("task")
    if line_task is not None:
        task_kind(line_task)
    return item_from_json(data["item"], base, name="item"), line_task


def _finished_keys(out_path: Path) -> set[str]:
    """Content keys of the lines already in ``out_path``; a half-written last line is cut off."""
    drop_partial_line(out_path)
    if not out_path.is_file():
        return set()
    keys = set()
    for entry in iter_traces(out_path):
        try:
            if isinstance(entry, TraceProblem):
                raise ValueError(entry.reason)
            keys.add(content_key(entry.item, entry.task))
        except (ValueError, FileNotFoundError) as error:
            raise ValueError(
                f"{out_path}:{entry.line} is not a distillation line ({error}); "
                "resume only into a file this command wrote, or choose a new --out"
            ) from None
    return keys
