"""Attach learned embeddings after every input sequence, for any backbone (MetaEmbed's meta tokens).

The backbone appends placeholder ids (so masks, rope indices and image placeholders stay consistent),
and a forward hook on the input-embedding layer replaces the placeholders' embeddings with the learned
ones. No family-specific code is needed, and gradients reach the learned embeddings.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def append_to_embeddings(
    embedding_layer: nn.Module, appended: torch.Tensor | None, sequence_length: int
) -> Iterator[None]:
    """While active, the last ``n`` positions of ``embedding_layer``'s ``(B, sequence_length, H)`` outputs
    are replaced by ``appended (n, H)``. Other calls of the layer (other shapes) pass through unchanged."""
    if appended is None:
        yield
        return
    n_appended = appended.shape[0]

    def replace_tail(_module: nn.Module, _args: tuple, output: torch.Tensor) -> torch.Tensor:
        if output.ndim != 3 or output.shape[1] != sequence_length:
            return output
        batch = output.shape[0]
        tail = appended.to(output.dtype).unsqueeze(0).expand(batch, -1, -1)  # (B, n, H)
        return torch.cat([output[:, : sequence_length - n_appended], tail], dim=1)  # (B, L, H)

    handle = embedding_layer.register_forward_hook(replace_tail)
    try:
        yield
    finally:
        handle.remove()
