"""The local judge: continuation logits are generation's logits; scores, batching, budget and cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from mmcascade.backbones import load_backbone
from mmcascade.backbones.testing import build_tiny_checkpoint
from mmcascade.data.items import Item
from mmcascade.models import resolve_model
from mmcascade.reasoner.base import GenerationSettings
from mmcascade.reasoner.cache import TraceCache
from mmcascade.rerank import Reranker, render_rerank_prompt, yes_probability
from mmcascade.rerank.judgement import reasoning_from_reply
from mmcascade.rerank.local import LocalJudge
from mmcascade.rerank.prompts import load_rerank_template

QUERIES = [
    Item(text="a small red circle", instruction="Find the image that matches the caption."),
    Item(images=(Image.new("RGB", (64, 48), "red"),), instruction="Find the caption."),
    Item(text="two yellow stars above one brown rectangle"),
]
CANDIDATES = [Item(images=(Image.new("RGB", (40, 40), "blue"),)), Item(text="a red square"), Item(text="a star")]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint("qwen2_vl", tmp_path_factory.mktemp("tiny") / "qwen2_vl")


@pytest.fixture(scope="module")
def judge(checkpoint: Path) -> LocalJudge:
    return LocalJudge(load_backbone(checkpoint).eval(), "tiny", batch_size=2)


def test_continuation_logits_are_the_logits_generation_samples_from(judge: LocalJudge) -> None:
    backbone = judge.backbone
    items, systems = QUERIES, ["Be brief."] * len(QUERIES)
    inputs = backbone.processor(items, systems)
    with torch.inference_mode():
        generated = backbone.model.generate(
            **inputs, max_new_tokens=3, do_sample=False, output_logits=True, return_dict_in_generate=True
        )
    new_tokens = generated.sequences[:, inputs["input_ids"].shape[1] :]  # (B, 3)
    vocabulary = range(generated.logits[0].shape[-1])
    tokenizer = backbone.processor.tokenizer
    checked = 0
    for step in range(3):
        prefixes = [tokenizer.decode(row[:step]) for row in new_tokens.tolist()]
        with torch.inference_mode():
            logits = backbone.continuation_logits(items, systems, prefixes, vocabulary)  # (B, V)
        for row, prefix in enumerate(prefixes):
            if tokenizer(prefix, add_special_tokens=False)["input_ids"] != new_tokens[row, :step].tolist():
                continue  # decoding then encoding may tokenise differently; the comparison needs the same ids
            torch.testing.assert_close(logits[row], generated.logits[step][row].float(), atol=1e-4, rtol=1e-4)
            checked += 1
    assert checked >= len(items) + 2


def test_scores_are_the_softmax_of_the_yes_no_logits_and_batching_changes_nothing(judge: LocalJudge) -> None:
    reranker = Reranker(judge)
    scores = reranker.score(QUERIES, CANDIDATES)
    template = load_rerank_template()
    for query, candidate, score in zip(QUERIES, CANDIDATES, scores, strict=True):
        prompt = render_rerank_prompt(query, candidate, template)
        with torch.inference_mode():
            logits = judge.backbone.continuation_logits(
                [Item(text=prompt.user, images=prompt.images)],
                [prompt.system],
                ["<think>\n</think>\nAnswer:"],
                [judge.tokens.yes, judge.tokens.no],
            )[0]
        assert score.score == pytest.approx(torch.softmax(logits.double(), dim=0)[0].item(), abs=1e-5)
        assert score.score == pytest.approx(yes_probability(score.yes_logit, score.no_logit))
        assert score.reasoning == ""
    one_at_a_time = [
        Reranker(LocalJudge(judge.backbone, "tiny", batch_size=1)).score([q], [c])[0]
        for q, c in zip(QUERIES, CANDIDATES, strict=True)
    ]
    assert [s.score for s in one_at_a_time] == pytest.approx([s.score for s in scores], abs=1e-5)


def test_rerank_orders_by_score_best_first(judge: LocalJudge) -> None:
    reranker = Reranker(judge)
    ranked = reranker.rerank(QUERIES[0], CANDIDATES)
    expected = sorted(range(3), key=lambda index: -reranker.score([QUERIES[0]], [CANDIDATES[index]])[0].score)
    assert [index for index, _ in ranked] == expected


class CountingJudge(LocalJudge):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.completed: list[int] = []

    def complete(self, prompts, settings):
        self.completed.append(len(prompts))
        return super().complete(prompts, settings)


def test_reasoning_respects_the_budget_and_is_cached(judge: LocalJudge, tmp_path: Path) -> None:
    counting = CountingJudge(judge.backbone, "tiny", batch_size=4)
    with TraceCache(tmp_path / "traces.sqlite") as cache:
        reranker = Reranker(counting, cache=cache)
        pairs = ([QUERIES[0], QUERIES[2], QUERIES[0]], [CANDIDATES[0], CANDIDATES[2], CANDIDATES[0]])
        first = reranker.score(*pairs, think_tokens=5)
        assert counting.completed == [2]  # the repeated pair is reasoned about once
        again = reranker.score(*pairs, think_tokens=5)
        assert counting.completed == [2]  # all from the cache
        assert again == first and first[0] == first[2]
    template = load_rerank_template()
    for query, candidate, score in zip(*pairs, first, strict=True):
        prompt = render_rerank_prompt(query, candidate, template)
        reply = judge.complete([prompt], GenerationSettings(max_new_tokens=5))[0]
        assert score.reasoning == reasoning_from_reply(reply)


@pytest.mark.parametrize("budget", [-1, 1.5, True, 10**6])
def test_bad_budgets_are_refused(judge: LocalJudge, budget: object) -> None:
    with pytest.raises(ValueError, match="think_tokens"):
        Reranker(judge).score(QUERIES[:1], CANDIDATES[:1], think_tokens=budget)


def test_mismatched_pairs_and_non_generative_models_are_refused(judge: LocalJudge) -> None:
    with pytest.raises(ValueError, match="got 2 queries for 1 candidates"):
        Reranker(judge).score(QUERIES[:2], CANDIDATES[:1])
    embedder = load_backbone(resolve_model("starter-embedder") / "backbone")
    with pytest.raises(ValueError, match="the starter_features backbone cannot judge relevance"):
        LocalJudge(embedder, "starter-embedder")
