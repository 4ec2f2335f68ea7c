"""The reports' pieces that need no model: reading an earlier run back, merging, the Markdown table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmcascade.evaluation.report import (
    BudgetSummary,
    DatasetSummary,
    markdown_report,
    read_summary,
    remove_budget_folders,
    write_summary,
)


def entry(name: str, score: float, modality: str = "image") -> DatasetSummary:
    return DatasetSummary(
        name=name, modality=modality, meta_task="CLS", main_metric="hit@1", main_score=score, num_pred=4,
        num_data=4, n_tied=0, scoring_ms_per_query=0.1, chance=0.25,
    )  # fmt: skip


METADATA = {"model": "starter", "model_fingerprint": "abc", "budgets": ["1x1"], "ties": "pessimistic", "seed": 0}


def written(tmp_path: Path, datasets: list[DatasetSummary], skipped: dict[str, str] | None = None) -> Path:
    write_summary(tmp_path, "starter", [BudgetSummary("1x1", datasets)], skipped or {}, {**METADATA, "rerank": None})
    return tmp_path


def test_an_earlier_summary_reads_back_as_written(tmp_path):
    earlier = read_summary(written(tmp_path, [entry("A", 0.5), entry("B", 0.75)], {"C": "no usable query"}))
    assert earlier is not None
    assert earlier.budgets == {"1x1": [entry("A", 0.5), entry("B", 0.75)]}
    assert earlier.skipped == {"C": "no usable query"} and earlier.model_name == "starter"
    assert read_summary(tmp_path / "nothing-here") is None
    (tmp_path / "summary.json").write_text(json.dumps({"metadata": {}}))
    with pytest.raises(ValueError, match="summary.json is unreadable"):
        read_summary(tmp_path)


def test_differences_name_each_setting_and_ignore_the_rest(tmp_path):
    earlier = read_summary(written(tmp_path, [entry("A", 0.5)]))
    same = {**METADATA, "rerank": None, "think": None, "created_at": "later", "mmcascade_version": "9"}
    assert earlier.differences(same) == []
    other = {**same, "model_fingerprint": "def", "budgets": ["1x1", "2x4"]}
    assert earlier.differences(other) == [
        "model_fingerprint 'abc' -> 'def'",
        "budgets ['1x1'] -> ['1x1', '2x4']",
    ]


def test_merge_keeps_the_others_and_replaces_the_re_evaluated(tmp_path):
    earlier = read_summary(written(tmp_path, [entry("A", 0.1), entry("B", 0.2), entry("C", 0.3)]))
    now = [BudgetSummary("1x1", [entry("B", 0.9), entry("D", 0.4)])]
    kept = earlier.merge_into(now, evaluated={"B", "C", "D"})  # C was evaluated but skipped this time
    assert kept == ["A"]
    assert [(item.name, item.main_score) for item in now[0].datasets] == [("A", 0.1), ("B", 0.9), ("D", 0.4)]
    assert earlier.kept({"A": "x", "B": "y"}, {"B"}) == {"A": "x"}


def test_the_markdown_table_matches_rows_by_name():
    first = BudgetSummary("1x1", [entry("A", 0.1), entry("B", 0.2)])
    second = BudgetSummary("2x4", [entry("B", 0.8), entry("A", 0.7)])  # another order
    rows = [line for line in markdown_report("starter", [first, second], {}).splitlines() if line.startswith("| A ")]
    assert rows == ["| A | image/CLS | hit@1 | 0.250 | 0.100 | 0.700 |"]


def test_only_budget_folders_are_removed(tmp_path):
    for name in ("1x1", "allxall", "single", "cache", "notes"):
        (tmp_path / name).mkdir()
    remove_budget_folders(tmp_path, ["1x1", "allxall", "single", "cache", "../notes", "notes"])
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cache", "notes"]
