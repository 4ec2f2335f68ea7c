"""Score normalisation ("sum" / "mean") and per-group temperatures, against a reference written from the formula.

``s_g(q, x) = sum_{i<nq} max_{k<nd} <q_i, x_k>`` ("sum", MetaEmbed) or that divided by ``nq`` ("mean",
colpali-engine's ``normalize_scores``);
``l_g = mean_b [ logsumexp_{c u j}(s_g(q_b, P_c) / T_g, s_g(q_b, N_{b,j}) / T_g) - s_g(q_b, P_b) / T_g ]``;
``L = sum_g w_g l_g / G``. The default ("sum", one temperature) must stay bit-for-bit what it was.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmcascade.losses import InfoNCELoss, MatryoshkaMultiVectorLoss
from mmcascade.scoring import maxsim, maxsim_paired

GROUPS = ((1, 1), (2, 3), (4, 6))
TEMPERATURES = (0.02, 0.05, 0.1)


def _inputs(seed: int, batch=3, n_query=4, n_doc=6, n_neg=2, dim=5):
    generator = torch.Generator().manual_seed(seed)
    query = F.normalize(torch.randn(batch, n_query, dim, generator=generator), dim=-1)  # (B, Q, d)
    positive = F.normalize(torch.randn(batch, n_doc, dim, generator=generator), dim=-1)  # (B, D, d)
    negatives = F.normalize(torch.randn(batch, n_neg, n_doc, dim, generator=generator), dim=-1)  # (B, K, D, d)
    return query, positive, negatives


def _score(
    query_vectors: torch.Tensor, doc_vectors: torch.Tensor, nq: int, nd: int, normalization: str
) -> torch.Tensor:
    """One query against one document, by loops over their vectors, in float64."""
    total = torch.zeros((), dtype=torch.float64)
    for i in range(nq):
        total = total + max(torch.dot(query_vectors[i].double(), doc_vectors[k].double()) for k in range(nd))
    return total / nq if normalization == "mean" else total


def _reference_group_loss(query, positive, negatives, nq, nd, temperature, normalization, mode="own") -> float:
    per_query = []
    for b in range(query.shape[0]):
        logits = [_score(query[b], document, nq, nd, normalization) / temperature for document in positive]
        if negatives is not None:
            rows = [negatives[b]] if mode == "own" else list(negatives)
            logits += [
                _score(query[b], document, nq, nd, normalization) / temperature for row in rows for document in row
            ]
        per_query.append(torch.logsumexp(torch.stack(logits), dim=0) - logits[b])
    return float(torch.stack(per_query).mean())


def _reference_total(query, positive, negatives, temperatures, normalization, weights=(1.0, 1.0, 1.0)) -> float:
    losses = [
        _reference_group_loss(query, positive, negatives, nq, nd, temperature, normalization)
        for (nq, nd), temperature in zip(GROUPS, temperatures, strict=True)
    ]
    return sum(weight * loss for weight, loss in zip(weights, losses, strict=True)) / len(GROUPS)


@pytest.mark.parametrize("normalization", ["sum", "mean"])
@pytest.mark.parametrize("with_negatives", [False, True])
@pytest.mark.parametrize("temperature", [0.05, TEMPERATURES])
def test_matryoshka_group_losses_match_reference(normalization, with_negatives, temperature):
    query, positive, negatives = _inputs(seed=0)
    negatives = negatives if with_negatives else None
    loss_fn = MatryoshkaMultiVectorLoss(groups=GROUPS, temperature=temperature, score_normalization=normalization)
    losses = loss_fn.group_losses(query, positive, negatives)
    per_group = (temperature,) * len(GROUPS) if isinstance(temperature, float) else temperature
    for (nq, nd), group_temperature in zip(GROUPS, per_group, strict=True):
        expected = _reference_group_loss(query, positive, negatives, nq, nd, group_temperature, normalization)
        assert losses[(nq, nd)].item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("normalization", ["sum", "mean"])
def test_matryoshka_total_with_weights_and_per_group_temperatures(normalization):
    query, positive, negatives = _inputs(seed=1)
    weights = (0.5, 2.0, 1.0)
    loss_fn = MatryoshkaMultiVectorLoss(
        groups=GROUPS, temperature=list(TEMPERATURES), weights=weights, score_normalization=normalization
    )
    expected = _reference_total(query, positive, negatives, TEMPERATURES, normalization, weights)
    assert loss_fn(query, positive, negatives).item() == pytest.approx(expected, rel=1e-5)


def test_mean_all_negatives_mode_matches_reference():
    query, positive, negatives = _inputs(seed=2)
    loss_fn = MatryoshkaMultiVectorLoss(
        groups=GROUPS, temperature=0.05, hard_negatives="all", score_normalization="mean"
    )
    losses = loss_fn.group_losses(query, positive, negatives)
    for nq, nd in GROUPS:
        expected = _reference_group_loss(query, positive, negatives, nq, nd, 0.05, "mean", mode="all")
        assert losses[(nq, nd)].item() == pytest.approx(expected, rel=1e-5)


def test_mean_equals_sum_at_query_budget_times_the_temperature():
    # (s / nq) / T == s / (nq * T): "mean" is "sum" with each group's temperature scaled by its nq.
    query, positive, negatives = _inputs(seed=3)
    mean = MatryoshkaMultiVectorLoss(groups=GROUPS, temperature=0.03, score_normalization="mean")
    scaled = MatryoshkaMultiVectorLoss(groups=GROUPS, temperature=[0.03 * nq for nq, _ in GROUPS])
    for group, value in mean.group_losses(query, positive, negatives).items():
        assert value.item() == pytest.approx(scaled.group_losses(query, positive, negatives)[group].item(), rel=1e-5)


@pytest.mark.parametrize("normalization", ["sum", "mean"])
@pytest.mark.parametrize("with_negatives", [False, True])
def test_infonce_multi_vector_matches_reference(normalization, with_negatives):
    query, positive, negatives = _inputs(seed=4)
    negatives = negatives if with_negatives else None
    loss = InfoNCELoss(temperature=0.05, score_normalization=normalization)(query, positive, negatives)
    expected = _reference_group_loss(query, positive, negatives, 4, 6, 0.05, normalization)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_infonce_single_vector_mean_is_sum():
    query, positive, negatives = (tensor[:, 0] for tensor in _inputs(seed=5))  # (B, d), (B, d), (B, K, d)
    summed = InfoNCELoss(temperature=0.05)(query, positive, negatives)
    mean = InfoNCELoss(temperature=0.05, score_normalization="mean")(query, positive, negatives)
    assert torch.equal(summed, mean)


# ----------------------------------------------------------------- the default is unchanged, bit for bit
def _previous_group_loss(query, positive, negatives, nq, nd, temperature) -> torch.Tensor:
    """The computation before score_normalization and per-group temperatures existed (single process)."""
    positive_scores = maxsim(query, positive, query_budget=nq, doc_budget=nd)  # (B, B)
    columns = [positive_scores]
    if negatives is not None:
        columns.append(maxsim_paired(query, negatives, query_budget=nq, doc_budget=nd))  # (B, K)
    logits = torch.cat(columns, dim=1)  # (B, B + K)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature
    return F.cross_entropy(logits, torch.arange(query.shape[0]))


@pytest.mark.parametrize("with_negatives", [False, True])
def test_default_sum_is_bit_for_bit_the_previous_loss(with_negatives):
    query, positive, negatives = _inputs(seed=6)
    negatives = negatives if with_negatives else None
    previous = {(nq, nd): _previous_group_loss(query, positive, negatives, nq, nd, 0.03) for nq, nd in GROUPS}
    for loss_fn in (
        MatryoshkaMultiVectorLoss(groups=GROUPS, temperature=0.03),
        MatryoshkaMultiVectorLoss(groups=GROUPS, temperature=0.03, score_normalization="sum"),
        MatryoshkaMultiVectorLoss(groups=GROUPS, temperature=[0.03, 0.03, 0.03]),
    ):
        losses = loss_fn.group_losses(query, positive, negatives)
        assert all(torch.equal(losses[group], previous[group]) for group in GROUPS)
        assert torch.equal(loss_fn(query, positive, negatives), torch.stack(list(previous.values())).sum() / 3)
    infonce = InfoNCELoss(temperature=0.03)(query, positive, negatives)
    assert torch.equal(infonce, _previous_group_loss(query, positive, negatives, 4, 6, 0.03))


def test_default_gradients_are_bit_for_bit_the_previous_ones():
    inputs = [tensor.requires_grad_(True) for tensor in _inputs(seed=7)]
    MatryoshkaMultiVectorLoss(groups=GROUPS)(*inputs).backward()
    new_grads = [tensor.grad.clone() for tensor in inputs]
    inputs = [tensor.detach().requires_grad_(True) for tensor in inputs]
    previous = [_previous_group_loss(*inputs, nq, nd, 0.03) for nq, nd in GROUPS]
    (torch.stack(previous).sum() / len(GROUPS)).backward()
    assert all(torch.equal(new, tensor.grad) for new, tensor in zip(new_grads, inputs, strict=True))


def test_defaults_and_repr():
    loss_fn = MatryoshkaMultiVectorLoss()
    assert loss_fn.score_normalization == "sum"
    assert loss_fn.temperature == 0.03
    assert loss_fn.temperatures == (0.03,) * 5
    assert InfoNCELoss().score_normalization == "sum"
    per_group = MatryoshkaMultiVectorLoss(groups=GROUPS, temperature=[0.02, 0.05, 1], score_normalization="mean")
    assert per_group.temperature == per_group.temperatures == (0.02, 0.05, 1.0)
    assert "temperature=(0.02, 0.05, 1.0)" in repr(per_group)
    assert "score_normalization='mean'" in repr(per_group)
    assert "score_normalization='sum'" in repr(InfoNCELoss())


# --------------------------------------------------------------------------------------- bad values
@pytest.mark.parametrize("value", ["avg", "Mean", None, 1])
@pytest.mark.parametrize("loss_class", [InfoNCELoss, MatryoshkaMultiVectorLoss])
def test_bad_score_normalization_is_refused(loss_class, value):
    with pytest.raises(ValueError, match=r"score_normalization must be one of \('sum', 'mean'\).*got " + repr(value)):
        loss_class(score_normalization=value)


@pytest.mark.parametrize(
    ("temperature", "match"),
    [
        ([0.1, 0.2], "one value per group: got 2 temperatures for 3 groups"),
        ([0.1, 0.2, 0.3, 0.4], "one value per group: got 4 temperatures for 3 groups"),
        ([], "one value per group: got 0 temperatures for 3 groups"),
        ([0.1, 0.0, 0.3], "positive finite number.*got 0.0"),
        ([0.1, float("nan"), 0.3], "positive finite number.*got nan"),
        ([0.1, True, 0.3], "positive finite number.*got True"),
        ([0.1, "0.2", 0.3], "positive finite number.*got '0.2'"),
        ("0.1", "a positive number or a sequence of 3"),
        (-0.1, "positive finite number"),
    ],
)
def test_bad_per_group_temperatures_are_refused(temperature, match):
    with pytest.raises(ValueError, match=match):
        MatryoshkaMultiVectorLoss(groups=GROUPS, temperature=temperature)


def test_infonce_takes_one_temperature():
    with pytest.raises(ValueError, match="temperature must be a positive finite number"):
        InfoNCELoss(temperature=[0.05])
