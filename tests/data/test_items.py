import io
import warnings
from pathlib import Path

import pytest
from PIL import Image

from mmcascade.data.items import (
    MAX_IMAGE_PIXELS,
    MAX_IMAGE_PIXELS_ENV,
    Item,
    as_item,
    as_items,
    item_from_json,
    load_image,
)


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


def test_an_image_over_the_pixel_limit_is_refused_before_decoding_without_warnings(tmp_path: Path, huge_png) -> None:
    huge = huge_png(tmp_path / "huge.png")
    normal = tmp_path / "normal.png"
    Image.new("RGB", (32, 24), "green").save(normal)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning (or any other) escapes
        with pytest.raises(ValueError) as caught:
            load_image(huge)
        message = str(caught.value)
        assert "huge.png" in message and "30000x30000" in message
        assert f"{MAX_IMAGE_PIXELS:,}" in message and MAX_IMAGE_PIXELS_ENV in message
        with pytest.raises(ValueError, match="over the limit"):
            load_image(huge.read_bytes())
        # over PIL's own warning threshold but under its error one: still our error, no warning
        with pytest.raises(ValueError, match="12000x12000"):
            load_image(huge_png(tmp_path / "big.png", (12000, 12000)))
        assert load_image(normal).size == (32, 24)


def test_the_pixel_limit_is_read_from_the_environment_at_each_call(tmp_path: Path, huge_png, monkeypatch) -> None:
    normal = tmp_path / "normal.png"
    Image.new("RGB", (32, 24), "green").save(normal)
    monkeypatch.setenv(MAX_IMAGE_PIXELS_ENV, "500")
    with pytest.raises(ValueError, match=r"32x24 \(768 pixels\), over the limit of 500 pixels"):
        load_image(normal)
    monkeypatch.setenv(MAX_IMAGE_PIXELS_ENV, "1000")
    assert load_image(normal).size == (32, 24)
    monkeypatch.setenv(MAX_IMAGE_PIXELS_ENV, "not a number")
    with pytest.raises(ValueError, match=MAX_IMAGE_PIXELS_ENV):
        load_image(normal)
    # raised above PIL's own limit (which errors at twice its default): the header check lets it through
    # to decoding, which fails on this fake file as an ordinary unreadable image, not a PIL bomb error
    monkeypatch.setenv(MAX_IMAGE_PIXELS_ENV, str(30000 * 30000))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="not a readable image"):
            load_image(huge_png(tmp_path / "huge.png"))
    assert Image.MAX_IMAGE_PIXELS == MAX_IMAGE_PIXELS  # PIL's global limit is left as it was


def test_item_from_json_resolves_image_paths_against_the_base_folder(tmp_path: Path) -> None:
    item = item_from_json({"text": "t", "image": "pics/a.png", "instruction": "Find it."}, tmp_path)
    assert item == Item(text="t", images=(str(tmp_path / "pics" / "a.png"),), instruction="Find it.")
    both = item_from_json({"images": ["a.png", "/elsewhere/b.png"], "text": "<image> vs <image>"}, tmp_path)
    assert both.images == (str(tmp_path / "a.png"), "/elsewhere/b.png")
    assert item_from_json({"image": "~/c.png"}, tmp_path).images == (str(Path.home() / "c.png"),)
    assert item_from_json({"text": "t", "image": None, "instruction": None}, tmp_path) == Item(text="t")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("text", "'query' must be an object with text/image/images/instruction, got string"),
        ({"txt": "q"}, "query: unknown key(s) ['txt']"),
        ({"text": 3}, "query.text must be a string, got number"),
        ({"images": "a.png"}, "query.images must be a list of strings, got string"),
        ({"image": "a.png", "images": ["b.png"]}, "query: give either 'image' or 'images', not both"),
        ({"instruction": "i"}, "query needs 'text' or 'image' (or both)"),
        ({"image": " "}, "query.image is an empty path"),
        ({"images": ["a.png", ""]}, "query.images[1] is an empty path"),
        ({"image": "missing.png"}, "query.image: file not found: "),
        ({"text": "  "}, "query: an Item needs text"),
        ({"text": "<image> <image>", "image": "a.png"}, "query: Item text has 2 <image> placeholder(s)"),
    ],
)
def test_item_from_json_errors_name_the_field(tmp_path: Path, value: object, message: str) -> None:
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(ValueError) as caught:
        item_from_json(value, tmp_path, name="query", check_images=True)
    assert message in str(caught.value)


def test_item_from_json_lists_every_problem_and_narrows_the_keys(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as caught:
        item_from_json({"images": ["a.png"], "text": 1}, tmp_path, name="positive", keys=("text", "image"))
    assert str(caught.value) == (
        "positive: unknown key(s) ['images'] (valid keys: text, image); positive.text must be a string, got number"
    )
    with pytest.raises(ValueError, match=r"^text must be a string, got array$"):
        item_from_json({"text": ["a"]}, tmp_path, name="")  # fields at a file's top level


def test_an_unreadable_image_in_memory_is_named_by_its_size_not_a_stream_object() -> None:
    with pytest.raises(
        ValueError, match=r"image <12 bytes> is not a readable image \(unknown or damaged format\)"
    ) as caught:
        load_image(b"not an image")
    assert "BytesIO" not in str(caught.value)
