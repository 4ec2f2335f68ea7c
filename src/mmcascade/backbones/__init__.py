"""Vision-language backbones: one modeling/processing pair per family, one loader for all."""

from __future__ import annotations

import os
from typing import Any

import torch

from mmcascade.backbones.base import Backbone, BackboneOutput, require_checkpoint_folder
from mmcascade.backbones.registry import backbone_class_for, read_model_type, supported_model_types
from mmcascade.models import Role, resolve_model
from mmcascade.utils.progress import library_progress

__all__ = ["Backbone", "BackboneOutput", "load_backbone", "supported_model_types"]


def load_backbone(
    name_or_path: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
    role: Role = "embedder",
    **processor_options: Any,
) -> Backbone:
    """Load a backbone from a local checkpoint folder or a Hugging Face Hub id.

    ``trust_remote_code`` stays off unless you ask: only the families mmcascade ships are loaded.
    ``attn_implementation`` is passed to transformers (``"sdpa"`` by default, ``"flash_attention_2"`` on GPUs).
    ``role`` picks what a shorthand such as ``starter`` means (see :mod:`mmcascade.models`): ``"generative"``
    for a reasoner or reranker.
    """
    path = resolve_model(name_or_path, role)
    require_checkpoint_folder(path)
    backbone_class = backbone_class_for(read_model_type(path))
    with library_progress():  # no weight-loading bars in logs and pipes
        return backbone_class.from_pretrained(
            path,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            attn_implementation=attn_implementation,
            **processor_options,
        )
