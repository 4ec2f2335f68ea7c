"""Which backbone class reads which Hugging Face ``model_type``."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from mmcascade.backbones.base import Backbone

# model_type -> "module:Class"; imported only when used so the core stays light.
_FAMILIES: dict[str, str] = {
    "qwen2_vl": "mmcascade.backbones.qwen_vl.modeling_qwen_vl:Qwen2VLBackbone",
    "qwen2_5_vl": "mmcascade.backbones.qwen_vl.modeling_qwen_vl:Qwen2_5_VLBackbone",
    "qwen3_vl": "mmcascade.backbones.qwen_vl.modeling_qwen_vl:Qwen3VLBackbone",
    "mmcascade_starter": "mmcascade.backbones.starter.modeling_starter:StarterBackbone",
    "mmcascade_starter_features": (
        "mmcascade.backbones.starter_features.modeling_starter_features:StarterFeaturesBackbone"
    ),
    "mmcascade_starter_reasoner": (
        "mmcascade.backbones.starter_reasoner.modeling_starter_reasoner:StarterReasonerBackbone"
    ),
}


def supported_model_types() -> list[str]:
    return sorted(_FAMILIES)


def backbone_class_for(model_type: str) -> type[Backbone]:
    if model_type not in _FAMILIES:
        raise ValueError(
            f"model_type {model_type!r} is not a supported backbone family; supported: {supported_model_types()}"
        )
    module_name, class_name = _FAMILIES[model_type].split(":")
    backbone_class = getattr(importlib.import_module(module_name), class_name)
    if not backbone_class.is_available():
        raise ValueError(
            f"model_type {model_type!r} needs a newer transformers than the one installed; upgrade transformers"
        )
    return backbone_class


def read_model_type(path: Path) -> str:
    config_file = path / "config.json"
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_file} is not valid JSON: {error}") from error
    model_type = config.get("model_type")
    if not model_type:
        raise ValueError(f"{config_file} has no 'model_type'; cannot tell which backbone family it is")
    return model_type
