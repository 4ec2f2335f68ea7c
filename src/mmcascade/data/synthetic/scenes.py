"""Synthetic compositional scenes: coloured shapes in a row, with exact ground truth.

A scene holds one to three objects, each a shape with a colour and a size, in one of three
horizontal slots (left, middle, right). Captions are templated English with several paraphrase
styles; :func:`one_edit_negatives` makes scenes that differ from a source scene in exactly one
attribute or relation (the hard negatives a single pooled vector confuses).

What a caption pins down is the scene's :attr:`Scene.signature`: the objects from left to right,
and, for a single object, also its slot ("on the left"). Which slots two or three objects occupy,
the pixel jitter and the background are nuisances that no caption mentions.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (245, 135, 0),
    "yellow": (235, 200, 0),
    "green": (30, 155, 55),
    "blue": (30, 85, 220),
    "purple": (135, 45, 180),
}
SIZES: tuple[str, ...] = ("small", "large")
SLOTS: tuple[str, ...] = ("left", "middle", "right")
SLOT_PHRASES: tuple[str, ...] = ("on the left", "in the middle", "on the right")  # how captions place a lone object
EDIT_KINDS: tuple[str, ...] = (
    "colour",
    "shape",
    "size",
    "position",
    "swap_colours",
    "swap_shapes",
    "swap_sizes",
    "count",
)
CAPTION_STYLES: tuple[str, ...] = ("list", "left_of", "right_of", "sequence", "anchored")

IMAGE_SIZE = 128
MAX_OBJECTS = len(SLOTS)
# Slot centres 42-43 px apart: the widest large shapes (18 px half-width) plus jitter never reach
# their neighbour or the image edge.
_SLOT_X = (21, 64, 106)  # + 0.5 px to the pixel centre: 21.5 and 106.5 are symmetric
_RADIUS = {"small": 7, "large": 15}
_JITTER_X, _JITTER_Y = 2, 8
_SUPERSAMPLE = 2  # draw at 2x and box-reduce: smooth edges, interiors keep the exact colour


@dataclass(frozen=True)
class SceneObject:
    """One shape: ``shape`` in :data:`SHAPES`, ``colour`` in :data:`COLOURS`, ``size`` in :data:`SIZES`,
    ``slot`` 0 (left), 1 (middle) or 2 (right)."""

    shape: str
    colour: str
    size: str
    slot: int

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; choose from {SHAPES}")
        if self.colour not in COLOURS:
            raise ValueError(f"unknown colour {self.colour!r}; choose from {tuple(COLOURS)}")
        if self.size not in SIZES:
            raise ValueError(f"unknown size {self.size!r}; choose from {SIZES}")
        if self.slot not in range(MAX_OBJECTS):
            raise ValueError(f"slot must be 0, 1 or 2 (left, middle, right); got {self.slot!r}")

    @property
    def attributes(self) -> tuple[str, str, str]:
        """(shape, colour, size): what a caption says about this object."""
        return (self.shape, self.colour, self.size)

    def phrase(self) -> str:
        return f"a {self.size} {self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """Objects sorted left to right, plus rendering nuisances that equality ignores.

    Args:
        objects: one to three objects in distinct slots (stored sorted by slot).
        jitter: a pixel offset (dx, dy) per slot, shared by every scene edited from this one,
            so a one-edit negative is pixel-identical except for the edit.
        background: the RGB background colour.
    """

    objects: tuple[SceneObject, ...]
    jitter: tuple[tuple[int, int], ...] = field(default=((0, 0),) * MAX_OBJECTS, compare=False)
    background: tuple[int, int, int] = field(default=(245, 245, 245), compare=False)

    def __post_init__(self) -> None:
        objects = tuple(sorted(self.objects, key=lambda obj: obj.slot))
        if not 1 <= len(objects) <= MAX_OBJECTS:
            raise ValueError(f"a scene holds 1 to {MAX_OBJECTS} objects; got {len(objects)}")
        if len({obj.slot for obj in objects}) != len(objects):
            raise ValueError(f"two objects share a slot: {[obj.slot for obj in objects]}")
        if len(self.jitter) != MAX_OBJECTS:
            raise ValueError(f"jitter needs one (dx, dy) per slot ({MAX_OBJECTS}); got {len(self.jitter)}")
        object.__setattr__(self, "objects", objects)

    @property
    def signature(self) -> tuple:
        """What captions distinguish: the attributes left to right, plus the slot of a lone object."""
        if len(self.objects) == 1:
            (only,) = self.objects
            return (*only.attributes, only.slot)
        return tuple(obj.attributes for obj in self.objects)

    def centre(self, index: int) -> tuple[int, int]:
        """Pixel centre (x, y) of ``objects[index]`` in the rendered image."""
        obj = self.objects[index]
        dx, dy = self.jitter[obj.slot]
        return (_SLOT_X[obj.slot] + dx, IMAGE_SIZE // 2 + dy)


@dataclass(frozen=True)
class SceneEdit:
    """A scene made from another by one edit of kind ``kind`` (one of :data:`EDIT_KINDS`)."""

    scene: Scene
    kind: str


def object_to_json(obj: SceneObject) -> dict[str, Any]:
    """``{"shape", "colour", "size", "slot"}``: how generated data records an object."""
    return {"shape": obj.shape, "colour": obj.colour, "size": obj.size, "slot": obj.slot}


def scene_to_json(scene: Scene) -> dict[str, Any]:
    """The objects, jitter and background: everything needed to re-render the scene pixel for pixel."""
    return {
        "objects": [object_to_json(obj) for obj in scene.objects],
        "jitter": [list(offset) for offset in scene.jitter],
        "background": list(scene.background),
    }


def random_scene(rng: np.random.Generator, n_objects: int | None = None) -> Scene:
    """A scene with ``n_objects`` (default: 1 to 3 at random) random objects in random slots."""
    if n_objects is None:
        n_objects = int(rng.integers(1, MAX_OBJECTS + 1))
    if not 1 <= n_objects <= MAX_OBJECTS:
        raise ValueError(f"n_objects must be 1 to {MAX_OBJECTS}; got {n_objects}")
    slots = sorted(rng.choice(MAX_OBJECTS, size=n_objects, replace=False).tolist())
    objects = tuple(_random_object(rng, slot) for slot in slots)
    jitter = tuple(
        (int(rng.integers(-_JITTER_X, _JITTER_X + 1)), int(rng.integers(-_JITTER_Y, _JITTER_Y + 1)))
        for _ in range(MAX_OBJECTS)
    )
    background = tuple(int(value) for value in rng.integers(232, 251, size=3))
    return Scene(objects=objects, jitter=jitter, background=background)


def render(scene: Scene) -> Image.Image:
    """The scene as a 128x128 RGB image; each object's centre pixel has exactly its named colour."""
    scale = _SUPERSAMPLE
    image = Image.new("RGB", (IMAGE_SIZE * scale, IMAGE_SIZE * scale), scene.background)
    draw = ImageDraw.Draw(image)
    for index, obj in enumerate(scene.objects):
        x, y = scene.centre(index)
        # Pixel (x, y) covers [x, x+1) in image space; its centre is x + 0.5.
        cx, cy, radius = (x + 0.5) * scale, (y + 0.5) * scale, _RADIUS[obj.size] * scale
        _draw_shape(draw, obj.shape, cx, cy, radius, COLOURS[obj.colour])
    return image.reduce(scale)


