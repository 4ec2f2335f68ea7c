"""Store a fine-tuned LM as low-rank factors of its change from the packaged weights.

A LoRA fine-tune merged into SmolLM2 changes a few projection matrices by a matrix of rank ``r``; the
full LM is 540 MB, the change a few MB. :func:`low_rank_delta` recovers the factors from the merged
weights (an SVD per changed matrix) and checks they rebuild every weight to float32 rounding; it
returns None when some change is not low-rank (a full fine-tune), and the caller then saves the LM
in full. :func:`apply_delta` adds the factors back onto the packaged weights.
"""

from __future__ import annotations

import torch

UP_SUFFIX = ".delta_up"  # (out, rank)
DOWN_SUFFIX = ".delta_down"  # (rank, in)
DEFAULT_MAX_RANK = 64
# Singular values below this fraction of the largest are float32 rounding noise of (merged - packaged).
NOISE_FLOOR = 1e-5
# A rebuilt weight may differ from the merged one by this much relative to the weight's largest entry.
REBUILD_TOLERANCE = 1e-5


def low_rank_delta(
    current: dict[str, torch.Tensor], reference: dict[str, torch.Tensor], *, max_rank: int = DEFAULT_MAX_RANK
) -> dict[str, torch.Tensor] | None:
    """Factors ``{name.delta_up, name.delta_down}`` with ``reference + up @ down == current`` per changed weight.

    ``current`` and ``reference`` map the same names to weights; unchanged weights get no factors.
    Returns None when a changed weight is not a matrix, a name is missing from ``reference``, or a change
    needs more than ``max_rank`` singular directions to rebuild within :data:`REBUILD_TOLERANCE`, or its
    factors would be more than half the size of the weight.
    """
    factors: dict[str, torch.Tensor] = {}
    for name, weight in current.items():
        if name not in reference:
            return None
        base = reference[name].to(weight.dtype)
        if torch.equal(weight, base):
            continue
        if weight.ndim != 2:
            return None
        delta = (weight - base).double()  # (out, in)
        left, singular, right = torch.linalg.svd(delta, full_matrices=False)
        rank = int((singular > singular[0] * NOISE_FLOOR).sum())
        # Factors must be at most half the size of the weight, else storing the weight is the better deal.
        if rank > max_rank or 2 * rank * sum(weight.shape) > weight.numel():
            return None
        scale = singular[:rank].sqrt()  # split the singular values evenly between the two factors
        up = (left[:, :rank] * scale).float().contiguous()  # (out, rank)
        down = (scale[:, None] * right[:rank]).float().contiguous()  # (rank, in)
        rebuilt = base + up @ down
        limit = REBUILD_TOLERANCE * float(weight.abs().max())
        if float((rebuilt - weight).abs().max()) > limit:
            return None
        factors[name + UP_SUFFIX] = up
        factors[name + DOWN_SUFFIX] = down
    return factors


def apply_delta(state: dict[str, torch.Tensor], factors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with ``up @ down`` added to each weight ``factors`` names; raises ValueError on a mismatch."""
    updated = dict(state)
    ups = {name[: -len(UP_SUFFIX)] for name in factors if name.endswith(UP_SUFFIX)}
    downs = {name[: -len(DOWN_SUFFIX)] for name in factors if name.endswith(DOWN_SUFFIX)}
    stray = [name for name in factors if not name.endswith((UP_SUFFIX, DOWN_SUFFIX))]
    if stray or ups != downs:
        raise ValueError(f"LM delta factors are incomplete or unknown: {sorted(stray or ups ^ downs)[:5]}")
    for name in sorted(ups):
        if name not in updated:
            raise ValueError(f"the LM delta changes {name!r}, which the language model does not have")
        up, down = factors[name + UP_SUFFIX], factors[name + DOWN_SUFFIX]  # (out, r), (r, in)
        weight = updated[name]
        if (up.shape[0], down.shape[1]) != tuple(weight.shape) or up.shape[1] != down.shape[0]:
            raise ValueError(
                f"LM delta for {name!r} has factors {tuple(up.shape)} x {tuple(down.shape)}; "
                f"the weight is {tuple(weight.shape)}"
            )
        updated[name] = (weight.float() + up.float() @ down.float()).to(weight.dtype)
    return updated
