"""Budgeted late interaction (MaxSim), chunked so memory stays bounded for any number of documents.

``score(q, x) = sum_i max_k <q_i, x_k>`` over the first ``query_budget`` query vectors and the first
``doc_budget`` (unmasked) document vectors: MetaEmbed's and ColPali's max-then-sum, not a mean.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from mmcascade.scoring.validation import check_multivector, resolve_budget

# Bytes of intermediate similarities one chunk may hold. 32 MiB keeps a chunk in the last-level
# cache neighbourhood on CPUs and is far below any GPU's memory; benchmarks/maxsim.py measures it.
DEFAULT_WORKSPACE_BYTES = 32 * 2**20

_COMPUTE_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def maxsim(
    queries: torch.Tensor,
    documents: torch.Tensor,
    *,
    query_budget: int | None = None,
    doc_budget: int | None = None,
    document_mask: torch.Tensor | None = None,
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
) -> torch.Tensor:
    """MaxSim scores of every query against every document.

    Args:
        queries: ``(n_q, Q, d)`` query vectors (normally L2-normalised).
        documents: ``(n_d, D, d)`` document vectors; their dtype (fp32, bf16, fp16) is the compute dtype.
        query_budget: use only the first ``query_budget`` query vectors (Matryoshka prefix); None = all.
        doc_budget: use only the first ``doc_budget`` document vectors; None = all.
        document_mask: optional ``(n_d, D)`` bool, False marks padding vectors that must never match.
            A document with no unmasked vector within budget scores ``-inf``.
        workspace_bytes: bound on the similarity block held at once (documents are scanned in chunks).

    Returns:
        ``(n_q, n_d)`` float32 scores. Differentiable (gradients flow to the arg-max vectors).
    """
    queries, documents, document_mask = _prepare(queries, documents, query_budget, doc_budget, document_mask)
    n_q, n_d = queries.shape[0], documents.shape[0]
    if n_q == 0 or n_d == 0:
        return torch.zeros((n_q, n_d), dtype=torch.float32, device=queries.device)
    rows = []
    for query_block in _query_blocks(queries, documents, workspace_bytes):
        chunks = [scores for _, scores in _iter_chunk_scores(query_block, documents, document_mask, workspace_bytes)]
        rows.append(torch.cat(chunks, dim=1))  # (n_q_block, n_d)
    return torch.cat(rows, dim=0)  # (n_q, n_d)


def maxsim_topk(
    queries: torch.Tensor,
    documents: torch.Tensor,
    k: int,
    *,
    query_budget: int | None = None,
    doc_budget: int | None = None,
    document_mask: torch.Tensor | None = None,
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` documents per query by MaxSim without ever holding the ``(n_q, n_d)`` score matrix.

    Returns ``(scores, indices)``, each ``(n_q, min(k, n_d))``, best first.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int; got {k!r}")
    queries, documents, document_mask = _prepare(queries, documents, query_budget, doc_budget, document_mask)
    k = min(k, documents.shape[0])
    score_blocks, index_blocks = [], []
    with torch.no_grad():
        for query_block in _query_blocks(queries, documents, workspace_bytes):
            block_scores = torch.full((query_block.shape[0], 0), float("-inf"), device=queries.device)
            block_indices = torch.zeros((query_block.shape[0], 0), dtype=torch.long, device=queries.device)
            for start, scores in _iter_chunk_scores(query_block, documents, document_mask, workspace_bytes):
                top_scores, top_local = scores.topk(min(k, scores.shape[1]), dim=1)  # (n_q_block, <=k)
                merged_scores = torch.cat([block_scores, top_scores], dim=1)  # (n_q_block, <=2k)
                merged_indices = torch.cat([block_indices, top_local + start], dim=1)
                keep = merged_scores.topk(min(k, merged_scores.shape[1]), dim=1).indices
                block_scores = merged_scores.gather(1, keep)
                block_indices = merged_indices.gather(1, keep)
            score_blocks.append(block_scores)
            index_blocks.append(block_indices)
    if not score_blocks:
        empty = torch.zeros((0, k), device=queries.device)
        return empty, empty.long()
    return torch.cat(score_blocks, dim=0), torch.cat(index_blocks, dim=0)


def maxsim_paired(
    queries: torch.Tensor,
    documents: torch.Tensor,
    *,
    query_budget: int | None = None,
    doc_budget: int | None = None,
    document_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """MaxSim of each query against its own group of documents (e.g. its hard negatives).

    Args:
        queries: ``(B, Q, d)``.
        documents: ``(B, K, D, d)``: K documents per query.
        document_mask: optional ``(B, K, D)`` bool.

    Returns:
        ``(B, K)`` float32 scores, differentiable.
    """
    check_multivector("queries", queries)
    check_multivector("documents", documents, rank=4)
    if documents.shape[0] != queries.shape[0]:
        raise ValueError(
            f"documents must hold one group per query: got {documents.shape[0]} groups for {queries.shape[0]} queries"
        )
    if documents.shape[-1] != queries.shape[-1]:
        raise ValueError(
            f"queries and documents must share the vector dim; got {queries.shape[-1]} and {documents.shape[-1]}"
        )
    q_used = resolve_budget("query_budget", query_budget, queries.shape[1], "query vectors")
    d_used = resolve_budget("doc_budget", doc_budget, documents.shape[2], "document vectors")
    if document_mask is not None and document_mask.shape != documents.shape[:3]:
        raise ValueError(
            f"document_mask must have shape (B, K, D) = {tuple(documents.shape[:3])}; got {tuple(document_mask.shape)}"
        )
    queries = queries[:, :q_used].to(documents.dtype)  # (B, Q', d)
    documents = documents[:, :, :d_used]  # (B, K, D', d)
    sims = torch.einsum("bqd,bkpd->bkqp", queries, documents)  # (B, K, Q, D)
    if document_mask is not None:
        mask = document_mask[:, :, :d_used].to(torch.bool)
        sims = sims.masked_fill(~mask[:, :, None, :], float("-inf"))
    return sims.amax(dim=-1).sum(dim=-1, dtype=torch.float32)  # (B, K)


def _prepare(
    queries: torch.Tensor,
    documents: torch.Tensor,
    query_budget: int | None,
    doc_budget: int | None,
    document_mask: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    check_multivector("queries", queries)
    check_multivector("documents", documents)
    if queries.shape[-1] != documents.shape[-1]:
        raise ValueError(
            f"queries and documents must share the vector dim; got queries {tuple(queries.shape)} "
            f"and documents {tuple(documents.shape)}"
        )
    if documents.dtype not in _COMPUTE_DTYPES:
        raise ValueError(f"documents dtype {documents.dtype} is not supported; use one of {_COMPUTE_DTYPES}")
    q_used = resolve_budget("query_budget", query_budget, queries.shape[1], "query vectors")
    d_used = resolve_budget("doc_budget", doc_budget, documents.shape[1], "document vectors")
    if document_mask is not None:
        if document_mask.shape != documents.shape[:2]:
            raise ValueError(
                f"document_mask must have shape (n_documents, n_vectors) = {tuple(documents.shape[:2])}; "
                f"got {tuple(document_mask.shape)}"
            )
        document_mask = document_mask[:, :d_used].to(torch.bool)
        if bool(document_mask.all()):
            document_mask = None
    queries = queries[:, :q_used].to(documents.dtype)  # (n_q, Q', d)
    documents = documents[:, :d_used]  # (n_d, D', d), a view
    return queries, documents, document_mask


def _query_block_size(queries: torch.Tensor, documents: torch.Tensor, workspace_bytes: int) -> int:
    per_query_per_doc = queries.shape[1] * documents.shape[1] * documents.element_size()
    return max(1, workspace_bytes // max(1, per_query_per_doc))


def _query_blocks(queries: torch.Tensor, documents: torch.Tensor, workspace_bytes: int) -> Iterator[torch.Tensor]:
    """Split the queries so one document's similarities never exceed the workspace (bounded for any n_q)."""
    size = _query_block_size(queries, documents, workspace_bytes)
    for start in range(0, queries.shape[0], size):
        yield queries[start : start + size]


def _iter_chunk_scores(
    queries: torch.Tensor,
    documents: torch.Tensor,
    document_mask: torch.Tensor | None,
    workspace_bytes: int,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(first_document_index, scores (n_q, chunk))`` over document chunks."""
    n_q, n_qv, dim = queries.shape
    n_d, n_dv, _ = documents.shape
    per_document = n_q * n_qv * n_dv * documents.element_size()
    chunk = max(1, workspace_bytes // max(1, per_document))
    flat_queries = queries.reshape(n_q * n_qv, dim)  # (n_q*Q, d)
    for start in range(0, n_d, chunk):
        block = documents[start : start + chunk]  # (c, D, d)
        size = block.shape[0]
        sims = flat_queries @ block.reshape(size * n_dv, dim).T  # (n_q*Q, c*D)
        sims = sims.view(n_q, n_qv, size, n_dv)  # (n_q, Q, c, D)
        if document_mask is not None:
            block_mask = document_mask[start : start + chunk]  # (c, D)
            sims = sims.masked_fill(~block_mask.view(1, 1, size, n_dv), float("-inf"))
        yield start, sims.amax(dim=3).sum(dim=1, dtype=torch.float32)  # (n_q, c)
