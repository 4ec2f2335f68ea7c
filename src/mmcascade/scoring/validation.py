"""Shape and budget checks shared by the scoring functions; errors name the argument."""

from __future__ import annotations

import torch


def check_matrix_pair(queries: torch.Tensor, documents: torch.Tensor) -> None:
    if queries.ndim != 2:
        raise ValueError(f"queries must have shape (n_queries, dim); got rank {queries.ndim} {tuple(queries.shape)}")
    if documents.ndim != 2:
        raise ValueError(
            f"documents must have shape (n_documents, dim); got rank {documents.ndim} {tuple(documents.shape)}"
        )
    if queries.shape[-1] != documents.shape[-1]:
        raise ValueError(
            f"queries and documents must share the vector dim; got {queries.shape[-1]} and {documents.shape[-1]}"
        )


def check_multivector(name: str, tensor: torch.Tensor, rank: int = 3) -> None:
    layout = {3: "(n, n_vectors, dim)", 4: "(n, n_per_query, n_vectors, dim)"}[rank]
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape {layout}; got {type(tensor).__name__}")
    if tensor.ndim != rank:
        raise ValueError(f"{name} must have shape {layout}; got rank {tensor.ndim} {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor; got {tensor.dtype}")


def resolve_budget(name: str, budget: int | None, available: int, what: str) -> int:
    """Return how many leading vectors to use; ``None`` means all of them."""
    if budget is None:
        return available
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise ValueError(f"{name} must be a positive int or None; got {budget!r}")
    if not 1 <= budget <= available:
        raise ValueError(f"{name}={budget} is out of range: valid values are 1..{available} (the number of {what})")
    return budget
