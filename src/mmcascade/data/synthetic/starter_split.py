"""The starter embedder's training and held-out data, built offline and deterministically.

Everything comes from code or from files inside installed packages: PIL-drawn compositional scenes
(:mod:`mmcascade.data.synthetic.scenes`), easy-VQA (``easy-vqa``), simulated textile-defect photos
(``conformal-clip-data``) and handwritten digits (``scikit-learn``). Nothing is downloaded.

Layout of the output folder::

    manifest.json      counts per split/task/kind, seed, scale, package versions, task instructions
    train.jsonl        records (see mmcascade.data.records), tasks shuffled together
    heldout.jsonl      records grouped by task
    images/{train,heldout}/<task>/...png

The held-out split shares no image file and no image content with the train split, and its scenes
use scene configurations (signatures) that no train query or positive uses. Other generated data that
must stay out of training (the mini benchmark, the demo collection) uses :func:`is_heldout_configuration`
and :func:`picked_positions` to know what the training split holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mmcascade.data.items import Item
from mmcascade.data.records import TrainingRecord, write_records
from mmcascade.data.synthetic import scenes
from mmcascade.data.synthetic.sources import (
    TEXTILE_LABELS,
    Sources,
    check_build_settings,
    check_replaceable,
    digit_image,
    digit_label,
    load_sources,
    pixel_digest,
    round_robin,
    scaled_count,
    spread,
    stream,
    textile_image,
    vqa_answer_type,
    vqa_other_answers,
    vqa_questions_by_type,
)
from mmcascade.utils.fs import atomic_directory

DATASET_NAME = "mmcascade-starter-data"
FORMAT_VERSION = 1
SPLITS = ("train", "heldout")
HELDOUT_CONFIG_BUCKETS = 10  # one scene configuration in ten is reserved for the held-out split
N_HARD_NEGATIVES = 3

# (task, kind) -> records at scale 1.0 for (train, heldout). Compositional scenes get half of the
# data: they are where single pooled vectors fail and where the project's mechanisms can show.
PLAN: dict[tuple[str, str], tuple[int, int]] = {
    ("caption_to_image", "compositional"): (1800, 180),
    ("caption_to_image", "simple"): (400, 40),
    ("image_to_caption", "compositional"): (1200, 120),
    ("image_to_caption", "simple"): (300, 30),
    ("vqa", "simple"): (1000, 100),
    ("textile_label", "simple"): (600, 60),
    ("digit_label", "simple"): (700, 70),
}

# task -> (query instruction, document instruction)
INSTRUCTIONS: dict[str, tuple[str, str]] = {
    "caption_to_image": ("Find the image that matches the caption.", "Represent the image."),
    "image_to_caption": ("Find the caption that describes the image.", "Represent the caption."),
    "vqa": ("Answer the question about the image.", "Represent the answer."),
    "textile_label": (
        "Classify the textile image: no defect, a local defect or a global defect.",
        "Represent the class label.",
    ),
    "digit_label": ("Which digit is shown in the image?", "Represent the class label."),
}

TASK_DESCRIPTIONS = {
    "caption_to_image": "caption -> scene image; negatives: images of scenes one edit away from the caption",
    "image_to_caption": "scene image -> caption; negatives: captions (same style) of scenes one edit away",
    "vqa": "easy-VQA image + question -> answer; negatives: other answers of the same type (colour, shape, yes/no)",
    "textile_label": "textile photo -> defect label; negatives: the other two labels",
    "digit_label": "handwritten digit -> 'the digit N'; negatives: three other digit labels",
}


def build_starter_data(out_dir: str | os.PathLike, *, seed: int = 0, scale: float = 1.0) -> dict[str, Any]:
    """Build the starter dataset under ``out_dir`` and return its manifest.

    Args:
        out_dir: the dataset folder. It is replaced atomically; an existing folder must be empty
            or an earlier build (it holds this dataset's ``manifest.json``), so nothing else is lost.
        seed: the same seed gives byte-identical files (with the same package versions).
        scale: multiplies every record count (1.0: about 6000 train / 600 held-out records).
            Counts are capped by what a source holds (e.g. 1797 digits).

    Raises:
        ImportError: easy-vqa, conformal-clip-data or scikit-learn is missing (with the pip command).
        FileExistsError: ``out_dir`` holds something other than an earlier build.
    """
    check_build_settings(seed, scale)
    sources = load_sources("building the starter data")  # fail on a missing package before touching out_dir
    out_dir = Path(out_dir).expanduser()
    check_replaceable(out_dir, name=DATASET_NAME, what="starter-data")
    with atomic_directory(out_dir) as staging:
        manifest = _Builder(root=staging, seed=int(seed), scale=float(scale), sources=sources).build()
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest


def carve_validation(records: list[TrainingRecord], per_task: int) -> tuple[list[TrainingRecord], list[TrainingRecord]]:
    """A seeded, task-stratified validation split: ``per_task`` records of every task, and the rest for training.

    Settings are chosen on it; the held-out split is measured once, at the end. Seeded by task name, so the
    same records are chosen on every machine and in every script.
    """
    by_task: dict[str, list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        by_task[str(record.meta.get("task"))].append(index)
    short = {task: len(indices) for task, indices in by_task.items() if len(indices) < per_task}
    if short:
        raise ValueError(f"cannot carve {per_task} validation records per task: only {short}")
    chosen = {index for task in sorted(by_task) for index in random.Random(task).sample(by_task[task], per_task)}
    training = [record for index, record in enumerate(records) if index not in chosen]
    return training, [record for index, record in enumerate(records) if index in chosen]


def is_heldout_configuration(scene: scenes.Scene) -> bool:
    """Whether the scene's configuration (its signature) is reserved for the held-out split.

    A fixed hash of the signature, independent of the seed, so the held-out configurations are the
    same in every build.
    """
    digest = hashlib.blake2b(repr(scene.signature).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % HELDOUT_CONFIG_BUCKETS == 0


def class_order(seed: int, source: str, name: str, size: int) -> np.ndarray:
    """The fixed permutation of one class's ``size`` samples (``source`` ``"textile"`` or ``"digits"``)
    that both splits index: see :func:`class_positions`."""
    return stream(seed, source, name).permutation(size)


def class_positions(task: str, split: str, available: dict[str, int], scale: float) -> dict[str, list[int]]:
    """Per class, the positions into its :func:`class_order` that ``split`` may use.

    Held-out takes the first ones, train the next, so the two splits never share a source image.
    ``task`` is ``"textile_label"`` or ``"digit_label"``; ``available`` is each class's sample count.
    """
    heldout_per_class = spread(scaled_count(PLAN[(task, "simple")][1], scale), list(available))
    picks = {}
    for name, size in available.items():
        start = 0 if split == "heldout" else min(heldout_per_class[name], size)
        end = size if split == "train" else min(heldout_per_class[name], size)
        picks[name] = list(range(start, end))
    return picks


def picked_positions(task: str, split: str, available: dict[str, int], scale: float) -> list[tuple[str, int]]:
    """The (class, position) pairs a build at ``scale`` uses for ``split``, classes in turn."""
    count = scaled_count(PLAN[(task, "simple")][SPLITS.index(split)], scale)
    return round_robin(class_positions(task, split, available, scale), count)


# --------------------------------------------------------------------------------------------------
# building


@dataclass
class _SplitImages:
    """Writes one split's images and remembers their paths and pixel digests."""

    root: Path
    split: str
    forbidden: frozenset[str] = frozenset()  # digests of the other split's images
    digests: dict[str, str] = field(default_factory=dict)  # path -> pixel digest

    def clashes(self, images: list[Image.Image]) -> bool:
        return any(pixel_digest(image) in self.forbidden for image in images)

    def save(self, image: Image.Image, relative: str) -> str:
        digest = pixel_digest(image)
        if digest in self.forbidden:
            raise RuntimeError(f"held-out image {relative} has the same pixels as a train image")
        path = self.root / "images" / self.split / relative
        if str(path) in self.digests:
            raise RuntimeError(f"two images of the {self.split} split would share the file {relative}")
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, format="PNG")
        self.digests[str(path)] = digest
        return str(path)


