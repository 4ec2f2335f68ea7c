"""Hit@1 over record pools, against hand-worked cases."""

from __future__ import annotations

import pytest
import torch

from mmcascade.budget import Budget
from mmcascade.data.items import Item
from mmcascade.data.records import TrainingRecord
from mmcascade.evaluation import evaluate_records
from mmcascade.scoring import maxsim


class TableEmbedder:
    """Vectors looked up by text: lets each test fix every score by hand."""

    def __init__(self, table: dict[str, list[list[float]]]):
        self.table = table

    def encode_queries(self, items: list[Item], **_: object) -> torch.Tensor:
        return torch.tensor([self.table[item.text] for item in items])

    encode_documents = encode_queries

    def similarity(self, queries: torch.Tensor, documents: torch.Tensor, **budgets: object) -> torch.Tensor:
        return maxsim(queries, documents, **budgets)


def record(query: str, positive: str, negatives: list[str], task: str, kind: str = "simple") -> TrainingRecord:
    return TrainingRecord(
        query=Item(text=query),
        positive=Item(text=positive),
        negatives=tuple(Item(text=n) for n in negatives),
        meta={"task": task, "kind": kind},
    )


def test_pool_is_per_task_and_ties_are_misses() -> None:
    # 2-d unit vectors; documents a, b in task "t1"; c, d in task "t2".
    table = {
        "qa": [[1.0, 0.0]],  # scores: a 1.0, b 0.0 -> hit
        "qb": [[1.0, 0.0]],  # wants b (0.0) but a scores 1.0 -> miss
        "qc": [[0.0, 1.0]],  # c and d both score 1.0 -> tie -> miss
        "a": [[1.0, 0.0]],
        "b": [[0.0, 1.0]],
        "c": [[0.0, 1.0]],
        "d": [[0.0, 1.0]],
    }
    records = [
        record("qa", "a", ["b"], "t1"),
        record("qb", "b", [], "t1", kind="compositional"),
        record("qc", "c", ["d"], "t2"),
    ]
    [scores] = evaluate_records(TableEmbedder(table), records)
    assert scores.hit_at_1 == pytest.approx(1 / 3)
    assert scores.per_task == {"t1": 0.5, "t2": 0.0}
    assert scores.per_kind == {"compositional": 0.0, "simple": 0.5}
    assert scores.n_ties == 1 and scores.n_queries == 3


def test_budgets_slice_the_vectors() -> None:
    # (1,1): q1.pos1 = 0.0 < q1.neg1 = 1.0 -> miss.
    # (2,2): pos = max(0, 1) + max(1, 0) = 2.0 > neg = max(1, 0.6) + max(0, 0.8) = 1.8 -> hit.
    table = {
        "q": [[1.0, 0.0], [0.0, 1.0]],
        "pos": [[0.0, 1.0], [1.0, 0.0]],
        "neg": [[1.0, 0.0], [0.6, 0.8]],
    }
    results = evaluate_records(
        TableEmbedder(table), [record("q", "pos", ["neg"], "t")], budgets=[Budget(1, 1), Budget(2, 2)]
    )
    assert [r.hit_at_1 for r in results] == [0.0, 1.0]
    assert [r.budget for r in results] == [Budget(1, 1), Budget(2, 2)]


def test_empty_records_rejected() -> None:
    with pytest.raises(ValueError, match="no records"):
        evaluate_records(TableEmbedder({}), [])
