"""The mini MMEB-V2 benchmark (mmcascade.data.synthetic.mini_benchmark, scripts/build_mini_mmeb.py)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mmcascade.data.synthetic import mini_benchmark, scenes
from mmcascade.data.synthetic.mini_benchmark import (
    ANNOTATIONS,
    DATASET_NAMES,
    DATASETS,
    IMAGE_PLACEHOLDER,
    MMEB_FIELDS,
    VG_CROP,
    build_mini_benchmark,
    default_mini_benchmark_dir,
    ensure_mini_benchmark,
    pixel_digest,
    training_image_overlap,
)
from mmcascade.data.synthetic.mini_benchmark import build as mini_benchmark_build
from mmcascade.data.synthetic.sources import DIGIT_WORDS, TEXTILE_LABELS
from mmcascade.data.synthetic.starter_split import build_starter_data, is_heldout_configuration

pytest.importorskip("easy_vqa")
pytest.importorskip("conformal_clip_data")
pytest.importorskip("sklearn")

REPO = Path(__file__).resolve().parents[3]
STARTER_TRAIN = REPO / "data" / "starter" / "train.jsonl"
SCALE = 0.1
SPECS = {spec.name: spec for spec in DATASETS}
IMAGE_TASKS = [spec.name for spec in DATASETS if spec.modality == "image"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("mini") / "mini-mmeb"
    return out, build_mini_benchmark(out, seed=0, scale=SCALE)


@pytest.fixture(scope="module")
def root(built: tuple[Path, dict[str, Any]]) -> Path:
    return built[0]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def records(root: Path, name: str) -> list[dict[str, Any]]:
    return read_jsonl(root / ANNOTATIONS / name / "test.jsonl")


def metadata(root: Path, name: str) -> list[dict[str, Any]]:
    return read_jsonl(root / "metadata" / f"{name}.jsonl")


def candidate_names(parser: str, record: dict[str, Any]) -> list[str]:
    """Names as VLM2Vec's readers key candidates (image_t2i: paths; image_i2i_vg: path + ':' + text)."""
    if parser == "image_t2i":
        return list(record["tgt_img_path"])
    if parser == "image_i2i_vg":
        return [
            path + ":" + text.strip('"') for path, text in zip(record["tgt_img_path"], record["tgt_text"], strict=True)
        ]
    return list(record["tgt_text"])


def scene_of(entry: dict[str, Any]) -> scenes.Scene:
    return scenes.Scene(
        objects=tuple(scenes.SceneObject(**obj) for obj in entry["objects"]),
        jitter=tuple(tuple(offset) for offset in entry["jitter"]),
        background=tuple(entry["background"]),
    )


def digest_of(path: Path) -> str:
    with Image.open(path) as image:
        return pixel_digest(image)


# ---- layout and record format -------------------------------------------------------------------


def test_yaml_lists_every_dataset_with_its_annotation_files(root: Path) -> None:
    pytest.importorskip("yaml")
    from mmcascade.evaluation.mmeb.config import load_configs

    configs = load_configs(root / "mmeb.yaml")
    assert [config.name for config in configs] == list(DATASET_NAMES)
    assert len(configs) >= 6
    for config in configs:
        spec = SPECS[config.name]
        assert (config.dataset_parser, config.dataset_name, config.dataset_split) == (spec.parser, spec.name, "test")
        assert (config.eval_type, config.meta_task, config.annotations) == (
            spec.eval_type,
            spec.meta_task,
            "annotations",
        )
        assert config.modality == spec.modality
        assert (root / config.image_root).is_dir(), config.image_root
        folder = root / config.annotations / config.dataset_name
        expected = ["queries.jsonl", "corpus.jsonl", "qrels.jsonl"] if spec.modality == "visdoc" else ["test.jsonl"]
        for file_name in expected:
            assert (folder / file_name).is_file(), f"{config.name}: {file_name} missing"
            assert read_jsonl(folder / file_name), f"{config.name}: {file_name} is empty"


def test_image_records_have_exactly_mmeb_fields_and_types(root: Path) -> None:
    for name in IMAGE_TASKS:
        parser = SPECS[name].parser
        for line, record in enumerate(records(root, name), start=1):
            where = f"{name}:{line}"
            assert tuple(record) == MMEB_FIELDS, where
            for key in ("qry_inst", "qry_text", "qry_img_path", "tgt_inst"):
                assert isinstance(record[key], str), where
            for key in ("tgt_text", "tgt_img_path"):
                assert isinstance(record[key], list) and all(isinstance(value, str) for value in record[key]), where
            assert len(record["tgt_text"]) == len(record["tgt_img_path"]) >= 2, where
            image_query = parser != "image_t2i"
            assert bool(record["qry_img_path"]) == image_query, where
            assert record["qry_inst"].startswith(IMAGE_PLACEHOLDER) == image_query, where
            assert IMAGE_PLACEHOLDER not in record["qry_text"], where
            image_candidates = parser in ("image_t2i", "image_i2i_vg")
            assert all(bool(path) == image_candidates for path in record["tgt_img_path"]), where
            assert all(bool(text) != image_candidates for text in record["tgt_text"]), where
            assert record["tgt_inst"].startswith(IMAGE_PLACEHOLDER) == image_candidates, where
            # classification and i2t queries are an image alone; the others carry text
            assert bool(record["qry_text"]) == (parser not in ("image_cls", "image_i2t")), where


