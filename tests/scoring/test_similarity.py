"""Single-vector dot and cosine against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from mmcascade.scoring import cosine, dot

# One query (3, 4) against documents (4, 3), (0, 2), (-3, -4):
#   dot:    3*4 + 4*3 = 24,   0 + 8 = 8,   -9 - 16 = -25
#   cosine: |q| = 5, |x| = 5, 2, 5  ->  24/25 = 0.96,   8/10 = 0.8,   -25/25 = -1
QUERIES = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
DOCUMENTS = torch.tensor([[4.0, 3.0], [0.0, 2.0], [-3.0, -4.0]])
# The second query (1, 0): dot 4, 0, -3; cosine 4/5 = 0.8, 0, -3/5 = -0.6.


def test_dot_by_hand():
    torch.testing.assert_close(dot(QUERIES, DOCUMENTS), torch.tensor([[24.0, 8.0, -25.0], [4.0, 0.0, -3.0]]))


def test_cosine_by_hand():
    torch.testing.assert_close(cosine(QUERIES, DOCUMENTS), torch.tensor([[0.96, 0.8, -1.0], [0.8, 0.0, -0.6]]))


def test_cosine_of_a_zero_vector_is_zero_not_nan():
    scores = cosine(torch.zeros(1, 2), DOCUMENTS)
    assert scores.eq(0).all()


def test_documents_are_cast_to_the_query_dtype():
    assert dot(QUERIES, DOCUMENTS.bfloat16()).dtype == torch.float32
    assert cosine(QUERIES.double(), DOCUMENTS).dtype == torch.float64


def test_gradients_flow():
    queries = QUERIES.clone().requires_grad_()
    cosine(queries, DOCUMENTS).sum().backward()
    assert queries.grad is not None and torch.isfinite(queries.grad).all()


@pytest.mark.parametrize("function", [dot, cosine])
@pytest.mark.parametrize(
    ("queries", "documents", "name"),
    [
        (torch.zeros(2), torch.zeros(3, 2), "queries"),
        (torch.zeros(1, 1, 2), torch.zeros(3, 2), "queries"),
        (torch.zeros(1, 2), torch.zeros(2), "documents"),
        (torch.zeros(1, 2), torch.zeros(3, 3), "vector dim"),
    ],
)
def test_bad_shapes_raise_value_error(function, queries, documents, name):
    with pytest.raises(ValueError, match=name):
        function(queries, documents)
