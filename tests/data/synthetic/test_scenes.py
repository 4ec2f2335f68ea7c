import re

import numpy as np
import pytest

from mmcascade.data.synthetic.scenes import (
    CAPTION_STYLES,
    COLOURS,
    EDIT_KINDS,
    Scene,
    SceneObject,
    all_captions,
    caption,
    one_edit_negatives,
    random_scene,
    render,
)

OBJECT = r"a (small|large) (\w+) (circle|square|triangle|star)"


def scenes_for_test(n: int, seed: int = 0, n_objects: int | None = None) -> list[Scene]:
    rng = np.random.default_rng(seed)
    return [random_scene(rng, n_objects) for _ in range(n)]


def colour_mask(pixels: np.ndarray, colour: str) -> np.ndarray:
    return np.all(pixels == np.array(COLOURS[colour], dtype=np.uint8), axis=-1)


def test_render_gives_128px_rgb_with_each_named_colour_at_its_object_centre() -> None:
    for scene in scenes_for_test(60):
        image = render(scene)
        assert (image.mode, image.size) == ("RGB", (128, 128))
        for index, obj in enumerate(scene.objects):
            assert image.getpixel(scene.centre(index)) == COLOURS[obj.colour], (scene, obj)
        assert image.getpixel((0, 0)) == scene.background


@pytest.mark.parametrize("n_objects", [2, 3])
def test_left_of_captions_match_the_pixels(n_objects: int) -> None:
    """Read the caption, then find each named colour in the image: the order and sizes must agree."""
    checked = 0
    for scene in scenes_for_test(80, seed=n_objects, n_objects=n_objects):
        text = caption(scene, "left_of")
        named = re.findall(OBJECT, text)
        assert len(named) == n_objects, text
        colours = [colour for _, colour, _ in named]
        if len(set(colours)) < n_objects:
            continue  # two objects of one colour cannot be told apart by colour alone
        pixels = np.asarray(render(scene))
        masks = [colour_mask(pixels, colour) for colour in colours]
        mean_x = [np.nonzero(mask)[1].mean() for mask in masks]
        assert mean_x == sorted(mean_x), text  # "A left of B (left of C)": x increases along the caption
        areas = {"small": [], "large": []}
        for (size, _, _), mask in zip(named, masks, strict=True):
            areas[size].append(mask.sum())
        if areas["small"] and areas["large"]:  # any large shape is clearly bigger than any small one
            assert max(areas["small"]) * 2 < min(areas["large"]), text
        checked += 1
    assert checked > 20


@pytest.mark.parametrize("shape", ["circle", "square", "triangle", "star"])
def test_large_shapes_at_extreme_jitter_stay_apart_and_inside_the_image(shape: str) -> None:
    objects = tuple(SceneObject(shape, colour, "large", slot) for slot, colour in enumerate(["red", "green", "blue"]))
    for jitter in [((-2, -8), (2, 8), (-2, -8)), ((2, 8), (-2, -8), (2, 8)), ((-2, 8), (2, -8), (2, 8))]:
        pixels = np.asarray(render(Scene(objects=objects, jitter=jitter)))
        foreground = np.any(pixels != np.array((245, 245, 245), dtype=np.uint8), axis=-1)
        assert not foreground[0].any() and not foreground[-1].any()
        assert not foreground[:, 0].any() and not foreground[:, -1].any()
        columns = foreground.any(axis=0)
        runs = np.flatnonzero(np.diff(columns.astype(int)) == 1)  # starts of drawn column runs
        assert len(runs) == 3, (shape, jitter)  # three separate objects, with empty columns between


def test_right_of_captions_name_the_rightmost_object_first() -> None:
    for scene in scenes_for_test(30, n_objects=2):
        first, second = re.findall(OBJECT, caption(scene, "right_of"))
        assert first == (scene.objects[1].size, scene.objects[1].colour, scene.objects[1].shape)
        assert second == (scene.objects[0].size, scene.objects[0].colour, scene.objects[0].shape)


def test_lone_object_captions_name_its_position() -> None:
    scene = Scene(objects=(SceneObject("star", "purple", "small", slot=2),))
    assert caption(scene) == "a small purple star on the right"
    assert all("on the right" in text for text in all_captions(scene))
    pixels = np.asarray(render(scene))
    assert np.nonzero(colour_mask(pixels, "purple"))[1].mean() > 85


def test_two_object_captions_in_every_style() -> None:
    scene = Scene(
        objects=(SceneObject("square", "blue", "small", slot=2), SceneObject("circle", "red", "large", slot=0))
    )
    assert all_captions(scene) == [
        "a large red circle and a small blue square, from left to right",
        "a large red circle left of a small blue square",
        "a small blue square to the right of a large red circle",
        "from left to right: a large red circle and a small blue square",
        "a large red circle to the left of a small blue square",
    ]
    with pytest.raises(ValueError, match="unknown caption style"):
        caption(scene, "poetic")


def test_captions_tell_scenes_apart_exactly_by_signature() -> None:
    pool = scenes_for_test(400, seed=3)
    for style in CAPTION_STYLES:
        by_caption: dict[str, set] = {}
        for scene in pool:
            by_caption.setdefault(caption(scene, style), set()).add(scene.signature)
        assert all(len(signatures) == 1 for signatures in by_caption.values()), style
        assert len(by_caption) == len({scene.signature for scene in pool})


