"""Cross-device gathering of in-batch positives, with gradient.

MetaEmbed (reference-semantics.md M11) gathers the documents of every rank so each local query is
contrasted against the global batch of positives, while queries and hard negatives stay local. The
gather keeps the autograd graph, and its backward sums the gradients every rank computed for a shard
into that shard's owner. Combined with DDP's gradient averaging this reproduces the gradient of the
single-process loss over the concatenated batch.

These are the semantics of ``torch.distributed.nn.functional.all_gather``, which MetaEmbed calls and
torch 2.13 deprecates (FutureWarning, pointing at private functional collectives). We implement them
as a small autograd function over the public ``all_gather`` and ``all_reduce`` collectives, which every
backend supports: the backward all-reduces the full gradient and keeps this rank's slice.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def _distributed_world_size(group: dist.ProcessGroup | None) -> int:
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group=group)


def gather_positives(tensor: torch.Tensor, group: dist.ProcessGroup | None = None) -> tuple[torch.Tensor, int]:
    """All-gather ``tensor`` along dim 0 across ranks, keeping the gradient.

    Args:
        tensor: the local positives, ``(B, ...)``; every rank must pass the same shape.
        group: the process group; None means the default (world) group.

    Returns:
        ``(gathered, offset)``: ``gathered`` is ``(B * world_size, ...)`` in rank order and ``offset`` is
        ``rank * B``, the index of this rank's first positive in ``gathered``. Without an initialised
        process group of more than one rank this is ``(tensor, 0)``.

    Raises:
        ValueError: if the ranks' tensors differ in shape (in particular in local batch size), which would
            misplace the positives' targets. Every rank raises, so no rank is left waiting in a collective.
    """
    world_size = _distributed_world_size(group)
    if world_size == 1:
        return tensor, 0
    rank = dist.get_rank(group=group)
    _check_same_shape_on_all_ranks(tensor, world_size, group)
    gathered = _AllGatherWithGradient.apply(tensor, group)  # (world_size * B, ...)
    return gathered, rank * tensor.shape[0]


class _AllGatherWithGradient(torch.autograd.Function):
    """Forward: concatenate every rank's ``(B, ...)`` along dim 0. Backward: each rank receives the sum
    over ranks of the gradients of its own shard."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, tensor: torch.Tensor, group: dist.ProcessGroup | None):
        ctx.group = group
        ctx.rank = dist.get_rank(group=group)
        ctx.batch = tensor.shape[0]
        tensor = tensor.contiguous()
        shards = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group=group))]
        dist.all_gather(shards, tensor, group=group)
        return torch.cat(shards, dim=0)  # (world_size * B, ...)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_output: torch.Tensor):
        grad = grad_output.contiguous().clone()  # (world_size * B, ...); all_reduce works in place
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        start = ctx.rank * ctx.batch
        return grad[start : start + ctx.batch], None  # (B, ...)


def _check_same_shape_on_all_ranks(tensor: torch.Tensor, world_size: int, group: dist.ProcessGroup | None) -> None:
    # The rank (ndim) is gathered first so the shape gather below has the same size everywhere.
    device = _collective_device(tensor, group)
    ndim = torch.tensor([tensor.ndim], dtype=torch.long, device=device)
    ndims = [torch.empty_like(ndim) for _ in range(world_size)]
    dist.all_gather(ndims, ndim, group=group)
    all_ndims = [int(n.item()) for n in ndims]
    if len(set(all_ndims)) != 1:
        raise ValueError(
            f"gather_positives needs tensors of the same rank on every process; got ranks {all_ndims} "
            "(indexed by process rank)"
        )
    shape = torch.tensor(list(tensor.shape), dtype=torch.long, device=device)
    shapes = [torch.empty_like(shape) for _ in range(world_size)]
    dist.all_gather(shapes, shape, group=group)
    all_shapes = [tuple(int(s) for s in rank_shape.tolist()) for rank_shape in shapes]
    batch_sizes = [s[0] for s in all_shapes]
    if len(set(batch_sizes)) != 1:
        raise ValueError(
            f"gather_positives needs the same local batch size on every process; got {batch_sizes} "
            "(indexed by process rank). Use equal per-device batches (e.g. drop_last=True in the sampler)."
        )
    if len(set(all_shapes)) != 1:
        raise ValueError(
            f"gather_positives needs the same tensor shape on every process; got {all_shapes} "
            "(indexed by process rank). Pad every rank's positives to the same number of vectors."
        )


def _collective_device(tensor: torch.Tensor, group: dist.ProcessGroup | None) -> torch.device:
    # NCCL only moves CUDA tensors; gloo moves CPU (and CUDA) tensors.
    if dist.get_backend(group=group) == dist.Backend.GLOO:
        return torch.device("cpu")
    return tensor.device
