"""The scene datasets: caption -> image (t2i), image -> caption (i2t) and visual grounding (VG).

Every rendered scene and every caption (queries, positives and negatives) has a held-out configuration
(:func:`~mmcascade.data.synthetic.starter_split.is_heldout_configuration`), which the starter's training
never shows. Negatives are one edit away from the positive, or two where too few held-out configurations
are one edit away.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from PIL import Image

from mmcascade.data.synthetic import scenes
from mmcascade.data.synthetic.mini_benchmark.layout import INSTRUCTIONS, BuildContext, DatasetSpec, mmeb_record
from mmcascade.data.synthetic.sources import round_robin
from mmcascade.data.synthetic.starter_split import is_heldout_configuration

SCENE_CANDIDATES = 8  # t2i / i2t: the positive and 7 held-out hard negatives
MAX_COUNT_EDITS = 2  # per query, negatives with an object added or removed (the easier ones)
VG_CANDIDATES = 8  # the referred object's crop, the scene's other objects, crops of other scenes
VG_CROP = 48
VG_BACKGROUND = (242, 242, 242)
MAX_SINGLE_OBJECT_SCENES = 8  # only ~14 one-object configurations are held out
MAX_SCENE_DRAWS = 200_000
SCENES_SOURCE = "mmcascade.data.synthetic.scenes"


@dataclass(frozen=True)
class _SceneNegatives:
    edits: list[scenes.SceneEdit]  # kinds "colour", ... or "first+second" for two edits
    one_edit: int  # how many of them are one edit away (the rest are two edits away)

    @property
    def scenes(self) -> list[scenes.Scene]:
        return [edit.scene for edit in self.edits]


def scenes_t2i(context: BuildContext, spec: DatasetSpec) -> dict[str, Any]:
    """MiniScenes-t2i: a caption -> its scene image among images of held-out scenes one (or two) edits away."""
    rng = context.rng(spec)
    qry_inst, tgt_inst = INSTRUCTIONS[spec.name]
    records, metadata, negative_counts = [], [], [0, 0]
    for number, scene, negatives, style in _retrieval_queries(context, spec, rng, negative_counts):
        candidates = [scene, *negatives.scenes]
        # File numbers are shuffled so that no file name gives the positive away.
        numbers = rng.permutation(len(candidates))
        paths = [
            context.images.save(scenes.render(candidate), f"{spec.name}/{number:05d}_{int(k)}.png")
            for candidate, k in zip(candidates, numbers, strict=True)
        ]
        records.append(mmeb_record(qry_inst, scenes.caption(scene, style), "", tgt_inst, [""] * len(paths), paths))
        metadata.append(_retrieval_metadata(style, candidates, negatives))
    return context.write_records(
        spec,
        records,
        metadata,
        source=f"{SCENES_SOURCE} (held-out configurations only)",
        **_negative_info(*negative_counts),
    )


def scenes_i2t(context: BuildContext, spec: DatasetSpec) -> dict[str, Any]:
    """MiniScenes-i2t: a scene image -> its caption among captions (same style) of held-out scenes nearby."""
    rng = context.rng(spec)
    qry_inst, tgt_inst = INSTRUCTIONS[spec.name]
    records, metadata, negative_counts = [], [], [0, 0]
    for number, scene, negatives, style in _retrieval_queries(context, spec, rng, negative_counts):
        candidates = [scene, *negatives.scenes]
        captions = [scenes.caption(candidate, style) for candidate in candidates]
        relative = context.images.save(scenes.render(scene), f"{spec.name}/{number:05d}.png")
        records.append(mmeb_record(qry_inst, "", relative, tgt_inst, captions, [""] * len(captions)))
        metadata.append(_retrieval_metadata(style, candidates, negatives))
    return context.write_records(
        spec,
        records,
        metadata,
        source=f"{SCENES_SOURCE} (held-out configurations only)",
        **_negative_info(*negative_counts),
    )


def scenes_vg(context: BuildContext, spec: DatasetSpec) -> dict[str, Any]:
    """MiniScenes-VG: a scene image + referring expression -> the crop of the referred object, among crops of
    the scene's other objects and of other scenes."""
    rng = context.rng(spec)
    # One background for every VG scene: otherwise a crop's background alone would tell which
    # candidates come from the query's scene.
    query_scenes = [
        replace(scene, background=VG_BACKGROUND)
        for scene in _query_scenes(spec.name, context.count(spec), rng, min_objects=2)
    ]
    query_paths, crop_paths = _save_scenes_and_crops(context, spec, query_scenes)
    qry_inst, tgt_inst = INSTRUCTIONS[spec.name]
    records, metadata, kinds = [], [], {"position": 0, "attributes": 0, "one_attribute": 0}
    for number, scene in enumerate(query_scenes):
        target = int(rng.integers(len(scene.objects)))
        kind, expression = _referring_expression(scene, target, rng)
        kinds[kind] += 1
        candidates = _grounding_candidates(query_scenes, number, target, rng)
        paths = [crop_paths[scene_number][index] for scene_number, index in candidates]
        records.append(mmeb_record(qry_inst, expression, query_paths[number], tgt_inst, [""] * len(paths), paths))
        metadata.append(
            {
                "scene": scenes.scene_to_json(scene),
                "target": target,
                "expression_kind": kind,
                "candidates": [
                    {
                        "scene": scene_number,
                        "object": index,
                        **scenes.object_to_json(query_scenes[scene_number].objects[index]),
                    }
                    for scene_number, index in candidates
                ],
            }
        )
    return context.write_records(
        spec,
        records,
        metadata,
        source=f"{SCENES_SOURCE} (held-out configurations, 2-3 distinct objects), {VG_CROP}x{VG_CROP} crops "
        "around each object centre (Scene.centre), shifted inside the image",
        expression_kinds=kinds,
    )


