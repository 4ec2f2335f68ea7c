"""The yes/no judgement: which tokens are read, where, and how they become a score.

After the (optional) reasoning, the reranker's reply is continued up to ``Answer:`` and the model's
next-token logits for ``" yes"`` and ``" no"`` are read. The score is the softmax over those two
logits, i.e. ``P(yes) = 1 / (1 + exp(no - yes))``: a probability in (0, 1) that does not depend on
how much mass the model puts on other tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_CUE = "Answer:"
YES, NO = " yes", " no"  # the tokens after "Answer:" carry their leading space in BPE vocabularies


@dataclass(frozen=True)
class JudgementTokens:
    """The vocabulary ids of ``" yes"`` and ``" no"`` for one tokenizer."""

    yes: int
    no: int


def judgement_tokens(tokenizer: Any, *, model_id: str = "the reranker") -> JudgementTokens:
    """The single-token ids of ``" yes"`` and ``" no"``; raises ValueError when either is split."""
    ids = {}
    for word in (YES, NO):
        pieces = tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(pieces) != 1:
            raise ValueError(
                f"{model_id}'s tokenizer splits {word!r} into {len(pieces)} tokens {pieces}; the reranker reads "
                "the probability of one 'yes' token against one 'no' token, so it needs a tokenizer with single "
                "' yes' and ' no' tokens (every Qwen and Llama tokenizer has them)"
            )
        ids[word] = pieces[0]
    if ids[YES] == ids[NO]:
        raise ValueError(f"{model_id}'s tokenizer maps ' yes' and ' no' to the same token {ids[YES]}")
    return JudgementTokens(yes=ids[YES], no=ids[NO])


def yes_probability(yes_logit: float, no_logit: float) -> float:
    """Softmax over the two logits: ``exp(yes) / (exp(yes) + exp(no))``, computed without overflow."""
    difference = float(no_logit) - float(yes_logit)
    if math.isnan(difference):
        raise ValueError(f"the reranker returned NaN logits (yes={yes_logit}, no={no_logit})")
    if difference > 0:
        odds = math.exp(-difference)
        return odds / (1.0 + odds)
    return 1.0 / (1.0 + math.exp(difference))


def reasoning_from_reply(reply: str) -> str:
    """The reasoning in a generated reply: what follows ``<think>`` up to ``</think>`` or ``Answer:``.

    A reply cut by the token budget has no closing tag; everything it wrote is the reasoning.
    """
    text = reply
    if THINK_OPEN in text:
        text = text.split(THINK_OPEN, 1)[1]
    for stop in (THINK_CLOSE, ANSWER_CUE):
        text = text.split(stop, 1)[0]
    return text.strip()


def judgement_prefix(reasoning: str) -> str:
    """The assistant reply up to the judgement: the reasoning block (empty without a budget), then ``Answer:``."""
    body = reasoning.strip()
    return (
        f"{THINK_OPEN}\n{body}\n{THINK_CLOSE}\n{ANSWER_CUE}" if body else f"{THINK_OPEN}\n{THINK_CLOSE}\n{ANSWER_CUE}"
    )
