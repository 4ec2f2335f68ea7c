"""What the generators share (mmcascade.data.synthetic.sources), and the old import paths kept for one release."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmcascade.data import scenes as old_scenes
from mmcascade.data import starter_data
from mmcascade.data.synthetic import mini_benchmark, scenes, starter_split, teacher
from mmcascade.data.synthetic.sources import (
    check_build_settings,
    check_replaceable,
    digit_image,
    digit_label,
    pixel_digest,
    round_robin,
    spread,
    stream,
    vqa_answer_type,
    vqa_other_answers,
    vqa_questions_by_type,
)
from mmcascade.evaluation import mini_benchmark as old_mini_benchmark
from mmcascade.reasoner import teacher as old_teacher


def test_pixel_digest_sees_pixels_not_file_formats() -> None:
    image = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    with Image.open(io.BytesIO(buffer.getvalue())) as reread:
        assert pixel_digest(reread) == pixel_digest(image)
    grey = Image.new("L", (4, 4), 128)
    assert pixel_digest(grey) == pixel_digest(grey.convert("RGB"))  # the same RGB pixels are the same image
    changed = image.copy()
    changed.putpixel((0, 0), (255, 255, 255))
    assert pixel_digest(changed) != pixel_digest(image)
    assert pixel_digest(Image.new("RGB", (2, 8))) != pixel_digest(Image.new("RGB", (4, 4)))


def test_streams_are_independent_per_name_and_repeatable() -> None:
    assert stream(0, "a", "b").integers(1 << 30) == stream(0, "a", "b").integers(1 << 30)
    assert stream(0, "a").integers(1 << 30) != stream(0, "b").integers(1 << 30)
    assert stream(0, "a").integers(1 << 30) != stream(1, "a").integers(1 << 30)


def test_round_robin_and_spread_keep_classes_balanced() -> None:
    groups = {"a": [1, 2, 3], "b": [4], "c": [5, 6]}
    assert round_robin(groups) == [("a", 1), ("b", 4), ("c", 5), ("a", 2), ("c", 6), ("a", 3)]
    assert round_robin(groups, 4) == [("a", 1), ("b", 4), ("c", 5), ("a", 2)]
    assert spread(7, ["a", "b", "c"]) == {"a": 3, "b": 2, "c": 2}


def test_labels_and_answer_types() -> None:
    assert digit_label(7) == digit_label("7") == "the digit seven"
    assert [vqa_answer_type(answer) for answer in ("circle", "yes", "teal")] == ["shape", "yes_no", "colour"]
    vocabulary = ["circle", "rectangle", "yes", "no", "red", "blue"]
    assert vqa_other_answers(vocabulary, "red") == ["blue"]
    assert vqa_questions_by_type(vocabulary, ["no", "red", "circle", "yes"]) == {
        "colour": [1],
        "shape": [2],
        "yes_no": [0, 3],
    }
    image = digit_image(np.full((8, 8), 16.0))
    assert image.size == (64, 64) and image.mode == "RGB" and image.getpixel((0, 0)) == (0, 0, 0)


def test_a_build_replaces_only_an_empty_folder_or_its_own(tmp_path: Path) -> None:
    check_replaceable(tmp_path / "absent", name="mine", what="test")
    check_replaceable(tmp_path, name="mine", what="test")  # empty
    (tmp_path / "manifest.json").write_text(json.dumps({"name": "mine"}))
    check_replaceable(tmp_path, name="mine", what="test")
    with pytest.raises(FileExistsError, match="not an earlier test build"):
        check_replaceable(tmp_path, name="theirs", what="test")
    with pytest.raises(FileExistsError, match="not a folder"):
        check_replaceable(tmp_path / "manifest.json", name="mine", what="test")


def test_old_import_paths_still_work() -> None:
    assert old_scenes.render is scenes.render and old_scenes.Scene is scenes.Scene
    assert starter_data.build_starter_data is starter_split.build_starter_data
    assert starter_data.DIGIT_WORDS[7] == "seven" and starter_data.TEXTILE_LABELS["local"]
    assert old_mini_benchmark.ensure_mini_benchmark is mini_benchmark.ensure_mini_benchmark
    assert old_teacher.TemplatedTeacher is teacher.TemplatedTeacher
    for module in (old_scenes, starter_data, old_mini_benchmark, old_teacher):
        assert all(hasattr(module, name) for name in module.__all__), module.__name__


@pytest.mark.parametrize(
    ("seed", "scale", "message"),
    [
        (-1, 1.0, "seed must be"),
        (True, 1.0, "seed must be"),
        (1.5, 1.0, "seed must be"),
        (0, 0, "scale must be"),
        (0, float("inf"), "scale must be"),
        (0, True, "scale must be"),
        (0, "1", "scale must be"),
    ],
)
def test_every_generator_refuses_the_same_bad_seeds_and_scales(seed, scale, message) -> None:
    with pytest.raises(ValueError, match=message):
        check_build_settings(seed, scale)
    check_build_settings(0, 0.5)  # and accepts a good pair
