"""`mmcascade eval` from the command line on a small build of the bundled mini benchmark."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mmcascade.cli.main import app
from mmcascade.data.synthetic.mini_benchmark import build_mini_benchmark

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
        (["--budgets", ""], "--budgets '' has an empty entry"),  # not "the defaults"
        (["--datasets", "MiniDocs,"], "--datasets 'MiniDocs,' has an empty entry"),
    ],
)
def test_bad_options_get_clear_errors(mini, tmp_path, args, message):
    result = runner.invoke(app, ["eval", str(mini / "mmeb.yaml"), "--out", str(tmp_path), *args])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_rerunning_some_datasets_into_the_same_out_keeps_the_others(mini, tmp_path):
    out = tmp_path / "out"
    base = ["eval", str(mini / "mmeb.yaml"), "--out", str(out), "--budgets", "1x1,16x64"]
    assert runner.invoke(app, [*base, "--datasets", "MiniDigits-CLS,MiniDocs"]).exit_code == 0
    again = runner.invoke(app, [*base, "--datasets", "MiniDocs"])
    assert again.exit_code == 0, again.output
    assert "kept 1 dataset(s) of the earlier run" in " ".join(again.output.split())
    summary = json.loads((out / "summary.json").read_text())
    for budget in summary["budgets"]:
        assert [entry["name"] for entry in budget["datasets"]] == ["MiniDigits-CLS", "MiniDocs"]
    report = (out / "report.md").read_text()
    assert "| MiniDigits-CLS |" in report and "| MiniDocs |" in report

    other = runner.invoke(app, [*base[:-1], "1x1", "--datasets", "MiniDocs"])
    assert other.exit_code == 0, other.output
    assert "other settings (budgets ['1x1', '16x64'] -> ['1x1'])" in " ".join(other.output.split())
    summary = json.loads((out / "summary.json").read_text())
    assert [[entry["name"] for entry in budget["datasets"]] for budget in summary["budgets"]] == [["MiniDocs"]]


def test_a_missing_config_is_named(tmp_path):
    result = runner.invoke(app, ["eval", str(tmp_path / "nope.yaml"), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "eval config not found" in result.output


def test_eval_with_think_embeds_traces_and_caches_them(mini, tmp_path, monkeypatch):
    from mmcascade.backbones.testing import build_tiny_checkpoint
    from mmcascade.reasoner import TraceCache

    monkeypatch.setenv("MMCASCADE_CACHE", str(tmp_path / "cache"))
    reasoner = tmp_path / "tiny-qwen2-vl"
    build_tiny_checkpoint("qwen2_vl", reasoner)
    out = tmp_path / "out"
    base = ["eval", str(mini / "mmeb.yaml"), "--out", str(out), "--budgets", "1x1", "--datasets", "MiniDigits-CLS"]
    plain = runner.invoke(app, base)
    assert plain.exit_code == 0, plain.output
    think = [*base, "--think", "--reasoner", str(reasoner), "--think-tokens", "3"]
    first = runner.invoke(app, think)
    assert first.exit_code == 0, first.output
    assert "reasoning about" in first.output
    assert "0 dataset(s) from the cache" in first.output  # traces change the queries: no stale vectors
    with TraceCache(tmp_path / "cache" / "traces.sqlite") as cache:
        n_traces = len(cache)
    assert n_traces > 0
    again = runner.invoke(app, think)
    assert "1 dataset(s) from the cache" in again.output
    with TraceCache(tmp_path / "cache" / "traces.sqlite") as cache:
        assert len(cache) == n_traces
