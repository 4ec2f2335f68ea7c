"""The templated teacher: reasoning traces written from the starter data's ground truth.

Think-Then-Embed trains a small student reasoner on a teacher's embedding-centric reasoning (ECR)
traces. :class:`TemplatedTeacher` is a stand-in for a large VLM teacher, which is not available
offline: it writes each trace from the ground-truth annotations of a starter record
(:mod:`mmcascade.data.synthetic.starter_split`), so it cannot be wrong about a scene
(:mod:`mmcascade.data.synthetic.teacher_reasoning` holds what it writes per task).
:func:`teacher_traces_from_records` writes its traces as a distillation file
(:mod:`mmcascade.data.traces`); traces from any other reasoner come from
:func:`mmcascade.reasoner.teacher.generate_teacher_traces`.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mmcascade.data.items import item_from_json
from mmcascade.data.synthetic.teacher_reasoning import (
    STARTER_TASK_KINDS,
    AnnotatedQuery,
    canonical_description,
    think_and_answer,
)
from mmcascade.data.traces import TraceRecord, write_traces
from mmcascade.reasoner.base import GenerationSettings, Prompt, Reasoner
from mmcascade.reasoner.trace import ANSWER_PREFIX, THINK_CLOSE, THINK_OPEN

TEACHER_MODEL_ID = "mmcascade-templated-teacher-v1"
MAX_SKIPPED_SHOWN = 10

__all__ = [
    "MAX_SKIPPED_SHOWN",
    "STARTER_TASK_KINDS",
    "TEACHER_MODEL_ID",
    "AnnotatedQuery",
    "TemplatedTeacher",
    "canonical_description",
    "read_annotated_queries",
    "teacher_traces_from_records",
]


class TemplatedTeacher(Reasoner):
    """A teacher that writes ECR traces from the starter data's ground-truth annotations.

    A stand-in for a large VLM teacher (none is available offline): :meth:`trace` turns an
    :class:`AnnotatedQuery` into ``<think>...</think>\\nAnswer: ...``, deterministically (the same
    record always gives the same trace) with paraphrases seeded by the record.

    It is also a :class:`~mmcascade.reasoner.base.Reasoner`, so it plugs into
    :func:`~mmcascade.reasoner.pipeline.reason` and :func:`~mmcascade.reasoner.teacher.generate_teacher_traces`:
    give it the annotated queries it may be asked about, and :meth:`complete` finds each prompt's query by
    its images and text. A prompt about any other query is an error (it has no ground truth).
    """

    model_id = TEACHER_MODEL_ID

    def __init__(self, queries: Iterable[AnnotatedQuery] = ()) -> None:
        self._by_images: dict[tuple[str, ...], list[AnnotatedQuery]] = {}
        for query in queries:
            self._by_images.setdefault(_image_key(query.query.images), []).append(query)

    def trace(self, query: AnnotatedQuery) -> str:
        """The ECR trace for ``query``; raises ValueError when its annotations are unusable."""
        think, answer = think_and_answer(query)
        return f"{THINK_OPEN}{think}{THINK_CLOSE}\n{ANSWER_PREFIX} {answer}"

    def complete(self, prompts: Sequence[Prompt], settings: GenerationSettings) -> list[str]:
        return [self.trace(self._find(prompt)) for prompt in prompts]

    def _find(self, prompt: Prompt) -> AnnotatedQuery:
        candidates = self._by_images.get(_image_key(prompt.images), [])
        # the longest matching text wins ("a red star" is inside "a red star left of a blue circle")
        matches = [query for query in candidates if not query.query.text or query.query.text in prompt.user]
        matches.sort(key=lambda query: len(query.query.text or ""), reverse=True)
        if not matches:
            first_line = prompt.user.strip().splitlines()[-1] if prompt.user.strip() else ""
            raise ValueError(
                f"the templated teacher has no annotated record for the prompt ending {first_line!r} "
                f"({len(prompt.images)} image(s)); it can only trace the starter records it was built with"
            )
        return matches[0]


def read_annotated_queries(
    records_path: str | os.PathLike, *, split_root: str | os.PathLike | None = None
) -> tuple[list[tuple[int, AnnotatedQuery]], list[dict[str, Any]]]:
    """The usable starter records of ``records_path`` as ``(line, query)`` pairs, and the skipped lines.

    ``split_root`` is the folder that relative image paths are relative to (default: the records
    file's folder). A skipped line is ``{"line": n, "reason": ...}``: malformed JSON, no query,
    an unknown task, annotations that contradict the record (a caption that is not the caption of
    ``meta.scene``, a label that is not the positive), or a missing image file.
    """
    path = Path(records_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"records file not found: {path}")
    root = Path(os.path.abspath(Path(split_root).expanduser() if split_root is not None else path.parent))
    queries: list[tuple[int, AnnotatedQuery]] = []
    skipped: list[dict[str, Any]] = []
    with path.open(encoding="utf-8-sig") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                query = _annotated_query(text, root)
                think_and_answer(query)  # the annotations must be usable, not just present
            except (ValueError, TypeError, KeyError) as error:
                skipped.append({"line": number, "reason": str(error)})
                continue
            queries.append((number, query))
    return queries, skipped


def teacher_traces_from_records(
    records_path: str | os.PathLike, out_path: str | os.PathLike, *, split_root: str | os.PathLike | None = None
) -> dict[str, Any]:
    """Write the templated teacher's trace for every usable starter record of ``records_path``.

    One line per usable record (:mod:`mmcascade.data.traces`): the record's query with its instruction,
    the trace, and the prompt kind. The file is written atomically (a temporary file, then one rename).
    ``split_root`` is what relative image paths in the records are relative to (default: the records
    file's folder).

    Returns:
        ``{"out": path, "written": n, "by_task": {starter task: n}, "skipped": [{"line", "reason"}]}``.

    Raises:
        FileNotFoundError: ``records_path`` does not exist.
        ValueError: no line of ``records_path`` is a usable starter record.
    """
    queries, skipped = read_annotated_queries(records_path, split_root=split_root)
    if not queries:
        shown = "; ".join(f"line {entry['line']}: {entry['reason']}" for entry in skipped[:MAX_SKIPPED_SHOWN])
        raise ValueError(f"{records_path}: no usable starter record ({len(skipped)} skipped: {shown})")
    teacher = TemplatedTeacher()
    by_task: dict[str, int] = {}
    traces = []
    for _, query in queries:
        traces.append(TraceRecord(item=query.query, trace=teacher.trace(query), task=query.kind))
        by_task[query.task] = by_task.get(query.task, 0) + 1
    out_path = write_traces(Path(out_path).expanduser(), traces)
    return {"out": str(out_path), "written": len(traces), "by_task": dict(sorted(by_task.items())), "skipped": skipped}


def _annotated_query(text: str, root: Path) -> AnnotatedQuery:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"malformed JSON: {error.msg} (column {error.colno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("query"), dict):
        raise ValueError("not a starter record: expected an object with a 'query' object")
    meta = data.get("meta")
    if not isinstance(meta, dict):
        raise ValueError("no 'meta' object: the teacher needs the record's annotations")
    task = meta.get("task")
    if task not in STARTER_TASK_KINDS:
        raise ValueError(f"meta.task {task!r} is not a starter task; the teacher handles {list(STARTER_TASK_KINDS)}")
    query = item_from_json(data["query"], root, name="query", check_images=True)
    positive = data.get("positive")
    positive_text = positive.get("text") if isinstance(positive, dict) else None
    # seeded by what the record says, not where it lives, so traces do not change when data moves
    seed_text = json.dumps(
        [query.text, query.instruction, [Path(image).name for image in query.images], positive_text, meta],
        sort_keys=True,
    )
    return AnnotatedQuery(
        query=query, task=task, meta=meta, positive_text=positive_text, seed=zlib.crc32(seed_text.encode())
    )


def _image_key(images: Sequence[Any]) -> tuple[str, ...]:
    return tuple(os.path.abspath(os.fspath(image)) if isinstance(image, (str, os.PathLike)) else "" for image in images)
