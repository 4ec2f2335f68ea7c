"""In-batch InfoNCE with optional hard negatives, for single-vector and multi-vector embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmcascade.losses._contrastive import (
    HardNegativeMode,
    PairedSimilarity,
    ScoreNormalization,
    Similarity,
    check_contrastive_inputs,
    check_hard_negative_mode,
    check_score_matrix,
    check_score_normalization,
    check_temperature,
    info_nce,
)
from mmcascade.losses.distributed import gather_positives
from mmcascade.scoring import cosine, maxsim, maxsim_paired

# Same epsilon as mmcascade.scoring.cosine, so paired and all-pairs cosine scores agree exactly.
_COSINE_EPS = 1e-12


def paired_cosine(queries: torch.Tensor, documents: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each query with its own documents: ``(B, d) x (B, K, d) -> (B, K)``."""
    queries = F.normalize(queries, dim=-1, eps=_COSINE_EPS)  # (B, d)
    documents = F.normalize(documents.to(queries.dtype), dim=-1, eps=_COSINE_EPS)  # (B, K, d)
    return torch.einsum("bd,bkd->bk", queries, documents)  # (B, K)


def paired_by_rows(similarity: Similarity) -> PairedSimilarity:
    """Turn an all-pairs similarity into a paired one by scoring each query against its own group.

    Used for custom similarities, which have no batched paired form: one call per query, so no
    ``B x B*K`` score matrix is ever built.
    """

    def paired(queries: torch.Tensor, documents: torch.Tensor) -> torch.Tensor:
        per_query = documents.shape[1]
        rows = [
            check_score_matrix(similarity(queries[b : b + 1], documents[b]), 1, per_query, "hard negatives")
            for b in range(queries.shape[0])
        ]  # B x (1, K)
        return torch.cat(rows, dim=0)  # (B, K)

    return paired


class InfoNCELoss(nn.Module):
    """InfoNCE over in-batch (optionally cross-device) positives plus hard negatives.

    For local query ``b`` the logits are ``cat([s(q_b, P_c) for every gathered positive c,
    s(q_b, N) for the hard negatives]) / temperature`` and the target is its own positive at
    ``offset + b`` (MetaEmbed's ``ColbertInBatchNegativeLoss``, reference-semantics.md M9/M11).
    The loss is the mean over the local queries.

    Args:
        temperature: softmax temperature, > 0.
        similarity: ``similarity(queries, documents) -> (n_q, n_d)``. None picks cosine for
            single-vector inputs ``(B, d)`` and MaxSim (sum over query vectors of the max over document
            vectors) for multi-vector inputs ``(B, Q, d)``. MaxSim uses the vectors as given: L2-normalise
            them in the model, as MetaEmbed does (reference-semantics.md M5).
        hard_negatives: ``"own"``: each query sees only its own K hard negatives (MetaEmbed);
            ``"all"``: every local query sees every local hard negative. Never gathered across ranks.
        gather_across_devices: under ``torch.distributed`` with several ranks, contrast each query with
            the positives of every rank (gathered with gradient). Queries are not gathered, so DDP's
            averaged gradient equals the single-process gradient over the global batch (with "own").
        score_normalization: ``"sum"`` (MetaEmbed) uses the multi-vector scores as the similarity returns
            them; ``"mean"`` divides each by the number of query vectors ``Q`` before the temperature
            (colpali-engine's ``normalize_scores``), so logits stay within ``±1 / temperature``. Single
            vectors are one query vector each: both modes agree.
    """

    def __init__(
        self,
        temperature: float = 0.05,
        similarity: Similarity | None = None,
        hard_negatives: HardNegativeMode = "own",
        gather_across_devices: bool = True,
        score_normalization: ScoreNormalization = "sum",
    ) -> None:
        super().__init__()
        if similarity is not None and not callable(similarity):
            raise ValueError(
                f"similarity must be a callable (queries, documents) -> (n_q, n_d) or None; got {similarity!r}"
            )
        self.temperature = check_temperature(temperature)
        self.similarity = similarity
        self.hard_negatives: HardNegativeMode = check_hard_negative_mode(hard_negatives)
        self.gather_across_devices = bool(gather_across_devices)
        self.score_normalization: ScoreNormalization = check_score_normalization(score_normalization)

    def forward(
        self, query: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Compute the loss.

        Args:
            query: ``(B, d)`` or ``(B, Q, d)``.
            positive: ``(B, d)`` or ``(B, D, d)``: the positive of each query.
            negatives: optional ``(B, K, d)`` or ``(B, K, D, d)``: K hard negatives per query.

        Returns:
            A scalar: the mean cross-entropy over the B local queries.
        """
        multi_vector = check_contrastive_inputs(query, positive, negatives)
        similarity, paired_similarity = self._similarities(multi_vector)
        positives, offset = gather_positives(positive) if self.gather_across_devices else (positive, 0)
        return info_nce(
            query,
            positives,
            offset,
            negatives,
            similarity=similarity,
            paired_similarity=paired_similarity,
            hard_negatives=self.hard_negatives,
            temperature=self.temperature,
            score_divisor=query.shape[1] if multi_vector and self.score_normalization == "mean" else 1,
        )

    def _similarities(self, multi_vector: bool) -> tuple[Similarity, PairedSimilarity]:
        if self.similarity is not None:
            return self.similarity, paired_by_rows(self.similarity)
        if multi_vector:
            return maxsim, maxsim_paired
        return cosine, paired_cosine

    def extra_repr(self) -> str:
        similarity = (
            "default" if self.similarity is None else getattr(self.similarity, "__name__", repr(self.similarity))
        )
        return (
            f"temperature={self.temperature}, similarity={similarity}, hard_negatives={self.hard_negatives!r}, "
            f"gather_across_devices={self.gather_across_devices}, score_normalization={self.score_normalization!r}"
        )
