"""The one cost object: validation, ``QxD`` parsing, labels and fitting a model's vector counts."""

from __future__ import annotations

import pytest

from mmcascade.budget import DEFAULT_TRACE_TOKENS, MAX_TOKEN_BUDGET, Budget, default_budgets
from mmcascade.reasoner import GenerationSettings


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retrieve_k": 5, "rerank_k": 6}, r"rerank_k \(k=6\) is larger than retrieve_k \(K=5\)"),
        ({"rerank_k": -1}, r"rerank_k \(k\) must be an int >= 0"),
        ({"retrieve_k": 0}, r"retrieve_k \(K\) must be a positive int"),
        ({"think_tokens": -3}, "think_tokens"),
        ({"query_vectors": 0}, "query_vectors must be a positive int"),
        ({"document_vectors": True}, "document_vectors must be a positive int"),
        ({"trace_tokens": 0}, r"trace_tokens \(the query reasoner's trace budget\) must be an int in 1\.\.32768"),
        ({"think_tokens": MAX_TOKEN_BUDGET + 1}, r"think_tokens .* must be an int in 0\.\.32768"),
    ],
)
def test_bad_budgets_are_refused(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Budget(**options)


def test_parse_reads_query_by_document_vectors_and_keeps_the_other_knobs() -> None:
    assert Budget.parse("4x8") == Budget(query_vectors=4, document_vectors=8)
    assert Budget.parse(" 16x64 ", retrieve_k=20, rerank_k=5) == Budget(16, 64, retrieve_k=20, rerank_k=5)
    assert Budget.parse("allx8") == Budget(document_vectors=8)
    assert Budget.parse("4x8").label == "4x8"
    assert Budget(document_vectors=8).label == "allx8"
    assert Budget().label == "allxall"
    assert [budget.label for budget in Budget.parse_many("1x1,2x4, 4x8")] == ["1x1", "2x4", "4x8"]


@pytest.mark.parametrize("text", ["4", "4x", "x8", "0x8", "4x-1", "fourx8", "4x8x2", ""])
def test_malformed_budgets_name_the_text(text: str) -> None:
    with pytest.raises(ValueError, match=f"budget {text!r} must look like QxD"):
        Budget.parse(text)


def test_repeated_budgets_are_refused() -> None:
    with pytest.raises(ValueError, match="budgets repeat"):
        Budget.parse_many("1x1,2x4,1x1")


def test_fitting_a_model_and_the_default_groups() -> None:
    assert Budget(16, 64).fits(16, 64) and not Budget(16, 64).fits(8, 64) and Budget().fits(1, 1)
    with pytest.raises(ValueError, match="budget 32x64 exceeds the model's 16 query x 64 document vectors"):
        Budget(32, 64).check_fits(16, 64)
    assert [budget.label for budget in default_budgets(16, 64)] == ["1x1", "2x4", "4x8", "8x16", "16x64"]
    assert [budget.label for budget in default_budgets(4, 8)] == ["1x1", "2x4", "4x8"]


def test_the_trace_budget_default_is_the_generation_default() -> None:
    assert Budget().trace_tokens == DEFAULT_TRACE_TOKENS == GenerationSettings().max_new_tokens == 256
