"""The bundled demo collection (``mmcascade/assets/demo``, built by scripts/build_demo_collection.py)."""

from __future__ import annotations

import json
from collections import Counter
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mmcascade.data.synthetic import scenes
from mmcascade.data.synthetic.sources import DIGIT_SIZE, DIGIT_WORDS, TEXTILE_LABELS, TEXTILE_SIZE
from mmcascade.data.synthetic.starter_split import is_heldout_configuration

DEMO = Path(str(files("mmcascade") / "assets" / "demo"))
EXPECTED_COUNTS = {"scene": 40, "digit": 10, "textile": 6}
IMAGE_SIZES = {
    "scene": (scenes.IMAGE_SIZE, scenes.IMAGE_SIZE),
    "digit": (DIGIT_SIZE, DIGIT_SIZE),
    "textile": (TEXTILE_SIZE, TEXTILE_SIZE),
}
MAX_TOTAL_BYTES = 600 * 1024


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    return json.loads((DEMO / "manifest.json").read_text())


def scene_of(item: dict[str, Any]) -> scenes.Scene:
    return scenes.Scene(objects=tuple(scenes.SceneObject(**obj) for obj in item["objects"]))


def test_collection_ships_inside_the_package(manifest: dict[str, Any]) -> None:
    assert (DEMO / "README.md").read_text().strip()
    assert manifest["name"] == "mmcascade-demo-collection"
    assert Counter(item["kind"] for item in manifest["items"]) == EXPECTED_COUNTS
    total = sum(path.stat().st_size for path in DEMO.rglob("*") if path.is_file())
    assert total < MAX_TOTAL_BYTES, f"the demo collection grew to {total} bytes"


def test_manifest_lists_every_file_and_nothing_else(manifest: dict[str, Any]) -> None:
    listed = {"manifest.json", "README.md"}
    for item in manifest["items"]:
        listed |= {item["image"], item["caption_file"]}
    on_disk = {path.relative_to(DEMO).as_posix() for path in DEMO.rglob("*") if path.is_file()}
    assert on_disk == listed


def test_every_image_opens_at_its_size_with_its_caption(manifest: dict[str, Any]) -> None:
    for item in manifest["items"]:
        image_path = DEMO / item["image"]
        with Image.open(image_path) as image:
            image.load()
            assert image.size == IMAGE_SIZES[item["kind"]], item["image"]
        caption_path = DEMO / item["caption_file"]
        assert caption_path == image_path.with_suffix(".txt")
        caption = caption_path.read_text()
        assert caption, item["caption_file"]
        assert caption == caption.strip() and "\n" not in caption, item["caption_file"]
        assert caption == item["caption"], item["caption_file"]


def test_scenes_are_heldout_distinct_and_captioned_from_their_objects(manifest: dict[str, Any]) -> None:
    items = [item for item in manifest["items"] if item["kind"] == "scene"]
    built = [scene_of(item) for item in items]
    for item, scene in zip(items, built, strict=True):
        assert is_heldout_configuration(scene), f"{item['image']} uses a configuration seen in training"
        assert item["caption"] == scenes.caption(scene, "list")
    assert len({scene.signature for scene in built}) == len(built)
    assert set(Counter(len(scene.objects) for scene in built)) == {1, 2, 3}


def test_label_captions_use_the_starter_wording(manifest: dict[str, Any]) -> None:
    digits = [item for item in manifest["items"] if item["kind"] == "digit"]
    assert sorted(item["label"] for item in digits) == [str(digit) for digit in range(10)]
    for item in digits:
        assert item["caption"] == f"the digit {DIGIT_WORDS[int(item['label'])]}"
    textiles = [item for item in manifest["items"] if item["kind"] == "textile"]
    assert Counter(item["label"] for item in textiles) == dict.fromkeys(TEXTILE_LABELS, 2)
    for item in textiles:
        assert item["caption"] == TEXTILE_LABELS[item["label"]]