def _draw_shape(
    draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, radius: float, colour: tuple[int, int, int]
) -> None:
    if shape == "circle":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour)
    # Every shape is scaled towards the circle's area (3.1 r², triangle 2.5 r², star 2.0 r²), so
    # that any large shape is clearly bigger than any small one: size is a size cue, not a shape cue.
    elif shape == "square":
        half = radius * 0.88
        draw.rectangle((cx - half, cy - half, cx + half, cy + half), fill=colour)
    elif shape == "triangle":  # centroid at (cx, cy), so the centre pixel is inside
        draw.polygon(_star_points(cx, cy, radius * 1.4, radius * 1.4, 3), fill=colour)
    elif shape == "star":
        draw.polygon(_star_points(cx, cy, radius * 1.25, radius * 0.55, 5), fill=colour)
    else:  # pragma: no cover - SceneObject validates shapes
        raise ValueError(f"unknown shape {shape!r}")


def _star_points(cx: float, cy: float, outer: float, inner: float, points: int) -> list[tuple[float, float]]:
    """Vertices of a regular star (inner == outer gives a regular polygon), first vertex pointing up."""
    vertices = []
    steps = points if inner == outer else 2 * points
    for step in range(steps):
        angle = -np.pi / 2 + 2 * np.pi * step / steps
        r = outer if (inner == outer or step % 2 == 0) else inner
        vertices.append((cx + r * float(np.cos(angle)), cy + r * float(np.sin(angle))))
    return vertices


def caption(scene: Scene, style: str = "list") -> str:
    """An English caption of the scene in one of :data:`CAPTION_STYLES`.

    Every style states every object's size, colour and shape and their left-to-right order (for a
    lone object: its slot), so a caption is true of exactly the scenes with the same signature.
    """
    if style not in CAPTION_STYLES:
        raise ValueError(f"unknown caption style {style!r}; choose from {CAPTION_STYLES}")
    phrases = [obj.phrase() for obj in scene.objects]
    if len(phrases) == 1:
        where = SLOT_PHRASES[scene.objects[0].slot]
        return {
            "list": f"{phrases[0]} {where}",
            "left_of": f"there is {phrases[0]} {where}",
            "right_of": f"{where}, {phrases[0]}",
            "sequence": f"a picture of {phrases[0]} {where}",
            "anchored": f"one {phrases[0][2:]} {where}",
        }[style]
    if len(phrases) == 2:
        a, b = phrases
        return {
            "list": f"{a} and {b}, from left to right",
            "left_of": f"{a} left of {b}",
            "right_of": f"{b} to the right of {a}",
            "sequence": f"from left to right: {a} and {b}",
            "anchored": f"{a} to the left of {b}",
        }[style]
    a, b, c = phrases
    return {
        "list": f"{a}, {b} and {c}, from left to right",
        "left_of": f"{a} left of {b}, which is left of {c}",
        "right_of": f"{c} to the right of {b}, which is to the right of {a}",
        "sequence": f"from left to right: {a}, {b} and {c}",
        "anchored": f"{b} with {a} to its left and {c} to its right",
    }[style]


