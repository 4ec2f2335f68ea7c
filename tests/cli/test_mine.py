"""``mmcascade mine`` through typer's runner, on a tiny random checkpoint used as retriever and judge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmcascade.backbones.testing import build_tiny_checkpoint
from mmcascade.cli.main import app
from mmcascade.data.records import read_records

runner = CliRunner()

RECORDS = [
    {"query": {"text": "a red circle"}, "positive": {"text": "a red disc"}, "negatives": [{"text": "a blue square"}]},
    {"query": {"text": "two yellow stars"}, "positive": {"text": "stars"}, "negatives": [{"text": "a grey rocket"}]},
    {"query": {"text": "the cat on the mat"}, "positive": {"text": "a cat"}},
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint("qwen2_vl", tmp_path_factory.mktemp("tiny") / "qwen2_vl")


@pytest.fixture
def records_file(tmp_path: Path) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in RECORDS) + "{not json\n")
    return path


def mine_args(records_file: Path, checkpoint: Path, *extra: str) -> list[str]:
    out = records_file.parent / "mined.jsonl"
    models = ["--model", str(checkpoint), "--reranker", str(checkpoint), "--device", "cpu"]
    return ["mine", "--train", str(records_file), "--out", str(out), *models, "--negatives", "1", *extra]


def test_mine_writes_records_and_a_report_and_prints_the_retrain_command(checkpoint: Path, records_file: Path) -> None:
    result = runner.invoke(app, mine_args(records_file, checkpoint, "--top-n", "3", "--threshold", "0.9"))
    assert result.exit_code == 0, result.output
    out = records_file.parent / "mined.jsonl"
    assert f"report: {records_file.parent / 'mined.report.json'}" in result.output
    assert f"mmcascade train embedder -c CONFIG --set data.train={out}" in result.output
    assert "mined 3 records (1 skipped)" in result.output
    mined = read_records(out)
    assert [record.query.text for record in mined] == [record["query"]["text"] for record in RECORDS]
    assert all(len(record.negatives) <= 1 for record in mined)
    report = json.loads((records_file.parent / "mined.report.json").read_text())
    assert report["skipped"][0]["line"] == 4 and report["settings"]["top_n"] == 3
    assert (records_file.parent / "mined.scores.jsonl").is_file()

    again = runner.invoke(app, mine_args(records_file, checkpoint, "--top-n", "2"))
    assert again.exit_code == 2 and "other settings (top_n 3 in the file, 2 now)" in again.output
    assert "Traceback" not in again.output


def test_mine_reports_user_errors_before_loading_models(tmp_path: Path, records_file: Path) -> None:
    missing_model = tmp_path / "no-model"
    result = runner.invoke(app, mine_args(tmp_path / "missing.jsonl", missing_model))
    assert result.exit_code == 2 and "records file not found" in result.output
    result = runner.invoke(app, mine_args(records_file, missing_model, "--margin", "-0.1"))
    assert result.exit_code == 2 and "--margin" in result.output
    result = runner.invoke(app, mine_args(records_file, missing_model, "--threshold", "1.5"))
    assert result.exit_code == 2 and "--threshold" in result.output