def test_every_referenced_image_exists_and_opens(root: Path) -> None:
    for name in IMAGE_TASKS:
        image_root = root / SPECS[name].image_root
        for record in records(root, name):
            for path in [record["qry_img_path"], *record["tgt_img_path"]]:
                if path:
                    assert not Path(path).is_absolute()
                    with Image.open(image_root / path) as image:
                        image.load()
                        assert image.mode == "RGB", path
    docs = SPECS["MiniDocs"]
    for row in read_jsonl(root / ANNOTATIONS / docs.name / "corpus.jsonl"):
        with Image.open(root / docs.image_root / row["image"]) as image:
            image.load()
            assert image.size == mini_benchmark.PAGE_SIZE


def test_candidate_names_are_unique_within_each_list(root: Path) -> None:
    for name in IMAGE_TASKS:
        for line, record in enumerate(records(root, name), start=1):
            names = candidate_names(SPECS[name].parser, record)
            assert len(set(names)) == len(names), f"{name}:{line}: {names}"


def test_counts_match_the_manifest_and_the_readme(built: tuple[Path, dict[str, Any]]) -> None:
    root, manifest = built
    assert json.loads((root / "manifest.json").read_text()) == manifest
    assert manifest["format_version"] == mini_benchmark.FORMAT_VERSION
    assert (manifest["seed"], manifest["scale"]) == (0, SCALE)
    readme = (root / "README.md").read_text()
    for name in DATASET_NAMES:
        info = manifest["datasets"][name]
        assert f"`{name}`" in readme
        if name in IMAGE_TASKS:
            assert info["queries"] == len(records(root, name)) == len(metadata(root, name)) >= 8
    docs = manifest["datasets"]["MiniDocs"]
    assert docs["queries"] == len(read_jsonl(root / ANNOTATIONS / "MiniDocs" / "queries.jsonl"))
    assert docs["corpus"] == len(read_jsonl(root / ANNOTATIONS / "MiniDocs" / "corpus.jsonl"))
    assert manifest["package_versions"]["pillow"]


# ---- ground truth ------------------------------------------------------------------------------------


def test_class_labels_are_first_and_complete(root: Path) -> None:
    from sklearn.datasets import load_digits

    for record, meta in zip(records(root, "MiniTextile-CLS"), metadata(root, "MiniTextile-CLS"), strict=True):
        assert record["tgt_text"][0] == TEXTILE_LABELS[meta["label"]]
        assert sorted(record["tgt_text"]) == sorted(TEXTILE_LABELS.values())
    targets = load_digits().target
    digit_labels = [f"the digit {word}" for word in DIGIT_WORDS]
    for record, meta in zip(records(root, "MiniDigits-CLS"), metadata(root, "MiniDigits-CLS"), strict=True):
        sample = int(meta["source"].removeprefix("sklearn-digits/"))
        assert record["tgt_text"][0] == digit_labels[int(targets[sample])] == digit_labels[int(meta["label"])]
        assert sorted(record["tgt_text"]) == sorted(digit_labels)


def test_vqa_answers_are_first_and_come_from_the_easy_vqa_test_split(root: Path) -> None:
    import easy_vqa

    texts, answers, image_ids = easy_vqa.get_test_questions()
    truth = {(image_id, text): answer for text, answer, image_id in zip(texts, answers, image_ids, strict=True)}
    test_images = easy_vqa.get_test_image_paths()
    image_root = root / SPECS["MiniShapes-VQA"].image_root
    for record, meta in zip(records(root, "MiniShapes-VQA"), metadata(root, "MiniShapes-VQA"), strict=True):
        image_id = int(meta["source"].removeprefix("easy-vqa/test/"))
        assert record["tgt_text"][0] == truth[(image_id, record["qry_text"])]
        assert digest_of(image_root / record["qry_img_path"]) == digest_of(Path(test_images[image_id]))
        assert len(record["tgt_text"]) == {"colour": 8, "shape": 3, "yes_no": 2}[meta["answer_type"]]


