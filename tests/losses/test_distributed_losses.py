"""Cross-device losses: 2 gloo processes under DDP must reproduce the single-process loss and gradient.

Each rank embeds its half of a global batch with the same seeded model, computes the loss with the
positives gathered across ranks, and backpropagates through DistributedDataParallel. MetaEmbed's
recipe (reference-semantics.md §2, M11) promises: mean of the ranks' losses == the single-process loss
over the whole batch, and the DDP-averaged gradient == the single-process gradient.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from mmcascade.losses import InfoNCELoss, MatryoshkaMultiVectorLoss, gather_positives

WORLD_SIZE = 2
GLOBAL_BATCH = 6
LOCAL_BATCH = GLOBAL_BATCH // WORLD_SIZE
N_VECTORS, DIM, IN_FEATURES, N_NEGATIVES = 4, 4, 5, 2


class _Tower(nn.Module):
    """Query and document encoders: features -> (n, N_VECTORS, DIM) unit vectors."""

    def __init__(self) -> None:
        super().__init__()
        self.query_proj = nn.Linear(IN_FEATURES, N_VECTORS * DIM)
        self.doc_proj = nn.Linear(IN_FEATURES, N_VECTORS * DIM)

    def forward(
        self, query_x: torch.Tensor, positive_x: torch.Tensor, negative_x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        def vectors(projection: nn.Linear, x: torch.Tensor) -> torch.Tensor:
            return F.normalize(projection(x).unflatten(-1, (N_VECTORS, DIM)), dim=-1)  # (..., V, d)

        return vectors(self.query_proj, query_x), vectors(self.doc_proj, positive_x), vectors(self.doc_proj, negative_x)


def _single_vector(loss_fn: nn.Module) -> Callable:
    # Mean-pool the vectors: a single-vector model with the same tower.
    return lambda q, p, n: loss_fn(q.mean(dim=1), p.mean(dim=1), n.mean(dim=2))


def _cases() -> dict[str, Callable]:
    return {
        "infonce_single_vector": _single_vector(InfoNCELoss(temperature=0.1)),
        "infonce_multi_vector": InfoNCELoss(temperature=0.1),
        "matryoshka": MatryoshkaMultiVectorLoss(
            groups=((1, 1), (2, 2), (4, 4)), temperature=0.1, weights=(1.0, 0.5, 2.0)
        ),
        "infonce_multi_vector_mean": InfoNCELoss(temperature=0.05, score_normalization="mean"),
        "matryoshka_mean_per_group_temperatures": MatryoshkaMultiVectorLoss(
            groups=((1, 1), (2, 2), (4, 4)),
            temperature=(0.05, 0.1, 0.02),
            weights=(1.0, 0.5, 2.0),
            score_normalization="mean",
        ),
    }


def _model_and_batch() -> tuple[_Tower, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    model = _Tower()
    generator = torch.Generator().manual_seed(1)
    query_x = torch.randn(GLOBAL_BATCH, IN_FEATURES, generator=generator)
    positive_x = query_x + 0.5 * torch.randn(GLOBAL_BATCH, IN_FEATURES, generator=generator)
    negative_x = torch.randn(GLOBAL_BATCH, N_NEGATIVES, IN_FEATURES, generator=generator)
    return model, (query_x, positive_x, negative_x)


def _gradients(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: parameter.grad.detach().clone() for name, parameter in model.named_parameters()}


def _worker(rank: int, store: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD_SIZE)
    try:
        model, batch = _model_and_batch()
        ddp_model = nn.parallel.DistributedDataParallel(model)
        local = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
        results: dict[str, object] = {}
        for name, loss_fn in _cases().items():
            ddp_model.zero_grad(set_to_none=True)
            loss = loss_fn(*ddp_model(*(x[local] for x in batch)))
            loss.backward()
            results[name] = {"loss": loss.item(), "grads": _gradients(model)}
        # Unequal local batches must fail loudly on every rank instead of misplacing targets or hanging.
        try:
            gather_positives(torch.zeros(LOCAL_BATCH + rank, DIM))
            results["unequal_error"] = None
        except ValueError as error:
            results["unequal_error"] = str(error)
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
        # Both ranks leave together: tearing gloo down while the peer is still in a collective aborts the
        # process ("terminate called without an active exception"), seen once in CI.
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory) -> list[dict]:
    out_dir = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(str(out_dir / "store"), str(out_dir)), nprocs=WORLD_SIZE, join=True)
    return [torch.load(out_dir / f"rank{rank}.pt") for rank in range(WORLD_SIZE)]


def _single_process(name: str) -> tuple[float, dict[str, torch.Tensor]]:
    model, batch = _model_and_batch()
    loss = _cases()[name](*model(*batch))
    loss.backward()
    return loss.item(), _gradients(model)


@pytest.mark.distributed
@pytest.mark.parametrize("name", list(_cases()))
def test_ddp_matches_single_process(rank_results, name):
    expected_loss, expected_grads = _single_process(name)
    rank_losses = [results[name]["loss"] for results in rank_results]
    assert sum(rank_losses) / WORLD_SIZE == pytest.approx(expected_loss, abs=1e-5)
    # The ranks see different queries, so their losses differ; only their mean is the global loss.
    assert rank_losses[0] != pytest.approx(rank_losses[1], abs=1e-4)
    for rank, results in enumerate(rank_results):
        for parameter, expected in expected_grads.items():
            got = results[name]["grads"][parameter]
            assert torch.allclose(got, expected, atol=1e-5), (rank, parameter, (got - expected).abs().max())


@pytest.mark.distributed
def test_gather_positives_rejects_unequal_local_batches(rank_results):
    for results in rank_results:
        assert results["unequal_error"] is not None
        assert "same local batch size on every process; got [3, 4]" in results["unequal_error"]


def test_gather_positives_without_process_group_is_identity():
    tensor = torch.randn(3, 2, 4)
    gathered, offset = gather_positives(tensor)
    assert gathered is tensor
    assert offset == 0
