"""What the templated teacher writes for each starter task: ``(annotated query, rng) -> (think, answer)``.

Each writer reasons in the order a good teacher would (parse the query, name the evidence, state a
canonical answer) from the record's ground truth, with a few paraphrase templates drawn from ``rng``
so that a student does not learn one sentence by heart. A writer raises ValueError when the annotations
are missing or contradict the record (a caption that is not the caption of ``meta.scene``, a label
that is not the positive).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mmcascade.data.items import Item
from mmcascade.data.synthetic import scenes
from mmcascade.data.synthetic.sources import TEXTILE_LABELS, VQA_SHAPE_ANSWERS, digit_label, vqa_answer_type

#: starter-data task -> the prompt kind its traces answer
STARTER_TASK_KINDS: dict[str, str] = {
    "caption_to_image": "retrieval",
    "image_to_caption": "retrieval",
    "vqa": "vqa",
    "textile_label": "classification",
    "digit_label": "classification",
}

_ORDINALS = ("first", "second", "third")


@dataclass(frozen=True)
class AnnotatedQuery:
    """A starter record's query with the ground truth the teacher reasons from.

    Args:
        query: the query item (image paths absolute).
        task: the starter task (a key of :data:`STARTER_TASK_KINDS`).
        meta: the record's ``meta`` (``scene`` for scene tasks, ``label``, ``answer_type``, ...).
        positive_text: the text of the record's positive (the answer or label), if it has text.
        seed: seeds the choice of paraphrase templates (stable across machines and folders).
    """

    query: Item
    task: str
    meta: dict[str, Any] = field(default_factory=dict)
    positive_text: str | None = None
    seed: int = 0

    @property
    def kind(self) -> str:
        """The prompt kind the trace answers (``retrieval``, ``vqa`` or ``classification``)."""
        return STARTER_TASK_KINDS[self.task]


def think_and_answer(query: AnnotatedQuery) -> tuple[str, str]:
    """The reasoning and the answer the teacher writes for ``query`` (deterministic: seeded by the query)."""
    writer = _WRITERS.get(query.task)
    if writer is None:
        raise ValueError(f"unknown starter task {query.task!r}; the teacher handles {list(STARTER_TASK_KINDS)}")
    return writer(query, random.Random(query.seed))


def _scene(query: AnnotatedQuery) -> scenes.Scene:
    objects = query.meta.get("scene")
    if not isinstance(objects, list) or not objects:
        raise ValueError(f"{query.task} record has no meta.scene (a list of objects)")
    try:
        return scenes.Scene(
            objects=tuple(
                scenes.SceneObject(shape=obj["shape"], colour=obj["colour"], size=obj["size"], slot=obj["slot"])
                for obj in objects
            )
        )
    except (KeyError, TypeError) as error:
        raise ValueError(f"meta.scene objects need shape, colour, size and slot: {error!r}") from None


def canonical_description(scene: scenes.Scene) -> str:
    """``"3 objects, left to right: a small red star, a large blue circle, a small green square"``
    (a lone object: ``"1 object, on the left: a small red star"``, since its slot is what captions pin)."""
    phrases = [obj.phrase() for obj in scene.objects]
    if len(phrases) == 1:
        return f"1 object, {scenes.SLOT_PHRASES[scene.objects[0].slot]}: {phrases[0]}"
    return f"{len(phrases)} objects, left to right: {', '.join(phrases)}"


def _object_details(scene: scenes.Scene, rng: random.Random) -> str:
    template = rng.choice(
        [
            "The {ordinal} object is {size}, {colour} and a {shape}.",
            "Object {number}: size {size}, colour {colour}, shape {shape}.",
            "{Ordinal}: a {shape}, {colour}, {size}.",
        ]
    )
    return " ".join(
        template.format(
            ordinal=_ORDINALS[index],
            Ordinal=_ORDINALS[index].capitalize(),
            number=index + 1,
            size=obj.size,
            colour=obj.colour,
            shape=obj.shape,
        )
        for index, obj in enumerate(scene.objects)
    )


def _caption_think(query: AnnotatedQuery, rng: random.Random) -> tuple[str, str]:
    scene = _scene(query)
    style = query.meta.get("caption_style")
    caption = (query.query.text or "").strip()
    if style not in scenes.CAPTION_STYLES:
        raise ValueError(f"caption_to_image record has no valid meta.caption_style (got {style!r})")
    if caption != scenes.caption(scene, style):
        raise ValueError(f"the query caption {caption!r} is not the {style!r} caption of meta.scene")
    n = len(scene.objects)
    phrases = [obj.phrase() for obj in scene.objects]
    opening = rng.choice(
        [
            f"The caption asks for an image with exactly {n} object{'s' * (n > 1)}.",
            f"I need to find a picture showing {n} shape{'s' * (n > 1)}, no more and no fewer.",
            f"Counting the shapes the caption names: {n}.",
        ]
    )
    if n == 1:
        order = f"It places the single object {scenes.SLOT_PHRASES[scene.objects[0].slot]}, which the image must match."
    elif style == "right_of":
        order = (
            "It names the objects from right to left ('X to the right of Y' puts Y first), "
            f"so from left to right the order is: {', then '.join(phrases)}."
        )
    elif style == "anchored" and n == 3:
        order = (
            f"It anchors {phrases[1]} in the middle, with {phrases[0]} to its left and {phrases[2]} to its right, "
            f"so from left to right: {', then '.join(phrases)}."
        )
    elif style in ("left_of", "anchored"):
        relation = "left of" if style == "left_of" else "to the left of"
        order = f"'X {relation} Y' puts X first, so from left to right: {', then '.join(phrases)}."
    else:
        order = f"It lists the objects in left-to-right order: {', then '.join(phrases)}."
    closing = rng.choice(
        [
            "Every size, colour and shape must be bound to the right object, and the order must hold.",
            "An image with the same shapes but swapped colours, sizes or positions would be wrong.",
            "All three attributes and the order matter; one changed attribute makes a different scene.",
        ]
    )
    return " ".join([opening, order, _object_details(scene, rng), closing]), canonical_description(scene)


def _image_scene_think(query: AnnotatedQuery, rng: random.Random) -> tuple[str, str]:
    scene = _scene(query)
    n = len(scene.objects)
    opening = rng.choice(
        [
            f"The image shows {n} shape{'s' * (n > 1)} on a plain light background.",
            f"I see {n} coloured object{'s' * (n > 1)} in a row on a pale background.",
            f"Scanning from left to right, there {'are' if n > 1 else 'is'} {n} object{'s' * (n > 1)}.",
        ]
    )
    by_slot = {obj.slot: obj for obj in scene.objects}
    where_template = rng.choice(["{where} there is {phrase}.", "{Where}: {phrase}.", "{where} I see {phrase}."])
    parts = []
    for slot, where in enumerate(scenes.SLOT_PHRASES):
        obj = by_slot.get(slot)
        if obj is None:
            parts.append(f"Nothing is {where}.")
        else:
            text = where_template.format(where=where, Where=where.capitalize(), phrase=obj.phrase())
            parts.append(text[0].upper() + text[1:])
    closing = rng.choice(
        [
            "A matching caption must name each object with its size, colour and shape, in this order.",
            "The caption I want states these attributes and the left-to-right order.",
            "So the description must bind every attribute to its object and keep the order.",
        ]
    )
    return " ".join([opening, *parts, closing]), canonical_description(scene)


_VQA_YES_NO_TARGET = re.compile(r"\b(?:a|no)\s+(\w+)(\s+shape)?\b")
_VQA_SUBJECT = re.compile(r"(?:color|colour) (?:is|of) the (\w+)\??$")
_VQA_COLOURED_SHAPE = re.compile(r"what is the (\w+) shape\??$")


def _vqa_think(query: AnnotatedQuery, rng: random.Random) -> tuple[str, str]:
    question = (query.query.text or "").strip().lower()
    answer = (query.positive_text or "").strip().lower()
    if not question or not answer:
        raise ValueError("vqa record needs the question as query text and the answer as positive text")
    answer_type = query.meta.get("answer_type") or vqa_answer_type(answer)
    if answer_type == "yes_no":
        if answer not in ("yes", "no"):
            raise ValueError(f"yes/no question with the answer {answer!r}")
        found = _VQA_YES_NO_TARGET.search(question)
        target = found.group(1) if found else "shape"
        bare = target if target in VQA_SHAPE_ANSWERS or target == "shape" else f"{target} shape"
        negated = " not " in f" {question} " or question.startswith("is no ")
        present = (answer == "yes") != negated
        support = f"there is a {bare} in the image" if present else f"there is no {bare} in the image"
        asks = f"whether a {bare} is {'absent' if negated else 'present'}"
        relevant = "a negated presence check, so I answer about absence" if negated else "a presence check"
    elif answer_type == "colour":
        found = _VQA_SUBJECT.search(question)
        subject = f"the {found.group(1)}" if found else "the shape"
        support = f"{subject} is {answer}"
        asks = f"the colour of {subject}"
        relevant = "the colour attribute of the one shape in the image"
    elif answer_type == "shape":
        found = _VQA_COLOURED_SHAPE.search(question)
        subject = f"the {found.group(1)} shape" if found else "the shape"
        support = f"{subject} is a {answer}"
        asks = f"which shape {subject} is"
        relevant = "the outline of the shape: its corners and sides"
    else:
        raise ValueError(f"unknown meta.answer_type {answer_type!r}; expected yes_no, colour or shape")
    think = " ".join(
        [
            rng.choice([f"The question asks {asks}.", f"What is asked: {asks}.", f"I need to determine {asks}."]),
            rng.choice([f"The relevant evidence is {relevant}.", f"This is about {relevant}."]),
            rng.choice([f"Looking at the image, {support}.", f"I check the image: {support}."]),
        ]
    )
    return think, f"{answer} ({support})"


_TEXTILE_EVIDENCE = {
    "nominal": (
        "The weave looks regular and uniform across the whole image.",
        "No hole, stain, tear or streak breaks the pattern anywhere.",
    ),
    "local": (
        "Most of the fabric has a regular, uniform texture.",
        "One small region breaks the pattern: a localized flaw such as a spot, hole or tear.",
    ),
    "global": (
        "The irregularity is not confined to one spot.",
        "The texture is distorted or uneven across the whole image, so the defect is spread everywhere.",
    ),
}
_DIGIT_EVIDENCE = (
    "a closed oval loop with an empty centre",
    "a single, mostly vertical stroke",
    "a curve at the top that sweeps down to a flat base stroke",
    "two bumps, both open to the left, stacked on top of each other",
    "a vertical stroke crossed by a horizontal bar, joined by an angled stroke",
    "a flat top bar, a short vertical stroke and a lower bowl open to the left",
    "a stroke curving down into a closed loop at the bottom",
    "a horizontal top bar joined to a long diagonal stroke",
    "two closed loops stacked on top of each other",
    "a closed loop at the top with a tail going straight down",
)


def _textile_think(query: AnnotatedQuery, rng: random.Random) -> tuple[str, str]:
    name = query.meta.get("label")
    if name not in TEXTILE_LABELS:
        raise ValueError(f"textile_label record has meta.label {name!r}; expected one of {list(TEXTILE_LABELS)}")
    label = TEXTILE_LABELS[name]
    if query.positive_text is not None and query.positive_text != label:
        raise ValueError(f"meta.label {name!r} means {label!r} but the positive is {query.positive_text!r}")
    first, second = _TEXTILE_EVIDENCE[name]
    opening = rng.choice(
        [
            "The image is a close-up of woven fabric.",
            "I look at the textile's texture for anything that breaks its pattern.",
            "A textile photo: the question is whether, and where, the pattern is broken.",
        ]
    )
    return f"{opening} {first} {second} So the class is: {label}.", label


def _digit_think(query: AnnotatedQuery, rng: random.Random) -> tuple[str, str]:
    name = str(query.meta.get("label"))
    if name not in [str(digit) for digit in range(10)]:
        raise ValueError(f"digit_label record has meta.label {query.meta.get('label')!r}; expected 0-9")
    label = digit_label(name)
    if query.positive_text is not None and query.positive_text != label:
        raise ValueError(f"meta.label {name!r} means {label!r} but the positive is {query.positive_text!r}")
    opening = rng.choice(
        [
            "The image shows one handwritten digit in dark ink on white.",
            "A single handwritten character, low resolution, dark on a light background.",
            "I look at the strokes of the handwritten digit.",
        ]
    )
    evidence = rng.choice(["Its strokes form {evidence}.", "I see {evidence}.", "The shape is {evidence}."])
    return f"{opening} {evidence.format(evidence=_DIGIT_EVIDENCE[int(name)])} That is a {name}.", label


_WRITERS: dict[str, Callable[[AnnotatedQuery, random.Random], tuple[str, str]]] = {
    "caption_to_image": _caption_think,
    "image_to_caption": _image_scene_think,
    "vqa": _vqa_think,
    "textile_label": _textile_think,
    "digit_label": _digit_think,
}
