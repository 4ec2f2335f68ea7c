"""Rerank prompts: query and candidate text and images land where the template puts them."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from mmcascade.data.items import Item
from mmcascade.rerank.prompts import load_rerank_template, render_rerank_prompt, rerank_template_from_dict

TEMPLATE = {
    "name": "t",
    "description": "",
    "system": "Judge.",
    "user": "Task: {query_instruction}\nQuery: {query}\nCandidate: {candidate}\nMatch?",
}


def test_images_follow_their_item_and_query_images_come_first() -> None:
    red, blue = Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "blue")
    template = rerank_template_from_dict(TEMPLATE)
    prompt = render_rerank_prompt(
        Item(text="a red square", images=(red,), instruction="Find the image."), Item(images=(blue,)), template
    )
    assert prompt.system == "Judge."
    assert prompt.user == "Task: Find the image.\nQuery: a red square <image>\nCandidate: <image>\nMatch?"
    assert prompt.images == (red, blue)


def test_a_line_with_only_empty_placeholders_is_left_out() -> None:
    prompt = render_rerank_prompt("a cat", "a dog", rerank_template_from_dict(TEMPLATE))
    assert prompt.user == "Query: a cat\nCandidate: a dog\nMatch?"


def test_items_that_place_their_images_keep_them_there() -> None:
    image = Image.new("RGB", (8, 8))
    prompt = render_rerank_prompt(Item(text="left <image> right", images=(image,)), "x", load_rerank_template())
    assert "Query: left <image> right" in prompt.user and prompt.images == (image,)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"user": "Query: {query}"}, "lacks \\['candidate'\\]"),
        ({"user": "{query} {candidate} {answer}"}, "unknown placeholder"),
        ({"extra": "x"}, "unknown key"),
        ({"system": ""}, "'system' must be a non-empty string"),
        ({"system": "see <image>"}, "literal <image>"),
    ],
)
def test_bad_templates_are_refused_with_the_reason(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rerank_template_from_dict({**TEMPLATE, **change}, source="mine.yaml")


def test_missing_and_malformed_template_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="rerank template not found"):
        load_rerank_template(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(ValueError, match="bad.yaml is not a valid YAML"):
        load_rerank_template(bad)
