"""MatryoshkaMultiVectorLoss against a brute-force transcription of reference-semantics.md §2."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmcascade.losses import DEFAULT_GROUPS, InfoNCELoss, MatryoshkaMultiVectorLoss


def _inputs(seed: int, batch=3, n_query=4, n_doc=6, n_neg=2, dim=5):
    generator = torch.Generator().manual_seed(seed)
    query = F.normalize(torch.randn(batch, n_query, dim, generator=generator), dim=-1)
    positive = F.normalize(torch.randn(batch, n_doc, dim, generator=generator), dim=-1)
    negatives = F.normalize(torch.randn(batch, n_neg, n_doc, dim, generator=generator), dim=-1)
    return query, positive, negatives


def _s(query_vectors, doc_vectors, nq: int, nd: int) -> float:
    """s_g(q, x) = sum_{i<nq} max_{k<nd} <q_i, x_k>, by loops."""
    total = 0.0
    for i in range(nq):
        best = -math.inf
        for k in range(nd):
            best = max(best, sum(a * b for a, b in zip(query_vectors[i], doc_vectors[k], strict=True)))
        total += best
    return total


def _logsumexp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def _group_loss_by_hand(query, positive, negatives, nq, nd, temperature, mode="own") -> float:
    """ℓ_g = mean_b [ logsumexp_{c ∪ j}(s(q_b,P_c)/T, s(q_b,N_{b,j})/T) − s(q_b,P_b)/T ] (single process, r=0)."""
    per_query = []
    for b, q in enumerate(query):
        logits = [_s(q, p, nq, nd) / temperature for p in positive]
        if negatives is not None:
            rows = [negatives[b]] if mode == "own" else negatives
            logits += [_s(q, n, nq, nd) / temperature for row in rows for n in row]
        per_query.append(_logsumexp(logits) - _s(q, positive[b], nq, nd) / temperature)
    return sum(per_query) / len(per_query)


def _total_by_hand(query, positive, negatives, groups, weights, temperature, mode="own") -> float:
    """L = Σ_g w_g ℓ_g / G."""
    losses = [_group_loss_by_hand(query, positive, negatives, nq, nd, temperature, mode) for nq, nd in groups]
    return sum(w * loss for w, loss in zip(weights, losses, strict=True)) / len(groups)


GROUPS = ((1, 1), (2, 3), (4, 6))


@pytest.mark.parametrize("with_negatives", [False, True])
def test_group_losses_match_brute_force(with_negatives):
    query, positive, negatives = _inputs(seed=0)
    negatives = negatives if with_negatives else None
    loss_fn = MatryoshkaMultiVectorLoss(groups=GROUPS, temperature=0.05)
    losses = loss_fn.group_losses(query, positive, negatives)
    assert list(losses) == list(GROUPS)
    neg_list = None if negatives is None else negatives.tolist()
    for nq, nd in GROUPS:
        expected = _group_loss_by_hand(query.tolist(), positive.tolist(), neg_list, nq, nd, 0.05)
        assert losses[(nq, nd)].item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("mode", ["own", "all"])
def test_total_with_non_uniform_weights_matches_reference_formula(mode):
    query, positive, negatives = _inputs(seed=1)
    weights = (0.25, 2.0, 1.0)
    loss = MatryoshkaMultiVectorLoss(groups=GROUPS, temperature=0.03, weights=weights, hard_negatives=mode)(
        query, positive, negatives
    )
    expected = _total_by_hand(query.tolist(), positive.tolist(), negatives.tolist(), GROUPS, weights, 0.03, mode)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_total_is_divided_by_number_of_groups_not_sum_of_weights():
    query, positive, negatives = _inputs(seed=2)
    weights = (0.5, 3.0, 1.5)
    loss_fn = MatryoshkaMultiVectorLoss(groups=GROUPS, temperature=0.1, weights=weights)
    group_losses = loss_fn.group_losses(query, positive, negatives)
    weighted = sum(w * group_losses[g].item() for g, w in zip(GROUPS, weights, strict=True))
    total = loss_fn(query, positive, negatives).item()
    assert total == pytest.approx(weighted / 3, rel=1e-6)
    assert total != pytest.approx(weighted / sum(weights), rel=1e-3)


def test_single_full_group_equals_info_nce_with_maxsim():
    query, positive, negatives = _inputs(seed=3)
    matryoshka = MatryoshkaMultiVectorLoss(groups=((4, 6),), temperature=0.07)(query, positive, negatives)
    info_nce = InfoNCELoss(temperature=0.07)(query, positive, negatives)
    assert matryoshka.item() == pytest.approx(info_nce.item(), rel=1e-6)


def test_groups_use_prefixes_not_any_vectors():
    # Vectors beyond the (1, 1) prefix must not change that group's loss, and must change the (4, 6) one.
    query, positive, negatives = _inputs(seed=4)
    loss_fn = MatryoshkaMultiVectorLoss(groups=((1, 1), (4, 6)), temperature=0.05)
    before = loss_fn.group_losses(query, positive, negatives)
    query2, positive2, negatives2 = query.clone(), positive.clone(), negatives.clone()
    query2[:, 1:] = torch.flip(query2[:, 1:], dims=[0])
    positive2[:, 1:] = -positive2[:, 1:]
    negatives2[:, :, 1:] = -negatives2[:, :, 1:]
    after = loss_fn.group_losses(query2, positive2, negatives2)
    assert after[(1, 1)].item() == pytest.approx(before[(1, 1)].item(), rel=1e-6)
    assert after[(4, 6)].item() != pytest.approx(before[(4, 6)].item(), rel=1e-3)


def test_defaults_are_metaembeds():
    loss_fn = MatryoshkaMultiVectorLoss()
    assert loss_fn.groups == DEFAULT_GROUPS == ((1, 1), (2, 4), (4, 8), (8, 16), (16, 64))
    assert loss_fn.weights == (1.0,) * 5
    assert loss_fn.temperature == 0.03
    assert loss_fn.hard_negatives == "own"


def test_default_groups_run_on_metaembed_sized_inputs():
    query, positive, negatives = _inputs(seed=5, batch=2, n_query=16, n_doc=64, n_neg=1, dim=8)
    loss = MatryoshkaMultiVectorLoss()(query, positive, negatives)
    expected = _total_by_hand(query.tolist(), positive.tolist(), negatives.tolist(), DEFAULT_GROUPS, (1.0,) * 5, 0.03)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_gradients_flow_to_every_input():
    query, positive, negatives = (t.requires_grad_(True) for t in _inputs(seed=6))
    MatryoshkaMultiVectorLoss(groups=GROUPS, temperature=0.1)(query, positive, negatives).backward()
    for tensor in (query, positive, negatives):
        assert tensor.grad is not None
        assert torch.isfinite(tensor.grad).all()
        assert tensor.grad.abs().sum() > 0


def test_a_few_sgd_steps_lower_the_loss():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(8, 6, generator=generator)
    documents = features + 0.3 * torch.randn(8, 6, generator=generator)
    negatives = torch.randn(8, 2, 6, generator=generator)
    projection = torch.nn.Linear(6, 16, bias=False)
    torch.nn.init.normal_(projection.weight, generator=generator)
    optimizer = torch.optim.SGD(projection.parameters(), lr=0.5)
    loss_fn = MatryoshkaMultiVectorLoss(groups=((1, 1), (2, 2), (4, 4)), temperature=0.1)

    def embed(x: torch.Tensor) -> torch.Tensor:
        return F.normalize(projection(x).unflatten(-1, (4, 4)), dim=-1)  # (..., 4, 4): 4 vectors of dim 4

    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        loss = loss_fn(embed(features), embed(documents), embed(negatives))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize(
    ("groups", "shapes", "match"),
    [
        (((1, 1), (5, 2)), ((2, 4, 5), (2, 6, 5), None), r"group \(nq=5, nd=2\).*query has 4 vectors"),
        (((1, 1), (2, 7)), ((2, 4, 5), (2, 6, 5), None), r"group \(nq=2, nd=7\).*positive 6"),
        (((2, 6),), ((2, 4, 5), (2, 6, 5), (2, 1, 3, 5)), r"group \(nq=2, nd=6\).*negatives 3"),
    ],
)
def test_group_larger_than_available_vectors_raises(groups, shapes, match):
    query_shape, positive_shape, negatives_shape = shapes
    negatives = None if negatives_shape is None else torch.randn(negatives_shape)
    with pytest.raises(ValueError, match=match):
        MatryoshkaMultiVectorLoss(groups=groups)(torch.randn(query_shape), torch.randn(positive_shape), negatives)


@pytest.mark.parametrize(
    ("shapes", "match"),
    [
        (((2, 5), (2, 5), None), r"query must have shape query \(B, Q, d\)"),
        (((2, 4, 5), (2, 5), None), "positive must have shape"),
        (((2, 4, 5), (2, 6, 5), (2, 6, 5)), "negatives must have shape"),
        (((2, 4, 5), (2, 6, 4), None), "query and positive must share the vector dim"),
        (((2, 4, 5), (3, 6, 5), None), "positive must hold one entry per query"),
    ],
)
def test_bad_shapes_raise(shapes, match):
    query_shape, positive_shape, negatives_shape = shapes
    negatives = None if negatives_shape is None else torch.randn(negatives_shape)
    with pytest.raises(ValueError, match=match):
        MatryoshkaMultiVectorLoss(groups=((1, 1),))(torch.randn(query_shape), torch.randn(positive_shape), negatives)


@pytest.mark.parametrize(
    "groups",
    [(), [(0, 1)], [(1, -2)], [(1,)], [(1, 2, 1.0)], [(1.0, 2)], [(True, 2)], "12", [(1, 1), (1, 1)]],
)
def test_bad_groups_raise(groups):
    with pytest.raises(ValueError, match="group"):
        MatryoshkaMultiVectorLoss(groups=groups)


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        ((1.0, 1.0), "one entry per group: got 2 weights for 3 groups"),
        ((1.0, -1.0, 1.0), "finite non-negative"),
        ((1.0, float("nan"), 1.0), "finite non-negative"),
        ((1.0, "2", 1.0), "finite non-negative"),
        (2.0, "sequence"),
    ],
)
def test_bad_weights_raise(weights, match):
    with pytest.raises(ValueError, match=match):
        MatryoshkaMultiVectorLoss(groups=GROUPS, weights=weights)


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_bad_temperature_raises(temperature):
    with pytest.raises(ValueError, match="temperature"):
        MatryoshkaMultiVectorLoss(temperature=temperature)


def test_bad_hard_negative_mode_raises():
    with pytest.raises(ValueError, match="hard_negatives must be one of"):
        MatryoshkaMultiVectorLoss(hard_negatives="global")
