"""Single-vector similarities."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmcascade.scoring.validation import check_matrix_pair


def dot(queries: torch.Tensor, documents: torch.Tensor) -> torch.Tensor:
    """Dot products of every query with every document: ``(n_q, d) x (n_d, d) -> (n_q, n_d)``."""
    check_matrix_pair(queries, documents)
    return queries @ documents.to(queries.dtype).T  # (n_q, n_d)


def cosine(queries: torch.Tensor, documents: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Cosine similarity of every query with every document: ``(n_q, d) x (n_d, d) -> (n_q, n_d)``."""
    check_matrix_pair(queries, documents)
    queries = F.normalize(queries, dim=-1, eps=eps)
    documents = F.normalize(documents.to(queries.dtype), dim=-1, eps=eps)
    return queries @ documents.T  # (n_q, n_d)