class _Builder:
    def __init__(self, root: Path, seed: int, scale: float, sources: Sources) -> None:
        self.root, self.seed, self.scale, self.sources = root, seed, scale, sources
        self.notes: list[str] = []

    def build(self) -> dict[str, Any]:
        train_images = _SplitImages(self.root, "train")
        train = self._split_records("train", train_images)
        heldout_images = _SplitImages(self.root, "heldout", forbidden=frozenset(train_images.digests.values()))
        heldout = self._split_records("heldout", heldout_images)
        _check_disjoint(train, train_images, heldout, heldout_images)
        stream(self.seed, "shuffle").shuffle(train)  # mix tasks for a reader that batches in file order
        write_records(self.root / "train.jsonl", train)
        write_records(self.root / "heldout.jsonl", heldout)
        images = {"train": train_images, "heldout": heldout_images}
        return _manifest(self.seed, self.scale, self.sources, {"train": train, "heldout": heldout}, images, self.notes)

    def _split_records(self, split: str, images: _SplitImages) -> list[TrainingRecord]:
        records: list[TrainingRecord] = []
        for (task, kind), counts in PLAN.items():
            count = scaled_count(counts[SPLITS.index(split)], self.scale)
            rng = stream(self.seed, task, kind, split)
            if task in ("caption_to_image", "image_to_caption"):
                made = self._scene_records(task, kind, split, count, rng, images)
            elif task == "vqa":
                made = self._vqa_records(split, count, rng, images)
            elif task == "textile_label":
                made = self._textile_records(split, images)
            else:
                made = self._digit_records(split, images)
            if len(made) < count:
                self.notes.append(f"{split}/{task}/{kind}: {len(made)} records, not {count}: the source has no more")
            records += made
        return records

    # ---- scenes -----------------------------------------------------------------------------------

    def _scene_records(
        self, task: str, kind: str, split: str, count: int, rng: np.random.Generator, images: _SplitImages
    ) -> list[TrainingRecord]:
        records = []
        for index in range(count):
            scene, edits = _sample_scene(kind, split, rng)
            style = scenes.CAPTION_STYLES[int(rng.integers(len(scenes.CAPTION_STYLES)))]
            rendered = [scenes.render(scene)] + [scenes.render(edit.scene) for edit in edits]
            while images.clashes(rendered):  # a held-out scene drawn pixel-identical to a train one
                scene, edits = _sample_scene(kind, split, rng)
                rendered = [scenes.render(scene)] + [scenes.render(edit.scene) for edit in edits]
            meta = {
                "task": task,
                "kind": kind,
                "n_objects": len(scene.objects),
                "caption_style": style,
                "scene": [scenes.object_to_json(obj) for obj in scene.objects],
                "negative_edits": [edit.kind for edit in edits],
            }
            folder = f"{task}/{kind}/{index:05d}"
            query, positive, negatives = _scene_sides(task, scene, edits, style, rendered, images, folder)
            records.append(TrainingRecord(query=query, positive=positive, negatives=negatives, meta=meta))
        return records

    # ---- easy-VQA -----------------------------------------------------------------------------------

    def _vqa_records(
        self, split: str, count: int, rng: np.random.Generator, images: _SplitImages
    ) -> list[TrainingRecord]:
        easy_vqa = self.sources.easy_vqa
        # easy-VQA's own train split feeds our train split and its test split our held-out split.
        if split == "train":
            texts, answers, image_ids = easy_vqa.get_train_questions()
            image_paths, source_split = easy_vqa.get_train_image_paths(), "train"
        else:
            texts, answers, image_ids = easy_vqa.get_test_questions()
            image_paths, source_split = easy_vqa.get_test_image_paths(), "test"
        vocabulary = easy_vqa.get_answers()
        chosen = _one_question_per_image(vqa_questions_by_type(vocabulary, answers), image_ids, count, rng)
        query_instruction, doc_instruction = INSTRUCTIONS["vqa"]
        records = []
        for question_index in chosen:
            image_id, answer = image_ids[question_index], answers[question_index]
            with Image.open(image_paths[image_id]) as source:
                image = source.convert("RGB")
            if images.clashes([image]):
                continue
            others = vqa_other_answers(vocabulary, answer)
            negatives = [others[int(i)] for i in rng.permutation(len(others))[:N_HARD_NEGATIVES]]
            records.append(
                TrainingRecord(
                    query=Item(
                        text=texts[question_index],
                        images=(images.save(image, f"vqa/{image_id:05d}.png"),),
                        instruction=query_instruction,
                    ),
                    positive=Item(text=answer, instruction=doc_instruction),
                    negatives=tuple(Item(text=text, instruction=doc_instruction) for text in negatives),
                    meta={
                        "task": "vqa",
                        "kind": "simple",
                        "answer_type": vqa_answer_type(answer),
                        "source": f"easy-vqa/{source_split}/{image_id}",
                    },
                )
            )
        return records

    # ---- classification ------------------------------------------------------------------------------

    def _textile_records(self, split: str, images: _SplitImages) -> list[TrainingRecord]:
        files = self.sources.textile_files()
        order = {name: class_order(self.seed, "textile", name, len(paths)) for name, paths in files.items()}
        available = {name: len(paths) for name, paths in files.items()}
        records = []
        for name, position in picked_positions("textile_label", split, available, self.scale):
            path = files[name][int(order[name][position])]
            image = textile_image(path)
            if images.clashes([image]):
                continue
            label = TEXTILE_LABELS[name]
            records.append(
                _label_record(
                    "textile_label",
                    images.save(image, f"textile_label/{name}_{path.stem}.png"),
                    class_name=name,
                    label=label,
                    negatives=[text for text in TEXTILE_LABELS.values() if text != label],
                    source=f"conformal-clip-data/simulated/{name}/{path.name}",
                )
            )
        return records

    def _digit_records(self, split: str, images: _SplitImages) -> list[TrainingRecord]:
        pixels = self.sources.digits[0]
        members = self.sources.digit_members()
        order = {name: class_order(self.seed, "digits", name, len(indices)) for name, indices in members.items()}
        available = {name: len(indices) for name, indices in members.items()}
        rng = stream(self.seed, "digit_label", "negatives", split)
        records = []
        for name, position in picked_positions("digit_label", split, available, self.scale):
            sample = int(members[name][int(order[name][position])])
            image = digit_image(pixels[sample])
            if images.clashes([image]):
                continue
            label = digit_label(name)
            others = [digit_label(digit) for digit in range(10) if digit != int(name)]
            records.append(
                _label_record(
                    "digit_label",
                    images.save(image, f"digit_label/{sample:04d}.png"),
                    class_name=name,
                    label=label,
                    negatives=[others[int(i)] for i in rng.permutation(len(others))[:N_HARD_NEGATIVES]],
                    source=f"sklearn-digits/{sample}",
                )
            )
        return records


