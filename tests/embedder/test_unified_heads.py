"""The unified model's heads: a frozen backbone that reasons, a small head that embeds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import random_image
from mmcascade import Embedder
from mmcascade.backbones import load_backbone
from mmcascade.backbones.testing import build_tiny_checkpoint
from mmcascade.data.items import as_items
from mmcascade.embedder.heads import SelfAttentionHead, build_head

SMALL = {"num_query_tokens": 2, "num_document_tokens": 3}
TEXTS = ["a red circle", "the quick brown fox jumps over the lazy dog", "what colour is the shape?"]


@pytest.fixture(scope="module")
def three_layer_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("three_layers")
    return {
        family: build_tiny_checkpoint(family, root / family, num_layers=3)
        for family in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
    }


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_copied_layers_reproduce_the_backbone(three_layer_checkpoints: dict, family: str, num_layers: int) -> None:
    """hidden_states[-(k+1)] is the output of backbone layer n-k (1-based); the k copied layers plus the copied
    final norm must turn it into last_hidden_state (text only, where m-RoPE is 1-D RoPE)."""
    backbone = load_backbone(three_layer_checkpoints[family])
    options = {**SelfAttentionHead.options_from_backbone(backbone), **SMALL}
    head = build_head(
        "self_attention",
        backbone.hidden_size,
        num_layers=num_layers,
        source_layer=-(num_layers + 1),
        causal=True,
        **options,
    )
    head.initialise_from_backbone(backbone)
    with torch.no_grad():
        output = backbone(backbone.prepare(as_items(TEXTS)), output_hidden_states=True)
        source = output.hidden_states[head.source_layer]
        real = output.attention_mask.bool()  # (B, L)
        reproduced = head.encode_states(source, output.attention_mask, side=None)  # (B, L, H)
        torch.testing.assert_close(reproduced[real], output.last_hidden_state[real], atol=1e-4, rtol=0)
        # Causal meta tokens come after the text, so they cannot move its states either.
        with_meta = head.encode_states(source, output.attention_mask, side="document")[:, : real.shape[1]]
        torch.testing.assert_close(with_meta[real], output.last_hidden_state[real], atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def three_layer_qwen2(three_layer_checkpoints: dict) -> Path:
    return three_layer_checkpoints["qwen2_vl"]


def test_from_pretrained_copies_the_last_layers(three_layer_qwen2: Path) -> None:
    embedder = Embedder.from_pretrained(
        three_layer_qwen2, head="self_attention", head_options={"num_layers": 2, "source_layer": -3, **SMALL}
    )
    layers = embedder.backbone.model.model.language_model.layers
    for head_layer, backbone_layer in zip(embedder.head.layers, layers[1:], strict=True):
        for name, tensor in backbone_layer.state_dict().items():
            torch.testing.assert_close(head_layer.state_dict()[name], tensor, atol=0, rtol=0)


HEADS = [
    ("attention_pooler", {"num_heads": 4, **SMALL}),
    ("attention_pooler", {"num_heads": 4, "source_layer": 2, "projection_dim": 8, **SMALL}),
    ("self_attention", {"num_layers": 2, "source_layer": -3, **SMALL}),
    ("self_attention", {"num_layers": 1, "source_layer": 1, "causal": True, "projection_dim": 8, **SMALL}),
]


@pytest.mark.parametrize(("head", "options"), HEADS)
def test_padding_invariance_and_save_load(three_layer_qwen2: Path, tmp_path: Path, head: str, options: dict) -> None:
    embedder = Embedder.from_pretrained(three_layer_qwen2, head=head, head_options=options)
    items = [*TEXTS, {"text": "what is this?", "image": random_image(3)}]
    for encode in (embedder.encode_queries, embedder.encode_documents):
        batched = encode(items, batch_size=len(items))
        assert batched.shape[1:] == (batched.shape[1], options.get("projection_dim", 64))
        torch.testing.assert_close(batched.norm(dim=-1), torch.ones(batched.shape[:2]))
        for index, item in enumerate(items):
            torch.testing.assert_close(encode([item], batch_size=1)[0], batched[index], atol=1e-5, rtol=0)
    embedder.save_pretrained(tmp_path / "saved")
    loaded = Embedder.from_pretrained(tmp_path / "saved")
    assert type(loaded.head) is type(embedder.head)
    torch.testing.assert_close(loaded.encode_queries(items), embedder.encode_queries(items), atol=0, rtol=0)
    torch.testing.assert_close(loaded.encode_documents(items), embedder.encode_documents(items), atol=0, rtol=0)


@pytest.mark.parametrize(("head", "options"), [HEADS[0], HEADS[2]])
def test_training_the_head_leaves_the_backbone_and_its_reasoning_unchanged(
    three_layer_qwen2: Path, head: str, options: dict
) -> None:
    embedder = Embedder.from_pretrained(three_layer_qwen2, head=head, head_options=options)
    prompts = as_items(["what colour is the shape?", "a red circle"])
    text_before = embedder.backbone.generate(prompts, max_new_tokens=8, temperature=0)
    backbone_before = {name: tensor.clone() for name, tensor in embedder.backbone.state_dict().items()}
    head_before = {name: tensor.clone() for name, tensor in embedder.head.state_dict().items()}

    appended = []
    original_forward = embedder.backbone.forward

    def spy(inputs, appended_embeddings=None, output_hidden_states=False):
        appended.append(appended_embeddings)
        return original_forward(inputs, appended_embeddings, output_hidden_states)

    embedder.backbone.forward = spy
    embedder.backbone.requires_grad_(False)
    embedder.train()
    optimizer = torch.optim.AdamW(embedder.head.parameters(), lr=1e-2)
    queries, documents = TEXTS[:2], TEXTS[1:]
    for _ in range(3):
        query_vectors = embedder(embedder.tokenize(queries, "query"), "query")  # (2, Nq, dim)
        document_vectors = embedder(embedder.tokenize(documents, "document"), "document")  # (2, Nd, dim)
        scores = torch.einsum("qnd,kmd->qknm", query_vectors, document_vectors).amax(-1).sum(-1)  # (2, 2) MaxSim
        loss = torch.nn.functional.cross_entropy(scores / 0.05, torch.arange(2))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    embedder.eval()

    assert appended and all(embeddings is None for embeddings in appended)
    assert all(parameter.grad is None for parameter in embedder.backbone.parameters())
    for name, tensor in embedder.backbone.state_dict().items():
        assert torch.equal(tensor, backbone_before[name]), name
    assert any(not torch.equal(tensor, head_before[name]) for name, tensor in embedder.head.state_dict().items())
    assert embedder.backbone.generate(prompts, max_new_tokens=8, temperature=0) == text_before


def test_bad_configs_raise_clear_errors(three_layer_qwen2: Path) -> None:
    with pytest.raises(ValueError, match="source_layer=-5 is out of range"):
        Embedder.from_pretrained(three_layer_qwen2, head="self_attention", head_options={"source_layer": -5})
    with pytest.raises(ValueError, match="num_layers=4 is larger than the backbone's 3 layers"):
        Embedder.from_pretrained(
            three_layer_qwen2, head="self_attention", head_options={"num_layers": 4, "source_layer": -1}
        )
    with pytest.raises(ValueError, match="source_layer=7 is out of range"):
        Embedder.from_pretrained(three_layer_qwen2, head="attention_pooler", head_options={"source_layer": 7})
    backbone = load_backbone(three_layer_qwen2)
    with pytest.raises(ValueError, match="does not match the backbone's 64"):
        Embedder(backbone, build_head("attention_pooler", 32, num_heads=4))
    wrong_shape = build_head("self_attention", 64, num_layers=1)  # standalone shape: 1 head of 64, not 4 of 16
    with pytest.raises(ValueError, match="decoder shape differs"):
        wrong_shape.initialise_from_backbone(backbone)
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        build_head("attention_pooler", 64, num_heads=5)
