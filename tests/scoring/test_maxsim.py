"""MaxSim against hand-computed values and a brute-force Python loop (the independent reference)."""

from __future__ import annotations

import importlib
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import mmcascade
from mmcascade.scoring import maxsim, maxsim_paired, maxsim_topk

kernel = importlib.import_module("mmcascade.scoring.maxsim")  # the module, shadowed by the function on the package

# Two queries of 2 vectors and two documents of 3 vectors, all in 2-D.
HAND_QUERIES = [
    [[1.0, 0.0], [0.0, 1.0]],  # query 0: q0, q1
    [[1.0, 1.0], [-1.0, 0.0]],  # query 1: q0, q1
]
HAND_DOCUMENTS = [
    [[0.5, 0.5], [1.0, -1.0], [-2.0, 0.25]],  # document 0: x0, x1, x2
    [[0.0, 2.0], [3.0, 0.0], [1.0, 1.0]],  # document 1
]
# Dot products <q_i, x_k> by hand, then the sum over i of the max over k:
#   query 0 / doc 0: q0 -> 0.5, 1, -2 (max 1);     q1 -> 0.5, -1, 0.25 (max 0.5)   => 1.5
#   query 0 / doc 1: q0 -> 0, 3, 1 (max 3);        q1 -> 2, 0, 1 (max 2)           => 5
#   query 1 / doc 0: q0 -> 1, 0, -1.75 (max 1);    q1 -> -0.5, -1, 2 (max 2)       => 3
#   query 1 / doc 1: q0 -> 2, 3, 2 (max 3);        q1 -> 0, -3, -1 (max 0)         => 3
HAND_SCORES = [[1.5, 5.0], [3.0, 3.0]]
# query_budget=1 keeps q0 only: [[1, 3], [1, 3]].
# doc_budget=2 keeps x0, x1: q1 of query 1 loses its 2 on doc 0 (-0.5, -1 -> -0.5) => [[1.5, 5], [0.5, 3]].
# document_mask hiding x1 of doc 0: query 0 q0 -> 0.5, -2 (max 0.5), q1 -> 0.5, 0.25 (max 0.5) => 1.0;
#   query 1 q0 -> 1, -1.75 (max 1), q1 -> -0.5, 2 (max 2) => 3 (x1 never was its max).


def hand_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(HAND_QUERIES), torch.tensor(HAND_DOCUMENTS)


def loop_maxsim(queries, documents, query_budget=None, doc_budget=None, document_mask=None) -> list[list[float]]:
    """Brute force over Python floats: sum over query vectors of the max over allowed document vectors."""
    queries, documents = queries.double().tolist(), documents.double().tolist()
    mask = None if document_mask is None else document_mask.tolist()
    scores = []
    for query in queries:
        row = []
        for d_index, document in enumerate(documents):
            total = 0.0
            for q_vector in query[: query_budget or len(query)]:
                best = -math.inf
                for k_index, x_vector in enumerate(document[: doc_budget or len(document)]):
                    if mask is not None and not mask[d_index][k_index]:
                        continue
                    best = max(best, sum(a * b for a, b in zip(q_vector, x_vector, strict=True)))
                total += best
            row.append(total)
        scores.append(row)
    return scores


def autograd_loop_maxsim(queries, documents, query_budget=None, doc_budget=None, document_mask=None):
    """The same loop with torch scalars, so autograd gives the reference gradient."""
    rows = []
    for query in queries[:, :query_budget]:
        row = []
        for d_index, document in enumerate(documents[:, :doc_budget]):
            total = torch.zeros((), dtype=torch.float64)
            for q_vector in query:
                allowed = [
                    q_vector.double() @ x_vector.double()
                    for k_index, x_vector in enumerate(document)
                    if document_mask is None or document_mask[d_index, k_index]
                ]
                total = total + torch.stack(allowed).max()
            row.append(total)
        rows.append(torch.stack(row))
    return torch.stack(rows).float()


