import json
import os
from pathlib import Path

import pytest
from PIL import Image

from mmcascade.data.collections import SkippedRecord, SourceRecord, read_collection


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "pics").mkdir()
    Image.new("RGB", (4, 4), "red").save(tmp_path / "pics" / "a.png")
    Image.new("RGB", (4, 4), "blue").save(tmp_path / "pics" / "b.png")
    (tmp_path / "pics" / "b.txt").write_text("a blue square\n")
    return tmp_path


def write_jsonl(path: Path, lines: list[object]) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_jsonl_items_resolve_images_against_the_file_and_decode_on_load(folder: Path) -> None:
    path = write_jsonl(
        folder / "items.jsonl",
        [
            {"id": "a", "image": "pics/a.png", "text": "red"},
            {"images": ["pics/a.png", "pics/b.png"], "text": "<image> then <image>", "payload": {"k": 1}},
            {"id": 7, "text": "text only", "instruction": "Mine.", "image": None},
        ],
    )
    first, second, third = read_collection(path, instruction="Represent it.")
    assert isinstance(first, SourceRecord) and (first.id, first.source) == ("a", "items.jsonl:1")
    assert first.payload == {"text": "red", "image": str(folder / "pics" / "a.png")}
    loaded = first.load()
    assert loaded.text == "red" and loaded.instruction == "Represent it."
    assert isinstance(loaded.images[0], Image.Image) and loaded.images[0].getpixel((0, 0)) == (255, 0, 0)
    assert second.id == "line-2" and second.payload == {"k": 1} and len(second.load().images) == 2
    assert (third.id, third.payload) == ("7", {"text": "text only"})  # a null image is no image
    assert third.load() == third.load() and third.load().instruction == "Mine."


def test_bad_jsonl_lines_are_skipped_with_a_reason_naming_the_field(folder: Path) -> None:
    path = write_jsonl(
        folder / "items.jsonl",
        [
            "{not json",
            ["a list"],
            {"id": "d", "colour": "red"},
            {"id": "", "text": "t"},
            {"text": 3},
            {"image": "a.png", "images": ["b.png"]},
            {"image": ""},
            {"text": "t", "payload": [1]},
        ],
    )
    reasons = [record.reason for record in read_collection(path) if isinstance(record, SkippedRecord)]
    assert reasons == [
        "not valid JSON (Expecting property name enclosed in double quotes at column 2)",
        "expected a JSON object, got list",
        "unknown keys ['colour']; valid: ['id', 'image', 'images', 'instruction', 'payload', 'text']",
        "'id' must be a non-empty string or an int; got ''",
        "text must be a string, got number",
        "give either 'image' or 'images', not both",
        "image is an empty path",
        "'payload' must be an object; got list",
    ]


def test_a_missing_image_fails_when_loaded_naming_the_file(folder: Path) -> None:
    (record,) = read_collection(write_jsonl(folder / "items.jsonl", [{"id": "c", "image": "missing.png"}]))
    with pytest.raises(FileNotFoundError, match="image file not found: .*missing.png"):
        record.load()


def test_image_folder_records_carry_their_caption(folder: Path) -> None:
    first, second = read_collection(folder / "pics", captions="embed", instruction="Find it.")
    assert (first.id, first.payload) == ("a.png", {"path": str(folder / "pics" / "a.png")})
    assert first.load().text is None and first.load().instruction == "Find it."
    assert second.payload["caption"] == "a blue square" and second.load().text == "a blue square"
    (_, stored) = read_collection(folder / "pics", captions="payload")
    assert stored.load().text is None and stored.payload["caption"] == "a blue square"


def test_a_fingerprint_changes_with_the_content_not_with_a_touch(folder: Path) -> None:
    (record, _) = read_collection(folder / "pics")
    stored = record.fingerprint.as_dict()
    assert record.fingerprint.matches(stored)
    image = folder / "pics" / "a.png"
    os.utime(image, ns=(1, 1))  # same bytes, other mtime: the stat differs, the bytes decide
    (touched, _) = read_collection(folder / "pics")
    assert touched.fingerprint.stat() != stored["stat"] and touched.fingerprint.matches(stored)
    Image.new("RGB", (4, 4), "green").save(image)  # another image under the same name
    (replaced, _) = read_collection(folder / "pics")
    assert not replaced.fingerprint.matches(stored)
    image.unlink()
    assert not record.fingerprint.matches(stored)  # a file gone since: changed, not an error


def test_a_caption_or_caption_mode_is_part_of_the_fingerprint(folder: Path) -> None:
    (_, embedded) = read_collection(folder / "pics", captions="embed")
    stored = embedded.fingerprint.as_dict()
    (_, payload_only) = read_collection(folder / "pics", captions="payload")
    assert not payload_only.fingerprint.matches(stored)
    (folder / "pics" / "b.txt").write_text("a blue square, recaptioned\n")
    (_, recaptioned) = read_collection(folder / "pics", captions="embed")
    assert not recaptioned.fingerprint.matches(stored)


def test_jsonl_ids_default_to_the_line_number_and_are_flagged_positional(folder: Path) -> None:
    lines = [{"id": "kept", "text": "red"}, {"text": "no id", "payload": {"k": 1}}]
    first, second = read_collection(write_jsonl(folder / "items.jsonl", lines))
    assert (first.id, first.positional_id) == ("kept", False)
    assert (second.id, second.positional_id) == ("line-2", True)
    stored = [record.fingerprint.as_dict() for record in (first, second)]
    lines[1]["payload"] = {"k": 2}  # an edited line is a changed document
    same, edited = read_collection(write_jsonl(folder / "items.jsonl", lines))
    assert same.fingerprint.matches(stored[0]) and not edited.fingerprint.matches(stored[1])
    (moved,) = read_collection(write_jsonl(folder / "items.jsonl", ["", lines[1]]))
    assert moved.id == "line-2"  # blank lines count: the id is the line's position in the file
