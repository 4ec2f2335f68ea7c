"""Heads against hand computations on given hidden states (no backbone needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmcascade.embedder.heads import MetaTokenConfig, MetaTokenHead, build_head, load_head


def test_last_token_pooling_picks_the_last_real_token_for_left_and_right_padding() -> None:
    head = build_head("last_token", 2)
    hidden = torch.tensor([[[9.0, 9.0], [3.0, 4.0], [0.0, 2.0]], [[1.0, 0.0], [0.0, 5.0], [7.0, 7.0]]])
    mask = torch.tensor([[0, 1, 1], [1, 1, 0]])  # row 0 left-padded, row 1 right-padded
    vectors = head(hidden, mask, "query")
    assert vectors.shape == (2, 1, 2)
    torch.testing.assert_close(vectors[:, 0], torch.tensor([[0.0, 1.0], [0.0, 1.0]]))


def test_mean_pooling_ignores_padding() -> None:
    head = build_head("mean", 2, normalize=False)
    hidden = torch.tensor([[[100.0, 100.0], [1.0, 3.0], [3.0, 5.0]]])
    mask = torch.tensor([[0, 1, 1]])
    torch.testing.assert_close(head(hidden, mask, "document")[0, 0], torch.tensor([2.0, 4.0]))


def test_projection_then_l2_normalisation() -> None:
    head = build_head("mean", 3, projection_dim=2)
    with torch.no_grad():
        head.projection.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
        head.projection.bias.zero_()
    vectors = head(torch.tensor([[[3.0, 4.0, 9.0]]]), torch.ones(1, 1), "query")
    torch.testing.assert_close(vectors, torch.tensor([[[0.6, 0.8]]]))


@pytest.mark.parametrize("layout", ["joint", "separate"])
def test_meta_token_head_reads_its_block(layout: str) -> None:
    head = MetaTokenHead(MetaTokenConfig(hidden_size=4, num_query_tokens=2, num_document_tokens=3, layout=layout))
    query_block = head.appended_embeddings("query")
    document_block = head.appended_embeddings("document")
    if layout == "joint":
        assert query_block.shape == document_block.shape == (5, 4)
    else:
        assert torch.equal(query_block, head.meta_embeddings[:2]) and torch.equal(
            document_block, head.meta_embeddings[2:]
        )
    hidden = torch.arange(2 * 9 * 4, dtype=torch.float32).reshape(2, 9, 4) + 1
    mask = torch.ones(2, 9)
    queries, documents = head(hidden, mask, "query"), head(hidden, mask, "document")
    expected_query_rows = hidden[:, 4:6] if layout == "joint" else hidden[:, 7:9]
    torch.testing.assert_close(queries, expected_query_rows / expected_query_rows.norm(dim=-1, keepdim=True))
    torch.testing.assert_close(documents, hidden[:, 6:9] / hidden[:, 6:9].norm(dim=-1, keepdim=True))


def test_meta_token_defaults_follow_metaembed() -> None:
    head = build_head("meta_tokens", 8)
    assert (head.num_vectors("query"), head.num_vectors("document")) == (16, 64)
    assert head.config.layout == "joint"
    assert head.appended_embeddings("query").shape == (80, 8)


@pytest.mark.parametrize("head_type", ["last_token", "mean", "meta_tokens"])
def test_heads_round_trip_through_safetensors(head_type: str, tmp_path: Path) -> None:
    head = build_head(head_type, 6, projection_dim=3)
    head.save_pretrained(tmp_path / "head")
    assert sorted(p.name for p in (tmp_path / "head").iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_head(tmp_path / "head")
    assert type(loaded) is type(head) and loaded.config == head.config
    for name, tensor in head.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)


def test_head_errors() -> None:
    with pytest.raises(ValueError, match="unknown head 'cls'"):
        build_head("cls", 4)
    with pytest.raises(ValueError, match="unknown option"):
        build_head("mean", 4, n_tokens=3)
    with pytest.raises(ValueError, match="layout must be one of"):
        build_head("meta_tokens", 4, layout="interleaved")
    with pytest.raises(ValueError, match="num_query_tokens must be >= 1"):
        build_head("meta_tokens", 4, num_query_tokens=0)
    with pytest.raises(ValueError, match="side must be"):
        build_head("mean", 4)(torch.zeros(1, 1, 4), torch.ones(1, 1), "queries")