def random_inputs(n_q=3, q_vectors=5, n_d=7, d_vectors=6, dim=4, seed=0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    queries = torch.randn(n_q, q_vectors, dim, generator=generator)  # (n_q, Q, d)
    documents = torch.randn(n_d, d_vectors, dim, generator=generator).to(dtype)  # (n_d, D, d)
    return queries, documents


def random_mask(n_d, d_vectors, seed=1, keep=0.6):
    return torch.rand(n_d, d_vectors, generator=torch.Generator().manual_seed(seed)) < keep


def expect(scores: list[list[float]]) -> torch.Tensor:
    return torch.tensor(scores, dtype=torch.float32)


# --- hand-computed ---


def test_hand_computed_scores():
    queries, documents = hand_inputs()
    scores = maxsim(queries, documents)
    assert scores.dtype == torch.float32
    torch.testing.assert_close(scores, expect(HAND_SCORES))


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"query_budget": 1}, [[1.0, 3.0], [1.0, 3.0]]),
        ({"doc_budget": 2}, [[1.5, 5.0], [0.5, 3.0]]),
        ({"document_mask": torch.tensor([[True, False, True], [True, True, True]])}, [[1.0, 5.0], [3.0, 3.0]]),
    ],
    ids=["query_budget", "doc_budget", "mask"],
)
def test_hand_computed_budgets_and_mask(kwargs, expected):
    queries, documents = hand_inputs()
    torch.testing.assert_close(maxsim(queries, documents, **kwargs), expect(expected))


def test_hand_computed_topk_and_paired():
    queries, documents = hand_inputs()
    scores, indices = maxsim_topk(queries, documents, 1)
    torch.testing.assert_close(scores, expect([[5.0], [3.0]]))
    assert indices[0].tolist() == [1]  # query 1 ties (3 and 3): either index is a correct answer
    paired = maxsim_paired(queries, documents[None].expand(2, -1, -1, -1))  # each query against both docs
    torch.testing.assert_close(paired, expect(HAND_SCORES))


# --- brute-force loop on random tensors ---

BUDGETS = [(None, None), (2, None), (None, 3), (1, 1), (5, 6)]


@pytest.mark.parametrize(("query_budget", "doc_budget"), BUDGETS)
@pytest.mark.parametrize("masked", [False, True])
def test_maxsim_matches_loop(query_budget, doc_budget, masked):
    queries, documents = random_inputs()
    mask = random_mask(7, 6) if masked else None
    expected = loop_maxsim(queries, documents, query_budget, doc_budget, mask)
    scores = maxsim(queries, documents, query_budget=query_budget, doc_budget=doc_budget, document_mask=mask)
    assert scores.shape == (3, 7)
    torch.testing.assert_close(scores, expect(expected), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("query_budget", "doc_budget"), BUDGETS)
def test_maxsim_topk_matches_sorted_loop(query_budget, doc_budget):
    queries, documents = random_inputs(n_d=40, seed=3)
    mask = random_mask(40, 6, seed=4)
    expected = torch.tensor(loop_maxsim(queries, documents, query_budget, doc_budget, mask), dtype=torch.float64)
    order = expected.argsort(dim=1, descending=True)[:, :5]  # random floats: no ties
    scores, indices = maxsim_topk(
        queries, documents, 5, query_budget=query_budget, doc_budget=doc_budget, document_mask=mask
    )
    assert indices.tolist() == order.tolist()
    torch.testing.assert_close(scores.double(), expected.gather(1, order), rtol=1e-5, atol=1e-5)


def test_maxsim_topk_clips_k_to_the_number_of_documents():
    queries, documents = random_inputs(n_d=4)
    scores, indices = maxsim_topk(queries, documents, 100)
    assert scores.shape == indices.shape == (3, 4)
    assert sorted(indices[0].tolist()) == [0, 1, 2, 3]
    assert (scores[:, :-1] >= scores[:, 1:]).all()  # best first


@pytest.mark.parametrize(("query_budget", "doc_budget"), BUDGETS)
def test_maxsim_paired_matches_loop(query_budget, doc_budget):
    generator = torch.Generator().manual_seed(5)
    queries = torch.randn(3, 5, 4, generator=generator)  # (B, Q, d)
    documents = torch.randn(3, 2, 6, 4, generator=generator)  # (B, K, D, d)
    mask = torch.rand(3, 2, 6, generator=generator) < 0.6
    mask[:, :, 0] = True  # keep every document scorable
    scores = maxsim_paired(queries, documents, query_budget=query_budget, doc_budget=doc_budget, document_mask=mask)
    expected = [loop_maxsim(queries[b : b + 1], documents[b], query_budget, doc_budget, mask[b])[0] for b in range(3)]
    assert scores.shape == (3, 2)
    torch.testing.assert_close(scores, expect(expected), rtol=1e-5, atol=1e-5)


# --- masks ---


def test_masked_vector_never_wins_even_when_it_holds_the_max():
    queries, documents = random_inputs(n_d=3, seed=6)
    documents[1, 2] = 100 * queries[0, 0]  # would dominate query 0's first vector
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[1, 2] = False
    scores = maxsim(queries, documents, document_mask=mask)
    torch.testing.assert_close(scores, expect(loop_maxsim(queries, documents, document_mask=mask)))
    assert scores[0, 1] < maxsim(queries, documents)[0, 1] - 100  # unmasked, the planted vector does win