def all_captions(scene: Scene) -> list[str]:
    """The scene's caption in every style, in :data:`CAPTION_STYLES` order."""
    return [caption(scene, style) for style in CAPTION_STYLES]


def one_edit_negatives(scene: Scene, rng: np.random.Generator, n: int) -> list[SceneEdit]:
    """Up to ``n`` distinct scenes that each differ from ``scene`` by exactly one edit.

    Edits: change one object's colour, shape or size; move a lone object to another slot or
    swap two objects' positions; swap colours, shapes or sizes between two objects (attribute
    binding); add or remove one object. Kinds are spread out: every applicable kind is used
    once (in random order) before any repeats. Every result has a different signature from
    ``scene`` and from each other, and keeps its jitter and background, so the rendered images
    differ only where the edit is. Fewer than ``n`` come back only when fewer distinct edits exist.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0; got {n}")
    seen = {scene.signature}
    results: list[SceneEdit] = []
    kinds = [kind for kind in EDIT_KINDS if _edit_applies(scene, kind)]
    failures = 0
    while len(results) < n and kinds and failures < 50:
        order = rng.permutation(len(kinds))
        progressed = False
        for index in order:
            if len(results) >= n:
                break
            kind = kinds[int(index)]
            edited = _apply_edit(scene, kind, rng)
            if edited is None or edited.signature in seen:
                continue
            seen.add(edited.signature)
            results.append(SceneEdit(scene=edited, kind=kind))
            progressed = True
        failures = 0 if progressed else failures + 1
    return results


def _random_object(rng: np.random.Generator, slot: int) -> SceneObject:
    return SceneObject(
        shape=SHAPES[int(rng.integers(len(SHAPES)))],
        colour=tuple(COLOURS)[int(rng.integers(len(COLOURS)))],
        size=SIZES[int(rng.integers(len(SIZES)))],
        slot=slot,
    )


def _differing_pairs(scene: Scene, key) -> list[tuple[int, int]]:
    objects = scene.objects
    return [
        (i, j) for i in range(len(objects)) for j in range(i + 1, len(objects)) if key(objects[i]) != key(objects[j])
    ]


_SWAPPED_ATTRIBUTE = {"swap_colours": "colour", "swap_shapes": "shape", "swap_sizes": "size"}


def _edit_applies(scene: Scene, kind: str) -> bool:
    if kind in ("colour", "shape", "size", "count"):
        return True
    if kind == "position":
        return len(scene.objects) == 1 or bool(_differing_pairs(scene, lambda obj: obj.attributes))
    attribute = _SWAPPED_ATTRIBUTE[kind]
    return bool(_differing_pairs(scene, lambda obj: getattr(obj, attribute)))


def _apply_edit(scene: Scene, kind: str, rng: np.random.Generator) -> Scene | None:
    objects = list(scene.objects)
    if kind in ("colour", "shape", "size"):
        index = int(rng.integers(len(objects)))
        current = getattr(objects[index], kind)
        choices = [
            value for value in {"colour": tuple(COLOURS), "shape": SHAPES, "size": SIZES}[kind] if value != current
        ]
        objects[index] = replace(objects[index], **{kind: choices[int(rng.integers(len(choices)))]})
    elif kind == "position":
        if len(objects) == 1:
            choices = [slot for slot in range(MAX_OBJECTS) if slot != objects[0].slot]
            objects[0] = replace(objects[0], slot=choices[int(rng.integers(len(choices)))])
        else:
            pairs = _differing_pairs(scene, lambda obj: obj.attributes)
            i, j = pairs[int(rng.integers(len(pairs)))]
            objects[i], objects[j] = (
                replace(objects[i], slot=objects[j].slot),
                replace(objects[j], slot=objects[i].slot),
            )
    elif kind in _SWAPPED_ATTRIBUTE:
        attribute = _SWAPPED_ATTRIBUTE[kind]
        pairs = _differing_pairs(scene, lambda obj: getattr(obj, attribute))
        i, j = pairs[int(rng.integers(len(pairs)))]
        value_i, value_j = getattr(objects[i], attribute), getattr(objects[j], attribute)
        objects[i] = replace(objects[i], **{attribute: value_j})
        objects[j] = replace(objects[j], **{attribute: value_i})
    elif kind == "count":
        can_add, can_remove = len(objects) < MAX_OBJECTS, len(objects) > 1
        if can_add and (not can_remove or rng.random() < 0.5):
            free = [slot for slot in range(MAX_OBJECTS) if slot not in {obj.slot for obj in objects}]
            objects.append(_random_object(rng, free[int(rng.integers(len(free)))]))
        else:
            del objects[int(rng.integers(len(objects)))]
    else:
        raise ValueError(f"unknown edit kind {kind!r}; choose from {EDIT_KINDS}")
    return Scene(objects=tuple(objects), jitter=scene.jitter, background=scene.background)
