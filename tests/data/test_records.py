import json
from pathlib import Path

import pytest
from PIL import Image

from mmcascade.data.items import Item
from mmcascade.data.records import RecordProblem, TrainingRecord, iter_records, read_records, write_records

GOOD = {"query": {"text": "a red circle"}, "positive": {"text": "a round red shape"}}


def write_lines(path: Path, lines: list[object]) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (4, 4), "red").save(folder / name)
    return folder


def test_write_then_read_round_trips(tmp_path: Path, image_dir: Path) -> None:
    outside = tmp_path.parent / f"{tmp_path.name}-outside.png"
    Image.new("RGB", (4, 4), "blue").save(outside)
    records = [
        TrainingRecord(
            query=Item(text="a red circle", instruction="Find the image."),
            positive=Item(images=(str(image_dir / "a.png"),), instruction="Represent the image."),
            negatives=(Item(images=(image_dir / "b.png",)), Item(text="x", images=(str(outside),))),
            meta={"task": "caption_to_image", "kind": "simple", "edits": ["colour"]},
        ),
        TrainingRecord(query=Item(images=(str(image_dir / "b.png"),), text="what colour?"), positive=Item(text="red")),
    ]
    path = write_records(tmp_path / "train.jsonl", records)

    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["positive"] == {"image": "images/a.png", "instruction": "Represent the image."}
    assert lines[0]["negatives"][1]["image"] == str(outside)  # outside the folder: absolute
    assert "meta" not in lines[1] and lines[1]["negatives"] == []

    back = read_records(path)
    assert len(back) == 2 and [record.line for record in back] == [1, 2]
    for original, read in zip(records, back, strict=True):
        assert read.query.text == original.query.text and read.query.instruction == original.query.instruction
        assert read.positive.text == original.positive.text
        assert [Path(image).resolve() for image in read.positive.images] == [
            Path(image).resolve() for image in original.positive.images
        ]
        assert len(read.negatives) == len(original.negatives)
        assert read.meta == original.meta
    assert all(Path(image).is_absolute() for image in back[0].negatives[0].images)
    outside.unlink()


def test_a_dataset_folder_can_be_moved(tmp_path: Path) -> None:
    folder = tmp_path / "dataset"
    (folder / "images").mkdir(parents=True)
    Image.new("RGB", (4, 4), "red").save(folder / "images" / "a.png")
    record = TrainingRecord(query=Item(text="q"), positive=Item(images=(str(folder / "images" / "a.png"),)))
    path = write_records(folder / "train.jsonl", [record])
    assert json.loads(path.read_text())["positive"] == {"image": "images/a.png"}
    moved = folder.rename(tmp_path / "moved")
    (read,) = read_records(moved / "train.jsonl")
    assert Path(read.positive.images[0]) == moved / "images" / "a.png"


def test_relative_and_absolute_image_paths_are_read(tmp_path: Path, image_dir: Path) -> None:
    path = write_lines(
        tmp_path / "r.jsonl",
        [{"query": {"image": "images/a.png"}, "positive": {"image": str(image_dir / "b.png"), "text": "t"}}],
    )
    (record,) = read_records(path)
    assert record.query.images == (str(tmp_path / "images" / "a.png"),)
    assert record.positive.images == (str(image_dir / "b.png"),)
    assert record.negatives == () and record.meta == {}


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        ('{"query": {"text": "q"}, "positive": ', "malformed JSON"),
        ("[1, 2]", "expected a JSON object, got array"),
        ({"query": {"text": "q"}}, "missing key 'positive'"),
        ({**GOOD, "negative": []}, "unknown key(s) ['negative']"),
        ({"query": {"txt": "q"}, "positive": {"text": "p"}}, "query: unknown key(s) ['txt']"),
        ({"query": {"text": 3}, "positive": {"text": "p"}}, "query.text must be a string, got number"),
        ({"query": "q", "positive": {"text": "p"}}, "'query' must be an object"),
        ({**GOOD, "negatives": {"text": "n"}}, "'negatives' must be a list, got object"),
        ({**GOOD, "negatives": [{"instruction": "i"}]}, "negatives[0] needs 'text' or 'image'"),
        ({**GOOD, "meta": ["task"]}, "'meta' must be an object, got array"),
        ({"query": {"text": "  "}, "positive": {"text": "p"}}, "query: an Item needs text"),
        ({**GOOD, "negatives": [{"text": "n"}, {"image": "missing.png"}]}, "negatives[1].image: file not found"),
    ],
)
def test_each_invalid_line_is_reported_with_its_line_number(tmp_path: Path, bad_line: object, reason: str) -> None:
    path = write_lines(tmp_path / "r.jsonl", [GOOD, GOOD, bad_line, GOOD])
    with pytest.raises(ValueError) as caught:
        read_records(path)
    message = str(caught.value)
    assert f"{path}:3: " in message and reason in message
    assert "1 invalid record line(s) (3 valid)" in message and "on_error='skip'" in message


