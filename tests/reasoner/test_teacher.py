"""Teacher traces from any reasoner: the resumable generator and its CLI."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from mmcascade.cli.main import app
from mmcascade.reasoner import parse_trace
from mmcascade.reasoner.base import GenerationSettings, Prompt, Reasoner
from mmcascade.reasoner.pipeline import ReasoningError
from mmcascade.reasoner.teacher import generate_teacher_traces

runner = CliRunner()


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


class CountingReasoner(Reasoner):
    """Complete traces naming the prompt; fails on call ``fail_on_call``; counts prompts."""

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.model_id = "fake-teacher"
        self.calls = 0
        self.prompts = 0
        self.fail_on_call = fail_on_call

    def complete(self, prompts: Sequence[Prompt], settings: GenerationSettings) -> list[str]:
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise RuntimeError("killed")
        self.prompts += len(prompts)
        return [
            f"<think>about {len(prompt.images)} image(s)</think>\nAnswer: {prompt.user[-40:]}" for prompt in prompts
        ]


@pytest.fixture
def items_path(tmp_path: Path) -> Path:
    Image.new("RGB", (8, 8), (200, 0, 0)).save(tmp_path / "red.png")
    items = [{"text": f"query {index}", "instruction": "Find it."} for index in range(4)]
    items.append({"text": "what colour?", "image": "red.png"})
    items.append({"text": "query 0", "instruction": "Find it."})  # a duplicate: written once
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return path


def test_generator_writes_one_line_per_item(items_path, tmp_path):
    out = tmp_path / "out" / "traces.jsonl"
    reasoner = CountingReasoner()
    summary = generate_teacher_traces(reasoner, items_path, out, task="retrieval", batch_size=2)
    lines = _lines(out)
    assert len(lines) == 5 and summary["written"] == 5 and summary["duplicates"] == 1
    assert reasoner.prompts == 5
    assert all(parse_trace(line["trace"]).complete and line["task"] == "retrieval" for line in lines)
    assert Path(lines[4]["item"]["image"]).is_file()


def test_generator_resumes_without_regenerating(items_path, tmp_path):
    out = tmp_path / "traces.jsonl"
    killed = CountingReasoner(fail_on_call=2)
    with pytest.raises(ReasoningError):
        generate_teacher_traces(killed, items_path, out, batch_size=2)
    assert len(_lines(out)) == 2  # the first batch was written before the failure
    with out.open("a") as handle:
        handle.write('{"item": {"text": "half a li')  # a kill in the middle of a write
    resumed = CountingReasoner()
    summary = generate_teacher_traces(resumed, items_path, out, batch_size=2)
    assert resumed.prompts == 3 and summary["already_done"] == 3  # 2 written + the duplicate of one
    texts = [line["item"]["text"] for line in _lines(out)]
    assert texts == ["query 0", "query 1", "query 2", "query 3", "what colour?"]
    again = CountingReasoner()
    generate_teacher_traces(again, items_path, out, batch_size=2)
    assert again.calls == 0 and len(_lines(out)) == 5


def test_cli_reasoner_round_trip(items_path, tmp_path, monkeypatch):
    from mmcascade.reasoner import factory

    fake = CountingReasoner()
    monkeypatch.setattr(factory, "make_reasoner", lambda model, url=None: fake)
    monkeypatch.setenv("MMCASCADE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "cli.jsonl"
    arguments = ["reasoner", "traces", "--input", str(items_path), "--out", str(out), "--reasoner", "fake"]
    result = runner.invoke(app, [*arguments, "--batch-size", "2", "--think-tokens", "64"])
    assert result.exit_code == 0, result.output
    assert len(_lines(out)) == 5 and fake.prompts == 5
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0 and "6 already there" in result.output
    assert fake.prompts == 5
    neither = runner.invoke(app, ["reasoner", "traces", "--input", str(items_path), "--out", str(out)])
    assert neither.exit_code == 2 and "--templated-teacher" in neither.output
