"""The fusion head: meta-token vectors over feature rows, padding-invariant, saved and loaded exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmcascade.embedder.heads import FusionHead, FusionHeadConfig, build_head, load_head


def make_head(**options: object) -> FusionHead:
    torch.manual_seed(0)
    options = {
        "width": 32,
        "num_heads": 4,
        "num_query_tokens": 3,
        "num_document_tokens": 5,
        "projection_dim": 8,
        **options,
    }
    return build_head("fusion", 20, **options).eval()


def test_shapes_per_side_and_unit_vectors() -> None:
    head = make_head()
    rows, mask = torch.randn(2, 7, 20), torch.ones(2, 7, dtype=torch.long)
    query, document = head(rows, mask, "query"), head(rows, mask, "document")
    assert query.shape == (2, 3, 8) and document.shape == (2, 5, 8)
    torch.testing.assert_close(query.norm(dim=-1), torch.ones(2, 3))
    assert head.num_vectors("query") == 3 and head.num_vectors("document") == 5 and head.output_dim == 8
    with pytest.raises(ValueError, match="side"):
        head(rows, mask, "passage")


def test_left_padding_changes_nothing() -> None:
    head = make_head()
    short = torch.randn(1, 4, 20)
    padded = torch.cat([torch.randn(1, 3, 20) * 100, short], dim=1)  # garbage in the padding rows
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1]])
    torch.testing.assert_close(
        head(padded, mask, "query"), head(short, torch.ones(1, 4), "query"), atol=1e-5, rtol=1e-5
    )


def test_row_order_matters_through_learned_positions() -> None:
    head = make_head()
    with torch.no_grad():
        head.positions.weight.normal_(std=1.0)
    rows = torch.randn(1, 4, 20)
    assert not torch.allclose(head(rows, torch.ones(1, 4), "query"), head(rows.flip(1), torch.ones(1, 4), "query"))


def test_save_and_load_give_the_same_vectors(tmp_path: Path) -> None:
    head = make_head()
    head.save_pretrained(tmp_path / "head")
    loaded = load_head(tmp_path / "head").eval()
    assert isinstance(loaded, FusionHead) and loaded.config == head.config
    rows, mask = torch.randn(2, 6, 20), torch.ones(2, 6)
    torch.testing.assert_close(loaded(rows, mask, "document"), head(rows, mask, "document"))


def test_bad_options_and_overlong_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="divisible"):
        FusionHeadConfig(hidden_size=20, width=30, num_heads=4)
    with pytest.raises(ValueError, match="num_layers"):
        FusionHeadConfig(hidden_size=20, num_layers=0)
    with pytest.raises(ValueError, match="dropout"):
        FusionHeadConfig(hidden_size=20, dropout=1.0)
    head = make_head(max_positions=4)
    with pytest.raises(ValueError, match="max_positions"):
        head(torch.randn(1, 5, 20), torch.ones(1, 5), "query")


def test_the_pooled_skip_starts_as_a_linear_map_of_the_real_rows_mean() -> None:
    head = make_head(pooled_skip=True)
    with torch.no_grad():  # silence the transformer path: only the pooled map is left
        head.projection.weight.zero_()
        head.projection.bias.zero_()
    rows = torch.randn(1, 4, 20)
    padded = torch.cat([torch.full((1, 2, 20), 50.0), rows], dim=1)  # padding rows must not enter the mean
    vectors = head(padded, torch.tensor([[0, 0, 1, 1, 1, 1]]), "document")  # (1, 5, 8)
    expected = torch.nn.functional.normalize(head.pooled_projection(rows[0].mean(0)), dim=-1)  # (8,)
    torch.testing.assert_close(vectors[0], expected.expand(5, -1), atol=1e-5, rtol=1e-5)
    assert make_head().pooled_projection is None


def test_the_pooled_skip_learns_which_rows_to_pool() -> None:
    head = make_head(pooled_skip=True)
    with torch.no_grad():
        head.projection.weight.zero_()
        head.projection.bias.zero_()
        head.pool_scores.weight.zero_()
        head.pool_scores.weight[0, 0] = 1000.0  # rows with a large first feature win the pool
    rows = torch.randn(1, 4, 20)
    rows[0, :, 0] = torch.tensor([0.0, 0.0, 1.0, 0.0])
    vectors = head(rows, torch.ones(1, 4), "query")
    expected = torch.nn.functional.normalize(head.pooled_projection(rows[0, 2]), dim=-1)
    torch.testing.assert_close(vectors[0, 0], expected, atol=1e-5, rtol=1e-5)