def _sample_scene(kind: str, split: str, rng: np.random.Generator) -> tuple[scenes.Scene, list[scenes.SceneEdit]]:
    want_heldout = split == "heldout"
    while True:
        n_objects = 1 if kind == "simple" else int(rng.integers(2, scenes.MAX_OBJECTS + 1))
        scene = scenes.random_scene(rng, n_objects)
        if is_heldout_configuration(scene) == want_heldout:
            break
    edits = scenes.one_edit_negatives(scene, rng, 3 * N_HARD_NEGATIVES)
    if not want_heldout:  # train never shows a held-out configuration, not even as a negative
        edits = [edit for edit in edits if not is_heldout_configuration(edit.scene)]
    return scene, edits[:N_HARD_NEGATIVES]


def _scene_sides(
    task: str,
    scene: scenes.Scene,
    edits: list[scenes.SceneEdit],
    style: str,
    rendered: list[Image.Image],
    images: _SplitImages,
    folder: str,
) -> tuple[Item, Item, tuple[Item, ...]]:
    """(query, positive, negatives) of a scene record: captions on one side, rendered scenes on the other."""
    query_instruction, doc_instruction = INSTRUCTIONS[task]
    if task == "caption_to_image":
        query = Item(text=scenes.caption(scene, style), instruction=query_instruction)
        positive = Item(images=(images.save(rendered[0], f"{folder}_pos.png"),), instruction=doc_instruction)
        negatives = tuple(
            Item(images=(images.save(image, f"{folder}_neg{k}.png"),), instruction=doc_instruction)
            for k, image in enumerate(rendered[1:])
        )
        return query, positive, negatives
    query = Item(images=(images.save(rendered[0], f"{folder}.png"),), instruction=query_instruction)
    positive = Item(text=scenes.caption(scene, style), instruction=doc_instruction)
    negatives = tuple(Item(text=scenes.caption(edit.scene, style), instruction=doc_instruction) for edit in edits)
    return query, positive, negatives


