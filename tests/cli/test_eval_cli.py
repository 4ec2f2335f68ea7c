"""`mmcascade eval` from the command line on a small build of the bundled mini benchmark."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mmcascade.cli.main import app
from mmcascade.evaluation.mini_benchmark import build_mini_benchmark

runner = CliRunner()


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mini") / "mmeb"
    build_mini_benchmark(folder, seed=0, scale=0.05)
    return folder


def test_eval_runs_the_mini_benchmark_at_two_budgets(mini, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["eval", str(mini / "mmeb.yaml"), "--out", str(out), "--budgets", "1x1,16x64"])
    assert result.exit_code == 0, result.output
    assert "| **mean all** | overall | main |" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert [budget["budget"] for budget in summary["budgets"]] == ["1x1", "16x64"]
    assert len(summary["budgets"][0]["datasets"]) == 7 and summary["skipped_datasets"] == {}
    for budget in ("1x1", "16x64"):
        report = json.loads((out / budget / "starter.json").read_text())
        assert set(report["metrics"]) == {"image", "visdoc"}
        assert len(report["metrics"]["image"]) == 6 and list(report["metrics"]["visdoc"]) == ["MiniDocs"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--budgets", "3"], "budget '3' must look like QxD"),
        (["--budgets", "1x1,1x1"], "budgets repeat"),
        (["--budgets", "1x128"], "budget 1x128 exceeds the model's 16 query x 64 document vectors"),
        (["--datasets", "MiniDocs,Nope"], "unknown datasets ['Nope']"),
        (["--ties", "lucky"], "--ties must be pessimistic, optimistic or random"),
    ],
)
def test_bad_options_get_clear_errors(mini, tmp_path, args, message):
    result = runner.invoke(app, ["eval", str(mini / "mmeb.yaml"), "--out", str(tmp_path), *args])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_a_missing_config_is_named(tmp_path):
    result = runner.invoke(app, ["eval", str(tmp_path / "nope.yaml"), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "eval config not found" in result.output
