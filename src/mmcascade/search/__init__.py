"""Searching: a named index (an embedder over a storage backend) and the retrieve -> rerank cascade.

The cost of a search is one :class:`~mmcascade.budget.Budget` (vectors, K, k, reasoning tokens).
"""

from mmcascade.budget import Budget
from mmcascade.search.cascade import Cascade, CascadeHit, RerankStage, candidate_item, merge_rankings
from mmcascade.search.index import BuildReport, Index

__all__ = ["Budget", "BuildReport", "Cascade", "CascadeHit", "Index", "RerankStage", "candidate_item", "merge_rankings"]