def test_scene_retrieval_positives_are_first_and_files_match_their_scenes(root: Path) -> None:
    image_root = root / SPECS["MiniScenes-t2i"].image_root
    for record, meta in zip(records(root, "MiniScenes-t2i"), metadata(root, "MiniScenes-t2i"), strict=True):
        candidates = [scene_of(entry) for entry in meta["candidates"]]
        assert record["qry_text"] == scenes.caption(candidates[0], meta["caption_style"])
        rendered = [pixel_digest(scenes.render(scene)) for scene in candidates]
        assert [digest_of(image_root / path) for path in record["tgt_img_path"]] == rendered
        assert len(set(rendered)) == len(rendered)
        assert len({scene.signature for scene in candidates}) == len(candidates)
    for record, meta in zip(records(root, "MiniScenes-i2t"), metadata(root, "MiniScenes-i2t"), strict=True):
        candidates = [scene_of(entry) for entry in meta["candidates"]]
        assert record["tgt_text"] == [scenes.caption(scene, meta["caption_style"]) for scene in candidates]
        assert digest_of(image_root / record["qry_img_path"]) == pixel_digest(scenes.render(candidates[0]))


def test_grounding_positive_is_the_referred_objects_crop(root: Path) -> None:
    image_root = root / SPECS["MiniScenes-VG"].image_root
    half = VG_CROP // 2
    vg = zip(records(root, "MiniScenes-VG"), metadata(root, "MiniScenes-VG"), strict=True)
    for number, (record, meta) in enumerate(vg):
        scene = scene_of(meta["scene"])
        target = meta["target"]
        with Image.open(image_root / record["qry_img_path"]) as query:
            assert pixel_digest(query) == pixel_digest(scenes.render(scene))
            x, y = scene.centre(target)
            left = min(max(x - half, 0), query.width - VG_CROP)
            top = min(max(y - half, 0), query.height - VG_CROP)
            expected = query.crop((left, top, left + VG_CROP, top + VG_CROP))
        assert digest_of(image_root / record["tgt_img_path"][0]) == pixel_digest(expected)
        assert (meta["candidates"][0]["scene"], meta["candidates"][0]["object"]) == (number, target)
        obj = scene.objects[target]
        # no other candidate looks like the target; the expression names it and nothing else in the scene
        for other in meta["candidates"][1:]:
            assert (other["shape"], other["colour"], other["size"]) != obj.attributes
        expression = record["qry_text"]
        if meta["expression_kind"] == "attributes":
            assert expression == f"the {obj.size} {obj.colour} {obj.shape}"
        elif meta["expression_kind"] == "one_attribute":
            word = expression.removeprefix("the ").removesuffix(" shape")
            assert sum(word in (o.colour, o.shape, o.size) for o in scene.objects) == 1
            assert word in obj.attributes


def test_scenes_use_only_heldout_configurations(root: Path) -> None:
    shown: list[scenes.Scene] = []
    for name in ("MiniScenes-t2i", "MiniScenes-i2t"):
        for meta in metadata(root, name):
            shown += [scene_of(entry) for entry in meta["candidates"]]
    shown += [scene_of(meta["scene"]) for meta in metadata(root, "MiniScenes-VG")]
    assert len(shown) > 100
    trained = [scene.signature for scene in shown if not is_heldout_configuration(scene)]
    assert not trained, f"scenes with configurations the starter trained on: {trained[:3]}"


def test_visdoc_qrels_are_graded_and_reference_existing_ids(root: Path) -> None:
    folder = root / ANNOTATIONS / "MiniDocs"
    queries = read_jsonl(folder / "queries.jsonl")
    corpus = read_jsonl(folder / "corpus.jsonl")
    qrels = read_jsonl(folder / "qrels.jsonl")
    assert all(tuple(row) == ("query-id", "query") for row in queries)
    assert all(tuple(row) == ("corpus-id", "image") for row in corpus)
    assert all(tuple(row) == ("query-id", "corpus-id", "score") for row in qrels)
    query_ids = [row["query-id"] for row in queries]
    corpus_ids = [row["corpus-id"] for row in corpus]
    assert len(set(query_ids)) == len(query_ids) and len(set(corpus_ids)) == len(corpus_ids)
    assert len({row["query"] for row in queries}) == len(queries)
    grades: dict[str, list[int]] = {query_id: [] for query_id in query_ids}
    for row in qrels:
        assert row["query-id"] in grades and row["corpus-id"] in corpus_ids, row
        assert isinstance(row["score"], int) and row["score"] in (1, 2), row
        grades[row["query-id"]].append(row["score"])
    for query_id, scores in grades.items():
        assert sorted(scores) == [1, 1, 2], query_id  # the answer page, and the object's two other pages
    answers = {meta["query-id"]: meta["page"] for meta in metadata(root, "MiniDocs")}
    for row in qrels:
        assert (row["score"] == 2) == (answers[row["query-id"]] == row["corpus-id"])