def test_fully_masked_document_scores_minus_inf_and_ranks_last():
    queries, documents = random_inputs(n_d=5, seed=7)
    mask = torch.ones(5, 6, dtype=torch.bool)
    mask[2] = False  # no vector at all
    mask[4, :3] = False  # only vectors beyond doc_budget=3
    for scores in (
        maxsim(queries, documents, document_mask=mask, doc_budget=3),
        maxsim(queries, documents, document_mask=mask, doc_budget=3, workspace_bytes=64),
    ):
        assert scores[:, 2].eq(-math.inf).all() and scores[:, 4].eq(-math.inf).all()
        assert torch.isfinite(scores[:, [0, 1, 3]]).all()
    top_scores, top_indices = maxsim_topk(queries, documents, 5, document_mask=mask, doc_budget=3)
    assert set(top_indices[:, 3:].flatten().tolist()) == {2, 4}
    assert top_scores[:, 3:].eq(-math.inf).all()
    groups = documents[None, [1, 2]].expand(3, -1, -1, -1)  # (B, K=2, D, d): documents 1 and 2 for every query
    group_mask = mask[None, [1, 2]].expand(3, -1, -1)  # (B, K, D)
    paired = maxsim_paired(queries, groups, document_mask=group_mask)
    assert paired[:, 1].eq(-math.inf).all()
    torch.testing.assert_close(
        paired[:, 0], expect(loop_maxsim(queries, documents[1:2], document_mask=mask[1:2]))[:, 0]
    )


# --- chunking, query blocking and both max kernels give the unchunked result ---


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize(("q_vectors", "d_vectors"), [(5, 7), (8, 4), (3, 1), (7, 33)])
def test_tiny_workspace_chunks_documents_and_blocks_queries(masked, q_vectors, d_vectors):
    queries, documents = random_inputs(n_q=5, q_vectors=q_vectors, n_d=23, d_vectors=d_vectors, dim=8, seed=8)
    mask = random_mask(23, d_vectors, seed=9, keep=0.7) if masked else None
    workspace = 2 * q_vectors * d_vectors * 4  # two queries against one document
    assert kernel._chunk_size(queries[:2], documents, workspace) == 1  # one document per chunk...
    assert len(list(kernel._query_blocks(queries, documents, workspace))) == 3  # ...and queries in blocks of 2
    expected = maxsim(queries, documents, document_mask=mask)
    torch.testing.assert_close(
        expected, expect(loop_maxsim(queries, documents, document_mask=mask)), rtol=1e-5, atol=1e-5
    )
    torch.testing.assert_close(maxsim(queries, documents, document_mask=mask, workspace_bytes=workspace), expected)
    top_scores, top_indices = maxsim_topk(queries, documents, 6, document_mask=mask, workspace_bytes=workspace)
    full_scores, full_indices = maxsim_topk(queries, documents, 6, document_mask=mask)
    assert top_indices.tolist() == full_indices.tolist()
    torch.testing.assert_close(top_scores, full_scores)
    torch.testing.assert_close(top_scores, expected.topk(6, dim=1).values)


@pytest.mark.parametrize(("q_vectors", "d_vectors"), [(1, 1), (2, 3)])
def test_topk_merges_many_score_windows(q_vectors, d_vectors):
    # workspace 48 bytes: 2 queries x Q x D x 4 bytes per document -> chunks of 6 // (Q * D) documents, and a
    # score window of 48 // (4 * 2) = 6 documents (rounded down to whole chunks): 50 documents need many windows.
    queries, documents = random_inputs(n_q=2, q_vectors=q_vectors, n_d=50, d_vectors=d_vectors, dim=4, seed=18)
    mask = random_mask(50, d_vectors, seed=19, keep=0.8)
    expected = torch.tensor(loop_maxsim(queries, documents, document_mask=mask), dtype=torch.float64)
    for k in (1, 4, 7, 50):
        scores, indices = maxsim_topk(queries, documents, k, document_mask=mask, workspace_bytes=48)
        finite = expected.isfinite().sum(dim=1).min().item()
        order = expected.argsort(dim=1, descending=True, stable=True)[:, : min(k, finite)]
        assert indices[:, : order.shape[1]].tolist() == order.tolist()
        torch.testing.assert_close(
            scores.double(), expected.sort(dim=1, descending=True).values[:, :k], rtol=1e-5, atol=1e-5
        )