def _one_question_per_image(
    by_type: dict[str, list[int]], image_ids: list[int], count: int, rng: np.random.Generator
) -> list[int]:
    """Up to ``count`` question indices, one per image, answer types in equal shares, taken in turn."""
    queues = {name: [int(i) for i in rng.permutation(indices)] for name, indices in by_type.items()}
    chosen: list[int] = []
    used_images: set[int] = set()
    while len(chosen) < count and any(queues.values()):
        for name in sorted(queues):
            queue = queues[name]
            while queue and image_ids[queue[0]] in used_images:
                queue.pop(0)
            if queue and len(chosen) < count:
                question_index = queue.pop(0)
                used_images.add(image_ids[question_index])
                chosen.append(question_index)
    return chosen


def _label_record(
    task: str, image: str, *, class_name: str, label: str, negatives: list[str], source: str
) -> TrainingRecord:
    query_instruction, doc_instruction = INSTRUCTIONS[task]
    return TrainingRecord(
        query=Item(images=(image,), instruction=query_instruction),
        positive=Item(text=label, instruction=doc_instruction),
        negatives=tuple(Item(text=text, instruction=doc_instruction) for text in negatives),
        meta={"task": task, "kind": "simple", "label": class_name, "source": source},
    )


def _record_images(records: list[TrainingRecord]) -> set[str]:
    return {
        str(image)
        for record in records
        for item in (record.query, record.positive, *record.negatives)
        for image in item.images
    }