def test_same_seed_gives_identical_files(root: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    build_mini_benchmark(again, seed=0, scale=SCALE)

    def files(folder: Path) -> dict[str, bytes]:
        return {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()}

    first, second = files(root), files(again)
    assert sorted(first) == sorted(second)
    different = [name for name in first if first[name] != second[name]]
    assert not different, f"differ between two builds with the same seed: {different[:5]}"


# ---- no starter training image ------------------------------------------------------------------------


@pytest.mark.skipif(not STARTER_TRAIN.is_file(), reason="no local starter data (data/starter/train.jsonl)")
def test_no_image_of_the_local_starter_training_data(root: Path) -> None:
    assert training_image_overlap(root, STARTER_TRAIN) == 0
    trained_sources = {
        record.get("meta", {}).get("source") for record in read_jsonl(STARTER_TRAIN) if record.get("meta")
    } - {None}
    ours = {meta["source"] for name in DATASET_NAMES for meta in metadata(root, name) if "source" in meta}
    assert ours and not ours & trained_sources


@pytest.mark.slow
def test_no_image_of_a_fresh_starter_training_build(root: Path, tmp_path: Path) -> None:
    starter = tmp_path / "starter"
    build_starter_data(starter, seed=mini_benchmark.STARTER_SEED, scale=mini_benchmark.STARTER_SCALE)
    assert training_image_overlap(root, starter / "train.jsonl") == 0
    assert training_image_overlap(root, starter / "heldout.jsonl") > 0  # the check does find shared pixels


def test_overlap_counts_shared_pixels(root: Path, tmp_path: Path) -> None:
    image_root = root / SPECS["MiniDigits-CLS"].image_root
    shared = records(root, "MiniDigits-CLS")[0]["qry_img_path"]
    with Image.open(image_root / shared) as image:
        image.save(tmp_path / "copy.png")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "black.png")
    train = tmp_path / "train.jsonl"
    side = {"instruction": "x"}
    lines = [
        {"query": {**side, "image": "copy.png"}, "positive": {**side, "text": "a"}},
        {"query": {**side, "text": "b"}, "positive": {**side, "image": "black.png"}, "negatives": [{"text": "c"}]},
    ]
    train.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert training_image_overlap(root, train) == 1
    with pytest.raises(FileNotFoundError):
        training_image_overlap(root, tmp_path / "missing.jsonl")


# ---- entry points ----------------------------------------------------------------------------------------


def test_default_dir_is_under_the_cache_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MMCASCADE_CACHE", str(tmp_path))
    assert default_mini_benchmark_dir() == tmp_path / "mini-mmeb-v1"
    monkeypatch.delenv("MMCASCADE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_mini_benchmark_dir() == tmp_path / "xdg" / "mmcascade" / "mini-mmeb-v1"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_mini_benchmark_dir() == Path.home() / ".cache" / "mmcascade" / "mini-mmeb-v1"


def test_ensure_builds_once_and_rebuilds_a_stale_format(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[Path] = []

    def fake_build(out_dir: Path, **kwargs: Any) -> dict[str, Any]:
        calls.append(Path(out_dir))
        out_dir.mkdir(parents=True, exist_ok=True)
        manifest = {"name": mini_benchmark.BENCHMARK_NAME, "format_version": mini_benchmark.FORMAT_VERSION}
        (out_dir / "manifest.json").write_text(json.dumps(manifest))
        (out_dir / "mmeb.yaml").write_text("{}\n")
        return manifest

    monkeypatch.setattr(mini_benchmark_build, "build_mini_benchmark", fake_build)
    monkeypatch.setenv("MMCASCADE_CACHE", str(tmp_path))
    folder = ensure_mini_benchmark()
    assert folder == tmp_path / "mini-mmeb-v1" and calls == [folder]
    assert ensure_mini_benchmark() == folder and len(calls) == 1
    (folder / "manifest.json").write_text(json.dumps({"name": mini_benchmark.BENCHMARK_NAME, "format_version": 0}))
    assert ensure_mini_benchmark(folder) == folder and len(calls) == 2


def test_refuses_bad_arguments_and_foreign_folders(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="seed"):
        build_mini_benchmark(tmp_path / "a", seed=-1)
    with pytest.raises(ValueError, match="scale"):
        build_mini_benchmark(tmp_path / "a", scale=0)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="refusing"):
        build_mini_benchmark(foreign, scale=SCALE)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_cli_reports_bad_arguments(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("build_mini_mmeb", REPO / "scripts" / "build_mini_mmeb.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--out", str(tmp_path / "x"), "--scale", "-1"]) == 1
    assert "scale" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
