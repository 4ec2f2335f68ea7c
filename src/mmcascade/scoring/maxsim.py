"""Budgeted late interaction (MaxSim), chunked so memory stays bounded for any number of documents.

``score(q, x) = sum_i max_k <q_i, x_k>`` over the first ``query_budget`` query vectors and the first
``doc_budget`` (unmasked) document vectors: MetaEmbed's and ColPali's max-then-sum, not a mean.

How the scan is laid out (each choice measured with ``benchmarks/maxsim.py`` on a 2-core AVX512 CPU):

- Documents are the *rows* of the GEMM: ``(chunk * D, d) @ (d, n_q * Q)``. MKL runs this tall, skinny
  fp32 shape 1.2-1.6x faster than the short, wide ``queries @ docs.T``; bf16 (oneDNN) is about even.
- The max over a document's vectors is then a reduction over the middle dim of ``(chunk, D, n_q * Q)``.
  CPU ``amax`` vectorises that only for some widths, so the other widths fold the rows in halves with
  ``torch.maximum`` in place (see ``_prefer_halving``).
- A chunk's similarities are bounded by ``workspace_bytes``; 4 MiB keeps them in cache between the GEMM
  that writes them and the max that reads them (1-8 MiB measure alike; 32 MiB is 10-25% slower).
- Without autograd, the chunk buffers are allocated once and reused (``out=``) and padding is masked
  in place; with autograd the same math runs out of place so gradients flow to the arg-max vectors.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from mmcascade.scoring.validation import check_multivector, resolve_budget

# Bytes of intermediate similarities one chunk may hold. A few MiB keeps the block in cache between the
# GEMM that writes it and the max that reads it; benchmarks/maxsim.py measures the choice.
DEFAULT_WORKSPACE_BYTES = 4 * 2**20

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
    workspace_bytes = _check_workspace(workspace_bytes)
    queries, documents, padding = _prepare(queries, documents, query_budget, doc_budget, document_mask)
    n_q, n_d = queries.shape[0], documents.shape[0]
    if n_q == 0 or n_d == 0:
        return torch.zeros((n_q, n_d), dtype=torch.float32, device=queries.device)
    if _tracks_grad(queries, documents):
        rows = []
        for _, query_block in _query_blocks(queries, documents, workspace_bytes):
            chunks = [scores for _, scores in _iter_chunk_scores(query_block, documents, padding, workspace_bytes)]
            rows.append(torch.cat(chunks, dim=1))  # (n_q_block, n_d)
        return torch.cat(rows, dim=0)  # (n_q, n_d)
    result = torch.empty((n_q, n_d), dtype=torch.float32, device=queries.device)
    for q_start, query_block in _query_blocks(queries, documents, workspace_bytes):
        rows = result[q_start : q_start + query_block.shape[0]]  # (n_q_block, n_d), a view
        for start, scores in _iter_chunk_scores(query_block, documents, padding, workspace_bytes, reuse=True):
            rows[:, start : start + scores.shape[1]] = scores
    return result


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

    Scores are collected in a window of at most ``workspace_bytes`` per query block and merged into the
    running top-``k`` once per window, so peak memory is about twice ``workspace_bytes`` for any ``n_d``.

    Returns ``(scores, indices)``, each ``(n_q, min(k, n_d))``, best first. Not differentiable.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int; got {k!r}")
    workspace_bytes = _check_workspace(workspace_bytes)
    queries, documents, padding = _prepare(queries, documents, query_budget, doc_budget, document_mask)
    n_d = documents.shape[0]
    k = min(k, n_d)
    device = queries.device
    score_blocks, index_blocks = [], []
    with torch.no_grad():
        for _, query_block in _query_blocks(queries, documents, workspace_bytes):
            n_block = query_block.shape[0]
            chunk = _chunk_size(query_block, documents, workspace_bytes)
            # Scores are 4 bytes per (query, document): a window holds many chunks, so the top-k merge
            # (a few small ops) runs once per window instead of once per chunk.
            window_size = min(n_d, max(chunk, workspace_bytes // (4 * n_block) // chunk * chunk))
            window = torch.empty((n_block, window_size), dtype=torch.float32, device=device)
            best_scores = torch.empty((n_block, 0), dtype=torch.float32, device=device)
            best_indices = torch.empty((n_block, 0), dtype=torch.long, device=device)
            window_start = 0
            for start, scores in _iter_chunk_scores(query_block, documents, padding, workspace_bytes, reuse=True):
                offset = start - window_start
                window[:, offset : offset + scores.shape[1]] = scores
                filled = offset + scores.shape[1]
                if filled == window_size or start + scores.shape[1] == n_d:
                    best_scores, best_indices = _merge_topk(
                        best_scores, best_indices, window[:, :filled], window_start, k
                    )
                    window_start = start + scores.shape[1]
            score_blocks.append(best_scores)
            index_blocks.append(best_indices)
    if not score_blocks:
        empty = torch.zeros((0, k), device=device)
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


def _check_workspace(workspace_bytes: int) -> int:
    if isinstance(workspace_bytes, bool) or not isinstance(workspace_bytes, int) or workspace_bytes < 1:
        raise ValueError(f"workspace_bytes must be a positive int (bytes); got {workspace_bytes!r}")
    return workspace_bytes


def _tracks_grad(queries: torch.Tensor, documents: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and (queries.requires_grad or documents.requires_grad)


def _prepare(
    queries: torch.Tensor,
    documents: torch.Tensor,
    query_budget: int | None,
    doc_budget: int | None,
    document_mask: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Validate, apply budgets, and return ``(queries, documents, padding)``; ``padding`` is True where
    a document vector must never match (the inverted mask), or None when nothing is masked."""
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
    padding = None
    if document_mask is not None:
        if not isinstance(document_mask, torch.Tensor) or document_mask.shape != documents.shape[:2]:
            shape = tuple(document_mask.shape) if isinstance(document_mask, torch.Tensor) else type(document_mask)
            raise ValueError(
                f"document_mask must be a tensor of shape (n_documents, n_vectors) = {tuple(documents.shape[:2])}; "
                f"got {shape}"
            )
        padding = ~document_mask[:, :d_used].to(device=documents.device, dtype=torch.bool)  # (n_d, D')
        if not bool(padding.any()):
            padding = None
    queries = queries[:, :q_used].to(documents.dtype)  # (n_q, Q', d)
    documents = documents[:, :d_used]  # (n_d, D', d), a view
    return queries, documents, padding


