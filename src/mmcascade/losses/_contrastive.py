"""The contrastive core shared by the InfoNCE and Matryoshka losses: scores -> logits -> cross-entropy.

Private: the public losses validate their inputs, choose the similarity and gather the positives;
this module only turns query-vs-positive and query-vs-hard-negative scores into MetaEmbed's loss
(reference-semantics.md M9): ``CE(cat([pos, neg]) / T, target = offset + b)``, mean over local queries.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

Similarity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``similarity(queries (n_q, ...), documents (n_d, ...)) -> (n_q, n_d)`` scores."""

PairedSimilarity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``paired(queries (B, ...), documents (B, K, ...)) -> (B, K)``: each query against its own K documents."""

HardNegativeMode = Literal["own", "all"]
HARD_NEGATIVE_MODES: tuple[str, ...] = ("own", "all")

ScoreNormalization = Literal["sum", "mean"]
SCORE_NORMALIZATIONS: tuple[str, ...] = ("sum", "mean")


def check_contrastive_inputs(
    query: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor | None,
    *,
    multi_vector_only: bool = False,
) -> bool:
    """Validate the loss inputs; return True for multi-vector inputs, False for single-vector ones.

    Single-vector: query ``(B, d)``, positive ``(B, d)``, negatives ``(B, K, d)``.
    Multi-vector: query ``(B, Q, d)``, positive ``(B, D, d)``, negatives ``(B, K, D', d)``.
    """
    for name, tensor in (("query", query), ("positive", positive), ("negatives", negatives)):
        if tensor is None:
            continue
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor; got {type(tensor).__name__}")
        if not tensor.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor; got {tensor.dtype}")
    valid_ranks = (3,) if multi_vector_only else (2, 3)
    layouts = (
        "query (B, Q, d)" if multi_vector_only else "query (B, d) for single vectors or (B, Q, d) for multi-vectors"
    )
    if query.ndim not in valid_ranks:
        raise ValueError(f"query must have shape {layouts}; got rank {query.ndim} {tuple(query.shape)}")
    multi_vector = query.ndim == 3
    positive_layout = "(B, D, d)" if multi_vector else "(B, d)"
    negatives_layout = "(B, K, D, d)" if multi_vector else "(B, K, d)"
    if positive.ndim != query.ndim:
        raise ValueError(
            f"positive must have shape {positive_layout} to match query {tuple(query.shape)}; "
            f"got rank {positive.ndim} {tuple(positive.shape)}"
        )
    if negatives is not None and negatives.ndim != query.ndim + 1:
        raise ValueError(
            f"negatives must have shape {negatives_layout} to match query {tuple(query.shape)}; "
            f"got rank {negatives.ndim} {tuple(negatives.shape)}"
        )
    batch = query.shape[0]
    if batch == 0:
        raise ValueError("query must hold at least one query (B >= 1); got an empty batch")
    named = [("positive", positive)] + ([] if negatives is None else [("negatives", negatives)])
    for name, tensor in named:
        if tensor.shape[0] != batch:
            raise ValueError(
                f"{name} must hold one entry per query: got {tensor.shape[0]} for B={batch} queries "
                f"(query {tuple(query.shape)}, {name} {tuple(tensor.shape)})"
            )
        if tensor.shape[-1] != query.shape[-1]:
            raise ValueError(
                f"query and {name} must share the vector dim; got {query.shape[-1]} and {tensor.shape[-1]} "
                f"(query {tuple(query.shape)}, {name} {tuple(tensor.shape)})"
            )
    if multi_vector:
        vector_counts = [("query", query.shape[1]), ("positive", positive.shape[1])]
        if negatives is not None:
            vector_counts.append(("negatives", negatives.shape[2]))
        for name, count in vector_counts:
            if count == 0:
                raise ValueError(f"{name} must hold at least one vector per item; got 0 vectors")
    return multi_vector


def check_temperature(temperature: float) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise ValueError(f"temperature must be a positive finite number; got {temperature!r}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive finite number (e.g. 0.05); got {temperature!r}")
    return float(temperature)


def check_score_normalization(score_normalization: str) -> ScoreNormalization:
    if not isinstance(score_normalization, str) or score_normalization not in SCORE_NORMALIZATIONS:
        raise ValueError(
            f"score_normalization must be one of {SCORE_NORMALIZATIONS} ('sum': MaxSim summed over the query "
            "vectors, as MetaEmbed; 'mean': that sum divided by the number of query vectors, as colpali-engine's "
            f"normalize_scores); got {score_normalization!r}"
        )
    return score_normalization  # type: ignore[return-value]


def check_hard_negative_mode(hard_negatives: str) -> HardNegativeMode:
    if hard_negatives not in HARD_NEGATIVE_MODES:
        raise ValueError(
            f"hard_negatives must be one of {HARD_NEGATIVE_MODES} ('own': each query sees only its own hard "
            f"negatives, as MetaEmbed; 'all': every query sees every local hard negative); got {hard_negatives!r}"
        )
    return hard_negatives  # type: ignore[return-value]


def check_score_matrix(scores: torch.Tensor, n_queries: int, n_documents: int, what: str) -> torch.Tensor:
    """Check a custom similarity's output shape, so a wrong callable fails here and not inside the CE."""
    expected = (n_queries, n_documents)
    if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != expected:
        got = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ValueError(f"similarity must return (n_queries, n_documents) = {expected} scores for {what}; got {got}")
    return scores


def hard_negative_scores(
    query: torch.Tensor,
    negatives: torch.Tensor,
    mode: HardNegativeMode,
    similarity: Similarity,
    paired_similarity: PairedSimilarity,
) -> torch.Tensor:
    """Scores of the local queries against the local hard negatives.

    Args:
        query: ``(B, ...)`` local queries.
        negatives: ``(B, K, ...)`` K hard negatives per query.
        mode: ``"own"`` scores each query against its own K negatives only (``(B, K)``, MetaEmbed M9);
            ``"all"`` scores every query against all ``B * K`` negatives (``(B, B * K)``).
        similarity: all-pairs similarity, used by ``"all"``.
        paired_similarity: per-query similarity against its own group, used by ``"own"``.
    """
    batch, per_query = negatives.shape[0], negatives.shape[1]
    if mode == "own":
        return paired_similarity(query, negatives)  # (B, K)
    flat = negatives.reshape(batch * per_query, *negatives.shape[2:])  # (B*K, ...)
    return check_score_matrix(similarity(query, flat), query.shape[0], batch * per_query, "hard negatives")


def info_nce(
    query: torch.Tensor,
    positives: torch.Tensor,
    offset: int,
    negatives: torch.Tensor | None,
    *,
    similarity: Similarity,
    paired_similarity: PairedSimilarity,
    hard_negatives: HardNegativeMode,
    temperature: float,
    score_divisor: int = 1,
) -> torch.Tensor:
    """The InfoNCE loss of local queries against already-gathered positives and local hard negatives.

    Args:
        query: ``(B, ...)`` local queries.
        positives: ``(N, ...)`` positives of every rank (N = B * world_size), rank ``r``'s at ``r * B``.
        offset: index of this rank's first positive in ``positives``.
        negatives: ``(B, K, ...)`` local hard negatives, or None.
        similarity: all-pairs similarity ``(n_q, ...) x (n_d, ...) -> (n_q, n_d)``.
        paired_similarity: ``(B, ...) x (B, K, ...) -> (B, K)``.
        hard_negatives: ``"own"`` or ``"all"``, see :func:`hard_negative_scores`.
        temperature: the softmax temperature.
        score_divisor: every score is divided by it before the temperature (the number of query vectors
            for a mean MaxSim); 1 leaves the scores untouched.
    """
    batch = query.shape[0]
    positive_scores = check_score_matrix(similarity(query, positives), batch, positives.shape[0], "positives")
    negative_scores = None
    if negatives is not None:
        negative_scores = hard_negative_scores(query, negatives, hard_negatives, similarity, paired_similarity)
    if score_divisor != 1:  # skipped for 1, so the summed scores stay bit-for-bit MetaEmbed's
        positive_scores = positive_scores / score_divisor  # (B, N)
        negative_scores = None if negative_scores is None else negative_scores / score_divisor  # (B, M)
    return contrastive_cross_entropy(positive_scores, negative_scores, temperature, offset)


def contrastive_cross_entropy(
    positive_scores: torch.Tensor,
    negative_scores: torch.Tensor | None,
    temperature: float,
    offset: int,
) -> torch.Tensor:
    """InfoNCE from scores: cross-entropy of ``cat([positive, negative]) / T`` with target ``offset + b``.

    Args:
        positive_scores: ``(B, N)`` each local query against every (gathered) positive; the positive
            of local query ``b`` is column ``offset + b``.
        negative_scores: ``(B, M)`` against hard negatives, or None.
        temperature: the softmax temperature (> 0).
        offset: index of this rank's first positive among the gathered positives.

    Returns:
        The mean over the ``B`` local queries, a scalar.
    """
    columns = [positive_scores] if negative_scores is None else [positive_scores, negative_scores]
    logits = torch.cat(columns, dim=1)  # (B, N + M)
    # Half-precision logits of sums divided by a small T lose too much: compute the CE in at least fp32.
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature
    targets = torch.arange(positive_scores.shape[0], device=logits.device) + offset  # (B,)
    return F.cross_entropy(logits, targets)
