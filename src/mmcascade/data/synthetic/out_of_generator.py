"""Evaluation records from outside the starter's training generator: does what it learnt carry over?

Built offline and deterministically from a seed, in the records format of :mod:`mmcascade.data.records`:

- ``easy_vqa_caption_to_image``: easy-VQA **test** images (the starter trained on easy-VQA's train images,
  and only through questions) retrieved by freshly worded colour + shape captions
  ("the shape is a triangle and it is teal"); negatives: images of the same pool with one attribute changed;
- ``scene_caption_to_image`` / ``scene_image_to_caption``: scenes of 2-3 shapes drawn by the scene generator
  at other image sizes (80, 176, 224 px squares; a 192x128 canvas), on coloured backgrounds, with three
  times the vertical jitter of training, captioned in styles the training never used; one-edit negatives;
- ``digit_label_reworded`` / ``textile_label_reworded``: the demo's digits and textiles (plus more images of
  the same sources that the starter's training split never used), labelled by new wordings
  ("the number 7 written by hand", "woven material with one damaged spot").

Pools: :func:`~mmcascade.evaluation.records_eval.evaluate_records` ranks each query against every document
of its task, so every document a query could match must be its positive. Each record's ``meta["pool"]``
names a group in which that holds (24 easy-VQA images, one per colour-shape pair; one wording of the class
labels); evaluate one pool at a time (:func:`records_by_pool`). Scene pools hold no two documents of the
same scene signature.

No image is shared, by pixel digest, with any image the starter's training split (seed 0, scale 1.0, the
shipped starter's data) can use: every easy-VQA train image, the train digits and train textiles.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mmcascade.data.items import Item
from mmcascade.data.records import TrainingRecord, write_records
from mmcascade.data.synthetic import scenes
from mmcascade.data.synthetic.sources import (
    DIGIT_WORDS,
    Sources,
    check_build_settings,
    check_replaceable,
    digit_image,
    load_sources,
    pixel_digest,
    round_robin,
    scaled_count,
    stream,
    textile_image,
)
from mmcascade.data.synthetic.starter_split import (
    INSTRUCTIONS,
    class_order,
    is_heldout_configuration,
    picked_positions,
)
from mmcascade.models import cache_root
from mmcascade.utils.fs import atomic_directory

DATASET_NAME = "mmcascade-out-of-generator"
FORMAT_VERSION = 1
FOLDER_NAME = "out-of-generator-v1"
STARTER_SEED, STARTER_SCALE = 0, 1.0  # the data the shipped starter trained on (scripts/train_starter.py)
N_NEGATIVES = 3

# task -> queries at scale 1.0
PLAN: dict[str, int] = {
    "easy_vqa_caption_to_image": 192,
    "scene_caption_to_image": 100,
    "scene_image_to_caption": 100,
    "digit_label_reworded": 200,
    "textile_label_reworded": 150,
}
# each task keeps the instructions of the training task it mirrors: only images and wordings change
TASK_INSTRUCTIONS: dict[str, tuple[str, str]] = {
    "easy_vqa_caption_to_image": INSTRUCTIONS["caption_to_image"],
    "scene_caption_to_image": INSTRUCTIONS["caption_to_image"],
    "scene_image_to_caption": INSTRUCTIONS["image_to_caption"],
    "digit_label_reworded": INSTRUCTIONS["digit_label"],
    "textile_label_reworded": INSTRUCTIONS["textile_label"],
}

VQA_WORDINGS: tuple[str, ...] = (
    "a {colour} {shape} painted on a plain background",
    "the shape is a {shape} and it is {colour}",
    "one {shape}, coloured {colour}",
    "an image whose only shape is a {colour} {shape}",
    "a {shape} filled in {colour}",
    "{colour} is the colour of the {shape} shown here",
)
VQA_SHAPES = ("circle", "rectangle", "triangle")
VQA_COLOURS = ("black", "blue", "brown", "gray", "green", "red", "teal", "yellow")

DIGIT_WORDINGS: tuple[str, ...] = (
    "a handwritten {word}",
    "the number {numeral} written by hand",
    "a scan of the numeral {numeral}",
    "someone wrote a {word} here",
)
TEXTILE_WORDINGS: tuple[dict[str, str], ...] = (
    {
        "nominal": "a fabric sample without any flaw",
        "local": "a fabric sample with a small, localised flaw",
        "global": "a fabric sample with a flaw spread over the whole surface",
    },
    {
        "nominal": "clean woven material",
        "local": "woven material with one damaged spot",
        "global": "woven material damaged all over",
    },
    {
        "nominal": "cloth in perfect condition",
        "local": "cloth with a defect in one place",
        "global": "cloth with an overall defect",
    },
)

SCENE_STYLES: tuple[str, ...] = ("then", "extremes", "counting")
# (width, height): the training draws every scene at 128x128
RENDER_SIZES: tuple[tuple[int, int], ...] = ((80, 80), (176, 176), (224, 224), (192, 128))
# far from the training's near-white (232-250 per channel) and from every shape colour
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "pale blue": (205, 225, 245),
    "beige": (238, 224, 196),
    "mint": (206, 238, 214),
    "mid grey": (185, 185, 185),
    "slate": (58, 62, 72),
}
JITTER_X, JITTER_Y = 2, 24  # training: 2 and 8 px


def default_folder() -> Path:
    """Where :func:`build_out_of_generator` writes by default: ``<cache root>/out-of-generator-v1``."""
    return cache_root() / FOLDER_NAME


def build_out_of_generator(
    out_dir: str | os.PathLike | None = None, *, seed: int = 0, scale: float = 1.0
) -> dict[str, Any]:
    """Build the out-of-generator records (``records.jsonl``, ``images/``, ``manifest.json``) and return the manifest.

    Args:
        out_dir: the folder (default :func:`default_folder`); replaced atomically, and only when it is
            absent, empty or an earlier build.
        seed: the same seed (and package versions) gives the same files.
        scale: multiplies every task's query count (1.0: :data:`PLAN`, about 740 queries).

    Raises:
        ImportError: easy-vqa, conformal-clip-data or scikit-learn is missing (naming the pip command).
        FileExistsError: ``out_dir`` holds something other than an earlier build.
    """
    check_build_settings(seed, scale)
    sources = load_sources("building the out-of-generator evaluation set")
    out_dir = Path(out_dir).expanduser() if out_dir is not None else default_folder()
    check_replaceable(out_dir, name=DATASET_NAME, what="out-of-generator")
    forbidden = starter_train_digests(sources)
    with atomic_directory(out_dir) as staging:
        images = _Images(staging, forbidden=forbidden)
        records = _build_records(sources, images, int(seed), float(scale))
        write_records(staging / "records.jsonl", records)
        manifest = _manifest(int(seed), float(scale), sources, records, len(forbidden))
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest


def records_by_pool(records: Sequence[TrainingRecord]) -> dict[tuple[str, str], list[TrainingRecord]]:
    """Records grouped by (task, pool): evaluate each group on its own (see the module docstring)."""
    groups: dict[tuple[str, str], list[TrainingRecord]] = defaultdict(list)
    for record in records:
        groups[(str(record.meta.get("task", "all")), str(record.meta.get("pool", "all")))].append(record)
    return dict(sorted(groups.items()))


def starter_train_digests(sources: Sources, seed: int = STARTER_SEED, scale: float = STARTER_SCALE) -> frozenset[str]:
    """Pixel digests of every image the starter's training split (``seed``, ``scale``) can show from the
    package sources: all easy-VQA train images, the train digits and the train textiles. (Its scenes are
    128x128 on near-white; out-of-generator scenes are neither.)"""
    digests = {_vqa_digest(path) for path in sources.easy_vqa.get_train_image_paths().values()}
    digests |= {
        pixel_digest(digit_image(sources.digits[0][index])) for index in _train_digit_samples(sources, seed, scale)
    }
    digests |= {pixel_digest(textile_image(path)) for path in _train_textile_files(sources, seed, scale)}
    return frozenset(digests)


def _vqa_digest(path: str | os.PathLike) -> str:
    with Image.open(path) as image:
        return pixel_digest(image)


def _train_positions(task: str, available: dict[str, int], scale: float) -> dict[str, set[int]]:
    positions: dict[str, set[int]] = defaultdict(set)
    for name, position in picked_positions(task, "train", available, scale):
        positions[name].add(position)
    return positions


def _train_digit_samples(sources: Sources, seed: int, scale: float) -> list[int]:
    members = sources.digit_members()
    positions = _train_positions("digit_label", {name: len(ids) for name, ids in members.items()}, scale)
    return [
        int(members[name][class_order(seed, "digits", name, len(members[name]))[position]])
        for name, picked in positions.items()
        for position in sorted(picked)
    ]


def _train_textile_files(sources: Sources, seed: int, scale: float) -> list[Path]:
    files = sources.textile_files()
    positions = _train_positions("textile_label", {name: len(paths) for name, paths in files.items()}, scale)
    return [
        files[name][int(class_order(seed, "textile", name, len(files[name]))[position])]
        for name, picked in positions.items()
        for position in sorted(picked)
    ]


# --------------------------------------------------------------------------------------------------
# writing images


@dataclass
class _Images:
    """Writes the images, refusing any whose pixels the starter's training split can show."""

    root: Path
    forbidden: frozenset[str]
    digests: dict[str, str] = field(default_factory=dict)  # path -> pixel digest

    def usable(self, image: Image.Image) -> bool:
        digest = pixel_digest(image)
        return digest not in self.forbidden and digest not in self.digests.values()

    def save(self, image: Image.Image, relative: str) -> str:
        if pixel_digest(image) in self.forbidden:
            raise RuntimeError(f"{relative} has the same pixels as an image of the starter's training split")
        path = self.root / "images" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, format="PNG")
        self.digests[str(path)] = pixel_digest(image)
        return str(path)


