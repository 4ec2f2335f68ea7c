"""The datasets from the starter's sources: textiles and digits (classification), easy-VQA (question answering).

Textiles and digits use only samples the starter's training split never picks (recomputed with the
starter split's own helpers, so this follows any change to that split); easy-VQA uses its test split,
minus any image whose pixels equal an easy-VQA train image.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from mmcascade.data.synthetic.mini_benchmark.layout import (
    INSTRUCTIONS,
    STARTER_SCALE,
    STARTER_SEED,
    BuildContext,
    DatasetSpec,
    mmeb_record,
)
from mmcascade.data.synthetic.sources import (
    DIGIT_SIZE,
    TEXTILE_LABELS,
    TEXTILE_SIZE,
    digit_image,
    digit_label,
    file_digest,
    pixel_digest,
    round_robin,
    textile_image,
    vqa_answer_type,
    vqa_other_answers,
    vqa_questions_by_type,
)
from mmcascade.data.synthetic.starter_split import class_order, picked_positions

T = TypeVar("T")


def textiles(context: BuildContext, spec: DatasetSpec) -> dict[str, Any]:
    """MiniTextile-CLS: a textile photo -> one of the three defect labels."""
    files = context.sources.textile_files()
    in_order = {
        name: [paths[int(i)] for i in class_order(STARTER_SEED, "textile", name, len(paths))]
        for name, paths in files.items()
    }
    available = _untrained("textile_label", in_order, file_digest)
    rng = context.rng(spec)
    picks = _balanced_picks(available, context.count(spec), rng)
    records, metadata = _classification_records(
        context, spec, picks, TEXTILE_LABELS, rng, textile_image, _textile_source
    )
    return context.write_records(
        spec,
        records,
        metadata,
        source=f"conformal-clip-data {context.sources.versions['conformal-clip-data']}: simulated textiles, "
        f"250x250 JPEG -> {TEXTILE_SIZE}x{TEXTILE_SIZE} PNG (Lanczos), as the starter data draws them",
        per_class=_per_class(picks, TEXTILE_LABELS),
    )


def digits(context: BuildContext, spec: DatasetSpec) -> dict[str, Any]:
    """MiniDigits-CLS: a handwritten digit -> one of ten labels ("the digit seven")."""
    pixels = context.sources.digits[0]
    members = context.sources.digit_members()
    in_order = {
        name: [int(indices[int(i)]) for i in class_order(STARTER_SEED, "digits", name, len(indices))]
        for name, indices in members.items()
    }
    available = _untrained("digit_label", in_order, lambda sample: pixels[sample].tobytes())
    rng = context.rng(spec)
    picks = _balanced_picks(available, context.count(spec), rng)
    labels = {name: digit_label(name) for name in members}
    records, metadata = _classification_records(
        context, spec, picks, labels, rng, lambda sample: digit_image(pixels[sample]), _digit_source
    )
    return context.write_records(
        spec,
        records,
        metadata,
        source=f"scikit-learn {context.sources.versions['scikit-learn']} load_digits: 8x8 -> "
        f"{DIGIT_SIZE}x{DIGIT_SIZE} RGB PNG, dark ink on white, as the starter data draws them",
        per_class=_per_class(picks, labels),
    )


def vqa(context: BuildContext, spec: DatasetSpec) -> dict[str, Any]:
    """MiniShapes-VQA: an easy-VQA test image + question -> the answer among all answers of its type."""
    easy_vqa = context.sources.easy_vqa
    texts, answers, image_ids = easy_vqa.get_test_questions()
    vocabulary = easy_vqa.get_answers()
    by_type = vqa_questions_by_type(vocabulary, answers)
    rng = context.rng(spec)
    chosen, skipped = _vqa_questions(context, by_type, image_ids, rng, context.count(spec))
    qry_inst, tgt_inst = INSTRUCTIONS[spec.name]
    records, metadata, per_type = [], [], dict.fromkeys(by_type, 0)
    for number, (index, image) in enumerate(chosen):
        answer = answers[index]
        relative = context.images.save(image, f"{spec.name}/{number:05d}.png")
        kind = vqa_answer_type(answer)
        per_type[kind] += 1
        others = vqa_other_answers(vocabulary, answer)
        labels = [answer, *(others[int(i)] for i in rng.permutation(len(others)))]
        records.append(mmeb_record(qry_inst, texts[index], relative, tgt_inst, labels, [""] * len(labels)))
        metadata.append({"answer_type": kind, "source": f"easy-vqa/test/{image_ids[index]}"})
    return context.write_records(
        spec,
        records,
        metadata,
        source=f"easy-vqa {context.sources.versions['easy-vqa']}: test split (64x64 PNG, re-saved), one question "
        "per image",
        per_answer_type=per_type,
        skipped_same_pixels_as_train=skipped,
    )


def _vqa_questions(
    context: BuildContext, by_type: dict[str, list[int]], image_ids: list[int], rng: np.random.Generator, count: int
) -> tuple[list[tuple[int, Image.Image]], int]:
    """Up to ``count`` (question, image) pairs, one question per image, answer types in turn; and how many
    images were skipped for having the pixels of an easy-VQA train image."""
    easy_vqa = context.sources.easy_vqa
    train_pixels = set()
    for path in easy_vqa.get_train_image_paths().values():
        with Image.open(path) as image:
            train_pixels.add(pixel_digest(image))
    image_paths = easy_vqa.get_test_image_paths()
    queues = {name: [int(i) for i in rng.permutation(indices)] for name, indices in by_type.items()}
    chosen: list[tuple[int, Image.Image]] = []
    used_images: set[int] = set()
    skipped = 0
    while len(chosen) < count and any(queues.values()):
        for name in sorted(queues):
            queue = queues[name]
            while queue and len(chosen) < count:
                index = queue.pop(0)
                if image_ids[index] in used_images:
                    continue
                used_images.add(image_ids[index])
                with Image.open(image_paths[image_ids[index]]) as source:
                    image = source.convert("RGB")
                if pixel_digest(image) in train_pixels:
                    skipped += 1
                    continue
                chosen.append((index, image))
                break
    return chosen, skipped


def _untrained(task: str, in_order: dict[str, list[T]], key: Callable[[T], Hashable]) -> dict[str, list[T]]:
    """Per class, its samples (in the starter's class order) that the starter's training split never picks,
    minus any whose ``key`` (file bytes, pixels) equals that of a picked one."""
    trained: dict[str, set[int]] = {name: set() for name in in_order}
    available = {name: len(samples) for name, samples in in_order.items()}
    for name, position in picked_positions(task, "train", available, STARTER_SCALE):
        trained[name].add(position)
    trained_keys = {key(in_order[name][position]) for name in in_order for position in trained[name]}
    return {
        name: [
            sample
            for position, sample in enumerate(samples)
            if position not in trained[name] and key(sample) not in trained_keys
        ]
        for name, samples in in_order.items()
    }


def _balanced_picks(available: dict[str, list[T]], count: int, rng: np.random.Generator) -> list[tuple[str, T]]:
    """Up to ``count`` (class, sample) pairs, classes in turn, samples drawn at random, order shuffled."""
    shuffled = {name: [items[int(i)] for i in rng.permutation(len(items))] for name, items in available.items()}
    chosen = round_robin(shuffled, count)
    return [chosen[int(i)] for i in rng.permutation(len(chosen))]


def _classification_records(
    context: BuildContext,
    spec: DatasetSpec,
    picks: list[tuple[str, T]],
    labels: dict[str, str],
    rng: np.random.Generator,
    draw: Callable[[T], Image.Image],
    source: Callable[[str, T], str],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One record per pick: the drawn image -> its class label first, then the others in a random order."""
    qry_inst, tgt_inst = INSTRUCTIONS[spec.name]
    records, metadata = [], []
    for number, (name, sample) in enumerate(picks):
        relative = context.images.save(draw(sample), f"{spec.name}/{number:05d}.png")
        others = [text for other, text in labels.items() if other != name]
        candidates = [labels[name], *(others[int(i)] for i in rng.permutation(len(others)))]
        records.append(mmeb_record(qry_inst, "", relative, tgt_inst, candidates, [""] * len(candidates)))
        metadata.append({"label": name, "source": source(name, sample)})
    return records, metadata


def _textile_source(name: str, path: Path) -> str:
    return f"conformal-clip-data/simulated/{name}/{path.name}"


def _digit_source(name: str, sample: int) -> str:
    return f"sklearn-digits/{sample}"


def _per_class(picks: list[tuple[str, Any]], labels: dict[str, str]) -> dict[str, int]:
    return {name: sum(1 for pick, _ in picks if pick == name) for name in labels}
