"""``mmcascade eval``: encode each dataset once, score every budget from the cached vectors, report.

Output folder::

    <out>/cache/<Dataset>/                      vectors.safetensors + cache.json (reused on resume)
    <out>/<budget>/<modality>/<Dataset>_pred.jsonl   per query: prediction (ranked names), label, rel_scores
    <out>/<budget>/<modality>/<Dataset>_score.json   VLM2Vec's keys (hit@k, ndcg_linear@k, ... num_pred, num_data)
    <out>/<budget>/<model>.json                 VLM2Vec's report: {"metadata", "metrics": {modality: {dataset: scores}}}
    <out>/summary.json, report.md, budget_scaling.png

Resuming after a kill is per dataset: a dataset's vectors are reused when model, data and encoder
settings match (its fingerprint); scoring is cheap and always redone.

Re-running into the same folder merges: when the earlier run (its ``summary.json``) used the same model
fingerprint, budgets and settings (ties, seed, reranking, thinking), the datasets evaluated now replace
theirs and the others stay in the reports. An earlier run with other settings is not mixed in: the new
run starts over (it says so), removing the earlier per-budget results (the encode cache stays).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass, replace
from pathlib import Path
from typing import Any

from mmcascade import __version__
from mmcascade.budget import Budget, default_budgets
from mmcascade.data.items import as_item
from mmcascade.embedder import Embedder
from mmcascade.evaluation.dataset_scoring import DatasetResult, score_dataset
from mmcascade.evaluation.encode_cache import dataset_fingerprint, load_or_encode
from mmcascade.evaluation.metrics import TiePolicy
from mmcascade.evaluation.mmeb.config import DatasetConfig, load_configs
from mmcascade.evaluation.mmeb.dataset import EvalDataset
from mmcascade.evaluation.mmeb.readers import read_dataset
from mmcascade.evaluation.report import (
    BudgetSummary,
    DatasetSummary,
    EarlierRun,
    read_summary,
    read_vlm2vec_metrics,
    remove_budget_folders,
    write_json,
    write_jsonl,
    write_summary,
    write_vlm2vec_report,
)
from mmcascade.models import model_fingerprint, resolve_model
from mmcascade.reasoner import reason, task_kind, with_trace
from mmcascade.search.cascade import RerankStage

Log = Callable[[str], None]


@dataclass
class EvalRun:
    """What :func:`run_eval` did: per-budget summaries, skipped datasets, reader problems, timings.

    ``budgets``, ``skipped`` and ``problems`` are what the reports show: with an earlier compatible run in
    the folder they include its datasets that this run did not evaluate (named in ``kept_from_earlier``)."""

    out_dir: Path
    budgets: list[BudgetSummary]
    skipped: dict[str, str] = field(default_factory=dict)
    problems: dict[str, list[str]] = field(default_factory=dict)
    kept_from_earlier: list[str] = field(default_factory=list)
    encoded_from_cache: list[str] = field(default_factory=list)
    encoding_seconds: float = 0.0
    scoring_seconds: float = 0.0


def run_eval(
    config: str | os.PathLike | Sequence[DatasetConfig],
    model: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    budgets: Sequence[Budget] | None = None,
    datasets: Sequence[str] | None = None,
    data_root: str | os.PathLike | None = None,
    ties: TiePolicy = "pessimistic",
    batch_size: int = 16,
    seed: int = 0,
    embedder: Any = None,
    reasoner: Any = None,
    think_settings: Any = None,
    trace_cache: Any = None,
    rerank: RerankStage | None = None,
    log: Log = print,
) -> EvalRun:
    """Evaluate ``model`` on the datasets of ``config`` at every budget; see the module docstring.

    Args:
        config: an eval yaml (VLM2Vec's format) or parsed configs.
        data_root: where the yaml's relative paths point (default: the yaml's folder).
        budgets: the query x document vectors to score (multi-vector models; default MetaEmbed's five groups
            that fit the model; only the vector counts of a :class:`~mmcascade.budget.Budget` are used here).
            Single-vector models are scored once, as ``single``.
        datasets: evaluate only these dataset names.
        ties: ``pessimistic`` (default), ``optimistic`` or ``random`` (seeded by ``seed``).
        reasoner: Think-Then-Embed: a :class:`~mmcascade.reasoner.Reasoner` writes a trace for every query
            (prompt kind from the dataset's meta-task, ``think_settings`` budget, cached in ``trace_cache``),
            and queries are embedded with it. The encode cache sees the traces, so it never mixes runs.
        rerank: the cascade's second stage (reranker, depth k, reasoning budget) reorders each query's first
            k candidates, as a search with ``--rerank k`` does; recorded in the reports' metadata.

    An earlier run's results in ``out_dir`` are merged or replaced: see the module docstring.
    """
    configs, root = _configs(config, data_root)
    if datasets:
        known = {entry.name for entry in configs}
        unknown = sorted(set(datasets) - known)
        if unknown:
            raise ValueError(f"unknown datasets {unknown}; the config has {sorted(known)}")
        configs = [entry for entry in configs if entry.name in set(datasets)]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = model_fingerprint(resolve_model(model))
    embedder = embedder or Embedder.from_pretrained(model)
    budget_list = _budgets(embedder, budgets)
    model_name = Path(os.fspath(model)).name or os.fspath(model)
    labels = [budget.label if embedder.is_multi_vector else "single" for budget in budget_list]
    metadata = _metadata(model, fingerprint, labels, ties, seed, rerank, reasoner, think_settings)
    earlier = _earlier_run(out_dir, metadata, log)
    run = EvalRun(out_dir=out_dir, budgets=[BudgetSummary(label) for label in labels])
    results: dict[str, dict[str, DatasetResult]] = {label.budget: {} for label in run.budgets}
    loaded: list[EvalDataset] = []
    for entry in configs:
        dataset = _read(entry, root, run, log)
        if dataset is None:
            continue
        if reasoner is not None:
            _think(dataset, reasoner, think_settings, trace_cache, log)
        started = time.perf_counter()
        try:
            encoded = load_or_encode(
                dataset,
                embedder,
                out_dir / "cache" / entry.name,
                dataset_fingerprint(dataset, fingerprint),
                batch_size=batch_size,
                on_progress=log,
            )
        except (ValueError, FileNotFoundError, OSError) as error:
            run.skipped[entry.name] = f"could not encode: {error}"
            log(f"{entry.name}: skipped ({error})")
            continue
        run.encoding_seconds += time.perf_counter() - started
        if encoded.from_cache:
            run.encoded_from_cache.append(entry.name)
            log(f"{entry.name}: vectors from the cache")
        for budget, summary in zip(budget_list, run.budgets, strict=True):
            result = score_dataset(
                dataset, encoded, budget, ties=ties, seed=seed, main_metric=dataset.main_metric, rerank=rerank
            )
            run.scoring_seconds += result.scoring_seconds
            if result.problems:
                run.problems.setdefault(entry.name, []).extend(
                    problem for problem in result.problems if problem not in run.problems.get(entry.name, [])
                )
            if not result.predictions:
                run.skipped[entry.name] = "no query could be scored (see the problems list)"
                break
            results[summary.budget][entry.name] = result
            _write_dataset_files(out_dir / summary.budget / dataset.modality, entry.name, result)
            summary.datasets.append(
                DatasetSummary(
                    name=entry.name,
                    modality=dataset.modality,
                    meta_task=dataset.meta_task,
                    main_metric=dataset.main_metric,
                    main_score=result.scores[dataset.main_metric],
                    num_pred=int(result.scores["num_pred"]),
                    num_data=int(result.scores["num_data"]),
                    n_tied=result.n_tied,
                    scoring_ms_per_query=1000 * result.scoring_seconds / max(1, result.scores["num_pred"]),
                    chance=result.chance,
                )
            )
        else:
            loaded.append(dataset)
            log(
                f"{entry.name}: "
                + ", ".join(f"{s.budget} {s.datasets[-1].main_score:.3f}" for s in run.budgets if s.datasets)
            )
    _drop_partial(run)
    evaluated = {entry.name for entry in configs}
    if earlier is not None:
        _merge_earlier(run, earlier, evaluated, log)
    for budget, summary in zip(budget_list, run.budgets, strict=True):
        summary.bytes_per_document = (budget.document_vectors or embedder.num_vectors("document")) * embedder.dim * 4
        by_modality: dict[str, dict[str, dict[str, float]]] = {}
        for dataset in loaded:
            if dataset.name in results[summary.budget]:
                by_modality.setdefault(dataset.modality, {})[dataset.name] = results[summary.budget][
                    dataset.name
                ].scores
        report = out_dir / summary.budget / f"{model_name}.json"
        if earlier is not None:
            _keep_earlier_scores(by_modality, out_dir / summary.budget / f"{earlier.model_name}.json", evaluated)
        write_vlm2vec_report(report, {**metadata, "budget": summary.budget}, by_modality)
        if earlier is not None and earlier.model_name != model_name:  # the same model under another name
            (out_dir / summary.budget / f"{earlier.model_name}.json").unlink(missing_ok=True)
    write_summary(out_dir, model_name, run.budgets, run.skipped, {**metadata, "problems": run.problems})
    return run


def _metadata(
    model: str | os.PathLike,
    fingerprint: str,
    labels: list[str],
    ties: str,
    seed: int,
    rerank: RerankStage | None,
    reasoner: Any,
    think_settings: Any,
) -> dict[str, Any]:
    """The reports' metadata; the keys of :data:`~mmcascade.evaluation.report.RUN_SETTINGS` decide whether
    a later run into the same folder merges with this one."""
    return {
        "model": os.fspath(model),
        "model_fingerprint": fingerprint,
        "ties": ties,
        "seed": seed,
        "budgets": labels,
        "rerank": None
        if rerank is None
        else {"model": rerank.reranker.model_id, "depth": rerank.depth, "think_tokens": rerank.think_tokens},
        "think": None
        if reasoner is None
        else {
            "model": reasoner.model_id,
            "settings": asdict(think_settings) if is_dataclass(think_settings) else think_settings,
        },
        "mmcascade_version": __version__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _earlier_run(out_dir: Path, metadata: dict[str, Any], log: Log) -> EarlierRun | None:
    """The earlier run in ``out_dir`` to merge with; None when there is none or it cannot be merged (then
    its per-budget results are removed, and the log says why)."""
    try:
        earlier = read_summary(out_dir)
    except ValueError as error:
        log(f"{error}: starting over; this run's reports replace it")
        return None
    if earlier is None:
        return None
    differences = earlier.differences(metadata)
    if differences:
        log(
            f"{out_dir} holds the results of a run with other settings ({'; '.join(differences)}): starting over; "
            "its per-budget results are removed and this run's reports replace its summary"
        )
        remove_budget_folders(out_dir, earlier.budgets)
        return None
    return earlier


def _merge_earlier(run: EvalRun, earlier: EarlierRun, evaluated: set[str], log: Log) -> None:
    """Put the earlier run's datasets that this run did not evaluate (results, skips, problems) into ``run``."""
    run.kept_from_earlier = earlier.merge_into(run.budgets, evaluated)
    run.skipped = {**earlier.kept(earlier.skipped, evaluated), **run.skipped}
    run.problems = {**earlier.kept(dict(earlier.metadata.get("problems") or {}), evaluated), **run.problems}
    if run.kept_from_earlier:
        log(
            f"kept {len(run.kept_from_earlier)} dataset(s) of the earlier run in {run.out_dir} (same model and "
            f"settings): {', '.join(run.kept_from_earlier)}"
        )


def _keep_earlier_scores(
    by_modality: dict[str, dict[str, dict[str, float]]], earlier_report: Path, evaluated: set[str]
) -> None:
    """Add the scores an earlier report holds for datasets this run did not evaluate."""
    for modality, scores in read_vlm2vec_metrics(earlier_report).items():
        for name, dataset_scores in scores.items():
            if name not in evaluated:
                by_modality.setdefault(modality, {}).setdefault(name, dataset_scores)


def _configs(
    config: str | os.PathLike | Sequence[DatasetConfig], data_root: str | os.PathLike | None
) -> tuple[list[DatasetConfig], Path]:
    if isinstance(config, (str, os.PathLike)):
        path = Path(config)
        return load_configs(path), Path(data_root) if data_root is not None else path.parent
    if data_root is None:
        raise ValueError("pass data_root with parsed configs")
    return list(config), Path(data_root)


def _budgets(embedder: Any, budgets: Sequence[Budget] | None) -> list[Budget]:
    if not embedder.is_multi_vector:
        return [Budget()]
    query_vectors, document_vectors = embedder.num_vectors("query"), embedder.num_vectors("document")
    if budgets is None:
        return default_budgets(query_vectors, document_vectors)
    return [budget.check_fits(query_vectors, document_vectors) for budget in budgets]


def _read(entry: DatasetConfig, root: Path, run: EvalRun, log: Log) -> EvalDataset | None:
    try:
        dataset = read_dataset(entry, root)
    except (FileNotFoundError, ValueError, OSError) as error:
        run.skipped[entry.name] = str(error)
        log(f"{entry.name}: skipped ({error})")
        return None
    if dataset.problems:
        run.problems[entry.name] = list(dataset.problems)
        log(f"{entry.name}: {len(dataset.problems)} record(s) skipped by the reader, e.g. {dataset.problems[0]}")
    if not dataset.queries:
        run.skipped[entry.name] = "no usable query"
        return None
    return dataset


def _think(dataset: EvalDataset, reasoner: Any, settings: Any, cache: Any, log: Log) -> None:
    """Replace each query item by the item with its reasoning trace (Think-Then-Embed)."""
    items = [query.item for query in dataset.queries]
    log(f"{dataset.name}: reasoning about {len(items)} queries with {reasoner.model_id}")
    traces = reason(reasoner, items, task=task_kind(dataset.meta_task), settings=settings, cache=cache)
    problems = sum(1 for trace in traces if trace.problem)
    if problems:
        log(f"{dataset.name}: {problems} trace(s) incomplete or malformed (used as far as they go)")
    for index, (query, trace) in enumerate(zip(dataset.queries, traces, strict=True)):
        item = with_trace(as_item(query.item), trace)
        thought = {"text": item.text, "images": [str(image) for image in item.images]}
        if item.instruction:
            thought["instruction"] = item.instruction
        dataset.queries[index] = replace(query, item=thought)


def _write_dataset_files(folder: Path, name: str, result: DatasetResult) -> None:
    write_jsonl(folder / f"{name}_pred.jsonl", result.predictions)
    write_json(folder / f"{name}_score.json", result.scores)


def _drop_partial(run: EvalRun) -> None:
    """A dataset skipped at some budget is dropped from every budget, so averages compare like with like."""
    for summary in run.budgets:
        summary.datasets = [entry for entry in summary.datasets if entry.name not in run.skipped]
