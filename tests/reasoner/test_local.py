"""Local generation on a tiny random Qwen2-VL: batching changes nothing, the budget holds, seeds repeat."""

from __future__ import annotations

import pytest
from PIL import Image

from mmcascade.backbones.testing import build_tiny_checkpoint
from mmcascade.data.items import Item
from mmcascade.reasoner.base import GenerationSettings, Prompt
from mmcascade.reasoner.local import LocalReasoner, load_reasoner


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny") / "qwen2_vl"
    build_tiny_checkpoint("qwen2_vl", folder)
    return folder


@pytest.fixture(scope="module")
def reasoner(checkpoint):
    return LocalReasoner.from_pretrained(checkpoint, batch_size=4)


PROMPTS = [
    Prompt("Think first.", "Describe <image> in a few words.", (Image.new("RGB", (64, 48), "red"),)),
    Prompt("Think first.", "What does a long question about several objects need? " * 3),
    Prompt("", "hi"),
    Prompt("Think.", "Compare <image> and <image>.", (Image.new("RGB", (32, 32), "blue"), Image.new("RGB", (56, 56)))),
    Prompt("Think first.", "short"),
]


def test_batched_greedy_generation_equals_one_prompt_at_a_time(reasoner):
    settings = GenerationSettings(max_new_tokens=6)
    batched = reasoner.complete(PROMPTS, settings)
    single = [reasoner.complete([prompt], settings)[0] for prompt in PROMPTS]
    assert batched == single
    assert all(isinstance(text, str) for text in batched)


def test_the_token_budget_bounds_the_generated_tokens(reasoner):
    backbone = reasoner.backbone
    for budget in (1, 5):
        texts = reasoner.complete(PROMPTS[:2], GenerationSettings(max_new_tokens=budget))
        for prompt, text in zip(PROMPTS[:2], texts, strict=True):
            # the token ids generation produced for this prompt alone, decoded as the reasoner decodes them
            inputs = backbone.processor([Item(text=prompt.user, images=prompt.images)], [prompt.system])
            output = backbone.model.generate(**inputs, max_new_tokens=budget, do_sample=False)
            new_tokens = output[0, inputs["input_ids"].shape[1] :]
            assert len(new_tokens) <= budget
            assert text == backbone.processor.tokenizer.decode(new_tokens, skip_special_tokens=True)


def test_sampling_repeats_with_a_seed(reasoner):
    settings = GenerationSettings(max_new_tokens=8, temperature=1.0, top_p=0.9, seed=3)
    assert reasoner.complete(PROMPTS[:3], settings) == reasoner.complete(PROMPTS[:3], settings)


def test_the_system_prompt_is_a_system_turn(reasoner):
    processor = reasoner.backbone.processor
    ids = processor([Item(text="hello")], ["Be brief."])["input_ids"][0]
    text = processor.tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhello")
    with pytest.raises(ValueError, match="got 2 system prompts for 1 items"):
        processor([Item(text="hello")], ["a", "b"])


def test_a_backbone_that_cannot_generate_says_so():
    from mmcascade.backbones import load_backbone
    from mmcascade.models import resolve_model

    backbone = load_backbone(resolve_model("starter-embedder") / "backbone")
    with pytest.raises(ValueError, match="cannot generate text"):
        LocalReasoner(backbone, "starter").complete([Prompt("", "x")], GenerationSettings(max_new_tokens=2))


def test_bad_settings_and_options_are_refused(checkpoint):
    with pytest.raises(ValueError, match="token budget"):
        GenerationSettings(max_new_tokens=0)
    with pytest.raises(ValueError, match="temperature"):
        GenerationSettings(temperature=-1)
    with pytest.raises(ValueError, match="batch_size"):
        load_reasoner(checkpoint, batch_size=0)
