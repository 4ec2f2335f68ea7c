"""The training objective: a loss module adapted to ``(query, positive, negatives) -> (loss, metrics)``."""

from __future__ import annotations

import torch

from mmcascade.embedder import Embedder
from mmcascade.losses import InfoNCELoss, MatryoshkaMultiVectorLoss
from mmcascade.training.config import LossConfig


class ContrastiveLoss:
    """Adapts a loss module to ``(query, positive, negatives) -> (loss, metrics)`` for the step function."""

    def __init__(self, config: LossConfig, embedder: Embedder):
        self.multi_vector = embedder.is_multi_vector
        if config.type == "matryoshka":
            if not self.multi_vector:
                raise ValueError("loss.type 'matryoshka' needs a multi-vector head (head: meta_tokens)")
            n_query, n_document = embedder.num_vectors("query"), embedder.num_vectors("document")
            for query_budget, doc_budget in config.groups:
                if query_budget > n_query or doc_budget > n_document:
                    raise ValueError(
                        f"loss.groups entry ({query_budget}, {doc_budget}) is larger than the model's meta tokens "
                        f"({n_query} query, {n_document} document); lower it or add meta tokens"
                    )
            self.module: torch.nn.Module = MatryoshkaMultiVectorLoss(
                groups=config.groups,
                temperature=config.temperature,
                weights=config.weights,
                hard_negatives=config.hard_negatives,
                score_normalization=config.score_normalization,
            )
        else:
            self.module = InfoNCELoss(
                temperature=config.temperature,
                hard_negatives=config.hard_negatives,
                score_normalization=config.score_normalization,
            )

    def __call__(
        self, query: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        if isinstance(self.module, MatryoshkaMultiVectorLoss):
            parts = self.module.group_losses(query, positive, negatives)
            metrics = {f"loss_{q}x{d}": float(value.detach()) for (q, d), value in parts.items()}
            return self.module.combine(parts), metrics
        if not self.multi_vector:  # (B, 1, d) -> (B, d)
            query, positive = query[:, 0], positive[:, 0]
            negatives = None if negatives is None else negatives[:, :, 0]
        return self.module(query, positive, negatives), {}
