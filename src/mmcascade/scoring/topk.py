"""Top-k selection over a score matrix."""

from __future__ import annotations

import torch


def topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Best ``k`` scores per row of ``scores (n_q, n_d)``, highest first.

    ``k`` larger than ``n_d`` returns all ``n_d`` columns. Returns ``(values, indices)``, each ``(n_q, k')``.
    Tied scores come back in an unspecified order; evaluation applies its own tie policy.
    """
    if scores.ndim != 2:
        raise ValueError(f"scores must have shape (n_queries, n_documents); got {tuple(scores.shape)}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int; got {k!r}")
    k = min(k, scores.shape[1])
    result = scores.topk(k, dim=1, largest=True, sorted=True)
    return result.values, result.indices
