"""Which weights train: full fine-tuning, LoRA adapters (peft), or the head alone; name-pattern freezing."""

from __future__ import annotations

import fnmatch
from typing import Any

from torch import nn

from mmcascade.backbones.base import Backbone
from mmcascade.embedder import Embedder
from mmcascade.training.config import FinetuneConfig, LoraConfig


def apply_finetune_mode(embedder: Embedder, config: FinetuneConfig) -> Any | None:
    """Set ``requires_grad`` on every parameter; returns the peft model in LoRA mode (for merging), else None."""
    return set_trainable(embedder, embedder.backbone, config, always_trained=embedder.head)


def set_trainable(
    root: nn.Module,
    backbone: Backbone,
    config: Any,
    always_trained: nn.Module | None = None,
) -> Any | None:
    """Set ``requires_grad`` on every parameter of ``root`` from a finetune config (``mode``, ``freeze``,
    ``train``, ``lora``): ``backbone`` trains in full mode; in LoRA mode adapters go where the backbone says
    (:meth:`Backbone.lora_host`, :attr:`Backbone.lora_target_modules` unless ``lora.target_modules`` names
    other layers). Returns the peft model in LoRA mode."""
    peft_model = None
    for parameter in backbone.parameters():
        parameter.requires_grad_(config.mode == "full")
    if config.mode == "lora":
        peft_model = _inject_lora(backbone, config.lora)
    if always_trained is not None:
        for parameter in always_trained.parameters():
            parameter.requires_grad_(True)
    names = dict(root.named_parameters())
    for pattern in config.freeze:
        matched = _match(names, pattern, "finetune.freeze")
        for name in matched:
            names[name].requires_grad_(False)
    for pattern in config.train:
        for name in _match(names, pattern, "finetune.train"):
            names[name].requires_grad_(True)
    if not any(parameter.requires_grad for parameter in root.parameters()):
        raise ValueError("no parameter is left to train: check finetune.mode and finetune.freeze")
    return peft_model


def lora_targets(backbone: Backbone, lora: LoraConfig) -> list[str]:
    """The layers LoRA adapters wrap: ``lora.target_modules`` when set, else what the backbone declares."""
    targets = backbone.lora_target_modules if lora.target_modules is None else lora.target_modules
    if not targets:
        raise ValueError(
            f"the {backbone.family} backbone declares no LoRA target layers: name them in finetune.lora.target_modules"
        )
    return list(targets)


def trainable_parameters(model: nn.Module) -> dict[str, Any]:
    return {name: parameter for name, parameter in model.named_parameters() if parameter.requires_grad}


def merge_lora(peft_model: Any | None) -> None:
    """Fold LoRA adapters into the base weights in place, so the saved checkpoint is a plain model."""
    if peft_model is not None:
        peft_model.merge_and_unload()


def _inject_lora(backbone: Backbone, lora: LoraConfig) -> Any:
    try:
        from peft import LoraConfig as PeftLoraConfig
        from peft import get_peft_model
    except ImportError as error:
        raise ImportError("LoRA needs peft: pip install 'mmcascade[train]'") from error
    host = backbone.lora_host()
    targets = lora_targets(backbone, lora)
    module_names = {name.rsplit(".", 1)[-1] for name, _ in host.named_modules()}
    missing = [target for target in targets if target not in module_names]
    if missing:
        raise ValueError(
            f"finetune.lora.target_modules {missing} match no module of this backbone; "
            f"linear layers here include e.g. {sorted(n for n in module_names if n.endswith('proj'))[:12]}"
        )
    peft_config = PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets)
    # get_peft_model rewrites the target layers of ``host`` in place; the backbone keeps using it.
    return get_peft_model(host, peft_config)


def _match(names: dict[str, Any], pattern: str, key: str) -> list[str]:
    matched = [name for name in names if fnmatch.fnmatchcase(name, pattern)]
    if not matched:
        raise ValueError(f"{key} pattern {pattern!r} matches no parameter (names look like {next(iter(names))!r})")
    return matched
