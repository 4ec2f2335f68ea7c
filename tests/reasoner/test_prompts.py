"""ECR prompt templates: bundled files load, user folders override, bad files fail with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from mmcascade.data.items import Item
from mmcascade.reasoner.prompts import (
    KINDS,
    TEMPLATES_ENV,
    PromptTemplate,
    load_template,
    render_prompt,
    task_kind,
)

VALID = """\
kind: {kind}
description: a test template
system: Think, then answer.
user: |
  {{images}}
  Task: {{instruction}}
  Q: {{text}}
"""


@pytest.fixture(autouse=True)
def no_env_templates(monkeypatch):
    monkeypatch.delenv(TEMPLATES_ENV, raising=False)


@pytest.mark.parametrize("kind", KINDS)
def test_bundled_templates_load(kind):
    template = load_template(kind)
    assert isinstance(template, PromptTemplate)
    assert template.kind == kind
    assert "<think>" in template.system and "Answer:" in template.system
    assert template.description
    assert Path(template.source).name == f"{kind}.yaml"


@pytest.mark.parametrize(
    ("name", "kind"),
    [("CLS", "classification"), ("QA", "vqa"), ("RET", "retrieval"), ("VG", "grounding"), ("VisDoc", "document")]
    + [(kind, kind) for kind in KINDS],
)
def test_task_kind(name, kind):
    assert task_kind(name) == kind


def test_task_kind_unknown_lists_kinds():
    with pytest.raises(ValueError, match="retrieval"):
        task_kind("captioning")
    assert load_template("QA").kind == "vqa"


def test_user_folder_overrides_by_file_name(tmp_path, monkeypatch):
    (tmp_path / "retrieval.yaml").write_text(VALID.format(kind="retrieval"))
    assert load_template("retrieval", template_dir=tmp_path).system == "Think, then answer."
    assert load_template("vqa", template_dir=tmp_path).source.endswith("vqa.yaml")  # not overridden: bundled
    monkeypatch.setenv(TEMPLATES_ENV, str(tmp_path))
    assert load_template("RET").system == "Think, then answer."


def test_user_folder_may_add_a_kind(tmp_path):
    (tmp_path / "captioning.yaml").write_text(VALID.format(kind="captioning"))
    assert load_template("captioning", template_dir=tmp_path).kind == "captioning"
    with pytest.raises(ValueError, match="no 'nothing' template"):
        load_template("nothing", template_dir=tmp_path)


def test_missing_template_dir(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="template_dir"):
        load_template("vqa", template_dir=tmp_path / "absent")
    monkeypatch.setenv(TEMPLATES_ENV, str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match=TEMPLATES_ENV):
        load_template("vqa")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: retrieval\nsystem: s\nuser: '{text} {images}'\n", "missing key 'description'"),
        ("kind: retrieval\ndescription: d\nsystem: 3\nuser: '{text} {images}'\n", "key 'system' must be a string"),
        (
            "kind: retrieval\ndescription: d\nsystem: s\nuser: '{text} {images} {query}'\n",
            "unknown placeholder {query}",
        ),
        ("kind: retrieval\ndescription: d\nsystem: s\nuser: '{text} {images} {}'\n", "unknown placeholder"),
        ("kind: retrieval\ndescription: d\nsystem: s\nuser: '{text!r} {images}'\n", "without a conversion"),
        ("kind: retrieval\ndescription: d\nsystem: s\nuser: '{text} {images'\n", "not a valid format string"),
        ("kind: retrieval\ndescription: d\nsystem: s\nuser: '{text}'\n", "{images}"),
        ("kind: retrieval\ndescription: d\nsystem: s\nuser: '<image> {text} {images}'\n", "literal <image>"),
        ("kind: retrieval\ndescription: d\nsystem: s\nuser: '{text} {images}'\nextra: 1\n", "unknown key"),
        ("kind: vqa\ndescription: d\nsystem: s\nuser: '{text} {images}'\n", "key 'kind'"),
        ("- a list\n", "must be a mapping"),
        ("kind: [unclosed\n", "not valid YAML"),
    ],
)
def test_validation_errors_name_file_and_key(tmp_path, text, message):
    (tmp_path / "retrieval.yaml").write_text(text)
    with pytest.raises(ValueError, match="retrieval.yaml") as error:
        load_template("retrieval", template_dir=tmp_path)
    assert message in str(error.value)


def test_render_text_only():
    template = load_template("retrieval")
    prompt = render_prompt(Item(text="a red star"), template)
    assert prompt.images == ()
    assert "<image>" not in prompt.user
    assert "Query: a red star" in prompt.user
    assert "Task:" not in prompt.user  # no instruction: the line is left out
    assert prompt.system == template.system


def test_render_one_and_two_images():
    template = load_template("vqa")
    first, second = Image.new("RGB", (4, 4), "red"), Image.new("RGB", (4, 4), "blue")
    one = render_prompt(Item(text="what colour?", images=(first,), instruction="Answer the question."), template)
    assert one.images == (first,)
    assert one.user.count("<image>") == 1
    assert one.user.startswith("<image>")
    assert "Task: Answer the question." in one.user and "Question: what colour?" in one.user
    two = render_prompt(Item(images=(first, second)), template)
    assert two.images == (first, second)  # order kept
    assert two.user.count("<image>") == 2
    assert "Question:" not in two.user


def test_render_keeps_interleaved_placeholders():
    first, second = b"one", b"two"
    prompt = render_prompt(
        Item(text="compare <image> with <image>", images=(first, second)), load_template("retrieval")
    )
    assert prompt.user.count("<image>") == 2
    assert "Query: compare <image> with <image>" in prompt.user
    assert prompt.images == (first, second)


def test_render_placeholder_count_check():
    item = Item(text="a cat", images=(b"x",), instruction="Look at <image> closely")  # instruction adds one
    with pytest.raises(ValueError, match="2 <image> placeholder"):
        render_prompt(item, load_template("retrieval"))
