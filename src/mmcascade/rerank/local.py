"""Reranking with a generative backbone in this process (Qwen-VL family, the starter reasoner).

Reasoning goes through :class:`~mmcascade.reasoner.local.LocalReasoner` (length-sorted, left-padded,
KV-cached batches); the judgement is one forward pass per batch over prompt + reply prefix, reading
the ``" yes"``/``" no"`` logits at the last position (:meth:`Backbone.continuation_logits`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mmcascade.backbones import Backbone
from mmcascade.data.items import Item
from mmcascade.reasoner.base import Prompt
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
