"""GradCache gives the loss and the gradients of the plain full-batch computation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import random_image
from mmcascade import Embedder, Item
from mmcascade.training.config import LossConfig
from mmcascade.training.grad_cache import ContrastiveBatch, contrastive_step
from mmcascade.training.objective import ContrastiveLoss


def make_batch(size: int = 6, negatives: int = 2) -> ContrastiveBatch:
    return ContrastiveBatch(
        queries=[Item(text=f"query number {i} " + "word " * (i % 3)) for i in range(size)],
        positives=[
            Item(text=f"doc {i}", images=(random_image(i),)) if i % 2 else Item(text=f"doc {i}") for i in range(size)
        ],
        negatives=[[Item(text=f"negative {i}.{k} " * (k + 1)) for k in range(negatives)] for i in range(size)],
    )


def gradients(embedder: Embedder) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in embedder.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(
    ("head", "options", "loss"),
    [
        ("meta_tokens", {"num_query_tokens": 2, "num_document_tokens": 4}, LossConfig(groups=[(1, 1), (2, 4)])),
        ("last_token", {}, LossConfig(type="infonce", temperature=0.05)),
    ],
)
def test_grad_cache_matches_the_plain_step(
    qwen2_vl_checkpoint: Path, head: str, options: dict, loss: LossConfig
) -> None:
    embedder = Embedder.from_pretrained(qwen2_vl_checkpoint, head=head, head_options=options)
    embedder.train()
    loss_fn = ContrastiveLoss(loss, embedder)
    batch = make_batch()
    plain_loss, plain_metrics = contrastive_step(embedder, batch, loss_fn, micro_batch_size=None)
    plain = gradients(embedder)
    embedder.zero_grad(set_to_none=True)
    cached_loss, cached_metrics = contrastive_step(embedder, batch, loss_fn, micro_batch_size=4)
    cached = gradients(embedder)
    assert cached_loss == pytest.approx(plain_loss, rel=1e-5)
    assert cached_metrics == pytest.approx(plain_metrics, rel=1e-5)
    assert set(cached) == set(plain) and len(plain) > 10
    for name, gradient in plain.items():
        torch.testing.assert_close(cached[name], gradient, atol=2e-6, rtol=1e-4, msg=name)
    assert any(g.abs().sum() > 0 for g in plain.values())


def test_batch_validation() -> None:
    with pytest.raises(ValueError, match="same number of hard negatives"):
        ContrastiveBatch([Item(text="a"), Item(text="b")], [Item(text="c"), Item(text="d")], [[Item(text="e")], []])
    with pytest.raises(ValueError, match="as many positives"):
        ContrastiveBatch([Item(text="a")], [], [[]])
