"""ECR trace parsing never raises, keeps answers short, and builds the item the embedder reads."""

from __future__ import annotations

import pytest
from PIL import Image

from mmcascade.data.items import Item
from mmcascade.reasoner.trace import MAX_ANSWER_CHARS, Trace, parse_trace, with_trace


def test_complete_trace():
    trace = parse_trace(
        "<think>Two shapes: a star, then a circle.</think>\nAnswer: a red star to the left of a blue circle"
    )
    assert trace.think == "Two shapes: a star, then a circle."
    assert trace.answer == "a red star to the left of a blue circle"
    assert trace.complete and trace.problem is None
    assert trace.raw.startswith("<think>")


def test_truncated_trace_keeps_the_reasoning():
    trace = parse_trace("<think>The query asks for a dog on a beach, so the image must show")
    assert not trace.complete
    assert trace.think == "The query asks for a dog on a beach, so the image must show"
    assert trace.answer == ""
    assert "truncated: no </think>" in trace.problem


def test_missing_open_tag_uses_the_text_before_the_close_tag():
    # chat templates that pre-fill <think> return only the text after it
    trace = parse_trace("a dog, sand, sea</think>\n\nAnswer: a dog running on a sandy beach")
    assert trace.think == "a dog, sand, sea"
    assert trace.answer == "a dog running on a sandy beach"
    assert trace.complete and trace.problem is None


def test_no_tags_text_before_answer_is_reasoning():
    trace = parse_trace("The image shows a cat.\nAnswer: a grey cat on a sofa")
    assert trace.think == "The image shows a cat."
    assert trace.answer == "a grey cat on a sofa"
    assert trace.complete


def test_no_tags_no_answer_is_kept_as_reasoning():
    trace = parse_trace("just some words the model wrote")
    assert trace.think == "just some words the model wrote"
    assert trace.answer == "" and not trace.complete
    assert "truncated" in trace.problem


def test_no_answer_line_uses_the_text_after_the_tag():
    trace = parse_trace("<think>hmm</think>  a red star  ")
    assert trace.answer == "a red star"
    assert trace.complete
    assert "no 'Answer:' line" in trace.problem


def test_nothing_after_the_tag_is_a_problem():
    trace = parse_trace("<think>hmm</think>   ")
    assert trace.think == "hmm" and trace.answer == ""
    assert not trace.complete
    assert "no answer" in trace.problem


def test_markdown_answer_and_case():
    trace = parse_trace("<THINK>x</THINK>\n**Answer:** a blue circle")
    assert trace.answer == "a blue circle"


def test_nested_and_repeated_tags():
    trace = parse_trace("<think>a <think>b</think> c</think>\nAnswer: d <think>e</think>")
    assert trace.think == "a b"
    assert trace.answer == "d"
    assert "<think>" not in trace.answer + trace.think


@pytest.mark.parametrize("raw", ["", "   \n\t", "</think>", "<think></think>", "Answer:", "<<<>>>{}\x00"])
def test_garbage_never_raises(raw):
    trace = parse_trace(raw)
    assert isinstance(trace, Trace)
    assert not trace.complete
    assert trace.problem


@pytest.mark.parametrize("raw", [None, 42, b"<think>x</think>Answer: y", ["a"]])
def test_non_str_is_a_problem(raw):
    trace = parse_trace(raw)
    assert trace.raw == "" and trace.think == "" and trace.answer == ""
    assert not trace.complete
    assert "not a str" in trace.problem


def test_answer_is_cut_at_blank_line_and_length():
    trace = parse_trace("<think>x</think>Answer: first part\nsecond line\n\nextra paragraph")
    assert trace.answer == "first part\nsecond line"
    assert "blank line" in trace.problem
    long = parse_trace("<think>x</think>Answer: " + "word " * 200)
    assert 0 < len(long.answer) <= MAX_ANSWER_CHARS
    assert long.answer.endswith("word")
    assert f"{MAX_ANSWER_CHARS} characters" in long.problem


def test_embedding_text_modes():
    trace = parse_trace("<think>why</think>Answer: what")
    assert trace.embedding_text() == "what"
    assert trace.embedding_text("full") == "why\nwhat"
    truncated = parse_trace("<think>only reasoning")
    assert truncated.embedding_text() == "only reasoning"
    assert truncated.embedding_text("full") == "only reasoning"
    with pytest.raises(ValueError, match="embedding mode"):
        trace.embedding_text("both")


def test_with_trace_appends_a_reasoning_line():
    image = Image.new("RGB", (8, 8))
    item = Item(text="a star", images=(image,), instruction="Find the image.")
    trace = parse_trace("<think>shapes\nand colours</think>Answer: a red star")
    out = with_trace(item, trace)
    assert out.text == "a star\nReasoning: a red star"
    assert out.images == (image,) and out.instruction == "Find the image."
    assert with_trace(item, trace, mode="full").text == "a star\nReasoning: shapes and colours a red star"


def test_with_trace_image_only_item_and_empty_trace():
    item = Item(images=(b"png bytes",))
    assert with_trace(item, parse_trace("Answer: a cat")).text == "Reasoning: a cat"
    assert with_trace(item, parse_trace("")) is item


def test_with_trace_defuses_image_placeholders():
    item = Item(text="<image> what is this?", images=(b"x",))
    out = with_trace(item, parse_trace("<think>x</think>Answer: the <image> shows a cat"))
    assert out.text.count("<image>") == 1
    assert out.text.endswith("Reasoning: the [image] shows a cat")
