"""MetaEmbed's Matryoshka multi-vector loss: InfoNCE with MaxSim at several (query, doc) vector budgets."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
from torch import nn

from mmcascade.losses._contrastive import (
    HardNegativeMode,
    ScoreNormalization,
    check_contrastive_inputs,
    check_hard_negative_mode,
    check_score_normalization,
    check_temperature,
    info_nce,
)
from mmcascade.losses.distributed import gather_positives
from mmcascade.scoring import maxsim, maxsim_paired

DEFAULT_GROUPS: tuple[tuple[int, int], ...] = ((1, 1), (2, 4), (4, 8), (8, 16), (16, 64))
"""MetaEmbed's (query vectors, document vectors) budgets (reference-semantics.md M6)."""


class MatryoshkaMultiVectorLoss(nn.Module):
    """Sum of weighted per-budget InfoNCE losses divided by the number of budgets (MetaEmbed M6-M10).

    For each group ``g = (nq, nd)`` the loss is :class:`~mmcascade.losses.InfoNCELoss` with MaxSim on the
    prefixes ``query[:, :nq]`` and ``documents[:, :nd]``; the total is ``sum_g w_g * loss_g / len(groups)``
    (divided by the number of groups, not by the sum of the weights, as MetaEmbed's code does).
    The positives are gathered across devices once and sliced per group. Vectors are used as given
    (MetaEmbed L2-normalises each one in the model), and MaxSim is a sum over query vectors, so larger
    groups have larger logits at the same temperature (up to 16 / 0.03 ~ 533 at (16, 64)): ``"mean"``
    scores or per-group temperatures keep every group's softmax equally sharp.

    Args:
        groups: ``(nq, nd)`` budgets; each must fit the inputs' vector counts at call time.
        temperature: softmax temperature, > 0 (MetaEmbed's MMR config uses 0.03 on summed MaxSim): one
            number for every group, or a sequence with one per group, in the order of ``groups``.
        weights: one non-negative weight per group; None means all 1.0.
        hard_negatives: ``"own"`` (MetaEmbed) or ``"all"``, as in :class:`~mmcascade.losses.InfoNCELoss`.
        gather_across_devices: contrast against the positives of every rank, gathered with gradient.
        score_normalization: ``"sum"`` (MetaEmbed): MaxSim summed over a group's ``nq`` query vectors;
            ``"mean"``: that sum divided by ``nq`` before the temperature (colpali-engine's
            ``normalize_scores``; meta tokens have no padding, so the count is the budget ``nq``).
    """

    def __init__(
        self,
        groups: Sequence[tuple[int, int]] = DEFAULT_GROUPS,
        temperature: float | Sequence[float] = 0.03,
        weights: Sequence[float] | None = None,
        hard_negatives: HardNegativeMode = "own",
        gather_across_devices: bool = True,
        score_normalization: ScoreNormalization = "sum",
    ) -> None:
        super().__init__()
        self.groups: tuple[tuple[int, int], ...] = _check_groups(groups)
        self.weights: tuple[float, ...] = _check_weights(weights, len(self.groups))
        self.temperatures: tuple[float, ...] = check_group_temperatures(temperature, len(self.groups))
        # As given: one float, or a tuple with one per group (what extra_repr and configs show).
        self.temperature: float | tuple[float, ...] = (
            self.temperatures if isinstance(temperature, Sequence) else self.temperatures[0]
        )
        self.hard_negatives: HardNegativeMode = check_hard_negative_mode(hard_negatives)
        self.gather_across_devices = bool(gather_across_devices)
        self.score_normalization: ScoreNormalization = check_score_normalization(score_normalization)

    def forward(
        self, query: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Compute the combined loss.

        Args:
            query: ``(B, Q, d)`` query vectors.
            positive: ``(B, D, d)`` the positive document of each query.
            negatives: optional ``(B, K, D', d)`` K hard negatives per query.

        Returns:
            A scalar: ``sum_g w_g * loss_g / len(groups)``.
        """
        return self.combine(self.group_losses(query, positive, negatives))

    def combine(self, losses: dict[tuple[int, int], torch.Tensor]) -> torch.Tensor:
        """``sum_g w_g * loss_g / len(groups)`` of :meth:`group_losses`' output (trainers log the parts)."""
        weighted = [weight * losses[group] for group, weight in zip(self.groups, self.weights, strict=True)]
        return torch.stack(weighted).sum() / len(self.groups)

    def group_losses(
        self, query: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor | None = None
    ) -> dict[tuple[int, int], torch.Tensor]:
        """Unweighted InfoNCE loss of every group, keyed by ``(nq, nd)``, in the order of ``groups``."""
        check_contrastive_inputs(query, positive, negatives, multi_vector_only=True)
        self._check_groups_fit(query, positive, negatives)
        # Only the largest document prefix is ever scored: gather that much, once for all groups.
        max_doc_vectors = max(nd for _, nd in self.groups)
        positive = positive[:, :max_doc_vectors]  # (B, max_nd, d)
        positives, offset = gather_positives(positive) if self.gather_across_devices else (positive, 0)
        losses: dict[tuple[int, int], torch.Tensor] = {}
        for (query_vectors, doc_vectors), temperature in zip(self.groups, self.temperatures, strict=True):
            budgets = {"query_budget": query_vectors, "doc_budget": doc_vectors}
            losses[(query_vectors, doc_vectors)] = info_nce(
                query,
                positives,
                offset,
                negatives,
                similarity=functools.partial(maxsim, **budgets),
                paired_similarity=functools.partial(maxsim_paired, **budgets),
                hard_negatives=self.hard_negatives,
                temperature=temperature,
                score_divisor=query_vectors if self.score_normalization == "mean" else 1,
            )
        return losses

    def _check_groups_fit(self, query: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor | None) -> None:
        available_docs = positive.shape[1] if negatives is None else min(positive.shape[1], negatives.shape[2])
        for query_vectors, doc_vectors in self.groups:
            if query_vectors > query.shape[1] or doc_vectors > available_docs:
                negatives_note = "" if negatives is None else f", negatives {negatives.shape[2]}"
                raise ValueError(
                    f"group (nq={query_vectors}, nd={doc_vectors}) needs more vectors than the inputs hold: "
                    f"query has {query.shape[1]} vectors, positive {positive.shape[1]}{negatives_note}. "
                    "Use groups within these counts or embed with more meta tokens."
                )

    def extra_repr(self) -> str:
        return (
            f"groups={self.groups}, weights={self.weights}, temperature={self.temperature}, "
            f"hard_negatives={self.hard_negatives!r}, gather_across_devices={self.gather_across_devices}, "
            f"score_normalization={self.score_normalization!r}"
        )


def check_group_temperatures(temperature: float | Sequence[float], n_groups: int) -> tuple[float, ...]:
    """One positive temperature per group, from one number (every group) or a sequence of ``n_groups``."""
    if isinstance(temperature, (str, bytes)) or not isinstance(temperature, (int, float, Sequence)):
        raise ValueError(
            f"temperature must be a positive number or a sequence of {n_groups} (one per group); got {temperature!r}"
        )
    if not isinstance(temperature, Sequence):
        return (check_temperature(temperature),) * n_groups
    if len(temperature) != n_groups:
        raise ValueError(
            f"temperature must have one value per group: got {len(temperature)} temperatures for {n_groups} "
            f"groups ({list(temperature)}); give one number for every group or {n_groups} values"
        )
    return tuple(check_temperature(value) for value in temperature)


def _check_groups(groups: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    if isinstance(groups, (str, bytes)) or not isinstance(groups, Sequence) or len(groups) == 0:
        raise ValueError(f"groups must be a non-empty sequence of (nq, nd) pairs of positive ints; got {groups!r}")
    checked = []
    for group in groups:
        if (
            not isinstance(group, Sequence)
            or len(group) != 2
            or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in group)
        ):
            raise ValueError(
                f"each group must be an (nq, nd) pair of positive ints (query vectors, document vectors); "
                f"got {group!r} in groups={groups!r}"
            )
        checked.append((int(group[0]), int(group[1])))
    duplicates = sorted({group for group in checked if checked.count(group) > 1})
    if duplicates:
        raise ValueError(f"groups must be distinct (per-group losses are keyed by (nq, nd)); repeated: {duplicates}")
    return tuple(checked)


def _check_weights(weights: Sequence[float] | None, n_groups: int) -> tuple[float, ...]:
    if weights is None:
        return (1.0,) * n_groups
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence):
        raise ValueError(f"weights must be a sequence of {n_groups} non-negative numbers or None; got {weights!r}")
    if len(weights) != n_groups:
        raise ValueError(f"weights must have one entry per group: got {len(weights)} weights for {n_groups} groups")
    for weight in weights:
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise ValueError(f"weights must be finite non-negative numbers; got {weight!r} in weights={list(weights)}")
    return tuple(float(weight) for weight in weights)
