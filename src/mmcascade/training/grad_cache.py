"""One contrastive step, plain or with gradient caching (GradCache, Gao et al. 2021).

GradCache makes the contrastive batch independent of what fits in one forward pass:
1. encode every chunk without a graph, remembering each chunk's random state;
2. compute the loss on the detached vectors and back-propagate to the vectors only;
3. re-encode each chunk with a graph under the same random state and back-propagate the cached
   vector gradients into the weights.
The loss and the weight gradients equal the plain computation over the whole batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from mmcascade.backbones.base import BatchInputs
from mmcascade.data.items import Item
from mmcascade.embedder.heads import Side


class Encoder(Protocol):
    """What a step encodes with: an :class:`Embedder`, or a
    :class:`~mmcascade.training.state_cache.BackboneStateCache` that serves cached backbone states to the head."""

    def tokenize(self, items: Sequence[Any], side: Side) -> BatchInputs: ...

    def __call__(self, inputs: BatchInputs, side: Side) -> torch.Tensor: ...

    def parameters(self) -> Iterator[torch.nn.Parameter]: ...


# loss_fn(query (B, Q, d), positive (B, D, d), negatives (B, K, D, d) | None) -> (loss, {name: value})
LossFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, dict[str, float]]]


@dataclass
class ContrastiveBatch:
    queries: list[Item]
    positives: list[Item]
    negatives: list[list[Item]]  # K per query (K may be 0)

    def __post_init__(self) -> None:
        if not self.queries or len(self.positives) != len(self.queries) or len(self.negatives) != len(self.queries):
            raise ValueError("a contrastive batch needs as many positives and negative lists as queries (>= 1)")
        counts = {len(group) for group in self.negatives}
        if len(counts) != 1:
            raise ValueError(f"every query needs the same number of hard negatives; got counts {sorted(counts)}")

    @property
    def negatives_per_query(self) -> int:
        return len(self.negatives[0])


def contrastive_step(
    encoder: Encoder,
    batch: ContrastiveBatch,
    loss_fn: LossFunction,
    micro_batch_size: int | None = None,
) -> tuple[float, dict[str, float]]:
    """Forward + backward of one batch; gradients are accumulated into the encoder's parameters (the
    embedder's, or the head's when the encoder serves cached backbone states).

    With ``micro_batch_size`` smaller than the number of items on a side, gradient caching is used.
    Returns the loss value and the loss function's metrics.
    """
    sides: list[tuple[Side, list[Item]]] = [
        ("query", batch.queries),
        ("document", batch.positives),
        ("document", [item for group in batch.negatives for item in group]),
    ]
    batch_size, per_query = len(batch.queries), batch.negatives_per_query
    largest = max(len(items) for _, items in sides)
    if micro_batch_size is None or micro_batch_size >= largest:
        vectors = [_encode(encoder, items, side) if items else None for side, items in sides]
        loss, metrics = loss_fn(vectors[0], vectors[1], _group_negatives(vectors[2], batch_size, per_query))
        loss.backward()
        return float(loss.detach()), metrics
    cached = [_encode_without_graph(encoder, items, side, micro_batch_size) for side, items in sides]
    leaves = [chunks.vectors.detach().requires_grad_(True) if chunks else None for chunks in cached]
    loss, metrics = loss_fn(leaves[0], leaves[1], _group_negatives(leaves[2], batch_size, per_query))
    loss.backward()
    for chunks, leaf, (side, _) in zip(cached, leaves, sides, strict=True):
        if chunks is not None:
            _backward_through_chunks(encoder, chunks, leaf.grad, side)
    return float(loss.detach()), metrics


@dataclass
class _CachedChunks:
    inputs: list[BatchInputs]
    random_states: list[tuple[torch.Tensor, torch.Tensor | None]]
    sizes: list[int]
    vectors: torch.Tensor  # (n, n_vectors, dim), no graph


def _encode(encoder: Encoder, items: Sequence[Item], side: Side) -> torch.Tensor:
    return encoder(encoder.tokenize(items, side), side)  # (n, n_vectors, dim)


def _encode_without_graph(encoder: Encoder, items: Sequence[Item], side: Side, chunk_size: int) -> _CachedChunks | None:
    if not items:
        return None
    inputs, states, sizes, vectors = [], [], [], []
    for start in range(0, len(items), chunk_size):
        chunk = items[start : start + chunk_size]
        chunk_inputs = encoder.tokenize(chunk, side)  # tokenised once, reused by the second pass
        states.append(_capture_random_state(encoder))
        with torch.no_grad():
            vectors.append(encoder(chunk_inputs, side))
        inputs.append(chunk_inputs)
        sizes.append(len(chunk))
    return _CachedChunks(inputs, states, sizes, torch.cat(vectors, dim=0))


def _backward_through_chunks(encoder: Encoder, chunks: _CachedChunks, gradient: torch.Tensor, side: Side) -> None:
    start = 0
    for inputs, state, size in zip(chunks.inputs, chunks.random_states, chunks.sizes, strict=True):
        with torch.random.fork_rng(devices=_cuda_devices(encoder)):
            _restore_random_state(encoder, state)  # same dropout masks as the first pass
            vectors = encoder(inputs, side)  # (chunk, n_vectors, dim)
        vectors.backward(gradient[start : start + size])
        start += size


def _group_negatives(vectors: torch.Tensor | None, batch_size: int, per_query: int) -> torch.Tensor | None:
    if vectors is None:
        return None
    return vectors.view(batch_size, per_query, *vectors.shape[1:])  # (B, K, D, d)


def _capture_random_state(encoder: Encoder) -> tuple[torch.Tensor, torch.Tensor | None]:
    devices = _cuda_devices(encoder)
    return torch.get_rng_state(), torch.cuda.get_rng_state(devices[0]) if devices else None


def _restore_random_state(encoder: Encoder, state: tuple[torch.Tensor, torch.Tensor | None]) -> None:
    cpu_state, cuda_state = state
    torch.set_rng_state(cpu_state)
    if cuda_state is not None:
        torch.cuda.set_rng_state(cuda_state, _cuda_devices(encoder)[0])


def _cuda_devices(encoder: Encoder) -> list[int]:
    device = next(encoder.parameters()).device
    return [device.index or 0] if device.type == "cuda" else []
