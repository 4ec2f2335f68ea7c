"""Top-k selection over a score matrix."""

from __future__ import annotations

import pytest
import torch

from mmcascade.scoring import topk

SCORES = torch.tensor([[0.1, 0.9, 0.5, -1.0], [3.0, 2.0, 1.0, 0.0]])


def test_best_first():
    values, indices = topk(SCORES, 2)
    assert indices.tolist() == [[1, 2], [0, 1]]
    torch.testing.assert_close(values, torch.tensor([[0.9, 0.5], [3.0, 2.0]]))


def test_k_larger_than_the_number_of_documents_is_clipped():
    values, indices = topk(SCORES, 10)
    assert values.shape == indices.shape == (2, 4)
    assert indices.tolist() == [[1, 2, 0, 3], [0, 1, 2, 3]]


def test_minus_inf_scores_rank_last():
    values, indices = topk(torch.tensor([[float("-inf"), 0.0, -5.0]]), 3)
    assert indices.tolist() == [[1, 2, 0]]
    assert values[0, 2] == float("-inf")


@pytest.mark.parametrize(
    ("scores", "k", "name"),
    [
        (SCORES, 0, "k"),
        (SCORES, -1, "k"),
        (SCORES, 1.0, "k"),
        (SCORES, True, "k"),
        (SCORES[0], 1, "scores"),
        (SCORES[None], 1, "scores"),
    ],
)
def test_bad_arguments_raise_value_error(scores, k, name):
    with pytest.raises(ValueError, match=name):
        topk(scores, k)
