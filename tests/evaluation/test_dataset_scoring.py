"""Scoring one encoded dataset: local vs global pools, budgets as prefixes, ties, failures."""

from __future__ import annotations

import pytest
import torch

from mmcascade.budget import Budget
from mmcascade.evaluation.dataset_scoring import score_dataset
from mmcascade.evaluation.encode_cache import EncodedDataset
from mmcascade.evaluation.mmeb.dataset import EvalDataset, EvalQuery
from mmcascade.rerank import JudgeModel, Reranker
from mmcascade.search import RerankStage


def unit(*values: float) -> list[float]:
    norm = sum(value * value for value in values) ** 0.5
    return [value / norm for value in values]


# Two query vectors and two candidate vectors per item, dim 2. Vector 0 of the query prefers "a",
# vector 1 prefers "b": with budget (1, 1) the query ranks a first, with (2, 2) it ranks b first.
QUERIES = torch.tensor([[unit(1, 0), unit(0, 1)]])  # (1, 2, 2)
CANDIDATES = torch.tensor(
    [
        [unit(1, 0.1), unit(-1, 0)],  # a: 0.995 at budget (1, 1); + max(0.0995, -0) at (2, 2) = 1.094
        [unit(0.9, 0.45), unit(0, 1)],  # b: 0.894 at (1, 1); 0.894 + 1.0 = 1.894 at (2, 2)
        [unit(-1, 0), unit(-1, 0)],  # c: never close
    ]
)


def dataset(eval_type: str, labels=("b",), candidate_names=("a", "b", "c"), rel_scores=None) -> EvalDataset:
    query = EvalQuery("q0", {"text": "x"}, candidate_names if eval_type == "local" else None, tuple(labels), rel_scores)
    return EvalDataset(
        name="toy",
        modality="image",
        meta_task="RET",
        eval_type=eval_type,
        queries=[query],
        candidates={name: {"text": name} for name in ("a", "b", "c")},
    )


def encoded(candidates=CANDIDATES, query_failures=None, candidate_failures=None) -> EncodedDataset:
    return EncodedDataset(
        queries=QUERIES,
        candidates=candidates,
        query_ids=["q0"],
        candidate_names=["a", "b", "c"],
        query_failures=query_failures or {},
        candidate_failures=candidate_failures or {},
    )


def test_budgets_are_prefixes_of_the_cached_vectors():
    small = score_dataset(dataset("global"), encoded(), Budget(1, 1))
    full = score_dataset(dataset("global"), encoded(), Budget(2, 2))
    assert small.predictions[0]["prediction"] == ["a", "b", "c"]
    assert small.scores["hit@1"] == 0.0 and small.scores["mrr@5"] == pytest.approx(0.5)
    assert full.predictions[0]["prediction"] == ["b", "a", "c"]
    assert full.scores["hit@1"] == 1.0
    assert (full.scores["num_pred"], full.scores["num_data"]) == (1, 1)


def test_a_local_query_sees_only_its_own_candidates():
    result = score_dataset(dataset("local", candidate_names=("b", "c")), encoded(), Budget(1, 1))
    assert result.predictions[0]["prediction"] == ["b", "c"]  # "a" would win if it were in the list
    assert result.scores["hit@1"] == 1.0


def test_a_constant_model_gets_no_credit_from_ties_by_default():
    constant = torch.tensor([[unit(1, 0), unit(1, 0)]] * 3)  # every candidate scores the same
    pessimistic = score_dataset(dataset("global"), encoded(constant), Budget(2, 2))
    optimistic = score_dataset(dataset("global"), encoded(constant), Budget(2, 2), ties="optimistic")
    assert pessimistic.scores["hit@1"] == 0.0 and pessimistic.n_tied == 1
    assert pessimistic.predictions[0]["prediction"][-1] == "b"
    assert optimistic.scores["hit@1"] == 1.0
    hits = [
        score_dataset(dataset("global"), encoded(constant), Budget(2, 2), ties="random", seed=s).scores["hit@1"]
        for s in range(300)
    ]
    assert sum(hits) / len(hits) == pytest.approx(1 / 3, abs=0.08)


def test_failed_candidates_are_dropped_and_queries_without_any_label_are_skipped():
    result = score_dataset(dataset("global"), encoded(candidate_failures={"a": "unreadable"}), Budget(1, 1))
    assert result.predictions[0]["prediction"] == ["b", "c"]
    skipped = score_dataset(dataset("global"), encoded(candidate_failures={"b": "unreadable"}), Budget(1, 1))
    assert skipped.predictions == [] and skipped.n_skipped_queries == 1
    assert "no relevant candidate could be encoded" in skipped.problems[0]
    failed_query = score_dataset(dataset("global"), encoded(query_failures={"q0": "bad image"}), Budget(1, 1))
    assert failed_query.predictions == [] and "bad image" in failed_query.problems[0]


def test_graded_labels_reach_the_metrics_with_their_own_grades():
    # Budget (2, 2) ranks b, a, c. Labels a (grade 2) and b (grade 1):
    # DCG@5 = 1/log2(2) + 2/log2(3) = 1 + 1.2619 = 2.2619; IDCG = 2/log2(2) + 1/log2(3) = 2.6309.
    result = score_dataset(dataset("global", labels=("a", "b"), rel_scores=(2, 1)), encoded(), Budget(2, 2))
    assert result.scores["ndcg_linear@5"] == pytest.approx(2.2619 / 2.6309, abs=1e-4)
    assert result.predictions[0]["rel_scores"] == [2, 1]


def test_chance_is_the_expected_main_score_of_a_random_ranking():
    local = score_dataset(dataset("local", candidate_names=("a", "b")), encoded(), Budget(1, 1))
    assert local.chance == pytest.approx(1 / 2)  # one label among two candidates
    # ndcg_linear@5 of one label among three candidates, every rank equally likely:
    # (1 + 1/log2(3) + 1/log2(4)) / 3 = (1 + 0.63093 + 0.5) / 3 = 0.71031
    graded = score_dataset(dataset("global"), encoded(), Budget(1, 1), main_metric="ndcg_linear@5")
    assert graded.chance == pytest.approx(0.71031, abs=0.06)


class PrefersB(JudgeModel):
    """A judge that says yes to the candidate "b" only (read from the rendered prompt)."""

    model_id = "prefers-b"

    def complete(self, prompts, settings):
        return ["<think>looked</think>"] * len(prompts)

    def yes_no_logits(self, prompts, prefixes):
        return [
            (2.0, -2.0) if prompt.user.split("Candidate: ")[1].startswith("b\n") else (-1.0, 1.0) for prompt in prompts
        ]


@pytest.mark.parametrize(("depth", "expected"), [(1, ["a", "b", "c"]), (2, ["b", "a", "c"]), (3, ["b", "a", "c"])])
def test_reranking_reorders_only_the_first_k_of_the_retrieval_ranking(depth, expected):
    stage = RerankStage(Reranker(PrefersB()), depth)
    result = score_dataset(dataset("global"), encoded(), Budget(1, 1), rerank=stage)  # retrieval alone ranks a, b, c
    assert result.predictions[0]["prediction"] == expected
    assert result.scores["hit@1"] == (1.0 if expected[0] == "b" else 0.0)