def _check_disjoint(
    train: list[TrainingRecord], train_images: _SplitImages, heldout: list[TrainingRecord], heldout_images: _SplitImages
) -> None:
    """The held-out split must not show any image the train split shows: by file and by pixels."""
    train_paths, heldout_paths = _record_images(train), _record_images(heldout)
    for split, paths, written in (("train", train_paths, train_images), ("heldout", heldout_paths, heldout_images)):
        if not paths <= written.digests.keys():
            raise RuntimeError(f"{split} records name images that were not written for that split")
    shared = train_paths & heldout_paths
    if shared:
        raise RuntimeError(f"held-out records reuse {len(shared)} train image file(s), e.g. {sorted(shared)[0]}")
    train_pixels = {train_images.digests[path] for path in train_paths}
    if any(heldout_images.digests[path] in train_pixels for path in heldout_paths):
        raise RuntimeError("a held-out image has the same pixels as a train image")


# --------------------------------------------------------------------------------------------------
# manifest


def _counts(records: dict[str, list[TrainingRecord]], images: dict[str, _SplitImages]) -> dict[str, Any]:
    counts: dict[str, Any] = {}
    for split, split_records in records.items():
        by_task: dict[str, dict[str, int]] = {}
        for record in split_records:
            task, kind = record.meta["task"], record.meta["kind"]
            by_task.setdefault(task, {}).setdefault(kind, 0)
            by_task[task][kind] += 1
        counts[split] = {
            "records": len(split_records),
            "images": len(images[split].digests),
            "by_task": {task: dict(sorted(kinds.items())) for task, kinds in sorted(by_task.items())},
        }
    return counts


