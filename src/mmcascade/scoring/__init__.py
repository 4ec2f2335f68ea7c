"""Similarity functions: plain functions over tensors, no models and no I/O."""

from mmcascade.scoring.maxsim import maxsim, maxsim_paired, maxsim_topk
from mmcascade.scoring.similarity import cosine, dot
from mmcascade.scoring.topk import topk

__all__ = ["cosine", "dot", "maxsim", "maxsim_paired", "maxsim_topk", "topk"]
