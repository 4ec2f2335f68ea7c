"""Hit@1 of an embedder on query/positive/negative records, at each vector budget.

Each query is ranked against the pool of every distinct document of its task (all positives and
hard negatives of the task's records). Ties are pessimistic: a positive tied with another document
does not count as a hit, so a constant-score model scores 0.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from mmcascade.budget import Budget
from mmcascade.data.items import Item
from mmcascade.data.records import TrainingRecord
from mmcascade.embedder import Embedder


@dataclass
class RecordScores:
    """Hit@1 overall and per task / per kind (``meta["kind"]``), for one budget."""

    budget: Budget
    hit_at_1: float
    n_queries: int
    per_task: dict[str, float] = field(default_factory=dict)
    per_kind: dict[str, float] = field(default_factory=dict)
    n_ties: int = 0

    def as_dict(self) -> dict:
        return {
            "budget": [self.budget.query_vectors, self.budget.document_vectors] if self.budget.query_vectors else None,
            "hit@1": self.hit_at_1,
            "n_queries": self.n_queries,
            "n_tied_queries": self.n_ties,
            "per_task": self.per_task,
            "per_kind": self.per_kind,
        }


def evaluate_records(
    embedder: Embedder,
    records: Sequence[TrainingRecord],
    budgets: Sequence[Budget] = (Budget(),),
    *,
    batch_size: int = 32,
    show_progress: bool = False,
) -> list[RecordScores]:
    """Hit@1 at each budget; documents and queries are encoded once, at full budget, then sliced."""
    if not records:
        raise ValueError("no records to evaluate")
    hits: dict[Budget, list[tuple[str, str, bool, bool]]] = defaultdict(list)
    for task, task_records in _by_task(records).items():
        pool: dict[tuple, int] = {}
        documents: list[Item] = []
        for record in task_records:
            for item in (record.positive, *record.negatives):
                if _key(item) not in pool:
                    pool[_key(item)] = len(documents)
                    documents.append(item)
        document_vectors = embedder.encode_documents(documents, batch_size=batch_size, show_progress=show_progress)
        query_vectors = embedder.encode_queries(
            [record.query for record in task_records], batch_size=batch_size, show_progress=show_progress
        )
        positives = torch.tensor([pool[_key(record.positive)] for record in task_records])  # (n,)
        for budget in budgets:
            scores = embedder.similarity(
                query_vectors, document_vectors, query_budget=budget.query_vectors, doc_budget=budget.document_vectors
            )  # (n, n_docs)
            positive_scores = scores.gather(1, positives[:, None])  # (n, 1)
            others = scores.scatter(1, positives[:, None], float("-inf"))  # (n, n_docs)
            best_other = others.amax(dim=1, keepdim=True)  # (n, 1)
            is_hit = (positive_scores > best_other)[:, 0]
            is_tie = (positive_scores == best_other)[:, 0]
            for record, hit, tie in zip(task_records, is_hit.tolist(), is_tie.tolist(), strict=True):
                hits[budget].append((task, str(record.meta.get("kind", "all")), hit, tie))
    return [_summarise(budget, hits[budget]) for budget in budgets]


def _summarise(budget: Budget, outcomes: list[tuple[str, str, bool, bool]]) -> RecordScores:
    def mean_by(position: int) -> dict[str, float]:
        groups: dict[str, list[bool]] = defaultdict(list)
        for outcome in outcomes:
            groups[outcome[position]].append(outcome[2])
        return {name: sum(values) / len(values) for name, values in sorted(groups.items())}

    return RecordScores(
        budget=budget,
        hit_at_1=sum(outcome[2] for outcome in outcomes) / len(outcomes),
        n_queries=len(outcomes),
        per_task=mean_by(0),
        per_kind=mean_by(1),
        n_ties=sum(outcome[3] for outcome in outcomes),
    )


def _by_task(records: Sequence[TrainingRecord]) -> dict[str, list[TrainingRecord]]:
    grouped: dict[str, list[TrainingRecord]] = defaultdict(list)
    for record in records:
        grouped[str(record.meta.get("task", "all"))].append(record)
    return dict(sorted(grouped.items()))


def _key(item: Item) -> tuple:
    return (item.text, tuple(str(image) for image in item.images), item.instruction)
