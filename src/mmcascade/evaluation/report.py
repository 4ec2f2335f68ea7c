"""Aggregate dataset scores into averages and write the reports (JSON, Markdown, PNG).

Averages are unweighted means of each dataset's *main score* (hit@1 for image and video, ndcg_linear@5
for visual documents), per meta-task, per modality and overall, as VLM2Vec's report does per modality.
Datasets that were skipped are listed next to the averages, never counted as zero.

A run into a folder that holds an earlier run's ``summary.json`` (:func:`read_summary`) merges with it
when both used the same model and settings (:data:`RUN_SETTINGS`): the datasets it evaluates replace
the earlier results, the others stay (:meth:`EarlierRun.merge_into`).
"""

from __future__ import annotations

import json
import math
import re
import shutil
from collections.abc import Collection, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from mmcascade.utils.fs import write_lines_atomically, write_text_atomically

#: the metadata keys two runs must share for their results to be merged into one report
RUN_SETTINGS = ("model_fingerprint", "budgets", "ties", "seed", "rerank", "think")
#: the names of per-budget result folders (``4x8``, ``allxall``, ``single``): nothing else is ever removed
_BUDGET_FOLDER = re.compile(r"(?:\d+|all)x(?:\d+|all)|single")


@dataclass
class DatasetSummary:
    """One dataset at one budget, as the reports show it."""

    name: str
    modality: str
    meta_task: str
    main_metric: str
    main_score: float
    num_pred: int
    num_data: int
    n_tied: int
    scoring_ms_per_query: float
    chance: float = float("nan")  # expected main score of a uniformly random ranking


@dataclass
class BudgetSummary:
    """Every dataset at one budget, with the averages and the cost of a budget."""

    budget: str
    datasets: list[DatasetSummary] = field(default_factory=list)
    bytes_per_document: int = 0  # stored vectors at this document budget (float32)

    def averages(self) -> dict[str, dict[str, float]]:
        by_task: dict[str, list[float]] = {}
        by_modality: dict[str, list[float]] = {}
        for summary in self.datasets:
            by_task.setdefault(summary.meta_task, []).append(summary.main_score)
            by_modality.setdefault(summary.modality, []).append(summary.main_score)
        everything = [summary.main_score for summary in self.datasets]
        return {
            "meta_task": {key: _mean(values) for key, values in sorted(by_task.items())},
            "modality": {key: _mean(values) for key, values in sorted(by_modality.items())},
            "overall": {"all": _mean(everything)} if everything else {},
        }


def write_vlm2vec_report(path: Path, metadata: dict[str, Any], scores: dict[str, dict[str, dict[str, float]]]) -> None:
    """``<model>.json`` in VLM2Vec's shape: ``{"metadata", "metrics": {modality: {dataset: scores}}}``."""
    write_json(path, {"metadata": metadata, "metrics": scores})


def write_summary(
    out_dir: Path, model: str, budgets: list[BudgetSummary], skipped: dict[str, str], metadata: dict[str, Any]
) -> None:
    """``summary.json``, ``report.md`` and (with matplotlib) ``budget_scaling.png`` in ``out_dir``."""
    write_json(
        out_dir / "summary.json",
        {
            "metadata": metadata,
            "budgets": [{**asdict(budget), "averages": budget.averages()} for budget in budgets],
            "skipped_datasets": skipped,
        },
    )
    write_text_atomically(out_dir / "report.md", markdown_report(model, budgets, skipped))
    plot_budget_scaling(out_dir / "budget_scaling.png", model, budgets)