def _build_records(sources: Sources, images: _Images, seed: int, scale: float) -> list[TrainingRecord]:
    count = {task: scaled_count(base, scale) for task, base in PLAN.items()}
    return [
        *_vqa_records(sources, images, count["easy_vqa_caption_to_image"], stream(seed, "oog", "vqa")),
        *_scene_records("scene_caption_to_image", images, count["scene_caption_to_image"], stream(seed, "oog", "c2i")),
        *_scene_records("scene_image_to_caption", images, count["scene_image_to_caption"], stream(seed, "oog", "i2c")),
        *_digit_records(sources, images, count["digit_label_reworded"], stream(seed, "oog", "digits")),
        *_textile_records(sources, images, count["textile_label_reworded"], stream(seed, "oog", "textiles")),
    ]


# --------------------------------------------------------------------------------------------------
# easy-VQA test images, fresh captions


def vqa_test_catalogue(easy_vqa: Any) -> dict[tuple[str, str], list[int]]:
    """(colour, shape) -> easy-VQA test image ids, read from the test questions' answers (sorted ids)."""
    colour: dict[int, str] = {}
    shape: dict[int, str] = {}
    for question, answer, image_id in zip(*easy_vqa.get_test_questions(), strict=True):
        if answer in VQA_SHAPES:
            shape[image_id] = answer
        elif answer in VQA_COLOURS:
            colour[image_id] = answer
            named = [name for name in VQA_SHAPES if f"the {name}" in question]
            if named:
                shape[image_id] = named[0]
    catalogue: dict[tuple[str, str], list[int]] = defaultdict(list)
    for image_id in sorted(colour.keys() & shape.keys()):
        catalogue[(colour[image_id], shape[image_id])].append(image_id)
    return dict(sorted(catalogue.items()))