def test_check_images_false_accepts_missing_files(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "r.jsonl", [{"query": {"image": "nowhere.png"}, "positive": {"text": "p"}}])
    (record,) = read_records(path, check_images=False)
    assert record.query.images == (str(tmp_path / "nowhere.png"),)


def test_skip_mode_keeps_valid_records_and_lists_problems(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "r.jsonl", [GOOD, "not json", "", {"query": {"text": "q"}}, GOOD])
    result = read_records(path, on_error="skip")
    assert [record.line for record in result.records] == [1, 5]
    assert [problem.line for problem in result.problems] == [2, 4]  # the blank line 3 is no record and no problem
    assert "malformed JSON" in result.problems[0].reason
    assert result.problems[1] == RecordProblem(line=4, reason="missing key 'positive'")
    assert result.problems[1].format(path) == f"{path}:4: missing key 'positive'"


def test_raise_mode_shows_the_first_ten_problems_and_the_total(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "r.jsonl", [GOOD] + ["{"] * 15)
    with pytest.raises(ValueError) as caught:
        read_records(path)
    message = str(caught.value)
    assert "15 invalid record line(s) (1 valid)" in message
    assert f"{path}:11:" in message and f"{path}:12:" not in message and "... and 5 more" in message


def test_empty_file_is_an_error_naming_it(tmp_path: Path) -> None:
    for name, content in (("empty.jsonl", ""), ("blank.jsonl", "\n  \n")):
        path = tmp_path / name
        path.write_text(content)
        with pytest.raises(ValueError, match=f"{name}: no records"):
            read_records(path)
        with pytest.raises(ValueError, match=f"{name}: no records"):
            list(iter_records(path))


def test_no_valid_record_is_an_error_even_when_skipping(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "bad.jsonl", ["{", {"query": {}}])
    with pytest.raises(ValueError, match=r"(?s)bad\.jsonl: 2 invalid .*No line holds a valid record"):
        read_records(path, on_error="skip")


def test_missing_file_raises_file_not_found_naming_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_records(tmp_path / "nope.jsonl")
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        next(iter_records(tmp_path / "nope.jsonl"))


def test_iter_records_streams_and_stops_at_the_first_bad_line(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "r.jsonl", [GOOD, GOOD, "{", GOOD])
    stream = iter_records(path)
    assert next(stream).line == 1 and next(stream).line == 2
    with pytest.raises(ValueError, match=":3: malformed JSON"):
        next(stream)
    assert [record.line for record in iter_records(path, on_error="skip")] == [1, 2, 4]


def test_on_error_must_be_raise_or_skip(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "r.jsonl", [GOOD])
    with pytest.raises(ValueError, match="on_error must be"):
        read_records(path, on_error="ignore")  # type: ignore[arg-type]


def test_write_is_atomic_and_refuses_in_memory_images(tmp_path: Path) -> None:
    path = write_records(tmp_path / "r.jsonl", [TrainingRecord(query=Item(text="q"), positive=Item(text="p"))])
    before = path.read_bytes()
    bad = TrainingRecord(query=Item(text="q"), positive=Item(images=(Image.new("RGB", (2, 2)),)))
    with pytest.raises(ValueError, match="record 2 .* positive holds a Image image"):
        write_records(path, [TrainingRecord(query=Item(text="q"), positive=Item(text="p")), bad])
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.jsonl"]  # no temp file left behind