def markdown_report(model: str, budgets: list[BudgetSummary], skipped: dict[str, str]) -> str:
    if not budgets:
        return f"# {model}\n\nNo dataset could be evaluated.\n" + _skipped_lines(skipped)
    header = "| dataset | task | metric | chance | " + " | ".join(budget.budget for budget in budgets) + " |"
    lines = [f"# {model}: main score per budget (query x document vectors)", "", header]
    lines.append("|" + "---|" * (4 + len(budgets)))
    scores = [{entry.name: entry.main_score for entry in budget.datasets} for budget in budgets]
    for first in budgets[0].datasets:
        cells = [f"{by_name.get(first.name, math.nan):.3f}" for by_name in scores]
        lines.append(
            f"| {first.name} | {first.modality}/{first.meta_task} | {first.main_metric} | {first.chance:.3f} | "
            + " | ".join(cells)
            + " |"
        )
    chance = BudgetSummary("chance", [replace(entry, main_score=entry.chance) for entry in budgets[0].datasets])
    for group in ("meta_task", "modality", "overall"):
        for key in budgets[0].averages()[group]:
            cells = [f"{budget.averages()[group].get(key, float('nan')):.3f}" for budget in budgets]
            expected = chance.averages()[group].get(key, float("nan"))
            lines.append(f"| **mean {key}** | {group} | main | {expected:.3f} | " + " | ".join(cells) + " |")
    lines += ["", "*chance*: the expected main score of a uniformly random ranking of the same candidates."]
    lines += [
        "",
        "| budget | bytes per document | scoring ms per query (mean over datasets) | tied queries |",
        "|---|---|---|---|",
    ]
    for budget in budgets:
        ms = _mean([summary.scoring_ms_per_query for summary in budget.datasets])
        tied = sum(summary.n_tied for summary in budget.datasets)
        lines.append(f"| {budget.budget} | {budget.bytes_per_document} | {ms:.2f} | {tied} |")
    lines.append("")
    lines.append(
        "Ties are broken pessimistically unless `--ties` says otherwise: a relevant candidate tied with a "
        "non-relevant one ranks below it. *Tied queries* counts the queries where that happened."
    )
    return "\n".join(lines) + "\n" + _skipped_lines(skipped)


