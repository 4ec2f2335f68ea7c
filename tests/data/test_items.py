import io
from pathlib import Path

import pytest
from PIL import Image

from mmcascade.data.items import Item, as_item, as_items, load_image


def test_as_item_reads_every_user_form(tmp_path: Path) -> None:
    image = Image.new("RGB", (8, 8), "red")
    assert as_item("a caption") == Item(text="a caption")
    assert as_item(image).images == (image,)
    assert as_item(tmp_path / "x.png").images == (tmp_path / "x.png",)
    assert as_item(b"\x89PNG").images == (b"\x89PNG",)
    item = as_item({"text": "what colour?", "image": "photo.png", "instruction": "Answer."})
    assert (item.text, item.images, item.instruction) == ("what colour?", ("photo.png",), "Answer.")
    assert as_item({"images": ["a.png", "b.png"], "text": "<image> vs <image>"}).images == ("a.png", "b.png")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({}, "needs text, an image"),
        ({"text": "  "}, "needs text, an image"),
        ({"txt": "typo"}, "unknown item keys"),
        ({"image": "a.png", "images": ["b.png"]}, "either 'image' or 'images'"),
        ({"text": "<image> and <image>", "image": "a.png"}, "2 <image> placeholder"),
        (3.5, "cannot make an item from float"),
        ({"images": [3]}, "file path, bytes or a PIL.Image"),
    ],
)
def test_as_item_rejects_bad_input(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        as_item(value)


def test_as_items_names_the_bad_index() -> None:
    with pytest.raises(ValueError, match="item 1:"):
        as_items(["fine", {"bogus": 1}])
    assert as_items("single") == [Item(text="single")]


def test_with_instruction_fills_only_missing() -> None:
    assert Item(text="q").with_instruction("Find it.").instruction == "Find it."
    assert Item(text="q", instruction="Mine.").with_instruction("Find it.").instruction == "Mine."


def test_load_image_from_path_bytes_and_pil(tmp_path: Path) -> None:
    source = Image.new("L", (5, 4), 200)
    path = tmp_path / "grey.png"
    source.save(path)
    buffer = io.BytesIO()
    source.save(buffer, format="PNG")
    for loaded in (load_image(path), load_image(str(path)), load_image(buffer.getvalue()), load_image(source)):
        assert loaded.mode == "RGB" and loaded.size == (5, 4)
        assert loaded.getpixel((0, 0)) == (200, 200, 200)


def test_load_image_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(tmp_path / "missing.png")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="corrupt.jpg"):
        load_image(corrupt)
    truncated = tmp_path / "truncated.png"
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "blue").save(buffer, format="PNG")
    truncated.write_bytes(buffer.getvalue()[:60])
    with pytest.raises(ValueError, match="truncated.png"):
        load_image(truncated)
    with pytest.raises(ValueError, match="bytes"):
        load_image(b"garbage")