def _manifest(
    seed: int,
    scale: float,
    sources: Sources,
    records: dict[str, list[TrainingRecord]],
    images: dict[str, _SplitImages],
    notes: list[str],
) -> dict[str, Any]:
    return {
        "name": DATASET_NAME,
        "format_version": FORMAT_VERSION,
        "description": (
            "Training and held-out data for the mmcascade starter embedder, built offline by "
            "mmcascade.data.synthetic.starter_split.build_starter_data. Compositional scenes (2-3 coloured "
            "shapes with one-edit hard negatives) test attribute binding, spatial relations and counting; "
            "single-object scenes, easy-VQA, textile defects and digits add simple cases and variety. "
            "Record format: see mmcascade.data.records (one JSON object per line; image paths relative "
            "to this folder)."
        ),
        "seed": seed,
        "scale": scale,
        "files": {"train": "train.jsonl", "heldout": "heldout.jsonl", "images": "images/"},
        "counts": _counts(records, images),
        "tasks": {
            task: {
                "description": TASK_DESCRIPTIONS[task],
                "query_instruction": INSTRUCTIONS[task][0],
                "document_instruction": INSTRUCTIONS[task][1],
            }
            for task in INSTRUCTIONS
        },
        "heldout_policy": (
            "No image file or pixel content is shared between train and held-out. Scene queries and "
            f"positives use disjoint configurations (1 in {HELDOUT_CONFIG_BUCKETS} signatures, by a fixed "
            "hash, is held out; train negatives avoid them too). easy-VQA: its train split -> train, its "
            "test split -> held-out. Textiles and digits: disjoint images, classes balanced."
        ),
        "scene_vocabulary": {
            "shapes": list(scenes.SHAPES),
            "colours": list(scenes.COLOURS),
            "sizes": list(scenes.SIZES),
            "slots": list(scenes.SLOTS),
            "caption_styles": list(scenes.CAPTION_STYLES),
            "edit_kinds": list(scenes.EDIT_KINDS),
            "image_size": scenes.IMAGE_SIZE,
        },
        "sources": _source_descriptions(sources.versions),
        "notes": notes,
    }


def _source_descriptions(versions: dict[str, str]) -> dict[str, dict[str, str]]:
    return {
        "scenes": {"package": "mmcascade", "version": versions["mmcascade"], "used_for": "scene tasks"},
        "easy-vqa": {"package": "easy-vqa", "version": versions["easy-vqa"], "used_for": "vqa"},
        "conformal-clip-data": {
            "package": "conformal-clip-data",
            "version": versions["conformal-clip-data"],
            "used_for": "textile_label (simulated textile images, 250x250 JPEG -> 128x128 PNG)",
        },
        "sklearn-digits": {
            "package": "scikit-learn",
            "version": versions["scikit-learn"],
            "used_for": "digit_label (8x8 digits -> 64x64 RGB PNG)",
        },
        "numpy": {"package": "numpy", "version": versions["numpy"], "used_for": "random streams"},
        "pillow": {"package": "pillow", "version": versions["pillow"], "used_for": "drawing, PNG encoding"},
    }
