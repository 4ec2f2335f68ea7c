"""The frozen-feature linear probe: learns a tiny problem, ranks through evaluate_records, saves and loads."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from mmcascade.data.items import Item
from mmcascade.data.records import TrainingRecord
from mmcascade.evaluation.linear_probe import (
    IMAGE_FEATURES,
    TEXT_FEATURES,
    LinearProbe,
    LinearProbeConfig,
    train_linear_probe,
)
from mmcascade.evaluation.records_eval import evaluate_records

N_CLASSES = 12


class StubFeatures:
    """Stands in for the frozen encoders: each class is a random direction, seen through two random maps."""

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(0)
        classes = torch.randn(N_CLASSES, 32, generator=generator)  # (k, 32)
        self.image = classes @ torch.randn(32, IMAGE_FEATURES, generator=generator)  # (k, 1280)
        self.text = classes @ torch.randn(32, TEXT_FEATURES, generator=generator)  # (k, 384)

    def items(self, items: Sequence[Item]) -> tuple[torch.Tensor, torch.Tensor]:
        image_features = torch.zeros(len(items), IMAGE_FEATURES)
        text_features = torch.zeros(len(items), TEXT_FEATURES)
        for index, item in enumerate(items):
            if item.images:  # "class-7.png"
                image_features[index] = self.image[int(str(item.images[0]).split("-")[1].split(".")[0])]
            if item.text:  # "caption 7"
                text_features[index] = self.text[int(item.text.split()[-1])]
        return image_features, text_features


def _records() -> list[TrainingRecord]:
    return [
        TrainingRecord(
            query=Item(text=f"caption {k}"),
            positive=Item(images=(f"class-{k}.png",)),
            negatives=tuple(Item(images=(f"class-{j}.png",)) for j in range(N_CLASSES) if j != k),
            meta={"task": "toy", "kind": "simple"},
        )
        for k in range(N_CLASSES)
    ]


def test_probe_learns_to_rank_the_positive_first() -> None:
    records = _records()
    untrained = LinearProbe(LinearProbeConfig(dim=16), StubFeatures())  # type: ignore[arg-type]
    before = evaluate_records(untrained, records)[0].hit_at_1
    config = LinearProbeConfig(dim=16, epochs=200, batch_size=N_CLASSES, learning_rate=1e-2)
    probe = train_linear_probe(records, config, features=StubFeatures())  # type: ignore[arg-type]
    (scores,) = evaluate_records(probe, records)
    assert scores.hit_at_1 == 1.0 and before < 1.0


def test_vectors_have_the_project_shape_and_unit_norm() -> None:
    probe = LinearProbe(LinearProbeConfig(dim=8), StubFeatures())  # type: ignore[arg-type]
    vectors = probe.encode_queries([Item(text="caption 1"), Item(text="caption 2", images=("class-2.png",))])
    assert vectors.shape == (2, 1, 8)
    assert torch.allclose(vectors.norm(dim=-1), torch.ones(2, 1))
    with pytest.raises(ValueError, match="one vector per item"):
        probe.similarity(vectors, vectors, query_budget=4, doc_budget=8)


def test_save_load_round_trip(tmp_path) -> None:
    config = LinearProbeConfig(dim=16, epochs=3, batch_size=4)
    probe = train_linear_probe(_records(), config, features=StubFeatures())  # type: ignore[arg-type]
    probe.save_pretrained(tmp_path / "probe")
    loaded = LinearProbe.from_pretrained(tmp_path / "probe", features=StubFeatures())  # type: ignore[arg-type]
    assert loaded.config == probe.config
    items = [record.query for record in _records()] + [record.positive for record in _records()]
    assert torch.equal(loaded.encode_documents(items), probe.encode_documents(items))


def test_loading_something_else_is_refused(tmp_path) -> None:
    (tmp_path / "config.json").write_text('{"type": "something-else"}')
    with pytest.raises(ValueError, match="does not hold a linear probe"):
        LinearProbe.from_pretrained(tmp_path)


def test_training_needs_records() -> None:
    with pytest.raises(ValueError, match="no records"):
        train_linear_probe([], features=StubFeatures())  # type: ignore[arg-type]
