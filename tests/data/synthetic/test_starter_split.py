import hashlib
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmcascade.data.records import TrainingRecord, read_records
from mmcascade.data.synthetic.starter_split import build_starter_data, carve_validation

TASKS = {"caption_to_image", "image_to_caption", "vqa", "textile_label", "digit_label"}
SCALE = 0.02
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("starter") / "data"
    return out, build_starter_data(out, seed=0, scale=SCALE)


@pytest.fixture(scope="module")
def records(built: tuple[Path, dict]) -> dict[str, list[TrainingRecord]]:
    out, _ = built
    return {split: list(read_records(out / f"{split}.jsonl")) for split in ("train", "heldout")}


def images_of(records: list[TrainingRecord]) -> set[Path]:
    return {
        Path(image)
        for record in records
        for item in (record.query, record.positive, *record.negatives)
        for image in item.images
    }


def folder_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_build_writes_the_files_and_the_counts_match_the_manifest(built, records) -> None:
    out, manifest = built
    assert sorted(path.name for path in out.iterdir()) == ["heldout.jsonl", "images", "manifest.json", "train.jsonl"]
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["seed"] == 0 and manifest["scale"] == SCALE
    assert {"easy-vqa", "conformal-clip-data", "sklearn-digits"} <= set(manifest["sources"])
    assert all(source["version"] not in ("", "unknown") for source in manifest["sources"].values())
    for split, split_records in records.items():
        counts = manifest["counts"][split]
        assert counts["records"] == len(split_records)
        by_task = Counter((record.meta["task"], record.meta["kind"]) for record in split_records)
        assert by_task == Counter(
            {(task, kind): n for task, kinds in counts["by_task"].items() for kind, n in kinds.items()}
        )
        assert set(counts["by_task"]) == TASKS
        pngs = set((out / "images" / split).rglob("*.png"))
        assert counts["images"] == len(pngs) == len(images_of(split_records))  # no file written twice, none unused
    train_by_task = manifest["counts"]["train"]["by_task"]
    compositional = (
        train_by_task["caption_to_image"]["compositional"] + train_by_task["image_to_caption"]["compositional"]
    )
    other_tasks = [
        sum(kinds.values())
        for task, kinds in train_by_task.items()
        if task not in ("caption_to_image", "image_to_caption")
    ]
    assert compositional > max(other_tasks) and compositional > manifest["counts"]["train"]["records"] / 3


def test_every_image_exists_inside_the_folder_and_opens(built, records) -> None:
    out, _ = built
    for split, split_records in records.items():
        for path in images_of(split_records):
            assert path.is_file() and path.is_relative_to(out / "images" / split)
            with Image.open(path) as image:
                assert image.format == "PNG" and image.mode == "RGB"
    for line in (out / "train.jsonl").read_text().splitlines()[:20]:
        sides = [value for key, value in json.loads(line).items() if key in ("query", "positive")]
        assert all(not side.get("image", "x").startswith("/") for side in sides)  # relative: the folder can move


def test_train_and_heldout_share_no_image_file_or_pixels(records) -> None:
    def pixels(paths: set[Path]) -> set[bytes]:
        return {np.asarray(Image.open(path).convert("RGB")).tobytes() for path in paths}

    train, heldout = images_of(records["train"]), images_of(records["heldout"])
    assert train and heldout and not train & heldout
    assert not pixels(train) & pixels(heldout)
    sources = {split: {r.meta["source"] for r in records[split] if "source" in r.meta} for split in records}
    assert not sources["train"] & sources["heldout"]
    assert all(s.startswith("easy-vqa/test/") for s in sources["heldout"] if s.startswith("easy-vqa"))


def test_heldout_scene_configurations_are_not_train_queries_or_positives(records) -> None:
    def signature(record: TrainingRecord) -> tuple:
        objects = record.meta["scene"]
        if len(objects) == 1:
            return tuple(objects[0].values())
        return tuple((obj["shape"], obj["colour"], obj["size"]) for obj in objects)

    def signatures(split: str) -> set[tuple]:
        return {signature(record) for record in records[split] if "scene" in record.meta}

    assert signatures("heldout") and not signatures("train") & signatures("heldout")


