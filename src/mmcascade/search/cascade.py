"""Retrieve, then rerank: the TTE-v2 cascade with one :class:`~mmcascade.budget.Budget` for every cost knob.

Stage 1 searches an :class:`~mmcascade.search.Index` for the top-``retrieve_k`` documents (MaxSim over
``query_vectors`` query vectors and the ``document_vectors`` stored per document). Stage 2 scores the
first ``rerank_k`` of them with a :class:`~mmcascade.rerank.Reranker` (P(yes) after up to
``think_tokens`` reasoning tokens) and moves them into rerank-score order; the rest keep their
retrieval order behind them. Every hit carries both scores and the reranker's reasoning. A candidate
whose image file has moved since indexing is not reranked: it keeps its retrieval place and carries a
``warning``, and the search goes on.

:func:`merge_rankings` is the ordering rule on its own, so the evaluation harness ranks candidates
exactly as a search does.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mmcascade.budget import Budget, check_think_tokens
from mmcascade.data.items import Item, as_item
from mmcascade.index.base import SearchHit
from mmcascade.rerank.base import Reranker, RerankScore
from mmcascade.search.index import Index


@dataclass(frozen=True)
class CascadeHit:
    """One result: the retrieval score and rank, and (for reranked hits) P(yes) and the reasoning."""

    id: str
    retrieval_score: float
    retrieval_rank: int  # 1-based rank after stage 1
    payload: Mapping[str, Any] = field(default_factory=dict)
    rerank_score: float | None = None
    reasoning: str | None = None
    warning: str | None = None  # why a hit within the rerank depth was not reranked (its file moved)

    @property
    def reranked(self) -> bool:
        return self.rerank_score is not None


def merge_rankings(retrieval_order: Sequence[int], rerank_scores: Sequence[float | None]) -> list[int]:
    """The final order: the first ``len(rerank_scores)`` candidates by rerank score (ties keep retrieval
    order), then the others in retrieval order. ``retrieval_order`` lists candidate indices best first.

    A None score (a candidate that could not be judged) keeps its retrieval place; the scored candidates
    fill the other places of the head.
    """
    if len(rerank_scores) > len(retrieval_order):
        raise ValueError(f"got {len(rerank_scores)} rerank scores for {len(retrieval_order)} candidates")
    scored = iter(
        sorted(
            (position for position, score in enumerate(rerank_scores) if score is not None),
            key=lambda position: -rerank_scores[position],
        )
    )
    head = [position if score is None else next(scored) for position, score in enumerate(rerank_scores)]
    return [retrieval_order[position] for position in head] + list(retrieval_order[len(rerank_scores) :])


@dataclass(frozen=True)
class RerankStage:
    """Stage 2 on its own: rerank the first ``depth`` of a ranked list with ``think_tokens`` of reasoning.

    :class:`Cascade` and the evaluation harness both rank through :meth:`apply`, so an evaluated ranking
    is the ranking a search returns.
    """

    reranker: Reranker
    depth: int
    think_tokens: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth < 1:
            raise ValueError(f"the rerank depth (k) must be a positive int; got {self.depth!r}")
        check_think_tokens(self.think_tokens)

    @classmethod
    def from_budget(cls, reranker: Reranker, budget: Budget) -> RerankStage:
        """The stage a budget asks for: depth ``rerank_k``, ``think_tokens`` of reasoning per pair."""
        return cls(reranker, budget.rerank_k, budget.think_tokens)

    def apply(self, query: Item, head: Sequence[Item | None], total: int) -> tuple[list[int], list[RerankScore | None]]:
        """The final order of ``total`` ranked candidates whose first ones are ``head`` (at most ``depth`` are
        scored), and the scores of the scored head. Indices refer to the retrieval order.

        A None in ``head`` is a candidate that cannot be judged: it gets no score (None) and keeps its place.
        """
        head = list(head[: self.depth])
        judged = [position for position, item in enumerate(head) if item is not None]
        scores: list[RerankScore | None] = [None] * len(head)
        if judged:
            judgements = self.reranker.score(
                [query] * len(judged), [head[position] for position in judged], think_tokens=self.think_tokens
            )
            for position, score in zip(judged, judgements, strict=True):
                scores[position] = score
        order = merge_rankings(list(range(total)), [None if score is None else score.score for score in scores])
        return order, scores


def candidate_item(payload: Mapping[str, Any], doc_id: str) -> Item:
    """The document behind a hit, rebuilt from its payload (``text``/``caption``, ``image``/``images``/``path``).

    Raises ValueError naming the document when the payload holds neither text nor an image to rerank.
    """
    text = payload.get("text") or payload.get("caption")
    images = payload.get("images") or [payload[key] for key in ("image", "path") if payload.get(key)][:1]
    if not isinstance(images, (list, tuple)) or not all(isinstance(image, str) for image in images):
        raise ValueError(f"document {doc_id!r}: payload 'images' must be a list of image paths; got {images!r}")
    if not (isinstance(text, str) and text.strip()) and not images:
        raise ValueError(
            f"document {doc_id!r} cannot be reranked: its payload {dict(payload)!r} holds no text, caption, image "
            "or path; index documents with their content in the payload (the JSONL collection format does this)"
        )
    missing = [image for image in images if not Path(image).is_file()]
    if missing:
        raise FileNotFoundError(f"document {doc_id!r}: image file not found: {missing[0]} (moved since indexing?)")
    return Item(text=text if isinstance(text, str) and text.strip() else None, images=tuple(images))


class Cascade:
    """Retrieve with an index, rerank with a reranker (optional: without one, ``rerank_k`` must be 0).

    ``stage_seconds`` holds the wall time of each stage of the last :meth:`search_many` call.
    """

    def __init__(self, index: Index, reranker: Reranker | None = None):
        self.index = index
        self.reranker = reranker
        self.stage_seconds: dict[str, float] = {"retrieve": 0.0, "rerank": 0.0}

    def search(
        self, query: Any, budget: Budget, *, instruction: str | None = None, trace: Any = None
    ) -> list[CascadeHit]:
        """The ranked hits for one query (text, image or both); see :meth:`search_many`."""
        traces = None if trace is None else [trace]
        return self.search_many([query], budget, instruction=instruction, traces=traces)[0]

    def search_many(
        self,
        queries: Sequence[Any],
        budget: Budget,
        *,
        instruction: str | None = None,
        traces: Sequence[Any] | None = None,
    ) -> list[list[CascadeHit]]:
        """``retrieve_k`` hits per query: the reranked first ``rerank_k`` in rerank order, then the rest."""
        self._check(budget)
        started = time.perf_counter()
        retrieved = self.index.search_many(
            list(queries),
            top_k=budget.retrieve_k,
            query_budget=budget.query_vectors,
            instruction=instruction,
            traces=traces,
        )
        reranking_started = time.perf_counter()
        results = [
            self._rerank(query, hits, budget, instruction) for query, hits in zip(queries, retrieved, strict=True)
        ]
        self.stage_seconds = {
            "retrieve": reranking_started - started,
            "rerank": time.perf_counter() - reranking_started,
        }
        return results

    def _check(self, budget: Budget) -> None:
        manifest = self.index.manifest
        if budget.document_vectors is not None and budget.document_vectors != manifest.doc_budget:
            raise ValueError(
                f"index {self.index.name!r} stores {manifest.doc_budget} vectors per document; a budget of "
                f"{budget.document_vectors} needs an index built with --doc-budget {budget.document_vectors}"
            )
        count = self.index.count()
        if budget.retrieve_k > count:
            raise ValueError(
                f"retrieve_k (K={budget.retrieve_k}) is larger than index {self.index.name!r}, which holds {count} "
                f"document(s); use K <= {count}"
            )
        if budget.rerank_k and self.reranker is None:
            raise ValueError(f"rerank_k={budget.rerank_k} needs a reranker; pass one to Cascade (or set rerank_k=0)")

    def _rerank(self, query: Any, hits: list[SearchHit], budget: Budget, instruction: str | None) -> list[CascadeHit]:
        ranked = [
            CascadeHit(id=hit.id, retrieval_score=hit.score, retrieval_rank=rank, payload=hit.payload)
            for rank, hit in enumerate(hits, start=1)
        ]
        if not budget.rerank_k or self.reranker is None or not ranked:
            return ranked
        stage = RerankStage.from_budget(self.reranker, budget)
        query_item = _with_instruction(query, instruction or self.index.manifest.query_instruction)
        head: list[Item | None] = []
        for position, hit in enumerate(ranked[: budget.rerank_k]):
            try:
                head.append(candidate_item(hit.payload, hit.id))
            except FileNotFoundError as error:  # one moved file must not fail the whole query
                head.append(None)
                ranked[position] = replace(hit, warning=f"not reranked: {error}")
        order, scores = stage.apply(query_item, head, len(ranked))
        for position, score in enumerate(scores):
            if score is not None:
                ranked[position] = replace(ranked[position], rerank_score=score.score, reasoning=score.reasoning)
        return [ranked[index] for index in order]


def _with_instruction(query: Any, instruction: str | None) -> Item:
    item = as_item(query)
    if item.instruction or not instruction:
        return item
    return Item(text=item.text, images=item.images, instruction=instruction)
