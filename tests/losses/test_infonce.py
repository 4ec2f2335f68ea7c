"""InfoNCELoss against by-hand computations (python loops, math.exp/log), gradients and errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmcascade.losses import InfoNCELoss, paired_cosine

# Small fixed single-vector inputs: B=3 queries, d=4, K=2 hard negatives per query.
QUERY = [[1.0, 0.0, 0.5, 0.0], [0.0, 2.0, 0.0, -1.0], [1.0, 1.0, 1.0, 0.0]]
POSITIVE = [[1.0, 0.5, 0.0, 0.0], [0.0, 1.0, 0.0, -1.0], [1.0, 0.0, 1.0, 1.0]]
NEGATIVES = [
    [[0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 1.0]],
    [[0.0, 1.0, 1.0, 0.0], [2.0, 0.0, 0.0, 0.5]],
    [[0.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]],
]


def _cosine_by_hand(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def _maxsim_by_hand(query_vectors: list[list[float]], doc_vectors: list[list[float]]) -> float:
    total = 0.0
    for q in query_vectors:
        best = -math.inf
        for x in doc_vectors:
            best = max(best, sum(a * b for a, b in zip(q, x, strict=True)))
        total += best
    return total


def _cross_entropy_by_hand(logits: list[float], target: int) -> float:
    top = max(logits)
    log_partition = top + math.log(sum(math.exp(v - top) for v in logits))
    return log_partition - logits[target]


def _info_nce_by_hand(query, positive, negatives, score, temperature, mode) -> float:
    total = 0.0
    for b, q in enumerate(query):
        logits = [score(q, p) / temperature for p in positive]
        if negatives is not None:
            own_rows = [negatives[b]] if mode == "own" else negatives
            logits += [score(q, n) / temperature for row in own_rows for n in row]
        total += _cross_entropy_by_hand(logits, b)
    return total / len(query)


def _tensor(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


@pytest.mark.parametrize("temperature", [0.05, 0.5])
def test_single_vector_in_batch_matches_hand_computation(temperature):
    loss = InfoNCELoss(temperature=temperature)(_tensor(QUERY), _tensor(POSITIVE))
    expected = _info_nce_by_hand(QUERY, POSITIVE, None, _cosine_by_hand, temperature, "own")
    assert loss.item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("mode", ["own", "all"])
def test_single_vector_hard_negatives_match_hand_computation(mode):
    loss = InfoNCELoss(temperature=0.5, hard_negatives=mode)(_tensor(QUERY), _tensor(POSITIVE), _tensor(NEGATIVES))
    expected = _info_nce_by_hand(QUERY, POSITIVE, NEGATIVES, _cosine_by_hand, 0.5, mode)
    assert loss.item() == pytest.approx(expected, rel=1e-10)


def test_own_and_all_hard_negatives_differ():
    # Guards the by-hand tests: the fixed inputs are such that the two modes disagree.
    query, positive, negatives = _tensor(QUERY), _tensor(POSITIVE), _tensor(NEGATIVES)
    own = InfoNCELoss(temperature=0.5, hard_negatives="own")(query, positive, negatives)
    every = InfoNCELoss(temperature=0.5, hard_negatives="all")(query, positive, negatives)
    assert every.item() > own.item() + 1e-3


def _random_multivector(seed: int, batch=3, n_query=3, n_doc=4, n_neg=2, dim=5):
    generator = torch.Generator().manual_seed(seed)
    query = F.normalize(torch.randn(batch, n_query, dim, generator=generator), dim=-1)
    positive = F.normalize(torch.randn(batch, n_doc, dim, generator=generator), dim=-1)
    negatives = F.normalize(torch.randn(batch, n_neg, n_doc, dim, generator=generator), dim=-1)
    return query, positive, negatives


@pytest.mark.parametrize("mode", ["own", "all"])
def test_multi_vector_matches_brute_force_maxsim(mode):
    query, positive, negatives = _random_multivector(seed=1)
    loss = InfoNCELoss(temperature=0.1, hard_negatives=mode)(query, positive, negatives)
    expected = _info_nce_by_hand(query.tolist(), positive.tolist(), negatives.tolist(), _maxsim_by_hand, 0.1, mode)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_multi_vector_without_negatives_matches_brute_force():
    query, positive, _ = _random_multivector(seed=2, batch=4)
    loss = InfoNCELoss(temperature=0.05)(query, positive)
    expected = _info_nce_by_hand(query.tolist(), positive.tolist(), None, _maxsim_by_hand, 0.05, "own")
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_multi_vector_score_is_a_sum_not_a_mean():
    # Two identical unit query vectors against their identical positive: MaxSim = 2, not 1.
    vector = F.normalize(torch.tensor([[1.0, 2.0, 0.0]]), dim=-1)
    query = vector.repeat(2, 1)[None].repeat(2, 1, 1)  # (2, 2, 3)
    positive = torch.stack([vector, -vector])  # (2, 1, 3)
    loss = InfoNCELoss(temperature=1.0)(query[:1], positive[:1], positive[1:][None])
    # Logits [2, -2] for target 0.
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-4.0)), rel=1e-5)


def test_custom_similarity_is_used_and_own_mode_never_scores_other_queries_negatives():
    calls: list[tuple[int, int]] = []

    def negative_squared_distance(queries: torch.Tensor, documents: torch.Tensor) -> torch.Tensor:
        calls.append((queries.shape[0], documents.shape[0]))
        return -(torch.cdist(queries, documents) ** 2)

    query, positive, negatives = _tensor(QUERY), _tensor(POSITIVE), _tensor(NEGATIVES)
    loss = InfoNCELoss(temperature=2.0, similarity=negative_squared_distance)(query, positive, negatives)

    def by_hand(a, b):
        return -sum((x - y) ** 2 for x, y in zip(a, b, strict=True))

    assert loss.item() == pytest.approx(_info_nce_by_hand(QUERY, POSITIVE, NEGATIVES, by_hand, 2.0, "own"), rel=1e-10)
    # One all-pairs call for the positives, then one call per query with only its own K=2 negatives.
    assert calls == [(3, 3), (1, 2), (1, 2), (1, 2)]


def test_paired_cosine_matches_cosine_rows():
    negatives = _tensor(NEGATIVES)
    got = paired_cosine(_tensor(QUERY), negatives)
    expected = [[_cosine_by_hand(QUERY[b], n) for n in NEGATIVES[b]] for b in range(3)]
    assert torch.allclose(got, _tensor(expected), atol=1e-12)


@pytest.mark.parametrize("multi_vector", [False, True])
def test_gradients_flow_to_every_input(multi_vector):
    if multi_vector:
        query, positive, negatives = _random_multivector(seed=3)
    else:
        query, positive, negatives = _tensor(QUERY), _tensor(POSITIVE), _tensor(NEGATIVES)
    query, positive, negatives = (t.clone().requires_grad_(True) for t in (query, positive, negatives))
    InfoNCELoss(temperature=0.1)(query, positive, negatives).backward()
    for tensor in (query, positive, negatives):
        assert tensor.grad is not None
        assert torch.isfinite(tensor.grad).all()
        assert tensor.grad.abs().sum() > 0


def test_a_few_sgd_steps_lower_the_loss():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(8, 6, generator=generator)
    documents = features + 0.3 * torch.randn(8, 6, generator=generator)
    negatives = torch.randn(8, 2, 6, generator=generator)
    projection = torch.nn.Linear(6, 12, bias=False)
    torch.nn.init.normal_(projection.weight, generator=generator)
    optimizer = torch.optim.SGD(projection.parameters(), lr=0.5)
    loss_fn = InfoNCELoss(temperature=0.1)

    def embed(x: torch.Tensor) -> torch.Tensor:
        return F.normalize(projection(x).unflatten(-1, (3, 4)), dim=-1)  # (..., 3, 4): 3 vectors of dim 4

    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        loss = loss_fn(embed(features), embed(documents), embed(negatives))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize(
    ("query_shape", "positive_shape", "negatives_shape", "match"),
    [
        ((4,), (4,), None, "query must have shape"),
        ((2, 3, 4, 5), (2, 3, 4, 5), None, "query must have shape"),
        ((2, 4), (2, 3, 4), None, "positive must have shape"),
        ((2, 3, 4), (2, 4), None, "positive must have shape"),
        ((2, 4), (2, 4), (2, 4), "negatives must have shape"),
        ((2, 3, 4), (2, 3, 4), (2, 2, 4), "negatives must have shape"),
        ((2, 4), (3, 4), None, "positive must hold one entry per query"),
        ((2, 4), (2, 4), (3, 2, 4), "negatives must hold one entry per query"),
        ((2, 4), (2, 5), None, "query and positive must share the vector dim"),
        ((2, 3, 4), (2, 3, 5), None, "query and positive must share the vector dim"),
        ((2, 3, 4), (2, 3, 4), (2, 1, 3, 6), "query and negatives must share the vector dim"),
        ((0, 4), (0, 4), None, "at least one query"),
        ((2, 0, 4), (2, 3, 4), None, "query must hold at least one vector"),
    ],
)
def test_bad_shapes_raise(query_shape, positive_shape, negatives_shape, match):
    negatives = None if negatives_shape is None else torch.randn(negatives_shape)
    with pytest.raises(ValueError, match=match):
        InfoNCELoss()(torch.randn(query_shape), torch.randn(positive_shape), negatives)


def test_integer_inputs_raise():
    with pytest.raises(ValueError, match="positive must be a floating-point tensor"):
        InfoNCELoss()(torch.randn(2, 4), torch.ones(2, 4, dtype=torch.long))


@pytest.mark.parametrize("temperature", [0.0, -0.1, float("nan"), float("inf"), "0.1", True])
def test_bad_temperature_raises(temperature):
    with pytest.raises(ValueError, match="temperature must be a positive finite number"):
        InfoNCELoss(temperature=temperature)


@pytest.mark.parametrize("mode", ["mine", "none", None, "OWN"])
def test_bad_hard_negative_mode_raises(mode):
    with pytest.raises(ValueError, match=r"hard_negatives must be one of \('own', 'all'\)"):
        InfoNCELoss(hard_negatives=mode)


def test_non_callable_similarity_raises():
    with pytest.raises(ValueError, match="similarity must be a callable"):
        InfoNCELoss(similarity="cosine")


def test_custom_similarity_with_wrong_output_shape_raises():
    loss_fn = InfoNCELoss(similarity=lambda q, d: (q @ d.T).sum(dim=1, keepdim=True))
    with pytest.raises(ValueError, match=r"similarity must return \(n_queries, n_documents\) = \(3, 3\)"):
        loss_fn(_tensor(QUERY), _tensor(POSITIVE))