def test_records_carry_instructions_task_meta_and_sensible_negatives(records) -> None:
    for split_records in records.values():
        for record in split_records:
            assert record.meta["task"] in TASKS and record.meta["kind"] in ("simple", "compositional")
            assert record.query.instruction and record.positive.instruction
            assert all(negative.instruction == record.positive.instruction for negative in record.negatives)
            assert record.negatives, record
            texts = [negative.text for negative in record.negatives if negative.text is not None]
            assert record.positive.text not in texts
            task = record.meta["task"]
            if task == "caption_to_image":
                assert record.query.text and not record.query.images and len(record.negatives) == 3
                assert len(record.meta["negative_edits"]) == 3
            if task == "image_to_caption":
                assert len(record.query.images) == 1 and len(set(texts)) == len(texts) == 3
            if task == "vqa":
                assert record.query.text.endswith("?") and len(record.query.images) == 1
                kinds = {"circle", "rectangle", "triangle"}, {"yes", "no"}
                for group in kinds:
                    assert (record.positive.text in group) == all(text in group for text in texts)
            if task == "textile_label":
                defect = {"nominal": "no defect", "local": "a local defect", "global": "a global defect"}
                assert record.positive.text == f"a textile with {defect[record.meta['label']]}" and len(texts) == 2
            if task == "digit_label":
                assert record.positive.text == f"the digit {DIGIT_NAMES[int(record.meta['label'])]}" and len(texts) == 3


def test_same_seed_gives_identical_files_and_another_seed_differs(built, tmp_path: Path) -> None:
    out, _ = built
    again = tmp_path / "again"
    build_starter_data(again, seed=0, scale=SCALE)
    for name in ("train.jsonl", "heldout.jsonl", "manifest.json"):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name
    assert folder_digest(again) == folder_digest(out)
    other = tmp_path / "other"
    build_starter_data(other, seed=1, scale=SCALE)
    assert (other / "train.jsonl").read_bytes() != (out / "train.jsonl").read_bytes()
    assert (other / "heldout.jsonl").read_bytes() != (out / "heldout.jsonl").read_bytes()


def test_rebuild_replaces_an_earlier_build_but_not_a_foreign_folder(tmp_path: Path) -> None:
    out = tmp_path / "data"
    build_starter_data(out, seed=0, scale=0.01)
    (out / "stale.txt").write_text("left over")
    manifest = build_starter_data(out, seed=2, scale=0.01)
    assert not (out / "stale.txt").exists() and manifest["seed"] == 2
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match="refusing to replace"):
        build_starter_data(foreign, scale=0.01)
    assert (foreign / "thesis.tex").read_text() == "precious"


@pytest.mark.parametrize(("seed", "scale"), [(-1, 1.0), (0, 0.0), (0, float("nan")), ("0", 1.0)])
def test_bad_seed_or_scale_is_rejected(tmp_path: Path, seed, scale) -> None:
    with pytest.raises(ValueError, match="seed|scale"):
        build_starter_data(tmp_path / "data", seed=seed, scale=scale)


def test_a_missing_optional_package_names_the_pip_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "easy_vqa", None)  # makes `import easy_vqa` raise ImportError
    with pytest.raises(ImportError, match="pip install easy-vqa conformal-clip-data scikit-learn"):
        build_starter_data(tmp_path / "data", scale=0.01)
    assert not (tmp_path / "data").exists()


def test_the_validation_split_is_stratified_disjoint_and_the_same_every_time(records) -> None:
    train = records["train"]
    rest, validation = carve_validation(train, 7)
    assert Counter(record.meta["task"] for record in validation) == {
        task: 7 for task in {r.meta["task"] for r in train}
    }
    assert len(rest) + len(validation) == len(train)
    assert not {id(record) for record in validation} & {id(record) for record in rest}
    assert carve_validation(list(train), 7)[1] == validation  # seeded by task name, not by call
    with pytest.raises(ValueError, match="per task"):
        carve_validation(train, len(train))