# --------------------------------------------------------------------------------------------------
# query scenes and their negatives


def _query_scenes(name: str, count: int, rng: np.random.Generator, *, min_objects: int = 1) -> list[scenes.Scene]:
    """``count`` held-out scenes with distinct signatures: ~10% one object, the rest two or three."""
    singles = 0 if min_objects > 1 else min(MAX_SINGLE_OBJECT_SCENES, round(0.1 * count))
    plan = [1] * singles + [2 + (k % 2) for k in range(count - singles)]
    chosen: list[scenes.Scene] = []
    seen: set[tuple] = set()
    draws = 0
    for n_objects in plan:
        while True:
            draws += 1
            if draws > MAX_SCENE_DRAWS:
                raise RuntimeError(f"{name}: found only {len(chosen)} held-out scene configurations, need {count}")
            scene = scenes.random_scene(rng, n_objects)
            if not is_heldout_configuration(scene) or scene.signature in seen:
                continue
            if min_objects > 1 and len({obj.attributes for obj in scene.objects}) < n_objects:
                continue  # grounding needs objects that look different
            seen.add(scene.signature)
            chosen.append(scene)
            break
    order = rng.permutation(len(chosen))
    return [chosen[int(i)] for i in order]


def _retrieval_queries(
    context: BuildContext, spec: DatasetSpec, rng: np.random.Generator, negative_counts: list[int]
) -> Iterator[tuple[int, scenes.Scene, _SceneNegatives, str]]:
    """(number, scene, negatives, caption style) per query; ``negative_counts`` accumulates
    [one-edit negatives, all negatives]."""
    for number, scene in enumerate(_query_scenes(spec.name, context.count(spec), rng)):
        negatives = _heldout_negatives(scene, rng, SCENE_CANDIDATES - 1)
        negative_counts[0] += negatives.one_edit
        negative_counts[1] += len(negatives.edits)
        style = scenes.CAPTION_STYLES[int(rng.integers(len(scenes.CAPTION_STYLES)))]
        yield number, scene, negatives, style


def _retrieval_metadata(style: str, candidates: list[scenes.Scene], negatives: _SceneNegatives) -> dict[str, Any]:
    return {
        "caption_style": style,
        "candidates": [scenes.scene_to_json(candidate) for candidate in candidates],
        "negative_edits": [edit.kind for edit in negatives.edits],
    }


def _negative_info(one_edit: int, total: int) -> dict[str, Any]:
    return {"negatives": {"one_edit": one_edit, "two_edits": total - one_edit}}


def _heldout_negatives(scene: scenes.Scene, rng: np.random.Generator, n: int) -> _SceneNegatives:
    """``n`` hard negatives with held-out configurations: one edit away first, then two edits away.

    Only about one configuration in ten is held out, so a scene rarely has ``n`` held-out one-edit
    neighbours; the rest are one edit away from a (never shown) one-edit neighbour. Edit kinds are
    taken in turn, and at most :data:`MAX_COUNT_EDITS` negatives add or remove an object (there are
    many such neighbours, and they are the easy ones), unless nothing else is left.
    """
    seen = {scene.signature}
    first = scenes.one_edit_negatives(scene, rng, 400)  # every distinct edit it finds
    seen |= {edit.scene.signature for edit in first}
    heldout_first = [edit for edit in first if is_heldout_configuration(edit.scene)]
    stepping_stones = [edit for edit in first if not is_heldout_configuration(edit.scene)]
    second: list[scenes.SceneEdit] = []
    for index in rng.permutation(len(stepping_stones)):
        if len(heldout_first) + len(second) >= 3 * n:
            break
        stone = stepping_stones[int(index)]
        for edit in scenes.one_edit_negatives(stone.scene, rng, 16):
            if is_heldout_configuration(edit.scene) and edit.scene.signature not in seen:
                seen.add(edit.scene.signature)
                second.append(scenes.SceneEdit(scene=edit.scene, kind=f"{stone.kind}+{edit.kind}"))
    chosen = _limit_count_edits(_by_kind_in_turn(heldout_first) + _by_kind_in_turn(second), n)
    if len(chosen) < n:
        raise RuntimeError(f"only {len(chosen)} held-out negatives for the scene {scene.signature}, need {n}")
    chosen.sort(key=lambda edit: "+" in edit.kind)  # one-edit negatives first (a stable sort)
    return _SceneNegatives(edits=chosen, one_edit=sum("+" not in edit.kind for edit in chosen))