def _vqa_records(sources: Sources, images: _Images, count: int, rng: np.random.Generator) -> list[TrainingRecord]:
    """Pools of 24 test images, one per (colour, shape); each image is one query's positive."""
    paths = sources.easy_vqa.get_test_image_paths()
    queues = {
        combo: [int(i) for i in rng.permutation(ids)] for combo, ids in vqa_test_catalogue(sources.easy_vqa).items()
    }
    records: list[TrainingRecord] = []
    for pool in range(max(1, count // len(queues))):
        chosen = {combo: _next_usable_vqa(queue, paths, images) for combo, queue in queues.items()}
        if any(path is None for path in chosen.values()):
            break  # a colour-shape pair ran out of unused test images
        records += [_vqa_record(combo, chosen, pool, rng) for combo in chosen]
    return records


def _next_usable_vqa(queue: list[int], paths: dict[int, str], images: _Images) -> str | None:
    while queue:
        image_id = queue.pop(0)
        with Image.open(paths[image_id]) as source:
            image = source.convert("RGB")
        if images.usable(image):
            return images.save(image, f"easy_vqa/{image_id:04d}.png")
    return None


def _vqa_record(
    combo: tuple[str, str], chosen: dict[tuple[str, str], str | None], pool: int, rng: np.random.Generator
) -> TrainingRecord:
    colour, shape = combo
    other_colours = [c for c in VQA_COLOURS if c != colour and (c, shape) in chosen]
    other_shapes = [s for s in VQA_SHAPES if s != shape and (colour, s) in chosen]
    negatives = [(c, shape) for c in rng.permutation(other_colours)[:2]]
    negatives += [(colour, s) for s in rng.permutation(other_shapes)[:1]]
    wording = int(rng.integers(len(VQA_WORDINGS)))
    query_instruction, doc_instruction = TASK_INSTRUCTIONS["easy_vqa_caption_to_image"]
    return TrainingRecord(
        query=Item(text=VQA_WORDINGS[wording].format(colour=colour, shape=shape), instruction=query_instruction),
        positive=Item(images=(chosen[combo],), instruction=doc_instruction),
        negatives=tuple(Item(images=(chosen[(str(c), str(s))],), instruction=doc_instruction) for c, s in negatives),
        meta={
            "task": "easy_vqa_caption_to_image",
            "kind": "simple",
            "pool": f"{pool:02d}",
            "wording": wording,
            "colour": colour,
            "shape": shape,
            "source": f"easy-vqa/test/{Path(str(chosen[combo])).stem}",
        },
    )


# --------------------------------------------------------------------------------------------------
# scenes drawn and captioned differently


@dataclass(frozen=True)
class RenderVariant:
    """How an out-of-generator scene is drawn: canvas ``size`` (width, height), ``background`` name, and the
    x offset of the 128 px scene on a wider canvas."""

    size: tuple[int, int]
    background: str
    offset: int = 0


def render_variant(scene: scenes.Scene, variant: RenderVariant) -> Image.Image:
    """The scene drawn as :func:`scenes.render` does, then resized (square sizes) or placed on a wider canvas."""
    drawn = scenes.render(replace(scene, background=BACKGROUNDS[variant.background]))  # (128, 128)
    width, height = variant.size
    if width == height:
        return drawn.resize(variant.size, Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", variant.size, BACKGROUNDS[variant.background])
    canvas.paste(drawn, (variant.offset, (height - scenes.IMAGE_SIZE) // 2))
    return canvas


def fresh_caption(scene: scenes.Scene, style: str) -> str:
    """A caption of a 2- or 3-object scene in one of :data:`SCENE_STYLES`, styles the training never used:
    every object's size, colour and shape and their left-to-right order, as :func:`scenes.caption` does."""
    if len(scene.objects) < 2:
        raise ValueError(f"fresh captions describe 2 or 3 objects; got {len(scene.objects)}")
    if style not in SCENE_STYLES:
        raise ValueError(f"unknown caption style {style!r}; choose from {SCENE_STYLES}")
    phrases = [obj.phrase() for obj in scene.objects]
    if style == "then":
        return "reading left to right: " + ", then ".join(phrases)
    if style == "extremes":
        if len(phrases) == 2:
            return f"leftmost is {phrases[0]} and rightmost is {phrases[1]}"
        return f"leftmost is {phrases[0]}, rightmost is {phrases[2]}, and between them {phrases[1]}"
    ordinals = ("first", "second", "third")
    coloured = [f"a {obj.size} {obj.shape} in {obj.colour}" for obj in scene.objects]
    return "counting from the left: " + ", ".join(f"{o} {p}" for o, p in zip(ordinals, coloured, strict=False))


def _random_variant(rng: np.random.Generator) -> RenderVariant:
    size = RENDER_SIZES[int(rng.integers(len(RENDER_SIZES)))]
    background = tuple(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))]
    offset = int(rng.integers(0, size[0] - scenes.IMAGE_SIZE + 1)) if size[0] != size[1] else 0
    return RenderVariant(size=size, background=background, offset=offset)


def _fresh_scene(rng: np.random.Generator) -> scenes.Scene:
    """2-3 objects in a configuration the training never queried, with a larger vertical jitter."""
    while True:
        scene = scenes.random_scene(rng, int(rng.integers(2, scenes.MAX_OBJECTS + 1)))
        if is_heldout_configuration(scene):
            break
    jitter = tuple(
        (int(rng.integers(-JITTER_X, JITTER_X + 1)), int(rng.integers(-JITTER_Y, JITTER_Y + 1)))
        for _ in range(scenes.MAX_OBJECTS)
    )
    return replace(scene, jitter=jitter)


def _scene_records(task: str, images: _Images, count: int, rng: np.random.Generator) -> list[TrainingRecord]:
    """``count`` records whose documents all have distinct signatures (one pool per task)."""
    used: set[tuple] = set()
    records = []
    while len(records) < count:
        scene = _fresh_scene(rng)
        edits = [
            edit
            for edit in scenes.one_edit_negatives(scene, rng, 3 * N_NEGATIVES)
            if len(edit.scene.objects) >= 2 and edit.scene.signature not in used  # fresh captions need 2+ objects
        ]
        if scene.signature in used or len(edits) < N_NEGATIVES:
            continue
        edits = edits[:N_NEGATIVES]
        used |= {scene.signature, *(edit.scene.signature for edit in edits)}
        variant, style = _random_variant(rng), SCENE_STYLES[int(rng.integers(len(SCENE_STYLES)))]
        records.append(_scene_record(task, scene, edits, variant, style, images, len(records)))
    return records


def _scene_record(
    task: str,
    scene: scenes.Scene,
    edits: list[scenes.SceneEdit],
    variant: RenderVariant,
    style: str,
    images: _Images,
    index: int,
) -> TrainingRecord:
    query_instruction, doc_instruction = TASK_INSTRUCTIONS[task]
    folder = f"{task}/{index:04d}"
    if task == "scene_caption_to_image":
        query = Item(text=fresh_caption(scene, style), instruction=query_instruction)
        drawn = [render_variant(s, variant) for s in (scene, *(edit.scene for edit in edits))]
        documents = [
            Item(images=(images.save(image, f"{folder}_{k}.png"),), instruction=doc_instruction)
            for k, image in enumerate(drawn)
        ]
    else:
        query = Item(
            images=(images.save(render_variant(scene, variant), f"{folder}.png"),), instruction=query_instruction
        )
        documents = [
            Item(text=fresh_caption(s, style), instruction=doc_instruction) for s in (scene, *(e.scene for e in edits))
        ]
    meta = {
        "task": task,
        "kind": "compositional",
        "pool": "all",
        "caption_style": style,
        "render": {"size": list(variant.size), "background": variant.background, "offset": variant.offset},
        "scene": scenes.scene_to_json(scene),
        "negative_edits": [edit.kind for edit in edits],
        "negative_scenes": [scenes.scene_to_json(edit.scene) for edit in edits],
    }
    return TrainingRecord(query=query, positive=documents[0], negatives=tuple(documents[1:]), meta=meta)


# --------------------------------------------------------------------------------------------------
# digits and textiles, new wordings


def digit_wording(style: int, digit: int) -> str:
    """Digit ``digit``'s label in wording ``style`` (an index into :data:`DIGIT_WORDINGS`)."""
    return DIGIT_WORDINGS[style].format(word=DIGIT_WORDS[digit], numeral=digit)


def demo_folder() -> Path:
    """The bundled demo collection (``mmcascade/assets/demo``)."""
    return Path(__file__).resolve().parents[2] / "assets" / "demo"


def _demo_sources(kind: str) -> list[str]:
    """The ``source`` of every demo item of ``kind`` (``"digit"`` or ``"textile"``)."""
    manifest = json.loads((demo_folder() / "manifest.json").read_text())
    return [item["source"] for item in manifest["items"] if item["kind"] == kind]


def _unused_candidates(
    source: str, members: dict[str, Sequence[Any]], task: str, demo: set[str], source_name
) -> dict[str, list[Any]]:
    """Per class: the demo's samples first, then the rest in the class order, minus the starter's train picks."""
    train = _train_positions(task, {name: len(entries) for name, entries in members.items()}, STARTER_SCALE)
    candidates = {}
    for name, entries in members.items():
        order = class_order(STARTER_SEED, source, name, len(entries))
        unused = [entries[int(order[p])] for p in range(len(entries)) if p not in train[name]]
        candidates[name] = sorted(unused, key=lambda entry: source_name(name, entry) not in demo)  # stable
    return candidates


def _label_records(
    task: str, candidates: dict[str, list[Any]], draw, labels, images: _Images, count: int
) -> list[TrainingRecord]:
    """Classes in turn; each full round of classes shares one wording (a pool), wordings in turn."""
    records: list[TrainingRecord] = []
    for name, entry in round_robin(candidates):
        if len(records) >= count:
            break
        image, source = draw(name, entry)
        if not images.usable(image):
            continue
        style = (len(records) // len(candidates)) % len(labels)
        path = images.save(image, f"{task}/{len(records):04d}_{name}.png")
        records.append(_label_record(task, path, name, labels[style], style, source))
    return records


def _label_record(task: str, image: str, name: str, labels: dict[str, str], style: int, source: str) -> TrainingRecord:
    query_instruction, doc_instruction = TASK_INSTRUCTIONS[task]
    return TrainingRecord(
        query=Item(images=(image,), instruction=query_instruction),
        positive=Item(text=labels[name], instruction=doc_instruction),
        negatives=tuple(
            Item(text=text, instruction=doc_instruction) for other, text in labels.items() if other != name
        ),
        meta={"task": task, "kind": "simple", "pool": f"wording-{style}", "label": name, "source": source},
    )


def _digit_records(sources: Sources, images: _Images, count: int, rng: np.random.Generator) -> list[TrainingRecord]:
    del rng  # the order is fixed: the demo's digits first, then the class order
    members = {name: [int(i) for i in ids] for name, ids in sources.digit_members().items()}
    demo = set(_demo_sources("digit"))
    candidates = _unused_candidates("digits", members, "digit_label", demo, lambda _, i: f"sklearn-digits/{i}")
    labels = [{str(d): digit_wording(style, d) for d in range(10)} for style in range(len(DIGIT_WORDINGS))]

    def draw(_: str, sample: int) -> tuple[Image.Image, str]:
        return digit_image(sources.digits[0][sample]), f"sklearn-digits/{sample}"

    return _label_records("digit_label_reworded", candidates, draw, labels, images, count)


def _textile_records(sources: Sources, images: _Images, count: int, rng: np.random.Generator) -> list[TrainingRecord]:
    del rng
    members = sources.textile_files()
    demo = set(_demo_sources("textile"))

    def name_of(name: str, path: Path) -> str:
        return f"conformal-clip-data/simulated/{name}/{path.name}"

    candidates = _unused_candidates("textile", members, "textile_label", demo, name_of)

    def draw(name: str, path: Path) -> tuple[Image.Image, str]:
        return textile_image(path), name_of(name, path)

    return _label_records("textile_label_reworded", candidates, draw, list(TEXTILE_WORDINGS), images, count)


# --------------------------------------------------------------------------------------------------
# manifest


def pool_sizes(records: Sequence[TrainingRecord]) -> dict[tuple[str, str], int]:
    """Distinct documents per (task, pool): a random ranking hits with probability 1 / size."""
    sizes = {}
    for key, group in records_by_pool(records).items():
        sizes[key] = len({(d.text, d.images) for r in group for d in (r.positive, *r.negatives)})
    return sizes


def chance_hit_at_1(records: Sequence[TrainingRecord]) -> dict[str, float]:
    """Per task, the expected Hit@1 of a random ranking: the mean of 1 / pool size over its queries."""
    sizes = pool_sizes(records)
    totals: dict[str, list[float]] = defaultdict(list)
    for (task, pool), group in records_by_pool(records).items():
        totals[task] += [1.0 / sizes[(task, pool)]] * len(group)
    return {task: float(np.mean(values)) for task, values in sorted(totals.items())}


def _manifest(
    seed: int, scale: float, sources: Sources, records: list[TrainingRecord], n_forbidden: int
) -> dict[str, Any]:
    counts: dict[str, int] = defaultdict(int)
    for record in records:
        counts[record.meta["task"]] += 1
    pools: dict[str, dict[str, int]] = defaultdict(dict)
    for (task, pool), size in pool_sizes(records).items():
        pools[task][pool] = size
    return {
        "name": DATASET_NAME,
        "format_version": FORMAT_VERSION,
        "description": __doc__.strip().splitlines()[0],
        "seed": seed,
        "scale": scale,
        "files": {"records": "records.jsonl", "images": "images/"},
        "queries": dict(sorted(counts.items())),
        "pool_sizes": dict(sorted(pools.items())),
        "chance_hit@1": chance_hit_at_1(records),
        "excluded_starter_train_images": n_forbidden,
        "starter_training_data": {"seed": STARTER_SEED, "scale": STARTER_SCALE},
        "wordings": {
            "easy_vqa": list(VQA_WORDINGS),
            "digits": list(DIGIT_WORDINGS),
            "textiles": list(TEXTILE_WORDINGS),
            "scene_caption_styles": list(SCENE_STYLES),
        },
        "scene_rendering": {
            "sizes": [list(size) for size in RENDER_SIZES],
            "backgrounds": {name: list(rgb) for name, rgb in BACKGROUNDS.items()},
            "jitter": [JITTER_X, JITTER_Y],
            "configurations": "held-out signatures only (starter_split.is_heldout_configuration)",
        },
        "package_versions": sources.versions,
    }
