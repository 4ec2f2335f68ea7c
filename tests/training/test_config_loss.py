"""The ``loss`` section of the training config: score_normalization and per-group temperatures, YAML to loss."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from mmcascade.losses import InfoNCELoss, MatryoshkaMultiVectorLoss
from mmcascade.training.config import LossConfig, TrainConfig
from mmcascade.training.objective import ContrastiveLoss
from mmcascade.utils.config import apply_overrides, config_from_dict, config_to_dict, load_config_file, parse_override

TINY_YAML = """\
model: {name_or_path: starter}
data: {train: train.jsonl}
loss:
  groups: [[1, 1], [2, 4], [4, 8]]
  score_normalization: mean
  temperature: [0.02, 0.05, 0.1]
"""


def _embedder(multi_vector: bool = True) -> SimpleNamespace:
    """What ContrastiveLoss reads from an embedder: its kind and its meta-token counts."""
    counts = {"query": 4, "document": 8}
    return SimpleNamespace(is_multi_vector=multi_vector, num_vectors=counts.__getitem__)


def _minimal(loss: dict) -> dict:
    return {"model": {"name_or_path": "starter"}, "data": {"train": "train.jsonl"}, "loss": loss}


def test_yaml_loss_section_builds_the_right_loss(tmp_path: Path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_YAML)
    config = load_config_file(TrainConfig, path)
    assert config.loss.score_normalization == "mean"
    assert config.loss.temperature == [0.02, 0.05, 0.1]
    module = ContrastiveLoss(config.loss, _embedder()).module
    assert isinstance(module, MatryoshkaMultiVectorLoss)
    assert module.groups == ((1, 1), (2, 4), (4, 8))
    assert module.temperatures == (0.02, 0.05, 0.1)
    assert module.score_normalization == "mean"
    assert "temperature=(0.02, 0.05, 0.1)" in repr(module) and "score_normalization='mean'" in repr(module)
    expected = MatryoshkaMultiVectorLoss(
        groups=((1, 1), (2, 4), (4, 8)), temperature=(0.02, 0.05, 0.1), score_normalization="mean"
    )
    generator = torch.Generator().manual_seed(0)
    query = F.normalize(torch.randn(3, 4, 6, generator=generator), dim=-1)  # (B, Q, d)
    positive = F.normalize(torch.randn(3, 8, 6, generator=generator), dim=-1)  # (B, D, d)
    assert torch.equal(module(query, positive), expected(query, positive))


def test_loss_section_round_trips(tmp_path: Path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_YAML)
    config = load_config_file(TrainConfig, path)
    assert config_from_dict(TrainConfig, config_to_dict(config)) == config


def test_defaults_build_metaembeds_loss():
    config = config_from_dict(TrainConfig, _minimal({}))
    assert config.loss.score_normalization == "sum" and config.loss.temperature == 0.03
    module = ContrastiveLoss(LossConfig(groups=[(1, 1), (2, 4)]), _embedder()).module
    assert module.score_normalization == "sum"
    assert module.temperature == 0.03 and module.temperatures == (0.03, 0.03)


def test_overrides_reach_the_loss():
    data = config_to_dict(config_from_dict(TrainConfig, _minimal({"groups": [[1, 1], [2, 4]]})))
    overrides = dict(parse_override(text) for text in ("loss.score_normalization=mean", "loss.temperature=[0.1, 0.2]"))
    config = config_from_dict(TrainConfig, apply_overrides(data, overrides))
    module = ContrastiveLoss(config.loss, _embedder()).module
    assert module.score_normalization == "mean" and module.temperatures == (0.1, 0.2)


def test_infonce_takes_score_normalization():
    config = config_from_dict(TrainConfig, _minimal({"type": "infonce", "score_normalization": "mean"}))
    module = ContrastiveLoss(config.loss, _embedder()).module
    assert isinstance(module, InfoNCELoss)
    assert module.score_normalization == "mean" and module.temperature == 0.03


@pytest.mark.parametrize(
    ("loss", "match"),
    [
        ({"score_normalisation": "mean"}, r"unknown config key 'loss.score_normalisation' \(did you mean "),
        ({"temprature": 0.1}, r"unknown config key 'loss.temprature' \(did you mean 'temperature'\?\)"),
        ({"score_normalization": "avg"}, r"'loss.score_normalization' must be one of \['sum', 'mean'\]; got 'avg'"),
        ({"temperature": [0.1, 0.2]}, "loss: temperature must have one value per group: got 2 temperatures for 5"),
        ({"temperature": [0.1, 0.2, 0.3, 0.4, 0.0]}, "loss: temperature must be a positive finite number"),
        ({"temperature": "hot"}, "'loss.temperature' must be a number"),
        ({"type": "infonce", "temperature": [0.1]}, "only type 'matryoshka' has; give one number for type 'infonce'"),
    ],
)
def test_bad_loss_sections_are_refused(loss, match):
    with pytest.raises(ValueError, match=match):
        config_from_dict(TrainConfig, _minimal(loss))
