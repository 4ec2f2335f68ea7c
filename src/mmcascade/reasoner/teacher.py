"""Teacher traces for distilling a small reasoner: a templated ground-truth teacher, and any backend.

Think-Then-Embed trains a small student reasoner on a teacher's embedding-centric reasoning (ECR)
traces. A distillation file holds one JSON object per line::

    {"item": {"text": ..., "image": ... | "images": [...], "instruction": ...},
     "trace": "<think>...</think>\\nAnswer: ...", "task": "retrieval"}

``task`` is the prompt kind the trace answers (``retrieval``, ``vqa``, ``classification``, ...).
Image paths are written **relative to the output file's folder** when the image lies inside that
folder (so the folder can be moved, like the records format), and **absolute** otherwise; a
reader resolves a relative path against the JSONL file's folder.

Two ways to fill such a file:

* :class:`TemplatedTeacher` / :func:`teacher_traces_from_records`: traces written from the
  ground-truth annotations of the starter data (``mmcascade.data.starter_data``). This is a
  stand-in for a large VLM teacher, which is not available offline: it cannot be wrong about a
  scene, and it reasons in the order a good teacher would (parse the query, name the evidence,
  state a canonical answer), with a few paraphrase templates so the student does not learn one
  sentence by heart.
* :func:`generate_teacher_traces`: traces from any :class:`~mmcascade.reasoner.base.Reasoner`
  (a local VLM or an OpenAI-compatible server) through :func:`~mmcascade.reasoner.pipeline.reason`,
  appended batch by batch, so a long teacher run can be killed and resumed.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmcascade.data import scenes
from mmcascade.data.items import Item, as_item
from mmcascade.reasoner.base import GenerationSettings, Prompt, Reasoner
from mmcascade.reasoner.pipeline import TraceStore, image_digest, reason
from mmcascade.reasoner.prompts import task_kind
from mmcascade.reasoner.trace import ANSWER_PREFIX, THINK_CLOSE, THINK_OPEN

TEACHER_MODEL_ID = "mmcascade-templated-teacher-v1"
#: starter-data task -> the prompt kind its traces answer
STARTER_TASK_KINDS: dict[str, str] = {
    "caption_to_image": "retrieval",
    "image_to_caption": "retrieval",
    "vqa": "vqa",
    "textile_label": "classification",
    "digit_label": "classification",
}
TEXTILE_LABELS: dict[str, str] = {
    "nominal": "a textile with no defect",
    "local": "a textile with a local defect",
    "global": "a textile with a global defect",
}
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
VQA_SHAPES = frozenset({"circle", "rectangle", "triangle"})
MAX_SKIPPED_SHOWN = 10

_SLOT_WORDS = ("on the left", "in the middle", "on the right")
_ORDINALS = ("first", "second", "third")


@dataclass(frozen=True)
class AnnotatedQuery:
    """A starter record's query with the ground truth the teacher reasons from.

    Args:
        query: the query item (image paths absolute).
        task: the starter task (a key of :data:`STARTER_TASK_KINDS`).
        meta: the record's ``meta`` (``scene`` for scene tasks, ``label``, ``answer_type``, ...).
        positive_text: the text of the record's positive (the answer or label), if it has text.
        seed: seeds the choice of paraphrase templates (stable across machines and folders).
    """

    query: Item
    task: str
    meta: dict[str, Any] = field(default_factory=dict)
    positive_text: str | None = None
    seed: int = 0

    @property
    def kind(self) -> str:
        """The prompt kind the trace answers (``retrieval``, ``vqa`` or ``classification``)."""
        return STARTER_TASK_KINDS[self.task]


class TemplatedTeacher(Reasoner):
    """A teacher that writes ECR traces from the starter data's ground-truth annotations.

    A stand-in for a large VLM teacher (none is available offline): :meth:`trace` turns an
    :class:`AnnotatedQuery` into ``<think>...</think>\\nAnswer: ...``, deterministically (the same
    record always gives the same trace) with paraphrases seeded by the record.

    It is also a :class:`~mmcascade.reasoner.base.Reasoner`, so it plugs into
    :func:`~mmcascade.reasoner.pipeline.reason` and :func:`generate_teacher_traces`: give it the
    annotated queries it may be asked about, and :meth:`complete` finds each prompt's query by its
    images and text. A prompt about any other query is an error (it has no ground truth).
    """

    model_id = TEACHER_MODEL_ID

    def __init__(self, queries: Iterable[AnnotatedQuery] = ()) -> None:
        self._by_images: dict[tuple[str, ...], list[AnnotatedQuery]] = {}
        for query in queries:
            self._by_images.setdefault(_image_key(query.query.images), []).append(query)

    def trace(self, query: AnnotatedQuery) -> str:
        """The ECR trace for ``query``; raises ValueError when its annotations are unusable."""
        writer = _WRITERS.get(query.task)
        if writer is None:
            raise ValueError(f"unknown starter task {query.task!r}; the teacher handles {list(STARTER_TASK_KINDS)}")
        think, answer = writer(query, random.Random(query.seed))
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


# --------------------------------------------------------------------------------------------------
# starter records -> annotated queries


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
                TemplatedTeacher().trace(query)  # the annotations must be usable, not just present
            except (ValueError, TypeError, KeyError) as error:
                skipped.append({"line": number, "reason": str(error)})
                continue
            queries.append((number, query))
    return queries, skipped


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
    side = dict(data["query"])
    raw_images = side.pop("images", None) or ([side.pop("image")] if "image" in side else [])
    if not all(isinstance(image, str) and image.strip() for image in raw_images):
        raise ValueError("query image paths must be non-empty strings")
    images = []
    for image in raw_images:
        resolved = Path(image).expanduser()
        resolved = resolved if resolved.is_absolute() else root / resolved
        if not resolved.is_file():
            raise ValueError(f"query image not found: {resolved}")
        images.append(str(resolved))
    query = as_item({**side, "images": images})
    positive = data.get("positive")
    positive_text = positive.get("text") if isinstance(positive, dict) else None
    # seeded by what the record says, not where it lives, so traces do not change when data moves
    seed_text = json.dumps(
        [query.text, query.instruction, [Path(image).name for image in raw_images], positive_text, meta],
        sort_keys=True,
    )
    return AnnotatedQuery(
        query=query, task=task, meta=meta, positive_text=positive_text, seed=zlib.crc32(seed_text.encode())
    )


# --------------------------------------------------------------------------------------------------
# the trace writers: (query, rng) -> (think, answer)


def _scene(query: AnnotatedQuery) -> scenes.Scene:
    objects = query.meta.get("scene")
    if not isinstance(objects, list) or not objects:
        raise ValueError(f"{query.task} record has no meta.scene (a list of objects)")
    try:
        return scenes.Scene(
            objects=tuple(
                scenes.SceneObject(shape=obj["shape"], colour=obj["colour"], size=obj["size"], slot=obj["slot"])
                for obj in objects
            )
        )
    except (KeyError, TypeError) as error:
        raise ValueError(f"meta.scene objects need shape, colour, size and slot: {error!r}") from None


def canonical_description(scene: scenes.Scene) -> str:
    """``"3 objects, left to right: a small red star, a large blue circle, a small green square"``
    (a lone object: ``"1 object, on the left: a small red star"``, since its slot is what captions pin)."""
    phrases = [obj.phrase() for obj in scene.objects]
    if len(phrases) == 1:
        return f"1 object, {_SLOT_WORDS[scene.objects[0].slot]}: {phrases[0]}"
    return f"{len(phrases)} objects, left to right: {', '.join(phrases)}"


def _object_details(scene: scenes.Scene, rng: random.Random) -> str:
    template = rng.choice(
        [
            "The {ordinal} object is {size}, {colour} and a {shape}.",
            "Object {number}: size {size}, colour {colour}, shape {shape}.",
            "{Ordinal}: a {shape}, {colour}, {size}.",
        ]
    )
    return " ".join(
        template.format(
            ordinal=_ORDINALS[index],
            Ordinal=_ORDINALS[index].capitalize(),
            number=index + 1,
            size=obj.size,
            colour=obj.colour,
            shape=obj.shape,
        )
        for index, obj in enumerate(scene.objects)
    )


def _caption_think(query: AnnotatedQuery, rng: random.Random) -> tuple[str, str]:
    scene = _scene(query)
    style = query.meta.get("caption_style")
    caption = (query.query.text or "").strip()
    if style not in scenes.CAPTION_STYLES:
        raise ValueError(f"caption_to_image record has no valid meta.caption_style (got {style!r})")
    if caption != scenes.caption(scene, style):
        raise ValueError(f"the query caption {caption!r} is not the {style!r} caption of meta.scene")
    n = len(scene.objects)
    phrases = [obj.phrase() for obj in scene.objects]
    opening = rng.choice(
        [
            f"The caption asks for an image with exactly {n} object{'s' * (n > 1)}.",
            f"I need to find a picture showing {n} shape{'s' * (n > 1)}, no more and no fewer.",
            f"Counting the shapes the caption names: {n}.",
        ]
    )
    if n == 1:
        order = f"It places the single object {_SLOT_WORDS[scene.objects[0].slot]}, which the image must match."
    elif style == "right_of":
        order = (
            "It names the objects from right to left ('X to the right of Y' puts Y first), "
            f"so from left to right the order is: {', then '.join(phrases)}."
        )
    elif style == "anchored" and n == 3:
        order = (
            f"It anchors {phrases[1]} in the middle, with {phrases[0]} to its left and {phrases[2]} to its right, "
            f"so from left to right: {', then '.join(phrases)}."
        )
    elif style in ("left_of", "anchored"):
        relation = "left of" if style == "left_of" else "to the left of"
        order = f"'X {relation} Y' puts X first, so from left to right: {', then '.join(phrases)}."
    else:
        order = f"It lists the objects in left-to-right order: {', then '.join(phrases)}."
    closing = rng.choice(
        [
            "Every size, colour and shape must be bound to the right object, and the order must hold.",
            "An image with the same shapes but swapped colours, sizes or positions would be wrong.",
            "All three attributes and the order matter; one changed attribute makes a different scene.",
        ]
    )
    return " ".join([opening, order, _object_details(scene, rng), closing]), canonical_description(scene)


def _image_scene_think(query: AnnotatedQuery, rng: random.Random) -> tuple[str, str]:
    scene = _scene(query)
    n = len(scene.objects)
    opening = rng.choice(
        [
            f"The image shows {n} shape{'s' * (n > 1)} on a plain light background.",
            f"I see {n} coloured object{'s' * (n > 1)} in a row on a pale background.",
            f"Scanning from left to right, there {'are' if n > 1 else 'is'} {n} object{'s' * (n > 1)}.",
        ]
    )
    by_slot = {obj.slot: obj for obj in scene.objects}
    where_template = rng.choice(["{where} there is {phrase}.", "{Where}: {phrase}.", "{where} I see {phrase}."])
    parts = []
    for slot, where in enumerate(_SLOT_WORDS):
        obj = by_slot.get(slot)
        if obj is None:
            parts.append(f"Nothing is {where}.")
        else:
            text = where_template.format(where=where, Where=where.capitalize(), phrase=obj.phrase())
            parts.append(text[0].upper() + text[1:])
    closing = rng.choice(
        [
            "A matching caption must name each object with its size, colour and shape, in this order.",
            "The caption I want states these attributes and the left-to-right order.",
            "So the description must bind every attribute to its object and keep the order.",
        ]
    )
    return " ".join([opening, *parts, closing]), canonical_description(scene)


_VQA_YES_NO_TARGET = re.compile(r"\b(?:a|no)\s+(\w+)(\s+shape)?\b")
_VQA_SUBJECT = re.compile(r"(?:color|colour) (?:is|of) the (\w+)\??$")
_VQA_COLOURED_SHAPE = re.compile(r"what is the (\w+) shape\??$")


def _vqa_think(query: AnnotatedQuery, rng: random.Random) -> tuple[str, str]:
    question = (query.query.text or "").strip().lower()
    answer = (query.positive_text or "").strip().lower()
    if not question or not answer:
        raise ValueError("vqa record needs the question as query text and the answer as positive text")
    answer_type = query.meta.get("answer_type") or (
        "shape" if answer in VQA_SHAPES else "yes_no" if answer in ("yes", "no") else "colour"
    )
    if answer_type == "yes_no":
        if answer not in ("yes", "no"):
            raise ValueError(f"yes/no question with the answer {answer!r}")
        found = _VQA_YES_NO_TARGET.search(question)
        target = found.group(1) if found else "shape"
        bare = target if target in VQA_SHAPES or target == "shape" else f"{target} shape"
        negated = " not " in f" {question} " or question.startswith("is no ")
        present = (answer == "yes") != negated
        support = f"there is a {bare} in the image" if present else f"there is no {bare} in the image"
        asks = f"whether a {bare} is {'absent' if negated else 'present'}"
        relevant = "a negated presence check, so I answer about absence" if negated else "a presence check"
    elif answer_type == "colour":
        found = _VQA_SUBJECT.search(question)
        subject = f"the {found.group(1)}" if found else "the shape"
        support = f"{subject} is {answer}"
        asks = f"the colour of {subject}"
        relevant = "the colour attribute of the one shape in the image"
    elif answer_type == "shape":
        found = _VQA_COLOURED_SHAPE.search(question)
        subject = f"the {found.group(1)} shape" if found else "the shape"
        support = f"{subject} is a {answer}"
        asks = f"which shape {subject} is"
        relevant = "the outline of the shape: its corners and sides"
    else:
        raise ValueError(f"unknown meta.answer_type {answer_type!r}; expected yes_no, colour or shape")
    think = " ".join(
        [
            rng.choice([f"The question asks {asks}.", f"What is asked: {asks}.", f"I need to determine {asks}."]),
            rng.choice([f"The relevant evidence is {relevant}.", f"This is about {relevant}."]),
            rng.choice([f"Looking at the image, {support}.", f"I check the image: {support}."]),
        ]
    )
    return think, f"{answer} ({support})"


_TEXTILE_EVIDENCE = {
    "nominal": (
        "The weave looks regular and uniform across the whole image.",
        "No hole, stain, tear or streak breaks the pattern anywhere.",
    ),
    "local": (
        "Most of the fabric has a regular, uniform texture.",
        "One small region breaks the pattern: a localized flaw such as a spot, hole or tear.",
    ),
    "global": (
        "The irregularity is not confined to one spot.",
        "The texture is distorted or uneven across the whole image, so the defect is spread everywhere.",
    ),
}
_DIGIT_EVIDENCE = (
    "a closed oval loop with an empty centre",
    "a single, mostly vertical stroke",
    "a curve at the top that sweeps down to a flat base stroke",
    "two bumps, both open to the left, stacked on top of each other",
    "a vertical stroke crossed by a horizontal bar, joined by an angled stroke",
    "a flat top bar, a short vertical stroke and a lower bowl open to the left",
    "a stroke curving down into a closed loop at the bottom",
    "a horizontal top bar joined to a long diagonal stroke",
    "two closed loops stacked on top of each other",
    "a closed loop at the top with a tail going straight down",
)


def _textile_think(query: AnnotatedQuery, rng: random.Random) -> tuple[str, str]:
    name = query.meta.get("label")
    if name not in TEXTILE_LABELS:
        raise ValueError(f"textile_label record has meta.label {name!r}; expected one of {list(TEXTILE_LABELS)}")
    label = TEXTILE_LABELS[name]
    if query.positive_text is not None and query.positive_text != label:
        raise ValueError(f"meta.label {name!r} means {label!r} but the positive is {query.positive_text!r}")
    first, second = _TEXTILE_EVIDENCE[name]
    opening = rng.choice(
        [
            "The image is a close-up of woven fabric.",
            "I look at the textile's texture for anything that breaks its pattern.",
            "A textile photo: the question is whether, and where, the pattern is broken.",
        ]
    )
    return f"{opening} {first} {second} So the class is: {label}.", label


def _digit_think(query: AnnotatedQuery, rng: random.Random) -> tuple[str, str]:
    name = str(query.meta.get("label"))
    if name not in [str(digit) for digit in range(10)]:
        raise ValueError(f"digit_label record has meta.label {query.meta.get('label')!r}; expected 0-9")
    label = f"the digit {DIGIT_WORDS[int(name)]}"
    if query.positive_text is not None and query.positive_text != label:
        raise ValueError(f"meta.label {name!r} means {label!r} but the positive is {query.positive_text!r}")
    opening = rng.choice(
        [
            "The image shows one handwritten digit in dark ink on white.",
            "A single handwritten character, low resolution, dark on a light background.",
            "I look at the strokes of the handwritten digit.",
        ]
    )
    evidence = rng.choice(["Its strokes form {evidence}.", "I see {evidence}.", "The shape is {evidence}."])
    return f"{opening} {evidence.format(evidence=_DIGIT_EVIDENCE[int(name)])} That is a {name}.", label


_WRITERS: dict[str, Callable[[AnnotatedQuery, random.Random], tuple[str, str]]] = {
    "caption_to_image": _caption_think,
    "image_to_caption": _image_scene_think,
    "vqa": _vqa_think,
    "textile_label": _textile_think,
    "digit_label": _digit_think,
}


# --------------------------------------------------------------------------------------------------
# distillation files


def teacher_traces_from_records(
    records_path: str | os.PathLike, out_path: str | os.PathLike, *, split_root: str | os.PathLike | None = None
) -> dict[str, Any]:
    """Write the templated teacher's trace for every usable starter record of ``records_path``.

    One line per usable record (see the module docstring for the format): the record's query with
    its instruction, the trace, and the prompt kind. The file is written atomically (a temporary
    file, then one rename). ``split_root`` is what relative image paths in the records are relative
    to (default: the records file's folder).

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
    out_path = Path(out_path).expanduser()
    folder = Path(os.path.abspath(out_path.parent))
    teacher = TemplatedTeacher()
    by_task: dict[str, int] = {}
    lines = []
    for _, query in queries:
        lines.append(_trace_line(query.query, teacher.trace(query), query.kind, folder))
        by_task[query.task] = by_task.get(query.task, 0) + 1
    _write_atomically(out_path, lines)
    return {"out": str(out_path), "written": len(lines), "by_task": dict(sorted(by_task.items())), "skipped": skipped}


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
    folder = Path(os.path.abspath(out_path.parent))
    done = _finished_keys(out_path)
    pending: list[tuple[str, Item, str]] = []
    seen = set(done)
    n_items = already_done = duplicates = 0
    for item, item_task in _read_items(Path(items_jsonl).expanduser(), task):
        n_items += 1
        key = content_key(item, item_task)
        if key in done:
            already_done += 1
        elif key in seen:
            duplicates += 1
        else:
            seen.add(key)
            pending.append((key, item, item_task))
    folder.mkdir(parents=True, exist_ok=True)
    written = incomplete = 0
    with out_path.open("a", encoding="utf-8") as handle:
        for start in range(0, len(pending), batch_size):
            chunk = pending[start : start + batch_size]
            lines = []
            # one reason() call per prompt kind within the chunk: a template belongs to one kind
            for chunk_task in dict.fromkeys(entry[2] for entry in chunk):
                group = [item for _, item, item_task in chunk if item_task == chunk_task]
                traces = reason(
                    reasoner,
                    group,
                    task=chunk_task,
                    settings=settings,
                    cache=cache,
                    template_dir=template_dir,
                    batch_size=batch_size,
                )
                for item, trace in zip(group, traces, strict=True):
                    if not (trace.complete or keep_incomplete):
                        incomplete += 1
                        continue
                    lines.append(_trace_line(item, trace.raw, chunk_task, folder))
            handle.write("".join(line + "\n" for line in lines))
            handle.flush()
            os.fsync(handle.fileno())
            written += len(lines)
            if on_batch is not None:
                on_batch(min(start + batch_size, len(pending)), len(pending))
    return {
        "out": str(out_path),
        "items": n_items,
        "already_done": already_done,
        "written": written,
        "incomplete": incomplete,
        "duplicates": duplicates,
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
                item, line_task = _item_from_json(data, base)
                yield item, line_task or default_task
            except ValueError as error:
                raise ValueError(f"{path}:{number}: {error}") from None


def _item_from_json(data: Any, base: Path) -> tuple[Item, str | None]:
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object (an item, or an object with an 'item')")
    line_task = data.get("task") if "item" in data else None
    if line_task is not None:
        task_kind(line_task)
    side = data.get("item", data)
    if not isinstance(side, dict):
        raise ValueError("'item' must be an object with text/image/instruction")
    side = dict(side)
    for key in ("image", "images"):
        if key in side:
            value = side[key]
            paths = [value] if isinstance(value, str) else value
            if not isinstance(paths, list) or not all(isinstance(image, str) and image for image in paths):
                raise ValueError(f"'{key}' must be a path or a list of paths")
            resolved = [Path(image).expanduser() for image in paths]
            side[key] = [str(image if image.is_absolute() else base / image) for image in resolved]
    return as_item(side), line_task


def _finished_keys(out_path: Path) -> set[str]:
    """Content keys of the lines already in ``out_path``; a half-written last line is cut off."""
    if not out_path.is_file():
        return set()
    content = out_path.read_bytes()
    if content and not content.endswith(b"\n"):
        cut = content.rfind(b"\n") + 1  # a kill mid-write: drop the partial line
        with out_path.open("r+b") as handle:
            handle.truncate(cut)
        content = content[:cut]
    base = Path(os.path.abspath(out_path.parent))
    keys = set()
    for number, text in enumerate(content.decode("utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            data = json.loads(text)
            item, line_task = _item_from_json(data, base)
            keys.add(content_key(item, line_task or "retrieval"))
        except (ValueError, FileNotFoundError) as error:
            raise ValueError(
                f"{out_path}:{number} is not a distillation line ({error}); "
                "resume only into a file this command wrote, or choose a new --out"
            ) from None
    return keys


def _trace_line(item: Item, trace: str, kind: str, folder: Path) -> str:
    side: dict[str, Any] = {}
    if item.text is not None:
        side["text"] = item.text
    images = []
    for image in item.images:
        if not isinstance(image, (str, os.PathLike)):
            raise ValueError(f"a distillation item needs image paths; got a {type(image).__name__} image")
        absolute = Path(os.path.abspath(os.fspath(image)))
        images.append(absolute.relative_to(folder).as_posix() if absolute.is_relative_to(folder) else str(absolute))
    if len(images) == 1:
        side["image"] = images[0]
    elif images:
        side["images"] = images
    if item.instruction is not None:
        side["instruction"] = item.instruction
    return json.dumps({"item": side, "trace": trace, "task": kind}, ensure_ascii=False)


def _write_atomically(path: Path, lines: list[str]) -> None:
    folder = Path(os.path.abspath(path.parent))
    folder.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write("".join(line + "\n" for line in lines))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _image_key(images: Sequence[Any]) -> tuple[str, ...]:
    return tuple(os.path.abspath(os.fspath(image)) if isinstance(image, (str, os.PathLike)) else "" for image in images)