def _objects(scene: Scene) -> list[tuple[str, str, str]]:
    return [(obj.shape, obj.colour, obj.size) for obj in scene.objects]


def describe_difference(source: Scene, edited: Scene) -> str | None:
    """The one edit that turns ``source`` into ``edited``, or None if it takes more (or no) edits.

    Written from the captions' point of view: objects left to right, plus a lone object's slot.
    """
    before, after = _objects(source), _objects(edited)
    if len(before) != len(after):
        longer, shorter = (before, after) if len(before) > len(after) else (after, before)
        one_removed = any(longer[:i] + longer[i + 1 :] == shorter for i in range(len(longer)))
        return "count" if len(longer) - len(shorter) == 1 and one_removed else None
    if before == after:
        moved = len(before) == 1 and source.objects[0].slot != edited.objects[0].slot
        return "position" if moved else None
    names = ("shape", "colour", "size")
    changed = [i for i in range(len(before)) if before[i] != after[i]]
    if len(changed) == 1:
        (i,) = changed
        attributes = [a for a in range(3) if before[i][a] != after[i][a]]
        return names[attributes[0]] if len(attributes) == 1 else None
    if len(changed) == 2:
        i, j = changed
        attributes = [a for a in range(3) if before[i][a] != after[i][a] or before[j][a] != after[j][a]]
        if not all(after[i][a] == before[j][a] and after[j][a] == before[i][a] for a in attributes):
            return None
        if len(attributes) == 1:
            return f"swap_{names[attributes[0]]}s"
        if after[i] == before[j] and after[j] == before[i]:
            return "position"
    return None


def test_one_edit_negatives_differ_by_exactly_one_edit_and_never_equal_the_source() -> None:
    rng = np.random.default_rng(7)
    seen_kinds = set()
    for scene in scenes_for_test(300, seed=11):
        edits = one_edit_negatives(scene, rng, 4)
        assert len(edits) == 4
        assert len({edit.scene.signature for edit in edits}) == 4
        for edit in edits:
            assert edit.scene != scene and edit.scene.signature != scene.signature
            assert caption(edit.scene) != caption(scene)
            difference = describe_difference(scene, edit.scene)
            assert difference is not None, (scene, edit)
            # An edit can look like a simpler one (moving objects that differ only in colour == swapping colours).
            assert difference == edit.kind or edit.kind == "position", (edit.kind, difference)
            assert edit.scene.jitter == scene.jitter and edit.scene.background == scene.background
            seen_kinds.add(edit.kind)
    assert seen_kinds == set(EDIT_KINDS)


def test_binding_edits_of_a_two_object_scene() -> None:
    scene = Scene(objects=(SceneObject("circle", "red", "large", 0), SceneObject("square", "blue", "small", 2)))
    edits = one_edit_negatives(scene, np.random.default_rng(0), 100)
    by_kind: dict[str, set[str]] = {}
    for edit in edits:
        by_kind.setdefault(edit.kind, set()).add(caption(edit.scene, "left_of"))
    assert by_kind["swap_colours"] == {"a large blue circle left of a small red square"}
    assert by_kind["swap_sizes"] == {"a small red circle left of a large blue square"}
    assert by_kind["swap_shapes"] == {"a large red square left of a small blue circle"}
    assert by_kind["position"] == {"a small blue square left of a large red circle"}
    assert len(edits) == len({caption(edit.scene) for edit in edits})  # all distinct


def test_edits_that_do_not_apply_are_not_made() -> None:
    twins = Scene(objects=(SceneObject("star", "green", "small", 0), SceneObject("star", "green", "small", 1)))
    kinds = {edit.kind for edit in one_edit_negatives(twins, np.random.default_rng(0), 100)}
    assert kinds == {"colour", "shape", "size", "count"}
    lone = Scene(objects=(SceneObject("circle", "red", "large", 1),))
    kinds = {edit.kind for edit in one_edit_negatives(lone, np.random.default_rng(0), 100)}
    assert kinds == {"colour", "shape", "size", "position", "count"}


def test_same_seed_same_scenes_and_negatives() -> None:
    def draw(seed: int) -> list:
        rng = np.random.default_rng(seed)
        out = []
        for _ in range(20):
            scene = random_scene(rng)
            out.append((scene, scene.jitter, scene.background, one_edit_negatives(scene, rng, 3)))
        return out

    assert draw(5) == draw(5)
    assert draw(5) != draw(6)
    first = draw(5)[0][0]
    assert np.array_equal(np.asarray(render(first)), np.asarray(render(first)))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: SceneObject("hexagon", "red", "small", 0), "unknown shape"),
        (lambda: SceneObject("circle", "pink", "small", 0), "unknown colour"),
        (lambda: SceneObject("circle", "red", "huge", 0), "unknown size"),
        (lambda: SceneObject("circle", "red", "small", 3), "slot must be"),
        (lambda: Scene(objects=()), "1 to 3 objects"),
        (
            lambda: Scene(objects=(SceneObject("circle", "red", "small", 1), SceneObject("star", "red", "small", 1))),
            "share a slot",
        ),
        (lambda: random_scene(np.random.default_rng(0), 4), "n_objects must be"),
    ],
)
def test_invalid_scenes_are_rejected(build, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()
