"""Contrastive losses: in-batch InfoNCE and MetaEmbed's Matryoshka multi-vector loss.

Losses are ``nn.Module``s over embeddings: ``loss(query, positive, negatives=None) -> scalar``.
Positives are gathered across ``torch.distributed`` ranks with gradient; queries and hard negatives
stay local, as in MetaEmbed (see ``gather_positives``).
"""

from mmcascade.losses.distributed import gather_positives
from mmcascade.losses.infonce import InfoNCELoss, paired_cosine
from mmcascade.losses.matryoshka import DEFAULT_GROUPS, MatryoshkaMultiVectorLoss

__all__ = ["DEFAULT_GROUPS", "InfoNCELoss", "MatryoshkaMultiVectorLoss", "gather_positives", "paired_cosine"]