@pytest.mark.parametrize(("width", "halving"), [(16, True), (20, True), (32, False), (64, False)])
def test_both_max_kernels_match_the_loop(width, halving):
    # The max over document vectors runs as in-place halving or as amax depending on the row width in bytes.
    queries, documents = random_inputs(n_q=width // 4, q_vectors=4, n_d=9, d_vectors=13, dim=8, seed=10)
    assert kernel._prefer_halving(documents, width) is halving
    expected = expect(loop_maxsim(queries, documents))
    torch.testing.assert_close(maxsim(queries, documents), expected, rtol=1e-5, atol=1e-5)


def test_halving_folds_any_row_count():
    for rows in (1, 2, 3, 5, 8, 1030):
        sims = torch.randn(3, rows, 4)
        expected = sims.amax(dim=1)
        assert torch.equal(kernel._max_by_halving_(sims.clone()), expected)


# --- dtypes ---


@pytest.mark.parametrize(
    ("dtype", "atol"), [(torch.bfloat16, 8 * 2**-7), (torch.float16, 8 * 2**-10), (torch.float64, 1e-5)]
)
def test_other_document_dtypes_stay_close_to_fp32(dtype, atol):
    queries, documents = random_inputs(n_q=4, q_vectors=8, n_d=50, d_vectors=16, dim=32, seed=11)
    queries = torch.nn.functional.normalize(queries, dim=-1)
    documents = torch.nn.functional.normalize(documents, dim=-1)
    reference = maxsim(queries, documents)
    scores = maxsim(queries, documents.to(dtype))
    assert scores.dtype == torch.float32
    # Each |similarity| <= 1 is rounded to 8 (bf16) or 11 (fp16) significant bits; 8 of them are summed.
    torch.testing.assert_close(scores, reference, rtol=0, atol=atol)
    top_scores, _ = maxsim_topk(queries, documents.to(dtype), 3)
    assert top_scores.dtype == torch.float32


# --- autograd (the training path) ---


@pytest.mark.parametrize("workspace_bytes", [kernel.DEFAULT_WORKSPACE_BYTES, 64])
def test_gradients_match_autograd_of_the_loop(workspace_bytes):
    queries, documents = random_inputs(n_q=2, q_vectors=3, n_d=4, d_vectors=5, dim=4, seed=12)
    mask = random_mask(4, 5, seed=13, keep=0.7)
    mask[:, 0] = True
    weights = torch.randn(2, 4, generator=torch.Generator().manual_seed(14))  # a loss that weighs every score

    q1, d1 = queries.clone().requires_grad_(), documents.clone().requires_grad_()
    scores = maxsim(q1, d1, query_budget=2, doc_budget=4, document_mask=mask, workspace_bytes=workspace_bytes)
    (scores * weights).sum().backward()

    q2, d2 = queries.clone().requires_grad_(), documents.clone().requires_grad_()
    reference = autograd_loop_maxsim(q2, d2, query_budget=2, doc_budget=4, document_mask=mask)
    (reference * weights).sum().backward()

    torch.testing.assert_close(scores.detach(), reference.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(q1.grad, q2.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(d1.grad, d2.grad, rtol=1e-5, atol=1e-5)
    assert d1.grad[:, 4:].eq(0).all()  # beyond doc_budget
    assert q1.grad[:, 2:].eq(0).all()  # beyond query_budget


def test_gradients_through_maxsim_paired():
    generator = torch.Generator().manual_seed(15)
    queries = torch.randn(2, 3, 4, generator=generator, requires_grad=True)
    documents = torch.randn(2, 3, 5, 4, generator=generator, requires_grad=True)
    maxsim_paired(queries, documents).sum().backward()
    q_ref, d_ref = queries.detach().clone().requires_grad_(), documents.detach().clone().requires_grad_()
    sum(autograd_loop_maxsim(q_ref[b : b + 1], d_ref[b]).sum() for b in range(2)).backward()
    torch.testing.assert_close(queries.grad, q_ref.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(documents.grad, d_ref.grad, rtol=1e-5, atol=1e-5)


def test_no_grad_fast_path_equals_autograd_path():
    queries, documents = random_inputs(n_q=4, q_vectors=5, n_d=30, d_vectors=7, dim=8, seed=16)
    mask = random_mask(30, 7, seed=17)
    tracked = maxsim(queries.requires_grad_(), documents, document_mask=mask, workspace_bytes=512)
    assert tracked.grad_fn is not None
    with torch.no_grad():
        fast = maxsim(queries, documents, document_mask=mask, workspace_bytes=512)
    assert fast.grad_fn is None
    torch.testing.assert_close(fast, tracked.detach())


# --- shapes and errors ---


def test_empty_inputs():
    queries, documents = random_inputs()
    assert maxsim(queries[:0], documents).shape == (0, 7)
    assert maxsim(queries, documents[:0]).shape == (3, 0)
    scores, indices = maxsim_topk(queries, documents[:0], 3)
    assert scores.shape == indices.shape == (3, 0)
    scores, indices = maxsim_topk(queries[:0], documents, 3)
    assert scores.shape == indices.shape == (0, 3)


def _bad_calls():
    q, d = random_inputs()  # (3, 5, 4), (7, 6, 4)
    groups = torch.randn(3, 2, 6, 4)
    return [
        (lambda: maxsim(q[0], d), "queries"),
        (lambda: maxsim(q, d[0]), "documents"),
        (lambda: maxsim(q.tolist(), d), "queries"),
        (lambda: maxsim(q.long(), d), "queries"),
        (lambda: maxsim(q, d[..., :3]), "vector dim"),
        (lambda: maxsim(q, d, query_budget=0), "query_budget"),
        (lambda: maxsim(q, d, query_budget=6), "query_budget"),
        (lambda: maxsim(q, d, query_budget=2.0), "query_budget"),
        (lambda: maxsim(q, d, query_budget=True), "query_budget"),
        (lambda: maxsim(q, d, doc_budget=0), "doc_budget"),
        (lambda: maxsim(q, d, doc_budget=7), "doc_budget"),
        (lambda: maxsim(q, d, doc_budget="3"), "doc_budget"),
        (lambda: maxsim(q, d, document_mask=torch.ones(7, 5, dtype=torch.bool)), "document_mask"),
        (lambda: maxsim(q, d, document_mask=[[True] * 6] * 7), "document_mask"),
        (lambda: maxsim(q, d, workspace_bytes=0), "workspace_bytes"),
        (lambda: maxsim(q, d, workspace_bytes=1.5), "workspace_bytes"),
        (lambda: maxsim_topk(q, d, 0), "k"),
        (lambda: maxsim_topk(q, d, 2.0), "k"),
        (lambda: maxsim_topk(q, d, 2, doc_budget=9), "doc_budget"),
        (lambda: maxsim_topk(q, d, 2, document_mask=torch.ones(7, dtype=torch.bool)), "document_mask"),
        (lambda: maxsim_paired(q, d), "documents"),
        (lambda: maxsim_paired(q[:2], groups), "documents"),
        (lambda: maxsim_paired(q, groups[..., :3]), "vector dim"),
        (lambda: maxsim_paired(q, groups, query_budget=0), "query_budget"),
        (lambda: maxsim_paired(q, groups, doc_budget=7), "doc_budget"),
        (lambda: maxsim_paired(q, groups, document_mask=torch.ones(3, 2, 5, dtype=torch.bool)), "document_mask"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_calls())))
def test_bad_inputs_raise_value_error_naming_the_argument(case):
    call, name = _bad_calls()[case]
    with pytest.raises(ValueError, match=name):
        call()


# --- memory stays bounded ---

_MEMORY_SCRIPT = textwrap.dedent(
    """
    import resource, torch
    from mmcascade.scoring import maxsim, maxsim_topk
    torch.set_num_threads(1)
    documents = torch.randn(200_000, 16, 8)  # (n_d, D, d): 102 MB
    queries = torch.randn(2, 16, 8)  # (n_q, Q, d)
    maxsim_topk(queries, documents[:2000], 10, workspace_bytes=2**20)  # warm-up: allocator, BLAS buffers
    maxsim(queries, documents[:2000], workspace_bytes=2**20)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    maxsim_topk(queries, documents, 10, workspace_bytes=2**20)
    after_topk = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    maxsim(queries, documents, workspace_bytes=2**20)
    after_full = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print((after_topk - before) * 1024, (after_full - before) * 1024)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss is KiB on Linux only")
def test_peak_memory_stays_far_below_the_full_similarity_tensor():
    # ru_maxrss is the process's peak resident memory (torch allocations included, unlike tracemalloc),
    # in a fresh interpreter so earlier tests cannot have raised the peak already.
    source_root = str(Path(mmcascade.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [source_root, os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT], capture_output=True, text=True, timeout=120, check=True, env=env
    )
    topk_growth, full_growth = (int(value) for value in result.stdout.split())
    naive = 2 * 16 * 200_000 * 16 * 4  # n_q * Q * n_d * D float32 similarities: 410 MB
    assert topk_growth < naive / 10, (topk_growth, naive)
    assert full_growth < naive / 10, (full_growth, naive)  # the (2, 200000) result itself is 1.6 MB
