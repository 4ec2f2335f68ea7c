"""The templated teacher: traces written from the starter records' ground truth, and its CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from mmcascade.cli.main import app
from mmcascade.data.synthetic.teacher import TemplatedTeacher, read_annotated_queries, teacher_traces_from_records
from mmcascade.reasoner import parse_trace
from mmcascade.reasoner.pipeline import ReasoningError, reason

runner = CliRunner()


def _side(**fields):
    return {key: value for key, value in fields.items() if value is not None}


def _record(task, *, text=None, image=None, positive="x", meta=None):
    instruction = f"instruction of {task}"
    return {
        "query": _side(text=text, image=image, instruction=instruction),
        "positive": {"text": positive},
        "negatives": [],
        "meta": {"task": task, "kind": "simple", **(meta or {})},
    }


# Two hand-checked scenes: meta.scene is listed out of slot order on purpose.
CAPTION_RECORD = _record(
    "caption_to_image",
    text="a small green circle to the right of a large blue triangle",
    meta={
        "kind": "compositional",
        "caption_style": "right_of",
        "scene": [
            {"shape": "circle", "colour": "green", "size": "small", "slot": 2},
            {"shape": "triangle", "colour": "blue", "size": "large", "slot": 0},
        ],
    },
)
CAPTION_ANSWER = "2 objects, left to right: a large blue triangle, a small green circle"
IMAGE_RECORD = _record(
    "image_to_caption",
    image="images/scene.png",
    positive="a small red star, a large blue circle and a small green square, from left to right",
    meta={
        "kind": "compositional",
        "caption_style": "list",
        "scene": [
            {"shape": "square", "colour": "green", "size": "small", "slot": 2},
            {"shape": "star", "colour": "red", "size": "small", "slot": 0},
            {"shape": "circle", "colour": "blue", "size": "large", "slot": 1},
        ],
    },
)
IMAGE_ANSWER = "3 objects, left to right: a small red star, a large blue circle, a small green square"
VQA_RECORD = _record(
    "vqa",
    text="is there not a yellow shape in the image?",
    image="images/vqa.png",
    positive="yes",
    meta={"answer_type": "yes_no"},
)
TEXTILE_RECORD = _record(
    "textile_label", image="images/textile.png", positive="a textile with a local defect", meta={"label": "local"}
)
DIGIT_RECORD = _record("digit_label", image="images/digit.png", positive="the digit seven", meta={"label": "7"})
GOOD = [CAPTION_RECORD, IMAGE_RECORD, VQA_RECORD, TEXTILE_RECORD, DIGIT_RECORD]


@pytest.fixture
def records_path(tmp_path: Path) -> Path:
    (tmp_path / "images").mkdir()
    for name in ("scene", "vqa", "textile", "digit"):
        Image.new("RGB", (8, 8), (len(name) * 20, 10, 10)).save(tmp_path / "images" / f"{name}.png")
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in GOOD))
    return path


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_task_gets_a_complete_trace_with_the_right_kind(records_path, tmp_path):
    out = tmp_path / "sft" / "traces.jsonl"
    summary = teacher_traces_from_records(records_path, out)
    assert summary["written"] == 5 and summary["skipped"] == []
    lines = _lines(out)
    assert [line["task"] for line in lines] == ["retrieval", "retrieval", "vqa", "classification", "classification"]
    for line in lines:
        trace = parse_trace(line["trace"])
        assert trace.complete and trace.problem is None, line["trace"]
        assert line["item"]["instruction"].startswith("instruction of")
    answers = [parse_trace(line["trace"]).answer for line in lines]
    assert answers[2] == "yes (there is no yellow shape in the image)"
    assert answers[3] == "a textile with a local defect"
    assert answers[4] == "the digit seven"
    # images outside the output folder are written absolute, and exist
    image = Path(lines[1]["item"]["image"])
    assert image.is_absolute() and image.is_file()


def test_scene_answers_name_every_object_left_to_right(records_path, tmp_path):
    out = tmp_path / "traces.jsonl"
    teacher_traces_from_records(records_path, out)
    caption_line, image_line = _lines(out)[:2]
    assert parse_trace(caption_line["trace"]).answer == CAPTION_ANSWER
    assert parse_trace(image_line["trace"]).answer == IMAGE_ANSWER
    think = parse_trace(image_line["trace"]).think
    # the image reasoning walks the slots left to right
    assert think.index("small red star") < think.index("large blue circle") < think.index("small green square")
    # inside the output folder, image paths are relative to it
    assert image_line["item"]["image"] == "images/scene.png"


def test_traces_are_deterministic_and_vary_with_the_record(records_path, tmp_path):
    queries, _ = read_annotated_queries(records_path)
    teacher = TemplatedTeacher()
    first = [teacher.trace(query) for _, query in queries]
    again, _ = read_annotated_queries(records_path)
    assert [TemplatedTeacher().trace(query) for _, query in again] == first
    # many scene records: the think text is paraphrased, the canonical answer is not
    thinks, answers = set(), set()
    for index in range(30):
        record = json.loads(json.dumps(CAPTION_RECORD))
        record["query"]["instruction"] = f"variant {index}"
        path = tmp_path / "variants.jsonl"
        path.write_text(json.dumps(record) + "\n")
        ((_, query),), _ = read_annotated_queries(path)
        trace = parse_trace(teacher.trace(query))
        thinks.add(trace.think)
        answers.add(trace.answer)
    assert len(thinks) > 3 and answers == {CAPTION_ANSWER}


def test_bad_records_are_skipped_and_listed(records_path, tmp_path):
    wrong_caption = json.loads(json.dumps(CAPTION_RECORD))
    wrong_caption["query"]["text"] = "a small green circle to the right of a large red triangle"
    wrong_label = _record("digit_label", image="images/digit.png", positive="the digit one", meta={"label": "7"})
    bad = [
        "{not json",
        json.dumps(_record("mystery", text="what?")),
        json.dumps(wrong_caption),
        json.dumps(_record("textile_label", image="images/missing.png", meta={"label": "local"})),
        json.dumps(wrong_label),
    ]
    with records_path.open("a") as handle:
        handle.write("".join(line + "\n" for line in bad))
    summary = teacher_traces_from_records(records_path, tmp_path / "traces.jsonl")
    assert summary["written"] == 5
    skipped = {entry["line"]: entry["reason"] for entry in summary["skipped"]}
    assert sorted(skipped) == [6, 7, 8, 9, 10]
    assert "malformed JSON" in skipped[6]
    assert "mystery" in skipped[7]
    assert "is not the 'right_of' caption of meta.scene" in skipped[8]
    assert "not found" in skipped[9]
    assert "the digit one" in skipped[10]


def test_templated_teacher_is_a_reasoner(records_path):
    queries, _ = read_annotated_queries(records_path)
    teacher = TemplatedTeacher(query for _, query in queries)
    traces = reason(teacher, [queries[0][1].query, queries[4][1].query], task="retrieval")
    assert [trace.answer for trace in traces] == [CAPTION_ANSWER, "the digit seven"]
    with pytest.raises(ReasoningError, match="no annotated record"):
        reason(teacher, ["a caption the teacher never saw"])


def test_cli_templated_teacher(records_path, tmp_path):
    out = tmp_path / "cli.jsonl"
    result = runner.invoke(
        app, ["reasoner", "traces", "--input", str(records_path), "--out", str(out), "--templated-teacher"]
    )
    assert result.exit_code == 0, result.output
    assert "wrote 5 trace(s)" in result.output
    assert len(_lines(out)) == 5
