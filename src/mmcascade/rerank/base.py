"""The reranker seam: a model that can reason and read a yes/no judgement, and the :class:`Reranker` over it.

A :class:`JudgeModel` only has to (1) complete prompts (it is a :class:`~mmcascade.reasoner.base.Reasoner`,
used for the budgeted reasoning) and (2) return the logits of ``" yes"`` and ``" no"`` after a given
assistant-reply prefix (:meth:`JudgeModel.yes_no_logits`). Prompt rendering, reasoning extraction, the
token budget, the score and the reasoning cache are shared by every backend (in-process VLMs, the
starter reasoner, OpenAI-compatible servers with logprobs).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mmcascade.budget import check_think_tokens
from mmcascade.data.items import as_item
from mmcascade.reasoner.base import GenerationSettings, Prompt, Reasoner
from mmcascade.reasoner.pipeline import TraceStore, store_completions, trace_key
from mmcascade.rerank.judgement import judgement_prefix, reasoning_from_reply, yes_probability
from mmcascade.rerank.prompts import RerankTemplate, load_rerank_template, render_rerank_prompt


class JudgeModel(Reasoner):
    """A generative model that also reports the yes/no logits at a judgement position."""

    @abstractmethod
    def yes_no_logits(self, prompts: Sequence[Prompt], prefixes: Sequence[str]) -> list[tuple[float, float]]:
        """``(yes_logit, no_logit)`` of the token after each prompt's assistant reply ``prefix``."""


@dataclass(frozen=True)
class RerankScore:
    """One (query, candidate) judgement: ``score`` is P(yes) from the softmax over the two logits."""

    score: float
    yes_logit: float
    no_logit: float
    reasoning: str = ""


class Reranker:
    """Scores (query, candidate) pairs with a :class:`JudgeModel`.

    Args:
        model: the judge (local backbone, starter reasoner or OpenAI-compatible server).
        template: the prompt template (default: the bundled ``relevance.yaml``).
        cache: where the budgeted reasoning is kept (e.g. a :class:`~mmcascade.reasoner.cache.TraceCache`),
            keyed by model, prompt and budget, so re-ranking the same pairs never reasons twice.
    """

    def __init__(self, model: JudgeModel, *, template: RerankTemplate | None = None, cache: TraceStore | None = None):
        self.model = model
        self.template = template or load_rerank_template()
        self.cache = cache

    @property
    def model_id(self) -> str:
        return self.model.model_id

    def score(self, queries: Sequence[Any], candidates: Sequence[Any], *, think_tokens: int = 0) -> list[RerankScore]:
        """One :class:`RerankScore` per (``queries[i]``, ``candidates[i]``) pair, in order.

        With ``think_tokens > 0`` the model first reasons about each pair within that many tokens;
        the reasoning is then part of the reply the judgement is read after.
        """
        budget = check_think_tokens(think_tokens)
        if len(queries) != len(candidates):
            raise ValueError(f"got {len(queries)} queries for {len(candidates)} candidates; pass one per pair")
        prompts = [
            render_rerank_prompt(as_item(query), as_item(candidate), self.template)
            for query, candidate in zip(queries, candidates, strict=True)
        ]
        reasoning = self._reason(prompts, budget) if budget else [""] * len(prompts)
        logits = self.model.yes_no_logits(prompts, [judgement_prefix(text) for text in reasoning])
        return [
            RerankScore(score=yes_probability(yes, no), yes_logit=float(yes), no_logit=float(no), reasoning=text)
            for (yes, no), text in zip(logits, reasoning, strict=True)
        ]

    def rerank(self, query: Any, candidates: Sequence[Any], *, think_tokens: int = 0) -> list[tuple[int, RerankScore]]:
        """``(candidate index, score)`` for every candidate of one query, best first (ties keep input order)."""
        scores = self.score([query] * len(candidates), list(candidates), think_tokens=think_tokens)
        return sorted(enumerate(scores), key=lambda pair: -pair[1].score)

    def _reason(self, prompts: list[Prompt], budget: int) -> list[str]:
        """The reasoning for each prompt: raw replies come from the cache or, once per distinct prompt, the model."""
        settings = GenerationSettings(max_new_tokens=budget)
        keys = [trace_key(self.model.model_id, prompt, settings) for prompt in prompts]
        replies = dict(self.cache.get_many(list(dict.fromkeys(keys)))) if self.cache is not None else {}
        todo = {key: prompt for key, prompt in zip(keys, prompts, strict=True) if key not in replies}
        if todo:
            fresh = dict(zip(todo, self.model.complete(list(todo.values()), settings), strict=True))
            if self.cache is not None:
                store_completions(self.cache, fresh, self.model.model_id)
            replies.update(fresh)
        return [reasoning_from_reply(replies[key]) for key in keys]
