"""The yes/no judgement: the score is a by-hand softmax, reasoning extraction, token checks."""

from __future__ import annotations

import math

import pytest
import torch

from mmcascade.backbones.testing import build_tiny_tokenizer
from mmcascade.rerank.judgement import judgement_prefix, judgement_tokens, reasoning_from_reply, yes_probability


@pytest.mark.parametrize(("yes", "no"), [(2.0, -1.0), (-3.5, 0.25), (0.0, 0.0), (800.0, -800.0), (-900.0, 900.0)])
def test_yes_probability_is_the_softmax_over_the_two_logits(yes: float, no: float) -> None:
    by_hand = math.exp(yes - max(yes, no)) / (math.exp(yes - max(yes, no)) + math.exp(no - max(yes, no)))
    assert yes_probability(yes, no) == pytest.approx(by_hand, abs=1e-12)
    torch_softmax = torch.softmax(torch.tensor([yes, no], dtype=torch.float64), dim=0)[0].item()
    assert yes_probability(yes, no) == pytest.approx(torch_softmax, abs=1e-12)


def test_yes_probability_rejects_nan() -> None:
    with pytest.raises(ValueError, match="NaN"):
        yes_probability(float("nan"), 0.0)


@pytest.mark.parametrize(
    ("reply", "reasoning"),
    [
        ("<think>two red circles</think>\nAnswer: yes", "two red circles"),
        ("<think>\ncut by the budget", "cut by the budget"),
        ("the caption names a star. Answer: no", "the caption names a star."),
        ("Answer: yes", ""),
        ("", ""),
    ],
)
def test_reasoning_is_what_precedes_the_answer(reply: str, reasoning: str) -> None:
    assert reasoning_from_reply(reply) == reasoning


def test_judgement_prefix_ends_at_the_answer_cue() -> None:
    assert judgement_prefix("  blue square  ") == "<think>\nblue square\n</think>\nAnswer:"
    assert judgement_prefix("") == "<think>\n</think>\nAnswer:"


def test_a_tokenizer_that_splits_yes_is_refused() -> None:
    tokenizer = build_tiny_tokenizer()
    tokens = judgement_tokens(tokenizer)
    assert tokenizer.decode([tokens.yes]) == " yes" and tokenizer.decode([tokens.no]) == " no"

    class SplitsYes:
        def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
            return {"input_ids": [ord(character) for character in text]}

    with pytest.raises(ValueError, match=r"tiny-judge's tokenizer splits ' yes' into 4 tokens"):
        judgement_tokens(SplitsYes(), model_id="tiny-judge")