def _limit_count_edits(pool: list[scenes.SceneEdit], n: int) -> list[scenes.SceneEdit]:
    """The first ``n`` of ``pool`` with at most :data:`MAX_COUNT_EDITS` count edits, topped up from the rest."""
    chosen: list[scenes.SceneEdit] = []
    for edit in pool:
        counts = sum("count" in other.kind for other in chosen)
        if len(chosen) < n and ("count" not in edit.kind or counts < MAX_COUNT_EDITS):
            chosen.append(edit)
    chosen += [edit for edit in pool if edit not in chosen][: n - len(chosen)]
    return chosen


def _by_kind_in_turn(edits: Sequence[scenes.SceneEdit]) -> list[scenes.SceneEdit]:
    """The edits reordered so that kinds (the first edit's kind) take turns."""
    groups: dict[str, list[scenes.SceneEdit]] = {}
    for edit in edits:
        groups.setdefault(edit.kind.split("+")[0], []).append(edit)
    return [edit for _, edit in round_robin(groups)]


# --------------------------------------------------------------------------------------------------
# grounding


def _save_scenes_and_crops(
    context: BuildContext, spec: DatasetSpec, query_scenes: list[scenes.Scene]
) -> tuple[list[str], list[list[str]]]:
    """Every scene's image, and one crop file per object: other scenes' crops are the outside distractors."""
    query_paths, crop_paths = [], []
    for number, scene in enumerate(query_scenes):
        image = scenes.render(scene)
        query_paths.append(context.images.save(image, f"{spec.name}/{number:05d}.png"))
        crop_paths.append(
            [
                context.images.save(
                    _crop_around(image, scene.centre(index), VG_CROP), f"{spec.name}/crops/{number:05d}_{index}.png"
                )
                for index in range(len(scene.objects))
            ]
        )
    return query_paths, crop_paths


def _grounding_candidates(
    query_scenes: list[scenes.Scene], number: int, target: int, rng: np.random.Generator
) -> list[tuple[int, int]]:
    """(scene, object) pairs: the target first, then the scene's other objects and objects of other scenes."""
    scene = query_scenes[number]
    own = [(number, index) for index in range(len(scene.objects)) if index != target]
    outside = [
        (other, index)
        for other, other_scene in enumerate(query_scenes)
        if other != number
        for index, obj in enumerate(other_scene.objects)
        # an identical-looking crop from elsewhere would be right too
        if obj.attributes != scene.objects[target].attributes
    ]
    n_outside = min(VG_CANDIDATES - 1 - len(own), len(outside))
    distractors = own + [outside[int(i)] for i in rng.choice(len(outside), size=n_outside, replace=False)]
    return [(number, target), *(distractors[int(i)] for i in rng.permutation(len(distractors)))]


def _crop_around(image: Image.Image, centre: tuple[int, int], size: int) -> Image.Image:
    """A ``size`` x ``size`` crop centred on ``centre``, shifted to lie inside the image."""
    left = min(max(centre[0] - size // 2, 0), image.width - size)
    top = min(max(centre[1] - size // 2, 0), image.height - size)
    return image.crop((left, top, left + size, top + size))


def _referring_expression(scene: scenes.Scene, target: int, rng: np.random.Generator) -> tuple[str, str]:
    """(kind, expression) naming ``scene.objects[target]`` unambiguously."""
    objects = scene.objects
    obj = objects[target]
    options: dict[str, list[str]] = {"attributes": [f"the {obj.size} {obj.colour} {obj.shape}"]}
    if target == 0:
        options["position"] = ["the leftmost shape", "the shape furthest to the left"]
    elif target == len(objects) - 1:
        options["position"] = ["the rightmost shape", "the shape furthest to the right"]
    else:
        options["position"] = ["the shape in the middle", "the middle one of the three shapes"]
    single = []
    if sum(other.colour == obj.colour for other in objects) == 1:
        single.append(f"the {obj.colour} shape")
    if sum(other.shape == obj.shape for other in objects) == 1:
        single.append(f"the {obj.shape}")
    if sum(other.size == obj.size for other in objects) == 1:
        single.append(f"the {obj.size} shape")
    if single:
        options["one_attribute"] = single
    kinds = sorted(options)
    kind = kinds[int(rng.integers(len(kinds)))]
    return kind, options[kind][int(rng.integers(len(options[kind])))]