def _query_blocks(
    queries: torch.Tensor, documents: torch.Tensor, workspace_bytes: int
) -> Iterator[tuple[int, torch.Tensor]]:
    """Split the queries so one document's similarities never exceed the workspace (bounded for any n_q)."""
    per_query_per_doc = queries.shape[1] * documents.shape[1] * documents.element_size()
    size = max(1, workspace_bytes // max(1, per_query_per_doc))
    for start in range(0, queries.shape[0], size):
        yield start, queries[start : start + size]


def _chunk_size(queries: torch.Tensor, documents: torch.Tensor, workspace_bytes: int) -> int:
    """Documents per chunk so that the ``(chunk * D, n_q * Q)`` similarity block fits the workspace."""
    per_document = queries.shape[0] * queries.shape[1] * documents.shape[1] * documents.element_size()
    return max(1, min(documents.shape[0], workspace_bytes // max(1, per_document)))


def _iter_chunk_scores(
    queries: torch.Tensor,
    documents: torch.Tensor,
    padding: torch.Tensor | None,
    workspace_bytes: int,
    reuse: bool = False,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(first_document_index, scores (n_q, chunk))`` over document chunks.

    With ``reuse`` the similarity and score buffers are allocated once and overwritten by the next
    chunk, so each yielded ``scores`` is only valid until the generator resumes (and has no autograd).
    """
    n_q, n_qv, dim = queries.shape
    n_d, n_dv, _ = documents.shape
    width = n_q * n_qv
    chunk = _chunk_size(queries, documents, workspace_bytes)
    queries_t = queries.reshape(width, dim).T  # (d, n_q*Q)
    if reuse:
        queries_t = queries_t.contiguous()
        sims_buffer = torch.empty((chunk * n_dv, width), dtype=documents.dtype, device=documents.device)
        halve_in_place = _prefer_halving(documents, width)
        max_buffer = (
            None if halve_in_place else torch.empty((chunk, width), dtype=documents.dtype, device=documents.device)
        )
        score_buffer = torch.empty((chunk, n_q), dtype=torch.float32, device=documents.device)
    for start in range(0, n_d, chunk):
        block = documents[start : start + chunk]  # (c, D, d)
        size = block.shape[0]
        flat_block = block.reshape(size * n_dv, dim)  # (c*D, d): a view unless doc_budget cut the vectors
        if reuse:
            sims = torch.matmul(flat_block, queries_t, out=sims_buffer[: size * n_dv])  # (c*D, n_q*Q)
            sims = sims.view(size, n_dv, width)  # (c, D, n_q*Q)
            if padding is not None:
                sims.masked_fill_(padding[start : start + size, :, None], float("-inf"))
            # (c, n_q*Q); the halving returns a strided view of sims
            best = _max_by_halving_(sims) if halve_in_place else torch.amax(sims, dim=1, out=max_buffer[:size])
            scores = torch.sum(best.view(size, n_q, n_qv), dim=2, dtype=torch.float32, out=score_buffer[:size])
        else:
            sims = (flat_block @ queries_t).view(size, n_dv, width)  # (c, D, n_q*Q)
            if padding is not None:
                sims = sims.masked_fill(padding[start : start + size, :, None], float("-inf"))
            scores = sims.amax(dim=1).view(size, n_q, n_qv).sum(dim=2, dtype=torch.float32)  # (c, n_q)
        yield start, scores.T  # (n_q, c)


def _merge_topk(
    best_scores: torch.Tensor, best_indices: torch.Tensor, window: torch.Tensor, window_start: int, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge a window of scores ``(n_q, w)`` whose first column is document ``window_start`` into the
    running top-``k`` ``(n_q, <=k)``."""
    top_scores, top_local = window.topk(min(k, window.shape[1]), dim=1)  # (n_q, <=k)
    merged_scores = torch.cat([best_scores, top_scores], dim=1)  # (n_q, <=2k)
    merged_indices = torch.cat([best_indices, top_local + window_start], dim=1)  # (n_q, <=2k)
    keep = merged_scores.topk(min(k, merged_scores.shape[1]), dim=1).indices  # (n_q, <=k)
    return merged_scores.gather(1, keep), merged_indices.gather(1, keep)


def _prefer_halving(documents: torch.Tensor, width: int) -> bool:
    """Whether to take the max over document vectors by in-place halving instead of ``amax(dim=1)``.

    On CPU, ``amax`` over the middle dim of ``(c, D, width)`` is only vectorised when a row of ``width``
    similarities spans a multiple of two 64-byte vectors; otherwise it runs scalar at 3-7 GB/s (measured,
    AVX512, torch 2.13), while the halving's contiguous ``torch.maximum`` runs at 15-40 GB/s.
    """
    return documents.device.type == "cpu" and (width * documents.element_size()) % 128 != 0


def _max_by_halving_(sims: torch.Tensor) -> torch.Tensor:
    """Max over dim 1 of ``sims (c, D, W)`` by folding the upper half onto the lower half in place,
    ``ceil(log2 D)`` times. Clobbers ``sims``; returns the ``(c, W)`` view of row 0."""
    remaining = sims.shape[1]
    while remaining > 1:
        kept = (remaining + 1) // 2  # rows 0..kept-1 survive; with an odd count the middle one passes as is
        folded = remaining - kept
        lower = sims[:, :folded]  # (c, folded, W)
        torch.maximum(lower, sims[:, kept:remaining], out=lower)
        remaining = kept
    return sims[:, 0]  # (c, W)
