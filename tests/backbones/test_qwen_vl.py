"""Qwen2-VL family backbones: built offline, saved, loaded back through from_pretrained."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import FAMILIES, random_image
from mmcascade.backbones import load_backbone
from mmcascade.backbones.qwen_vl.processing_qwen_vl import IMAGE_PAD, VISION_END, VISION_START
from mmcascade.data.items import Item


@pytest.fixture(scope="module")
def backbones(tiny_checkpoints: dict[str, Path]) -> dict:
    return {family: load_backbone(path) for family, path in tiny_checkpoints.items()}


@pytest.mark.parametrize("family", FAMILIES)
def test_loads_through_from_pretrained_as_its_family(backbones: dict, family: str) -> None:
    backbone = backbones[family]
    assert backbone.family == family
    assert backbone.model.config.model_type == family
    assert backbone.hidden_size == 64
    assert not backbone.model.training


@pytest.mark.parametrize("family", FAMILIES)
def test_inputs_for_text_image_and_interleaved_items(backbones: dict, family: str) -> None:
    backbone = backbones[family]
    items = [
        Item(text="a red circle", instruction="Find the image."),
        Item(images=(random_image(1),)),
        Item(text="<image> is left of <image>", images=(random_image(2), random_image(3, (64, 64)))),
    ]
    inputs = backbone.prepare(items)
    tokenizer = backbone.processor.tokenizer
    grid = inputs["image_grid_thw"]
    assert grid.shape == (3, 3)
    tokens_per_image = (grid.prod(-1) // 4).tolist()
    image_pad = tokenizer.convert_tokens_to_ids(IMAGE_PAD)
    counts = (inputs["input_ids"] == image_pad).sum(1).tolist()
    assert counts == [0, tokens_per_image[0], tokens_per_image[1] + tokens_per_image[2]]
    assert torch.equal(inputs["mm_token_type_ids"].bool(), inputs["input_ids"] == image_pad)
    # left padding: each row's real tokens are its last ones
    lengths = inputs["attention_mask"].sum(1)
    for row, length in enumerate(lengths.tolist()):
        assert inputs["attention_mask"][row, -length:].all() and not inputs["attention_mask"][row, :-length].any()
    first = tokenizer.decode(inputs["input_ids"][0, -lengths[0] :])
    assert first == "<|im_start|>user\nFind the image.\na red circle<|im_end|>\n<|im_start|>assistant\n"
    third = tokenizer.decode(inputs["input_ids"][2, -lengths[2] :])
    span = VISION_START + IMAGE_PAD * tokens_per_image[1] + VISION_END
    span2 = VISION_START + IMAGE_PAD * tokens_per_image[2] + VISION_END
    assert f"{span} is left of {span2}<|im_end|>" in third


def test_hidden_states_match_the_transformers_model_on_hand_built_inputs(backbones: dict) -> None:
    """Reference: the prompt written out by hand, fed straight to the HF model."""
    backbone = backbones["qwen2_vl"]
    image = random_image(4)
    ours = backbone(backbone.prepare([Item(text="describe", images=(image,))])).last_hidden_state
    processor = backbone.processor
    pixels = processor.image_processor(images=[image], return_tensors="pt")
    n_tokens = int(pixels["image_grid_thw"][0].prod()) // 4
    text = f"<|im_start|>user\n<|vision_start|>{'<|image_pad|>' * n_tokens}<|vision_end|>describe<|im_end|>\n<|im_start|>assistant\n"
    ids = processor.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        reference = backbone.model.model(
            input_ids=ids,
            pixel_values=pixels["pixel_values"],
            image_grid_thw=pixels["image_grid_thw"],
            mm_token_type_ids=(ids == processor.image_token_id).int(),
        ).last_hidden_state
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=1e-5)


def test_appended_embeddings_enter_the_model_like_inputs_embeds(backbones: dict) -> None:
    """Reference: Qwen2-VL also accepts input_ids + inputs_embeds together; build the embeds by hand."""
    backbone = backbones["qwen2_vl"]
    appended = torch.randn(5, backbone.hidden_size, generator=torch.Generator().manual_seed(0))
    inputs = backbone.prepare([Item(text="a cat"), Item(text="a much longer caption of a dog")])
    with torch.no_grad():
        ours = backbone(inputs, appended_embeddings=appended)
        ids = torch.cat([inputs["input_ids"], torch.full((2, 5), backbone.processor.pad_token_id)], 1)
        embeds = backbone.model.get_input_embeddings()(ids)
        embeds[:, -5:] = appended
        mask = torch.cat([inputs["attention_mask"], torch.ones(2, 5, dtype=torch.long)], 1)
        reference = backbone.model.model(
            input_ids=ids, inputs_embeds=embeds, attention_mask=mask, mm_token_type_ids=torch.zeros_like(ids)
        ).last_hidden_state
    assert ours.last_hidden_state.shape == (2, inputs["input_ids"].shape[1] + 5, 64)
    torch.testing.assert_close(ours.last_hidden_state[mask.bool()], reference[mask.bool()], atol=1e-5, rtol=1e-5)
    assert torch.equal(ours.attention_mask, mask)


@pytest.mark.parametrize("family", FAMILIES)
def test_padding_never_changes_a_sequence(backbones: dict, family: str) -> None:
    backbone = backbones[family]
    items = [Item(text="short"), Item(text="a considerably longer text " * 3, images=(random_image(5),))]
    appended = torch.randn(3, backbone.hidden_size)
    with torch.no_grad():
        batch = backbone(backbone.prepare(items), appended_embeddings=appended).last_hidden_state
        for row, item in enumerate(items):
            alone = backbone(backbone.prepare([item]), appended_embeddings=appended).last_hidden_state[0]
            torch.testing.assert_close(batch[row, -alone.shape[0] :], alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_save_and_load_round_trip(backbones: dict, family: str, tmp_path: Path) -> None:
    backbone = backbones[family]
    backbone.save_pretrained(tmp_path / "copy")
    assert not list((tmp_path / "copy").glob("*.bin"))
    reloaded = load_backbone(tmp_path / "copy")
    inputs = backbone.prepare([Item(text="round trip", images=(random_image(6),))])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(inputs).last_hidden_state, backbone(inputs).last_hidden_state)


def test_processor_options_cap_image_tokens_and_persist(qwen2_vl_checkpoint: Path, tmp_path: Path) -> None:
    small = load_backbone(qwen2_vl_checkpoint, image_max_pixels=8 * 28 * 28)
    grid = small.prepare([Item(images=(random_image(7, (400, 400)),))])["image_grid_thw"]
    assert int(grid.prod()) // 4 <= 8
    small.save_pretrained(tmp_path / "capped")
    assert load_backbone(tmp_path / "capped").processor.config.image_max_pixels == 8 * 28 * 28
    with pytest.raises(ValueError, match="unknown processor options"):
        load_backbone(qwen2_vl_checkpoint, image_max_pixel=10)


def test_bad_checkpoints_get_clear_errors(qwen2_vl_checkpoint: Path, tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        load_backbone(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_backbone(empty)
    no_weights = tmp_path / "no_weights"
    shutil.copytree(qwen2_vl_checkpoint, no_weights)
    for weights in no_weights.glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(FileNotFoundError, match="no \\*.safetensors"):
        load_backbone(no_weights)
    (no_weights / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="pickle"):
        load_backbone(no_weights)
    custom = tmp_path / "custom"
    shutil.copytree(qwen2_vl_checkpoint, custom)
    config = json.loads((custom / "config.json").read_text())
    config.update(model_type="evil_remote", auto_map={"AutoModel": "modeling_evil.EvilModel"})
    (custom / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="'evil_remote' is not a supported backbone family"):
        load_backbone(custom)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="unknown model 'no-such-org/no-such-model'"):
        load_backbone("no-such-org/no-such-model")


def test_image_errors_name_the_file(backbones: dict, tmp_path: Path) -> None:
    corrupt = tmp_path / "broken.png"
    corrupt.write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match="broken.png"):
        backbones["qwen2_vl"].prepare([Item(images=(corrupt,))])
    with pytest.raises(FileNotFoundError, match="absent.jpg"):
        backbones["qwen2_vl"].prepare([Item(images=(tmp_path / "absent.jpg",))])


@pytest.mark.parametrize("family", FAMILIES)
def test_declared_lora_targets_are_layers_of_the_language_model(backbones: dict, family: str) -> None:
    backbone = backbones[family]
    host = backbone.lora_host()
    assert host is backbone.model
    names = [name for name, _ in host.named_modules()]
    for target in backbone.lora_target_modules:
        matching = [name for name in names if name.endswith(f".{target}")]
        assert matching and all(".language_model." in name for name in matching), target
