"""Embedder end to end on tiny checkpoints of every family."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import FAMILIES, random_image
from mmcascade import Embedder, Item
from mmcascade.scoring import maxsim

SMALL_META = {"num_query_tokens": 4, "num_document_tokens": 8}


@pytest.fixture(scope="module")
def meta_embedder(qwen2_vl_checkpoint: Path) -> Embedder:
    return Embedder.from_pretrained(qwen2_vl_checkpoint, head="meta_tokens", head_options=SMALL_META)


def mixed_items() -> list:
    return [
        "a red circle",
        {"image": random_image(10)},
        {"text": "what is left of the square?", "image": random_image(11, (64, 96)), "instruction": "Answer."},
        {"text": "<image> then <image>", "images": [random_image(12), random_image(13, (80, 80))]},
        "a much longer text that forces plenty of padding onto every shorter item in the same batch " * 2,
    ]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("head", "options"), [("last_token", {}), ("mean", {}), ("meta_tokens", SMALL_META)])
def test_padding_never_leaks_into_vectors(tiny_checkpoints: dict, family: str, head: str, options: dict) -> None:
    embedder = Embedder.from_pretrained(tiny_checkpoints[family], head=head, head_options=options)
    items = mixed_items()
    for side, encode in (("query", embedder.encode_queries), ("document", embedder.encode_documents)):
        batched = encode(items, batch_size=len(items))
        for index, item in enumerate(items):
            alone = encode([item], batch_size=1)
            torch.testing.assert_close(batched[index], alone[0], atol=1e-5, rtol=0, msg=f"{side} item {index}")


def test_meta_token_shapes_budgets_and_norms(meta_embedder: Embedder) -> None:
    queries = meta_embedder.encode_queries(mixed_items())
    documents = meta_embedder.encode_documents(mixed_items())
    assert queries.shape == (5, 4, 64) and documents.shape == (5, 8, 64)
    torch.testing.assert_close(documents.norm(dim=-1), torch.ones(5, 8))
    prefix = meta_embedder.encode_queries(mixed_items(), query_budget=2)
    torch.testing.assert_close(prefix, queries[:, :2])
    assert meta_embedder.encode_documents(mixed_items()[:2], doc_budget=3).shape == (2, 3, 64)
    scores = meta_embedder.similarity(queries, documents, query_budget=2, doc_budget=4)
    torch.testing.assert_close(scores, maxsim(queries[:, :2], documents[:, :4]))


def test_joint_layout_query_vectors_ignore_the_document_block(meta_embedder: Embedder) -> None:
    """Causal attention: query meta tokens precede the document block, so changing it cannot move them."""
    items = ["a red circle", {"image": random_image(14)}]
    before_q, before_d = meta_embedder.encode_queries(items), meta_embedder.encode_documents(items)
    head = meta_embedder.head
    original = head.meta_embeddings.detach().clone()
    try:
        with torch.no_grad():
            head.meta_embeddings[4:] += 1.0
        torch.testing.assert_close(meta_embedder.encode_queries(items), before_q)
        assert (meta_embedder.encode_documents(items) - before_d).abs().max() > 1e-3
    finally:
        with torch.no_grad():
            head.meta_embeddings.copy_(original)


def test_query_vectors_are_the_meta_token_states(meta_embedder: Embedder) -> None:
    """Reference: run the backbone with the appended block and cut out positions by hand."""
    item = Item(text="two yellow stars")
    backbone, head = meta_embedder.backbone, meta_embedder.head
    with torch.no_grad():
        hidden = backbone(backbone.prepare([item]), appended_embeddings=head.meta_embeddings).last_hidden_state[0]
    query_states = hidden[-12:-8]
    expected = query_states / query_states.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(meta_embedder.encode_queries([item])[0], expected)


def test_single_vector_outputs_and_cosine(qwen2_vl_checkpoint: Path) -> None:
    embedder = Embedder.from_pretrained(qwen2_vl_checkpoint)  # default head: last-token pooling
    assert not embedder.is_multi_vector
    queries = embedder.encode_queries(["a cat", "a dog"], convert_to="numpy")
    documents = embedder.encode_documents(["a cat on a mat"], convert_to="numpy")
    assert isinstance(queries, np.ndarray) and queries.shape == (2, 1, 64)  # one shape: (n, V, d), V = 1 here
    assert documents.shape == (1, 1, 64)
    flat_queries, flat_documents = queries[:, 0], documents[:, 0]
    norms = np.linalg.norm(flat_queries, axis=1, keepdims=True) * np.linalg.norm(flat_documents)
    expected = flat_queries @ flat_documents.T / norms
    np.testing.assert_allclose(
        embedder.similarity(torch.from_numpy(queries), torch.from_numpy(documents)), expected, rtol=1e-5
    )
    np.testing.assert_allclose(  # plain (n, d) vectors are still accepted
        embedder.similarity(torch.from_numpy(flat_queries), torch.from_numpy(flat_documents)), expected, rtol=1e-5
    )


def test_instructions_reach_the_prompt_and_change_vectors(qwen2_vl_checkpoint: Path) -> None:
    embedder = Embedder.from_pretrained(qwen2_vl_checkpoint)
    plain = embedder.encode_queries(["a cat"])
    instructed = embedder.encode_queries(["a cat"], instruction="Find a photo.")
    same_via_item = embedder.encode_queries([{"text": "a cat", "instruction": "Find a photo."}])
    torch.testing.assert_close(instructed, same_via_item)
    assert (plain - instructed).abs().max() > 1e-4


def test_save_load_round_trip_is_json_and_safetensors_only(meta_embedder: Embedder, tmp_path: Path) -> None:
    meta_embedder.config.query_instruction = "Find the matching image."
    try:
        meta_embedder.save_pretrained(tmp_path / "model")
    finally:
        meta_embedder.config.query_instruction = None
    files = sorted(str(p.relative_to(tmp_path / "model")) for p in (tmp_path / "model").rglob("*") if p.is_file())
    assert all(name.endswith((".json", ".safetensors", ".jinja", ".txt")) for name in files), files
    assert {"mmcascade.json", "head/config.json", "head/model.safetensors", "backbone/config.json"} <= set(files)
    config = json.loads((tmp_path / "model" / "mmcascade.json").read_text())
    assert config["head_type"] == "meta_tokens" and config["query_instruction"] == "Find the matching image."
    loaded = Embedder.from_pretrained(tmp_path / "model")
    items = mixed_items()[:3]
    torch.testing.assert_close(loaded.encode_documents(items), meta_embedder.encode_documents(items))
    torch.testing.assert_close(
        loaded.encode_queries(items), meta_embedder.encode_queries(items, instruction="Find the matching image.")
    )
    with pytest.raises(ValueError, match="already has a trained head"):
        Embedder.from_pretrained(tmp_path / "model", head="mean")


def test_a_failed_save_keeps_the_previous_checkpoint(meta_embedder: Embedder, tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "model"
    meta_embedder.save_pretrained(target)
    before = (target / "head" / "model.safetensors").read_bytes()

    def crash(directory: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(meta_embedder.head, "save_pretrained", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        meta_embedder.save_pretrained(target)
    assert (target / "head" / "model.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no staging folder left behind


def test_meta_tokens_receive_gradients(meta_embedder: Embedder) -> None:
    inputs = meta_embedder.tokenize(["a red circle", {"image": random_image(15)}], "query")
    vectors = meta_embedder(inputs, "query")
    vectors.sum().backward()
    gradient = meta_embedder.head.meta_embeddings.grad
    assert gradient is not None and gradient[:4].abs().sum() > 0
    meta_embedder.zero_grad(set_to_none=True)


def test_bad_arguments(meta_embedder: Embedder, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="query_budget=0 is out of range: valid values are 1..4"):
        meta_embedder.encode_queries(["x"], query_budget=0)
    with pytest.raises(ValueError, match="doc_budget=9 is out of range"):
        meta_embedder.encode_documents(["x"], doc_budget=9)
    with pytest.raises(ValueError, match="batch_size"):
        meta_embedder.encode_queries(["x"], batch_size=0)
    with pytest.raises(ValueError, match="convert_to"):
        meta_embedder.encode_queries(["x"], convert_to="list")
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        Embedder.from_pretrained(tmp_path / "missing")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "mmcascade.json").write_text("{not json")
    with pytest.raises(ValueError, match="mmcascade.json is not valid JSON"):
        Embedder.from_pretrained(bad)
