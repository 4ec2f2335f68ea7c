"""The distillation-trace file (mmcascade.data.traces): what a teacher writes is what SFT reads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from mmcascade.data.items import Item
from mmcascade.data.traces import (
    TraceProblem,
    TraceRecord,
    append_traces,
    drop_partial_line,
    iter_traces,
    write_traces,
)

TRACE = "<think>a red square</think>\nAnswer: a red square"


@pytest.fixture
def images(tmp_path: Path) -> tuple[Path, Path]:
    inside = tmp_path / "out" / "pics" / "inside.png"
    outside = tmp_path / "elsewhere" / "outside.png"
    for path in (inside, outside):
        path.parent.mkdir(parents=True)
        Image.new("RGB", (4, 4), (200, 0, 0)).save(path)
    return inside, outside


def test_written_traces_read_back_with_paths_relative_to_the_file(tmp_path: Path, images) -> None:
    inside, outside = images
    traces = [
        TraceRecord(Item(text="a caption", instruction="Find it."), TRACE, "retrieval"),
        TraceRecord(Item(text="what colour?", images=(str(inside),)), TRACE, "vqa"),
        TraceRecord(Item(text="<image> or <image>?", images=(inside, str(outside))), TRACE, "classification"),
    ]
    out = tmp_path / "out" / "traces.jsonl"
    assert write_traces(out, traces) == out
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines[0] == {"item": {"text": "a caption", "instruction": "Find it."}, "trace": TRACE, "task": "retrieval"}
    assert lines[1]["item"]["image"] == "pics/inside.png"  # inside the folder: relative, the folder can move
    assert lines[2]["item"]["images"] == ["pics/inside.png", str(outside)]  # outside: absolute
    read = list(iter_traces(out))
    assert [entry.line for entry in read] == [1, 2, 3]
    assert [(entry.item, entry.trace, entry.task) for entry in read] == [
        (traces[0].item, TRACE, "retrieval"),
        (Item(text="what colour?", images=(str(inside),)), TRACE, "vqa"),
        (Item(text="<image> or <image>?", images=(str(inside), str(outside))), TRACE, "classification"),
    ]
    assert sorted(path.name for path in out.parent.iterdir()) == ["pics", "traces.jsonl"]  # no temporary file left


def test_every_bad_line_becomes_a_problem_naming_why(tmp_path: Path, images) -> None:
    inside, _ = images
    path = tmp_path / "out" / "traces.jsonl"
    lines = [
        json.dumps({"item": {"text": "fine", "image": "pics/inside.png"}, "trace": TRACE}),
        "{not json",
        "[1, 2]",
        json.dumps({"item": {"text": "x"}}),
        json.dumps({"item": {"text": "x"}, "trace": TRACE, "score": 1}),
        json.dumps({"item": {"text": "x"}, "trace": 3}),
        json.dumps({"item": {"text": "x"}, "trace": TRACE, "task": None}),
        json.dumps({"item": {"image": "pics/missing.png"}, "trace": TRACE}),
        json.dumps({"item": {"text": "x", "colour": "red"}, "trace": TRACE}),
        "",
    ]
    path.write_text("\n".join(lines) + "\n")
    entries = list(iter_traces(path, default_task="vqa"))
    assert isinstance(entries[0], TraceRecord) and entries[0].task == "vqa"
    assert entries[0].item.images == (str(inside),)
    problems = entries[1:]
    assert all(isinstance(problem, TraceProblem) for problem in problems)
    assert [problem.line for problem in problems] == [2, 3, 4, 5, 6, 7, 8, 9]
    expected = [
        "malformed JSON",
        "expected a JSON object, got array",
        "missing key 'trace'",
        "unknown key(s) ['score']",
        "'trace' must be a string, got number",
        "'task' must be a string, got null",
        "missing.png",
        "colour",
    ]
    for problem, words in zip(problems, expected, strict=True):
        assert words in problem.reason, (problem, words)
    with pytest.raises(FileNotFoundError, match="traces file not found"):
        list(iter_traces(tmp_path / "none.jsonl"))


def test_appending_survives_a_kill_mid_line(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    first = [TraceRecord(Item(text=f"query {index}"), TRACE, "retrieval") for index in range(2)]
    assert append_traces(path, first) == 2
    with path.open("a") as handle:
        handle.write('{"item": {"text": "half a li')  # a kill in the middle of a write
    assert isinstance(list(iter_traces(path))[-1], TraceProblem)
    drop_partial_line(path)
    assert [entry.item.text for entry in iter_traces(path)] == ["query 0", "query 1"]
    drop_partial_line(path)  # a complete file is left alone
    drop_partial_line(tmp_path / "absent.jsonl")
    append_traces(path, [TraceRecord(Item(text="query 2"), TRACE, "vqa")])
    assert [entry.task for entry in iter_traces(path)] == ["retrieval", "retrieval", "vqa"]


def test_an_image_that_is_not_a_file_cannot_be_written(tmp_path: Path) -> None:
    trace = TraceRecord(Item(text="x", images=(Image.new("RGB", (2, 2)),)), TRACE, "retrieval")
    out = tmp_path / "traces.jsonl"
    with pytest.raises(ValueError, match="needs image paths"):
        write_traces(out, [trace])
    assert not out.exists() and os.listdir(tmp_path) == []
