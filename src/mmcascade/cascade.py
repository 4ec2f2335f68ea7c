"""Moved: the cascade lives in :mod:`mmcascade.search.cascade` and the budget in :mod:`mmcascade.budget`
(this alias is kept for one release)."""

from mmcascade.budget import Budget
from mmcascade.search.cascade import Cascade, CascadeHit, RerankStage, candidate_item, merge_rankings

__all__ = ["Budget", "Cascade", "CascadeHit", "RerankStage", "candidate_item", "merge_rankings"]
