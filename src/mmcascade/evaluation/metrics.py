"""Retrieval metrics per query, compatible with VLM2Vec-V2's ``src/utils/eval_utils/metrics.py``.

Flow: scores of one query's candidates -> :func:`rank_candidates` (names, best first, with an
explicit tie policy) -> :func:`query_metrics` (one dict per query) -> :func:`mean_metrics` (mean over
the queries of a dataset, as VLM2Vec's ``RankingMetrics.evaluate`` does).

Definitions follow VLM2Vec (k in ``(1, 5, 10)``; labels are the *distinct* relevant names):

* ``hit@k``: 1 if any label is in the top k.
* ``precision@k``: ``|set(top k) ∩ labels| / k`` (0 when there are no labels).
* ``recall@k``: the same count ``/ |labels|`` (1.0 when there are no labels, VLM2Vec's convention).
* ``f1@k``: harmonic mean of the two (0 when both are 0).
* ``map@k``: average precision in the top k, normalised by ``min(|labels|, k)``.
* ``mrr@k``: ``1 / rank`` of the first relevant name in the top k, else 0.
* ``ndcg_linear@k`` / ``ndcg_exponential@k``: gain ``grade`` or ``2**grade - 1``, discount
  ``log2(rank + 2)`` for a 0-based rank; the ideal DCG takes every label's gain sorted in descending
  order and cut at k. Binary queries (``rel_scores=None``) give every label grade 1. A query whose
  ideal DCG is 0 (no labels, or every grade 0) scores 0.

Differences from VLM2Vec, on purpose (``/work/shared/notes/reference-semantics.md`` §4.1-4.2):

1. **Each label keeps its own grade.** VLM2Vec de-duplicates the labels with ``list(set(labels))``
   and then zips them with the *original-order* ``rel_scores``, so a query with two or more labels of
   different grades gets its grades re-paired in hash order (for string ids this depends on
   ``PYTHONHASHSEED``). Here the grades are a ``label -> grade`` map; a label listed twice keeps its
   highest grade (as VLM2Vec's visdoc loader does for duplicate qrels). Binary datasets are unaffected.
2. **A relevant name repeated in the top k counts once** for NDCG and for average precision. VLM2Vec
   counts every occurrence, so a local candidate list that repeats the positive's name can give
   NDCG or AP above 1. Hit, precision and recall already use sets in VLM2Vec and agree here.

Ties: VLM2Vec-V2 ranks with ``np.argsort(-scores)`` / ``torch.argsort``, whose order among equal
scores is unspecified (VLM2Vec-V1 and MetaEmbed let the positive win ties). :func:`rank_candidates`
makes the choice explicit; the default, ``"pessimistic"``, puts non-relevant candidates first among
equal scores, so a constant-score model cannot score above chance by luck of the sort.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from typing import Literal, get_args

import numpy as np

TiePolicy = Literal["pessimistic", "optimistic", "random"]
TIE_POLICIES: tuple[str, ...] = get_args(TiePolicy)
DEFAULT_KS: tuple[int, ...] = (1, 5, 10)
METRIC_NAMES: tuple[str, ...] = (
    "hit",
    "ndcg_linear",
    "ndcg_exponential",
    "precision",
    "recall",
    "f1",
    "map",
    "mrr",
)


def rank_candidates(
    scores: np.ndarray,
    names: Sequence[str],
    labels: Collection[str],
    *,
    ties: TiePolicy = "pessimistic",
    rng: np.random.Generator | None = None,
) -> tuple[list[str], bool]:
    """Order one query's candidates best first, with an explicit policy for equal scores.

    Args:
        scores: one score per candidate, shape ``(n_candidates,)``; higher is better.
        names: the candidate names, aligned with ``scores``. Names may repeat (a VLM2Vec local
            candidate list can); every occurrence stays in the ranking.
        labels: the relevant names.
        ties: among equal scores, ``"pessimistic"`` ranks non-relevant candidates above relevant ones,
            ``"optimistic"`` the reverse, and ``"random"`` shuffles them with ``rng``. Within one
            relevance class the pessimistic and optimistic orders keep the input order (stable).
        rng: the generator for ``ties="random"`` (required there; seed it for reproducible runs).

    Returns:
        The names ordered best first, and whether a tie mattered: some relevant candidate has exactly
        the same score as some non-relevant one (so another tie policy could rank them differently).
    """
    if ties not in TIE_POLICIES:
        raise ValueError(f"Unknown tie policy {ties!r}; use one of {', '.join(TIE_POLICIES)}.")
    score_array = np.asarray(scores, dtype=np.float64)
    if score_array.ndim != 1:
        raise ValueError(f"scores must be one score per candidate (1-D); got shape {score_array.shape}.")
    if len(score_array) != len(names):
        raise ValueError(f"scores and names differ in length: {len(score_array)} scores for {len(names)} names.")
    if np.isnan(score_array).any():
        raise ValueError("scores contain NaN, which has no rank; check the model's outputs.")

    label_set = set(labels)
    relevant = np.fromiter((name in label_set for name in names), dtype=bool, count=len(names))
    tied = bool(np.isin(score_array[relevant], score_array[~relevant]).any())

    # np.lexsort is stable and sorts by its last key first: descending score, then the tie key.
    if ties == "pessimistic":
        tie_key = relevant.astype(np.int8)  # non-relevant (0) before relevant (1)
    elif ties == "optimistic":
        tie_key = (~relevant).astype(np.int8)  # relevant (0) before non-relevant (1)
    elif rng is None:
        raise ValueError("ties='random' needs a seeded generator: pass rng=np.random.default_rng(seed).")
    else:
        tie_key = rng.permutation(len(names))
    order = np.lexsort((tie_key, -score_array))
    return [names[index] for index in order], tied


def _label_grades(labels: Sequence[str], rel_scores: Sequence[int] | None) -> dict[str, float]:
    """Each distinct label with its own grade (1 for binary; the highest grade if a label repeats)."""
    if rel_scores is None:
        return dict.fromkeys(labels, 1.0)
    if len(rel_scores) != len(labels):
        raise ValueError(
            f"rel_scores must give one grade per label: {len(rel_scores)} grades for {len(labels)} labels."
        )
    grades: dict[str, float] = {}
    for label, grade in zip(labels, rel_scores, strict=True):
        if grade < 0:
            raise ValueError(f"Relevance grades must be >= 0; label {label!r} has grade {grade}.")
        grades[label] = max(float(grade), grades.get(label, 0.0))
    return grades


def _gain(grade: float, form: str) -> float:
    return grade if form == "linear" else 2.0**grade - 1.0


def _ndcg(top_k: Sequence[str], grades: dict[str, float], k: int, form: str) -> float:
    seen: set[str] = set()
    dcg = 0.0
    for rank, name in enumerate(top_k):
        if name in grades and name not in seen:  # a repeated relevant name counts once
            seen.add(name)
            dcg += _gain(grades[name], form) / math.log2(rank + 2)
    ideal_gains = sorted((_gain(grade, form) for grade in grades.values()), reverse=True)[:k]
    ideal_dcg = sum(gain / math.log2(rank + 2) for rank, gain in enumerate(ideal_gains))
    return dcg / ideal_dcg if ideal_dcg > 0 else 0.0


def _average_precision(top_k: Sequence[str], label_set: set[str], k: int) -> float:
    if not label_set:
        return 0.0
    seen: set[str] = set()
    total = 0.0
    for rank, name in enumerate(top_k):
        if name in label_set and name not in seen:  # a repeated relevant name counts once
            seen.add(name)
            total += len(seen) / (rank + 1)
    return total / min(len(label_set), k)


def _reciprocal_rank(top_k: Sequence[str], label_set: set[str]) -> float:
    for rank, name in enumerate(top_k):
        if name in label_set:
            return 1.0 / (rank + 1)
    return 0.0


def query_metrics(
    ranked: Sequence[str],
    labels: Sequence[str],
    rel_scores: Sequence[int] | None = None,
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[str, float]:
    """Every metric of one query at each cut-off k (see the module docstring for the definitions).

    Args:
        ranked: candidate names, best first (as :func:`rank_candidates` returns them).
        labels: the relevant names (duplicates are merged).
        rel_scores: graded relevance aligned with ``labels`` (integers >= 0), or None for binary
            relevance (every label grade 1). Grades only change NDCG.
        ks: the cut-offs, each >= 1.

    Returns:
        ``{"<metric>@<k>": value}`` for ``hit``, ``ndcg_linear``, ``ndcg_exponential``, ``precision``,
        ``recall``, ``f1``, ``map`` and ``mrr`` at each k.
    """
    bad_ks = [k for k in ks if int(k) != k or k < 1]
    if bad_ks:
        raise ValueError(f"Every cut-off k must be an integer >= 1; got {bad_ks}.")
    grades = _label_grades(labels, rel_scores)
    label_set = set(grades)

    per_k: dict[int, dict[str, float]] = {}
    for k in ks:
        k = int(k)
        top_k = ranked[:k]
        n_relevant = len(set(top_k) & label_set)
        precision = n_relevant / k
        recall = n_relevant / len(label_set) if label_set else 1.0
        per_k[k] = {
            "hit": 1.0 if n_relevant > 0 else 0.0,
            "ndcg_linear": _ndcg(top_k, grades, k, "linear"),
            "ndcg_exponential": _ndcg(top_k, grades, k, "exponential"),
            "precision": precision,
            "recall": recall,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0,
            "map": _average_precision(top_k, label_set, k),
            "mrr": _reciprocal_rank(top_k, label_set),
        }
    return {f"{metric}@{k}": values[metric] for metric in METRIC_NAMES for k, values in per_k.items()}


def mean_metrics(per_query: Sequence[dict[str, float]]) -> dict[str, float]:
    """The mean of each metric over queries (``{}`` when there are none).

    Every query must report the same metric names; a mismatch is an error rather than a silently
    shorter mean.
    """
    if not per_query:
        return {}
    keys = list(per_query[0])
    for index, metrics in enumerate(per_query):
        if set(metrics) != set(keys):
            raise ValueError(
                f"Query {index} reports metrics {sorted(metrics)}, but query 0 reports {sorted(keys)}; "
                "compute every query with the same ks."
            )
    return {key: float(np.mean([metrics[key] for metrics in per_query])) for key in keys}