def plot_budget_scaling(path: Path, model: str, budgets: list[BudgetSummary]) -> bool:
    """Left: main score (overall, per modality) per budget. Right: bytes per document and scoring latency.

    Returns False when matplotlib is missing (install the ``eval`` extra) or nothing was scored.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    if not budgets:
        return False
    labels = [budget.budget for budget in budgets]
    figure, (score_axis, cost_axis) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    series = {"overall": [budget.averages()["overall"].get("all", float("nan")) for budget in budgets]}
    for modality in budgets[0].averages()["modality"]:
        series[modality] = [budget.averages()["modality"].get(modality, float("nan")) for budget in budgets]
    for name, values in series.items():
        score_axis.plot(labels, values, marker="o", linewidth=2.5 if name == "overall" else 1.2, label=name)
    score_axis.set_xlabel("budget (query x document vectors)")
    score_axis.set_ylabel("mean main score")
    score_axis.set_title(f"{model}: score against budget")
    score_axis.set_ylim(0, 1)
    score_axis.grid(alpha=0.3)
    score_axis.legend()
    kib = [budget.bytes_per_document / 1024 for budget in budgets]
    latency = [_mean([entry.scoring_ms_per_query for entry in budget.datasets]) for budget in budgets]
    cost_axis.bar(labels, kib, color="tab:gray", alpha=0.5, label="KiB per document (float32)")
    cost_axis.set_ylabel("KiB per stored document")
    cost_axis.set_xlabel("budget (query x document vectors)")
    cost_axis.set_title("cost of a budget")
    latency_axis = cost_axis.twinx()
    latency_axis.plot(labels, latency, color="tab:red", marker="s", label="scoring ms per query")
    latency_axis.set_ylabel("scoring ms per query", color="tab:red")
    latency_axis.set_ylim(bottom=0)
    handles = cost_axis.get_legend_handles_labels()[0] + latency_axis.get_legend_handles_labels()[0]
    cost_axis.legend(handles, [handle.get_label() for handle in handles], loc="upper left")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True


@dataclass
class EarlierRun:
    """What an earlier ``mmcascade eval`` left in an output folder: its metadata, datasets per budget and
    skipped datasets (as its ``summary.json`` lists them)."""

    metadata: dict[str, Any]
    budgets: dict[str, list[DatasetSummary]]
    skipped: dict[str, str]

    @property
    def model_name(self) -> str:
        """The stem of its per-budget VLM2Vec reports (``<budget>/<model name>.json``)."""
        model = str(self.metadata.get("model", ""))
        return Path(model).name or model

    def differences(self, metadata: dict[str, Any]) -> list[str]:
        """The :data:`RUN_SETTINGS` in which a new run's ``metadata`` differs, as ``name earlier -> new``."""
        new = json.loads(json.dumps({key: metadata.get(key) for key in RUN_SETTINGS}))  # as JSON reads it back
        return [
            f"{key} {self.metadata.get(key)!r} -> {new[key]!r}"
            for key in RUN_SETTINGS
            if self.metadata.get(key) != new[key]
        ]

    def merge_into(self, budgets: list[BudgetSummary], evaluated: Collection[str]) -> list[str]:
        """Add the earlier datasets a new run did not evaluate to its ``budgets`` (earlier order first, then
        the new datasets); returns their names. Datasets in ``evaluated`` keep only the new result."""
        kept: list[str] = []
        for summary in budgets:
            earlier = self.budgets.get(summary.budget, [])
            new = {entry.name: entry for entry in summary.datasets}
            merged = []
            for entry in earlier:  # in place: a re-evaluated dataset's new result; dropped: one skipped now
                if entry.name in new:
                    merged.append(new.pop(entry.name))
                elif entry.name not in evaluated:
                    merged.append(entry)
            kept = [entry.name for entry in earlier if entry.name not in evaluated]
            summary.datasets = merged + list(new.values())
        return kept

    def kept(self, entries: dict[str, Any], evaluated: Collection[str]) -> dict[str, Any]:
        """The entries (skipped datasets, problems) of datasets a new run did not evaluate."""
        return {name: value for name, value in entries.items() if name not in evaluated}


def read_summary(out_dir: Path) -> EarlierRun | None:
    """The run recorded in ``out_dir/summary.json``; None if there is none, ValueError if it is unreadable."""
    path = out_dir / "summary.json"
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text())
        budgets = {
            entry["budget"]: [DatasetSummary(**dataset) for dataset in entry["datasets"]]
            for entry in payload["budgets"]
        }
        return EarlierRun(dict(payload["metadata"]), budgets, dict(payload.get("skipped_datasets") or {}))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"{path} is unreadable ({type(error).__name__}: {error})") from error


def read_vlm2vec_metrics(path: Path) -> dict[str, dict[str, dict[str, float]]]:
    """The ``metrics`` of a ``<model>.json`` written by :func:`write_vlm2vec_report`; empty if unreadable."""
    try:
        metrics = json.loads(path.read_text())["metrics"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return metrics if isinstance(metrics, dict) else {}


def remove_budget_folders(out_dir: Path, labels: Iterable[str]) -> None:
    """Remove the per-budget result folders ``out_dir/<label>`` (only names shaped like a budget label)."""
    for label in labels:
        if _BUDGET_FOLDER.fullmatch(label):
            shutil.rmtree(out_dir / label, ignore_errors=True)


def write_json(path: Path, payload: Any) -> None:
    """Write JSON atomically (a kill leaves the old file or none)."""
    write_text_atomically(path, json.dumps(payload, indent=2))


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write one JSON object per line, atomically."""
    write_lines_atomically(path, (json.dumps(row) for row in rows))


def _skipped_lines(skipped: dict[str, str]) -> str:
    if not skipped:
        return ""
    lines = ["", "Skipped datasets (not in the averages):", ""]
    lines += [f"- {name}: {reason}" for name, reason in skipped.items()]
    return "\n".join(lines) + "\n"


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")
