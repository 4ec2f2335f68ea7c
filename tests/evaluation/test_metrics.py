"""Retrieval metrics against hand-computed cases (the arithmetic is written out beside each)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmcascade.evaluation.metrics import mean_metrics, query_metrics, rank_candidates

# Twelve distinct names: rank i (0-based) holds NAMES[i].
NAMES = [f"c{i}" for i in range(12)]
LOG2_3 = math.log2(3)  # discount of 0-based rank 1


def assert_metrics(actual: dict[str, float], expected: dict[str, float]) -> None:
    for key, value in expected.items():
        assert actual[key] == pytest.approx(value, abs=1e-12), key


def test_keys_are_every_metric_at_every_k() -> None:
    metrics = query_metrics(NAMES, ["c0"])
    names = ["hit", "ndcg_linear", "ndcg_exponential", "precision", "recall", "f1", "map", "mrr"]
    assert set(metrics) == {f"{name}@{k}" for name in names for k in (1, 5, 10)}
    assert set(query_metrics(NAMES, ["c0"], ks=(3,))) == {f"{name}@3" for name in names}


def test_single_label_at_rank_1() -> None:
    metrics = query_metrics(NAMES, ["c0"])
    # k=1: 1 relevant of 1 shown, 1 of 1 label -> p=r=f1=1; AP = (1/1)/min(1,1) = 1; RR = 1/1;
    # DCG = 1/log2(2) = 1 = IDCG.
    for name in ("hit", "precision", "recall", "f1", "map", "mrr", "ndcg_linear", "ndcg_exponential"):
        assert metrics[f"{name}@1"] == 1.0
    # k=5: p = 1/5; f1 = 2*0.2*1/(0.2+1) = 0.4/1.2 = 1/3. k=10: p = 1/10; f1 = 0.2/1.1 = 2/11.
    assert_metrics(
        metrics,
        {
            "hit@5": 1.0,
            "precision@5": 0.2,
            "recall@5": 1.0,
            "f1@5": 1 / 3,
            "map@5": 1.0,
            "mrr@5": 1.0,
            "ndcg_linear@5": 1.0,
            "precision@10": 0.1,
            "f1@10": 2 / 11,
            "map@10": 1.0,
            "ndcg_exponential@10": 1.0,
        },
    )


def test_single_label_at_rank_3() -> None:
    metrics = query_metrics(NAMES, ["c2"])  # 0-based rank 2 = third place
    # k=1: the label is not in the top 1 -> every metric is 0.
    for name in ("hit", "precision", "recall", "f1", "map", "mrr", "ndcg_linear", "ndcg_exponential"):
        assert metrics[f"{name}@1"] == 0.0
    # k=5: hit 1; p = 1/5; r = 1; f1 = 1/3; AP = (1 hit / 3 shown) / min(1,5) = 1/3; RR = 1/3;
    # NDCG = (1/log2(2+2)) / (1/log2(0+2)) = (1/2)/1 = 1/2; exponential gain 2^1-1 = 1, the same.
    expected_5 = {
        "hit@5": 1.0,
        "precision@5": 0.2,
        "recall@5": 1.0,
        "f1@5": 1 / 3,
        "map@5": 1 / 3,
        "mrr@5": 1 / 3,
        "ndcg_linear@5": 0.5,
        "ndcg_exponential@5": 0.5,
    }
    assert_metrics(metrics, expected_5)
    # k=10: only precision and f1 change: p = 1/10, f1 = 2/11.
    assert_metrics(metrics, {"precision@10": 0.1, "f1@10": 2 / 11, "map@10": 1 / 3, "ndcg_linear@10": 0.5})


@pytest.mark.parametrize("label", ["absent", "c10"])  # never ranked / ranked 11th (below every k)
def test_single_label_absent_from_the_top_k(label: str) -> None:
    metrics = query_metrics(NAMES, [label])
    assert all(value == 0.0 for value in metrics.values()), metrics


def test_two_labels_binary() -> None:
    ranked = ["a", "x1", "b", "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9", "x10"]
    metrics = query_metrics(ranked, ["a", "b"])
    # k=1: top = [a]. p = 1/1; r = 1/2; f1 = 2*1*0.5/1.5 = 2/3; AP = (1/1)/min(2,1) = 1; RR = 1;
    # DCG = 1; IDCG = min(2,1) = 1 ideal gain -> 1; NDCG = 1.
    assert_metrics(
        metrics,
        {"hit@1": 1, "precision@1": 1, "recall@1": 0.5, "f1@1": 2 / 3, "map@1": 1, "mrr@1": 1, "ndcg_linear@1": 1},
    )
    # k=5: hits at 0-based ranks 0 and 2. p = 2/5; r = 2/2; f1 = 2*0.4*1/1.4 = 4/7;
    # AP = (1/1 + 2/3) / min(2,5) = (5/3)/2 = 5/6; RR = 1;
    # DCG = 1/log2(2) + 1/log2(4) = 1.5; IDCG = 1/log2(2) + 1/log2(3) = 1 + 1/log2(3).
    ndcg = 1.5 / (1 + 1 / LOG2_3)  # ≈ 0.9197
    assert_metrics(
        metrics,
        {
            "precision@5": 0.4,
            "recall@5": 1.0,
            "f1@5": 4 / 7,
            "map@5": 5 / 6,
            "mrr@5": 1.0,
            "ndcg_linear@5": ndcg,
            "ndcg_exponential@5": ndcg,  # binary: 2^1 - 1 = 1, the same gains
        },
    )
    # k=10: p = 2/10; f1 = 2*0.2*1/1.2 = 1/3; AP and NDCG unchanged (no more hits, same IDCG).
    assert_metrics(metrics, {"precision@10": 0.2, "f1@10": 1 / 3, "map@10": 5 / 6, "ndcg_linear@10": ndcg})


def test_map_normalises_by_min_of_labels_and_k() -> None:
    ranked = ["a", "b", "x1", "c", "x2", "x3"]
    metrics = query_metrics(ranked, ["a", "b", "c"], ks=(1, 5))
    # k=1: AP = (1/1) / min(3,1) = 1 (not 1/3: only one slot was available).
    # k=5: hits at ranks 1, 2, 4 (1-based) -> AP = (1/1 + 2/2 + 3/4) / min(3,5) = 2.75/3.
    assert_metrics(metrics, {"map@1": 1.0, "map@5": 2.75 / 3, "recall@1": 1 / 3, "recall@5": 1.0})


def test_graded_ndcg_pairs_each_label_with_its_own_grade() -> None:
    ranked = ["a", "x1", "b", "x2", "x3", "x4"]
    labels, grades = ["a", "b"], [1, 3]  # a has grade 1, b has grade 3
    metrics = query_metrics(ranked, labels, grades, ks=(1, 5))
    # linear, k=5: DCG = 1/log2(2) + 3/log2(4) = 1 + 1.5 = 2.5; IDCG = 3/log2(2) + 1/log2(3).
    correct_linear = 2.5 / (3 + 1 / LOG2_3)  # ≈ 0.6885
    # VLM2Vec zips list(set(labels)) with the original-order grades; if the set iterates as [b, a],
    # b gets 1 and a gets 3: DCG = 3/1 + 1/2 = 3.5 over the same IDCG ≈ 0.9639, a different number.
    vlm2vec_mispaired_linear = 3.5 / (3 + 1 / LOG2_3)
    assert metrics["ndcg_linear@5"] == pytest.approx(correct_linear)
    assert metrics["ndcg_linear@5"] != pytest.approx(vlm2vec_mispaired_linear)
    # exponential, k=5: gains 2^1-1 = 1 and 2^3-1 = 7. DCG = 1/1 + 7/2 = 4.5; IDCG = 7/1 + 1/log2(3).
    assert metrics["ndcg_exponential@5"] == pytest.approx(4.5 / (7 + 1 / LOG2_3))  # ≈ 0.5897
    # k=1: top = [a]. linear 1/3 (ideal: b's 3); exponential 1/7 (ideal: b's 7).
    assert metrics["ndcg_linear@1"] == pytest.approx(1 / 3)
    assert metrics["ndcg_exponential@1"] == pytest.approx(1 / 7)
    # The pairing follows the labels, not their order.
    assert query_metrics(ranked, ["b", "a"], [3, 1], ks=(1, 5)) == metrics
    # Grades change only NDCG: hit/precision/recall/map/mrr match the binary query.
    binary = query_metrics(ranked, labels, ks=(1, 5))
    for key in ("hit@5", "precision@5", "recall@5", "f1@5", "map@5", "mrr@5"):
        assert metrics[key] == binary[key]


def test_repeated_label_takes_its_highest_grade() -> None:
    # "a" listed twice (grades 1 and 2) -> one label of grade 2. IDCG@5 = 2/1; a at rank 0 -> DCG = 2.
    metrics = query_metrics(["a", "x"], ["a", "a"], [1, 2], ks=(5,))
    assert metrics["ndcg_linear@5"] == 1.0
    assert metrics["recall@5"] == 1.0  # one distinct label, found


def test_all_zero_grades_give_zero_ndcg() -> None:
    # IDCG = 0 -> NDCG 0 (as VLM2Vec); the label still counts as relevant for hit.
    metrics = query_metrics(["a", "x"], ["a"], [0], ks=(1,))
    assert metrics["ndcg_linear@1"] == 0.0
    assert metrics["ndcg_exponential@1"] == 0.0
    assert metrics["hit@1"] == 1.0


def test_repeated_candidate_name_counts_once() -> None:
    # A local candidate list may repeat a name; the positive "a" appears at 0-based ranks 1 and 2.
    ranked = ["x", "a", "a", "y", "z", "w"]
    metrics = query_metrics(ranked, ["a"], ks=(1, 5))
    # k=5: set(top 5) ∩ {a} = {a}: p = 1/5, r = 1; RR = 1/2.
    # AP = (1/2) / 1 = 0.5 (VLM2Vec: 1/2 + 2/3 = 7/6 > 1).
    # NDCG = (1/log2(3)) / 1 ≈ 0.6309 (VLM2Vec: 1/log2(3) + 1/log2(4) ≈ 1.1309 > 1).
    assert_metrics(
        metrics,
        {
            "hit@1": 0.0,
            "hit@5": 1.0,
            "precision@5": 0.2,
            "recall@5": 1.0,
            "mrr@5": 0.5,
            "map@5": 0.5,
            "ndcg_linear@5": 1 / LOG2_3,
            "ndcg_exponential@5": 1 / LOG2_3,
        },
    )
    # rank_candidates keeps both occurrences; a relevant name tied with itself is not a tie.
    ranking, tied = rank_candidates(np.array([0.9, 0.5, 0.9]), ["a", "b", "a"], {"a"})
    assert ranking == ["a", "a", "b"]
    assert not tied


def test_no_labels_follows_vlm2vec_conventions() -> None:
    metrics = query_metrics(["a", "b"], [], ks=(1,))
    # recall is 1.0 (nothing to find); everything else 0 (f1 = 2*0*1/(0+1) = 0).
    assert metrics == {
        "hit@1": 0.0,
        "ndcg_linear@1": 0.0,
        "ndcg_exponential@1": 0.0,
        "precision@1": 0.0,
        "recall@1": 1.0,
        "f1@1": 0.0,
        "map@1": 0.0,
        "mrr@1": 0.0,
    }


def test_fewer_candidates_than_k() -> None:
    # Precision still divides by k: 1 relevant in a 2-item list, k=5 -> 1/5.
    metrics = query_metrics(["a", "x"], ["a"], ks=(5,))
    assert metrics["precision@5"] == 0.2
    assert metrics["ndcg_linear@5"] == 1.0


def test_mean_metrics() -> None:
    per_query = [query_metrics(NAMES, ["c0"], ks=(1,)), query_metrics(NAMES, ["c2"], ks=(1,))]
    mean = mean_metrics(per_query)
    assert mean["hit@1"] == 0.5  # (1 + 0) / 2
    assert mean["recall@1"] == 0.5
    assert mean_metrics([]) == {}
    with pytest.raises(ValueError, match="same ks"):
        mean_metrics([{"hit@1": 1.0}, {"hit@5": 1.0}])


# --- ranking and ties ---------------------------------------------------------------------------


def test_rank_by_descending_score_without_ties() -> None:
    ranking, tied = rank_candidates(np.array([0.1, 0.7, 0.3]), ["a", "b", "c"], {"a"})
    assert ranking == ["b", "c", "a"]
    assert not tied


def test_ties_among_one_class_do_not_count_and_keep_input_order() -> None:
    # Negatives n1, n2 tie with each other, positives p1, p2 tie with each other, never across.
    names = ["n1", "p1", "n2", "p2"]
    ranking, tied = rank_candidates(np.array([0.5, 0.9, 0.5, 0.9]), names, {"p1", "p2"})
    assert ranking == ["p1", "p2", "n1", "n2"]
    assert not tied


CONSTANT_NAMES = ["p", "n1", "n2", "n3"]  # 1 positive + 3 negatives, all scored 0


def test_constant_scores_pessimistic() -> None:
    ranking, tied = rank_candidates(np.zeros(4), CONSTANT_NAMES, {"p"})
    assert ranking == ["n1", "n2", "n3", "p"]  # negatives first, in input order
    assert tied
    assert query_metrics(ranking, ["p"])["hit@1"] == 0.0


def test_constant_scores_optimistic() -> None:
    ranking, tied = rank_candidates(np.zeros(4), CONSTANT_NAMES, {"p"}, ties="optimistic")
    assert ranking == ["p", "n1", "n2", "n3"]
    assert tied
    assert query_metrics(ranking, ["p"])["hit@1"] == 1.0


def test_constant_scores_random_is_chance() -> None:
    rng = np.random.default_rng(0)
    trials = 2000
    hits = sum(
        rank_candidates(np.zeros(4), CONSTANT_NAMES, {"p"}, ties="random", rng=rng)[0][0] == "p" for _ in range(trials)
    )
    # Chance is 1/4 (one positive among 4 tied); standard error sqrt(0.25*0.75/2000) ≈ 0.01.
    assert abs(hits / trials - 0.25) < 0.05


def test_random_ties_are_reproducible_and_respect_scores() -> None:
    scores = np.array([0.0, 0.0, 1.0, 0.0, 0.0])
    names = ["p", "n1", "best", "n2", "n3"]
    first = rank_candidates(scores, names, {"p"}, ties="random", rng=np.random.default_rng(7))
    again = rank_candidates(scores, names, {"p"}, ties="random", rng=np.random.default_rng(7))
    assert first == again
    assert first[0][0] == "best"  # a strictly higher score is never shuffled down
    assert first[1]


def test_partial_tie_below_a_strictly_better_negative() -> None:
    # n_hi beats everyone; p ties n_tie; n_lo is last.
    names = ["n_hi", "p", "n_tie", "n_lo"]
    scores = np.array([0.9, 0.5, 0.5, 0.1])
    pessimistic, tied = rank_candidates(scores, names, {"p"})
    assert pessimistic == ["n_hi", "n_tie", "p", "n_lo"]
    assert tied
    optimistic, _ = rank_candidates(scores, names, {"p"}, ties="optimistic")
    assert optimistic == ["n_hi", "p", "n_tie", "n_lo"]
    # hit@1 = 0 under both; MRR@5 = 1/3 (pessimistic, third) vs 1/2 (optimistic, second).
    assert query_metrics(pessimistic, ["p"])["mrr@5"] == pytest.approx(1 / 3)
    assert query_metrics(optimistic, ["p"])["mrr@5"] == 0.5
    assert query_metrics(pessimistic, ["p"])["hit@1"] == query_metrics(optimistic, ["p"])["hit@1"] == 0.0


# --- validation ---------------------------------------------------------------------------------


def test_rank_candidates_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        rank_candidates(np.zeros(3), ["a", "b"], {"a"})
    with pytest.raises(ValueError, match="Unknown tie policy"):
        rank_candidates(np.zeros(2), ["a", "b"], {"a"}, ties="first")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seeded generator"):
        rank_candidates(np.zeros(2), ["a", "b"], {"a"}, ties="random")
    with pytest.raises(ValueError, match="1-D"):
        rank_candidates(np.zeros((1, 2)), ["a", "b"], {"a"})
    with pytest.raises(ValueError, match="NaN"):
        rank_candidates(np.array([0.1, np.nan]), ["a", "b"], {"a"})


def test_query_metrics_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="one grade per label"):
        query_metrics(["a"], ["a", "b"], [1])
    with pytest.raises(ValueError, match=">= 0"):
        query_metrics(["a"], ["a"], [-1])
    with pytest.raises(ValueError, match="integer >= 1"):
        query_metrics(["a"], ["a"], ks=(0, 5))
