"""Every shipped training config parses: its keys exist and its values pass the config's own checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmcascade.training.config import TrainConfig
from mmcascade.utils.config import load_config_file

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
EMBEDDER_CONFIGS = [
    "starter.yaml",
    "starter-baseline.yaml",
    "starter-unified.yaml",
    "starter-fusion.yaml",
    "starter-fusion-single.yaml",
]


@pytest.mark.parametrize("name", EMBEDDER_CONFIGS)
def test_embedder_configs_load(name: str) -> None:
    config = load_config_file(TrainConfig, CONFIGS / name)
    assert config.data.train.startswith("data/starter/")


def test_the_unified_recipe_trains_only_a_head_on_cached_states_of_the_starter_reasoner() -> None:
    config = load_config_file(TrainConfig, CONFIGS / "starter-unified.yaml")
    assert config.model.name_or_path == "starter-reasoner" and config.model.head == "self_attention"
    assert config.finetune.mode == "head" and config.training.cache_backbone_states
