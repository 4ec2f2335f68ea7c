"""Deprecated home of model-name resolution: use :mod:`mmcascade.models` (kept for one release)."""

from __future__ import annotations

from mmcascade.models import ALIASES, cache_root, model_fingerprint
from mmcascade.models import resolve_model as resolve_pretrained

__all__ = ["ALIASES", "cache_root", "model_fingerprint", "resolve_pretrained"]
