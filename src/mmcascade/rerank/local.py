"""Reranking with a generative backbone in this process (Qwen-VL family, the starter reasoner).

Reasoning goes through :class:`~mmcascade.reasoner.local.LocalReasoner` (length-sorted, left-padded,
KV-cached batches); the judgement is one forward pass per batch over prompt + reply prefix, reading
the ``" yes"``/``" no"`` logits at the last position (:meth:`Backbone.continuation_logits`).
:class:`NextTokenScorer` reads the same position over the full vocabulary: the next-token
log-probabilities that ``mmcascade serve reasoner`` answers logprobs requests with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mmcascade.backbones import Backbone
from mmcascade.data.items import Item
from mmcascade.reasoner.base import Prompt, Reasoner
from mmcascade.reasoner.local import LocalReasoner
from mmcascade.rerank.base import JudgeModel
from mmcascade.rerank.judgement import JudgementTokens, judgement_tokens


class LocalJudge(LocalReasoner, JudgeModel):
    """A :class:`JudgeModel` over a generative backbone; ``batch_size`` pairs per forward pass.

    ``LocalJudge.from_pretrained(name_or_path)`` loads a folder, Hub id or ``starter`` (the starter reasoner).
    """

    def __init__(self, backbone: Backbone, model_id: str, *, batch_size: int = 16):
        super().__init__(backbone, model_id, batch_size=batch_size)
        backbone.require_generative("judge relevance")
        self.tokens: JudgementTokens = judgement_tokens(self.backbone.processor.tokenizer, model_id=model_id)

    def yes_no_logits(self, prompts: Sequence[Prompt], prefixes: Sequence[str]) -> list[tuple[float, float]]:
        logits = prompt_continuation_logits(
            self.backbone, prompts, prefixes, (self.tokens.yes, self.tokens.no), batch_size=self.batch_size
        )  # (n, 2)
        return [(yes, no) for yes, no in logits.tolist()]


@dataclass(frozen=True)
class TokenLogprob:
    """One vocabulary token, decoded (``" yes"`` keeps its space), and its log-probability (may be -inf)."""

    token: str
    logprob: float


class NextTokenScorer:
    """The most likely next tokens, with log-probabilities over the full vocabulary of a generative
    backbone, after chat prompts followed by partial assistant replies.

    ``batch_size`` prompts go through one forward pass (length-sorted, as :class:`LocalJudge` does).
    """

    def __init__(self, backbone: Backbone, *, batch_size: int = 16) -> None:
        backbone.require_generative("report next-token log-probabilities")
        self.backbone = backbone
        self.batch_size = batch_size
        self.tokenizer = backbone.processor.tokenizer
        self.vocabulary = range(len(self.tokenizer))  # the tokens it can decode; the lm head may pad past them

    @classmethod
    def for_reasoner(cls, reasoner: Reasoner) -> NextTokenScorer | None:
        """A scorer over a local reasoner's backbone, or None when the reasoner has no generative backbone."""
        if not isinstance(reasoner, LocalReasoner) or not reasoner.backbone.generative:
            return None
        return cls(reasoner.backbone, batch_size=reasoner.batch_size)

    def score(
        self, prompts: Sequence[Prompt], reply_prefixes: Sequence[str], *, top_k: int
    ) -> list[tuple[TokenLogprob, ...]]:
        """The ``top_k`` most likely tokens after each prompt + reply prefix, best first (the first is greedy)."""
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be an int >= 1; got {top_k!r}")
        logits = prompt_continuation_logits(
            self.backbone, prompts, reply_prefixes, self.vocabulary, batch_size=self.batch_size
        )  # (n, V)
        logprobs = torch.log_softmax(logits, dim=-1)  # (n, V)
        values, token_ids = logprobs.topk(min(top_k, logprobs.shape[-1]), dim=-1)  # (n, k)
        return [
            tuple(
                TokenLogprob(self.tokenizer.decode([token_id]), value)
                for value, token_id in zip(row_values, row_ids, strict=True)
            )
            for row_values, row_ids in zip(values.tolist(), token_ids.tolist(), strict=True)
        ]


def prompt_continuation_logits(
    backbone: Backbone,
    prompts: Sequence[Prompt],
    prefixes: Sequence[str],
    token_ids: Sequence[int],
    *,
    batch_size: int = 16,
) -> torch.Tensor:
    """Logits ``(n, len(token_ids))`` of the token after each chat prompt + assistant reply prefix, in order.

    Prompts are sorted by length and run ``batch_size`` at a time (less padding), under inference mode.
    """
    if len(prefixes) != len(prompts):
        raise ValueError(f"got {len(prefixes)} reply prefixes for {len(prompts)} prompts")
    items = [Item(text=prompt.user, images=prompt.images) for prompt in prompts]
    order = sorted(range(len(items)), key=lambda index: backbone.estimate_length(items[index]))
    results = torch.zeros((len(items), len(token_ids)))  # (n, T)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            results[batch] = backbone.continuation_logits(
                [items[index] for index in batch],
                [prompts[index].system for index in batch],
                [prefixes[index] for index in batch],
                token_ids,
            ).float()  # (b, T)
    return results
