"""Score one encoded dataset at one budget: rankings, per-query metrics, and the dataset's means.

``local`` datasets rank each query against its own candidate list; ``global`` ones against every
candidate. Queries whose own vectors, or whose every label, failed to encode are left out (and
counted); candidates that failed to encode are dropped from the lists they appear in.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mmcascade.budget import Budget
from mmcascade.data.items import as_item
from mmcascade.evaluation.encode_cache import EncodedDataset
from mmcascade.evaluation.metrics import TiePolicy, mean_metrics, query_metrics, rank_candidates
from mmcascade.evaluation.mmeb.dataset import EvalDataset
from mmcascade.scoring import maxsim
from mmcascade.search.cascade import RerankStage

MAX_PREDICTION = 1000  # ranked names written per query in {D}_pred.jsonl
_QUERY_BLOCK = 64
_CHANCE_SHUFFLES = 32


@dataclass
class DatasetResult:
    """One dataset at one budget: VLM2Vec's score dict plus what it took."""

    scores: dict[str, float]
    predictions: list[dict[str, Any]]
    n_tied: int
    n_skipped_queries: int
    scoring_seconds: float
    problems: list[str] = field(default_factory=list)
    chance: float = float("nan")  # the main metric's expected value under a uniformly random ranking


def score_dataset(
    dataset: EvalDataset,
    encoded: EncodedDataset,
    budget: Budget,
    *,
    ties: TiePolicy = "pessimistic",
    seed: int = 0,
    main_metric: str = "hit@1",
    rerank: RerankStage | None = None,
) -> DatasetResult:
    """Rank, measure and average one dataset at ``budget`` (its query x document vectors; None sides: all).

    ``rerank``: the cascade's second stage reorders each query's first ``rerank.depth`` candidates (after
    the tie policy has ordered the retrieval scores), exactly as :class:`~mmcascade.search.Cascade` does.
    """
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    queries = encoded.queries[:, : budget.query_vectors]  # (n_q, Q', d)
    candidates = encoded.candidates[:, : budget.document_vectors]  # (n_c, D', d)
    name_index = {
        name: index for index, name in enumerate(encoded.candidate_names) if name not in encoded.candidate_failures
    }
    all_names = list(name_index)
    all_rows = torch.tensor(list(name_index.values()), dtype=torch.long)
    problems: list[str] = []
    usable = []
    for row, query in enumerate(dataset.queries):
        if query.query_id in encoded.query_failures:
            problems.append(f"query {query.query_id}: not encoded ({encoded.query_failures[query.query_id]})")
        elif not any(label in name_index for label in query.labels):
            problems.append(f"query {query.query_id}: no relevant candidate could be encoded")
        else:
            usable.append(row)

    per_query, predictions, n_tied, chance = [], [], 0, []
    global_scores = None
    if dataset.eval_type == "global" and usable:
        global_scores = _block_scores(queries[usable], candidates[all_rows])  # (n_usable, n_candidates)
    for position, row in enumerate(usable):
        query = dataset.queries[row]
        if global_scores is not None:
            names, scores = all_names, global_scores[position]
        else:
            names = [name for name in query.candidate_names or () if name in name_index]
            rows = torch.tensor([name_index[name] for name in names], dtype=torch.long)
            scores = maxsim(queries[row : row + 1], candidates[rows])[0].numpy()  # (n_own,)
        ranked, tied = rank_candidates(scores, names, query.labels, ties=ties, rng=rng)
        if rerank is not None:
            head = [as_item(dataset.candidates[name]) for name in ranked[: rerank.depth]]
            order, _ = rerank.apply(as_item(query.item), head, len(ranked))
            ranked = [ranked[index] for index in order]
        chance.append(_chance(names, query.labels, query.rel_scores, main_metric, rng))
        n_tied += int(tied)
        per_query.append(query_metrics(ranked, query.labels, query.rel_scores))
        predictions.append(
            {
                "prediction": ranked[:MAX_PREDICTION],
                "label": list(query.labels),
                "rel_scores": list(query.rel_scores) if query.rel_scores is not None else None,
            }
        )
    scores = mean_metrics(per_query)
    scores.update({"num_pred": len(per_query), "num_data": len(dataset.queries)})
    return DatasetResult(
        scores=scores,
        predictions=predictions,
        n_tied=n_tied,
        n_skipped_queries=len(dataset.queries) - len(usable),
        scoring_seconds=time.perf_counter() - started,
        problems=problems,
        chance=float(np.mean(chance)) if chance else float("nan"),
    )


def _chance(
    names: list[str], labels: tuple[str, ...], rel_scores: tuple[int, ...] | None, metric: str, rng: np.random.Generator
) -> float:
    """Expected ``metric`` of a random ranking: exact for hit@1, else the mean over a few random shuffles."""
    if metric == "hit@1":
        return sum(1 for name in names if name in set(labels)) / max(1, len(names))
    shuffles = [[names[index] for index in rng.permutation(len(names))] for _ in range(_CHANCE_SHUFFLES)]
    return float(np.mean([query_metrics(ranked, labels, rel_scores)[metric] for ranked in shuffles]))


def _block_scores(queries: torch.Tensor, candidates: torch.Tensor) -> np.ndarray:
    """``(n_q, n_c)`` MaxSim in query blocks (bounded memory for large pools)."""
    blocks = [
        maxsim(queries[start : start + _QUERY_BLOCK], candidates) for start in range(0, len(queries), _QUERY_BLOCK)
    ]
    return torch.cat(blocks).numpy()
