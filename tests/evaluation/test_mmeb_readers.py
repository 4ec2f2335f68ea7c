"""MMEB-V2 readers against fixtures shaped like the real records (field names and types as on the Hub)."""

from __future__ import annotations

import hashlib
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from mmcascade.evaluation.mmeb.config import DatasetConfig, load_configs, parse_entry
from mmcascade.evaluation.mmeb.frames import sample_frame_indices, sample_frames
from mmcascade.evaluation.mmeb.readers import read_dataset

IMAGE_ROOT = "image-tasks/MMEB/"


def write_jsonl(path: Path, rows: list[Any], raw_lines: tuple[str, ...] = ()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(row) for row in rows] + list(raw_lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def touch(root: Path, *relative: str) -> None:
    for name in relative:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x89PNG not decoded")  # readers only check existence


def config(name: str, parser: str, **entry: Any) -> DatasetConfig:
    entry = {"dataset_parser": parser, "dataset_name": name, "annotations": "annotations", **entry}
    return parse_entry(name, entry)


# -- real-shaped records (MMEB_Test_Instruct; label lists shortened) --------------------------------------


def imagenet_record(image: str, labels: list[str]) -> dict[str, Any]:
    return {
        "qry_inst": "<|image_1|>\nRepresent the given image for classification",
        "qry_text": "",
        "qry_img_path": image,
        "tgt_inst": "Represent the class label: ",
        "tgt_text": labels,
        "tgt_img_path": [""] * len(labels),
    }


def mscoco_t2i_record(caption: str, images: list[str]) -> dict[str, Any]:
    return {
        "qry_inst": "Find me an everyday image that matches the given caption:",
        "qry_text": caption,
        "qry_img_path": "",
        "tgt_inst": "<|image_1|>\nRepresent the given image.",
        "tgt_text": [""] * len(images),
        "tgt_img_path": images,
    }


# -- image tasks ------------------------------------------------------------------------------------------


def test_image_cls_local_names_labels_items(tmp_path: Path) -> None:
    touch(tmp_path / IMAGE_ROOT, "ImageNet-1K/ILSVRC2012_val_00000001.JPEG", "ImageNet-1K/ILSVRC2012_val_00000002.JPEG")
    write_jsonl(
        tmp_path / "annotations/ImageNet-1K/test.jsonl",
        [
            imagenet_record("ImageNet-1K/ILSVRC2012_val_00000001.JPEG", ["snake", "tench", "goldfish", "snake"]),
            imagenet_record("ImageNet-1K/ILSVRC2012_val_00000002.JPEG", ["goldfish", "great white shark", "tench"]),
        ],
    )
    dataset = read_dataset(config("ImageNet-1K", "image_cls", image_root=IMAGE_ROOT, eval_type="local"), tmp_path)

    assert dataset.problems == []
    assert (dataset.name, dataset.modality, dataset.meta_task, dataset.eval_type) == (
        "ImageNet-1K",
        "image",
        "CLS",
        "local",
    )
    first, second = dataset.queries
    assert first.query_id == "0" and first.labels == ("snake",)
    assert first.candidate_names == ("snake", "tench", "goldfish", "snake")  # repeats kept, as VLM2Vec
    assert second.labels == ("goldfish",)
    assert first.item == {
        "instruction": "Represent the given image for classification",  # <|image_1|> removed, stripped
        "image": str(tmp_path / IMAGE_ROOT / "ImageNet-1K/ILSVRC2012_val_00000001.JPEG"),
    }
    # The pool: every query's candidates, de-duplicated by name in first-seen order. VLM2Vec V2 encodes
    # cls candidates as tgt_text alone (image_cls_dataset.py), so no instruction.
    assert list(dataset.candidates) == ["snake", "tench", "goldfish", "great white shark"]
    assert dataset.candidates["tench"] == {"text": "tench"}


def test_v1_record_without_instructions(tmp_path: Path) -> None:
    touch(tmp_path / "img", "N24News/1.jpg")
    write_jsonl(
        tmp_path / "annotations/N24News/test.jsonl",
        [
            {
                "qry_text": "<|image_1|>\nRepresent the given news image with the following caption for domain classification: A view of the city.\n",
                "qry_img_path": "N24News/1.jpg",
                "tgt_text": ["Travel", "Sports", "Food"],
                "tgt_img_path": ["", "", ""],
            }
        ],
    )
    dataset = read_dataset(config("N24News", "image_cls", image_root="img", eval_type="local"), tmp_path)
    (query,) = dataset.queries
    assert "instruction" not in query.item
    assert query.item["text"].startswith("Represent the given news image")
    assert query.labels == ("Travel",) and query.candidate_names == ("Travel", "Sports", "Food")


def test_t2i_names_are_image_paths_and_missing_images(tmp_path: Path) -> None:
    media = tmp_path / IMAGE_ROOT
    touch(media, "MSCOCO_t2i/Images/COCO_val2014_000000000042.jpg", "MSCOCO_t2i/Images/COCO_val2014_000000000073.jpg")
    good = "MSCOCO_t2i/Images/COCO_val2014_000000000042.jpg"
    other = "MSCOCO_t2i/Images/COCO_val2014_000000000073.jpg"
    absent = "MSCOCO_t2i/Images/COCO_val2014_000000000099.jpg"
    write_jsonl(
        tmp_path / "annotations/MSCOCO_t2i/test.jsonl",
        [
            mscoco_t2i_record("A man riding a wave on top of a surfboard.", [good, absent, other]),
            mscoco_t2i_record("A cat on a sofa.", [absent, good]),  # its positive is missing
        ],
    )
    dataset = read_dataset(config("MSCOCO_t2i", "image_t2i", image_root=IMAGE_ROOT, eval_type="local"), tmp_path)

    (query,) = dataset.queries
    assert query.item == {
        "instruction": "Find me an everyday image that matches the given caption:",
        "text": "A man riding a wave on top of a surfboard.",
    }
    assert query.labels == (good,)
    assert query.candidate_names == (good, other)  # the missing image is dropped from the list
    assert dataset.candidates[good] == {"instruction": "Represent the given image.", "image": str(media / good)}
    assert dataset.problems == [
        f"test.jsonl line 1: candidate {absent!r} dropped (candidate image not found: {media / absent})",
        f"test.jsonl line 2: query dropped (its positive, the first candidate, was dropped: candidate image not found: {media / absent})",
    ]


def test_i2i_vg_names_are_path_colon_caption(tmp_path: Path) -> None:
    media = tmp_path / IMAGE_ROOT
    touch(media, "RefCOCO-Matching/query.jpg", "RefCOCO-Matching/crop.jpg", "CIRR/q.png", "CIRR/a.png", "CIRR/b.png")
    write_jsonl(
        tmp_path / "annotations/RefCOCO-Matching/test.jsonl",
        [
            {  # two objects of one image: the caption keeps their names apart
                "qry_inst": "<|image_1|>\nSelect the portion of the image that follows the language expressions:",
                "qry_text": '"man in the blue shirt"',
                "qry_img_path": "RefCOCO-Matching/query.jpg",
                "tgt_inst": "<|image_1|>\nSelect the portion of the image that follows the language expressions:",
                "tgt_text": ['"man in the blue shirt"', '"woman on the left"'],
                "tgt_img_path": ["RefCOCO-Matching/crop.jpg", "RefCOCO-Matching/crop.jpg"],
            }
        ],
    )
    write_jsonl(
        tmp_path / "annotations/CIRR/test.jsonl",
        [
            {
                "qry_inst": "<|image_1|>\nGiven an image, find a similar everyday image with the described changes:",
                "qry_text": "has two children instead of one",
                "qry_img_path": "CIRR/q.png",
                "tgt_inst": "<|image_1|>\nRepresent the given image.",
                "tgt_text": ["", ""],
                "tgt_img_path": ["CIRR/a.png", "CIRR/b.png"],
            }
        ],
    )
    matching = read_dataset(
        config("RefCOCO-Matching", "image_i2i_vg", image_root=IMAGE_ROOT, eval_type="local"), tmp_path
    )
    assert matching.meta_task == "VG"
    (query,) = matching.queries
    assert query.candidate_names == (
        "RefCOCO-Matching/crop.jpg:man in the blue shirt",
        "RefCOCO-Matching/crop.jpg:woman on the left",
    )
    assert query.labels == ("RefCOCO-Matching/crop.jpg:man in the blue shirt",)
    assert matching.candidates[query.labels[0]]["text"] == '"man in the blue shirt"'
    assert query.item["image"] == str(media / "RefCOCO-Matching/query.jpg")

    cirr = read_dataset(config("CIRR", "image_i2i_vg", image_root=IMAGE_ROOT, eval_type="local"), tmp_path)
    assert cirr.meta_task == "RET"
    assert cirr.queries[0].candidate_names == ("CIRR/a.png:", "CIRR/b.png:")
    assert cirr.candidates["CIRR/b.png:"] == {
        "instruction": "Represent the given image.",
        "image": str(media / "CIRR/b.png"),
    }


def test_global_pool_is_deduplicated_first_seen(tmp_path: Path) -> None:
    touch(tmp_path, "a.jpg", "b.jpg")
    write_jsonl(
        tmp_path / "annotations/OK-VQA/test.jsonl",
        [
            {**imagenet_record("a.jpg", ["yes", "no", "red"]), "qry_text": "Is it raining?"},
            {**imagenet_record("b.jpg", ["blue", "red", "yes"]), "qry_text": "What colour is it?"},
            {**imagenet_record("gone.jpg", ["green", "yes"]), "qry_text": "And now?"},  # query image missing
        ],
    )
    dataset = read_dataset(config("OK-VQA", "image_qa", eval_type="global"), tmp_path)
    assert [q.candidate_names for q in dataset.queries] == [None, None]
    assert [q.labels for q in dataset.queries] == [("yes",), ("blue",)]
    # A dropped query's candidates stay in a global pool: they are distractors for the others.
    assert list(dataset.candidates) == ["yes", "no", "red", "blue", "green"]
    assert len(dataset.problems) == 1 and dataset.problems[0].startswith("test.jsonl line 3: query dropped")


def test_bad_image_records_are_listed_not_fatal(tmp_path: Path) -> None:
    touch(tmp_path, "ok.jpg")
    write_jsonl(
        tmp_path / "annotations/VOC2007/test.jsonl",
        [
            imagenet_record("ok.jpg", ["dog", "cat"]),  # line 1: fine
            imagenet_record("gone.jpg", ["dog", "cat"]),  # line 2: missing query image
            imagenet_record("ok.jpg", []),  # line 3: empty candidate list
            {**imagenet_record("ok.jpg", ["dog"]), "tgt_text": "dog"},  # line 4: not a list
            {"qry_text": "", "tgt_text": ["dog"], "tgt_img_path": [""]},  # line 5: no qry_img_path
            ["not", "an", "object"],  # line 6
            imagenet_record("ok.jpg", ["", "cat"]),  # line 7: the positive has no text
        ],
        raw_lines=("{broken json",),  # line 8
    )
    dataset = read_dataset(config("VOC2007", "image_cls", eval_type="local"), tmp_path)
    assert [q.query_id for q in dataset.queries] == ["0"]
    problems = "\n".join(dataset.problems)
    assert "test.jsonl line 2: query dropped (query image not found:" in problems
    assert "test.jsonl line 3: empty candidate list (tgt_text)" in problems
    assert "test.jsonl line 4: tgt_text must be a list of strings, got str" in problems
    assert "test.jsonl line 5: missing field 'qry_img_path'" in problems
    assert "test.jsonl line 6: expected a JSON object, got list" in problems
    assert "test.jsonl line 7: query dropped (its positive, the first candidate, was dropped" in problems
    assert "test.jsonl line 8: not valid JSON" in problems
    assert len(dataset.problems) == 8  # line 7 also reports the dropped candidate ''


def test_num_sample_per_subset_keeps_the_first_records(tmp_path: Path) -> None:
    touch(tmp_path, "a.jpg")
    write_jsonl(tmp_path / "annotations/SUN397/test.jsonl", [imagenet_record("a.jpg", [str(i)]) for i in range(5)])
    dataset = read_dataset(config("SUN397", "image_cls", eval_type="local", num_sample_per_subset="2"), tmp_path)
    assert [q.labels for q in dataset.queries] == [("0",), ("1",)]


# -- visual documents (BEIR) ------------------------------------------------------------------------------


def write_beir(folder: Path, queries: list[dict], corpus: list[dict], qrels: list[dict]) -> None:
    write_jsonl(folder / "queries.jsonl", queries)
    write_jsonl(folder / "corpus.jsonl", corpus)
    write_jsonl(folder / "qrels.jsonl", qrels)


def test_vidore_graded_qrels_labels_and_rel_scores(tmp_path: Path) -> None:
    name = "ViDoRe_economics_reports_v2"
    root = "visdoc-tasks/economics_reports_v2"
    touch(tmp_path / root, "pages/0.png", "pages/1.png", "pages/2.png")
    write_beir(
        tmp_path / "annotations" / name,
        queries=[
            {"query-id": 10, "query": "What was GDP growth in 2023?", "language": "english"},
            {"query-id": 11, "query": "Quelle était la croissance ?", "language": "french"},  # filtered out
            {"query-id": 12, "query": "Inflation outlook?", "language": "english"},  # no qrels
            {"query-id": 13, "query": "Which page is missing?", "language": "english"},  # only a missing doc
        ],
        corpus=[
            {"corpus-id": 0, "image": "pages/0.png"},
            {"corpus-id": 1, "image": "pages/1.png"},
            {"corpus-id": 2, "image": "pages/2.png"},
            {"corpus-id": 3, "image": "pages/3.png"},  # file absent
        ],
        qrels=[
            {"query-id": 10, "corpus-id": 2, "score": 1},
            {"query-id": 10, "corpus-id": 0, "score": 2},
            {"query-id": 10, "corpus-id": 2, "score": 3},  # duplicated pair: keeps the max grade
            {"query-id": 10, "corpus-id": 1, "score": 0},  # not relevant
            {"query-id": 11, "corpus-id": 1, "score": 1},
            {"query-id": 13, "corpus-id": 3, "score": 1},
            {"query-id": 10, "corpus-id": 9, "score": 2},  # not in the corpus
        ],
    )
    dataset = read_dataset(config(name, "vidore", image_root=root), tmp_path)

    assert dataset.modality == "visdoc" and dataset.main_metric == "ndcg_linear@5"
    (query,) = dataset.queries
    assert query.query_id == "10"
    assert query.labels == ("2", "0") and query.rel_scores == (3, 2)  # first-seen qrel order, aligned
    assert query.candidate_names is None
    assert query.item == {
        "instruction": "Find a document image that matches the given query:",
        "text": "What was GDP growth in 2023?",
    }
    assert list(dataset.candidates) == ["0", "1", "2"]
    assert dataset.candidates["1"] == {
        "image": str(tmp_path / root / "pages/1.png"),
        "instruction": "Understand the content of the provided document image.",
    }
    problems = "\n".join(dataset.problems)
    assert "corpus.jsonl line 4: document dropped (page image not found:" in problems
    assert "queries.jsonl line 1: query '10': relevant documents not in the corpus, ignored: ['9']" in problems
    assert "queries.jsonl line 3: query '12' dropped (no qrel with score > 0)" in problems
    assert "queries.jsonl line 4: query '13' dropped (none of its relevant documents is in the corpus)" in problems

    multilingual = f"{name}_multilingual"
    write_beir(
        tmp_path / "annotations" / multilingual,
        queries=[
            {"query-id": 10, "query": "GDP?", "language": "english"},
            {"query-id": 11, "query": "PIB ?", "language": "french"},
        ],
        corpus=[{"corpus-id": 1, "image": "pages/1.png"}],
        qrels=[{"query-id": 10, "corpus-id": 1, "score": 1}, {"query-id": 11, "corpus-id": 1, "score": 1}],
    )
    every_language = read_dataset(config(multilingual, "vidore", image_root=root), tmp_path)
    assert [q.query_id for q in every_language.queries] == ["10", "11"]


class FakeDatasets(types.ModuleType):
    """Stands in for the `datasets` package: {(path, config): {split: rows}} in memory, calls recorded."""

    def __init__(self, tables: dict[tuple[str, str | None], dict[str, list[dict[str, Any]]]]):
        super().__init__("datasets")
        self.tables = tables
        self.calls: list[tuple[str, str | None, str | None]] = []

    def load_dataset(self, path: str, name: str | None = None, split: str | None = None) -> Any:
        self.calls.append((path, name, split))
        splits = self.tables[(path, name)]
        if split is None:
            return splits
        if split not in splits:
            raise ValueError(f"Unknown split {split!r}. Should be one of {list(splits)}.")
        return splits[split]


def test_hub_visdoc_bytes_are_written_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub_id = "openbmb/VisRAG-Ret-Test-ChartQA"
    page = "multi_col_100110_a_very_long_chart_file_name_that_goes_on_and_on_and_on.png"
    fake = FakeDatasets(
        {
            (hub_id, "queries"): {"train": [{"query-id": "q1", "query": "What is the peak value?"}]},
            (hub_id, "corpus"): {
                "train": [
                    {"corpus-id": page, "image": {"bytes": b"PNG-bytes-1", "path": None}},
                    {"corpus-id": "two.png", "image": {"bytes": b"PNG-bytes-2", "path": "two.png"}},
                ]
            },
            (hub_id, "qrels"): {"train": [{"query-id": "q1", "corpus-id": page, "score": 1}]},
        }
    )
    monkeypatch.setitem(sys.modules, "datasets", fake)
    media = "visdoc-tasks/VisRAG_ChartQA"
    cfg = config("VisRAG_ChartQA", "visrag", annotations=hub_id, image_root=media, dataset_split="train")
    dataset = read_dataset(cfg, tmp_path)

    short = f"{page[:-4][:50]}_{hashlib.md5(page.encode()).hexdigest()[:8]}.png"  # VLM2Vec's VisRAG file name
    written = tmp_path / media / short
    assert written.read_bytes() == b"PNG-bytes-1"
    assert dataset.candidates[page]["image"] == str(written)
    assert dataset.queries[0].labels == (page,) and dataset.queries[0].rel_scores == (1,)
    assert fake.calls == [(hub_id, "queries", "train"), (hub_id, "corpus", "train"), (hub_id, "qrels", "train")]
    assert dataset.problems == []

    written.write_bytes(b"kept")  # an existing file is not rewritten
    read_dataset(cfg, tmp_path)
    assert written.read_bytes() == b"kept"

    # VLM2Vec's visdoc.yaml gives no split (default "test"); VisRAG has only "train": that one is read.
    fallback = read_dataset(config("VisRAG_ChartQA", "visrag", annotations=hub_id, image_root=media), tmp_path)
    assert [q.query_id for q in fallback.queries] == ["q1"]
    assert f"{hub_id}[queries]: no split 'test'; read its only split 'train'" in fallback.problems


def test_hub_vidore_pages_are_named_by_corpus_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub_id = "vidore/docvqa_test_subsampled_beir"
    fake = FakeDatasets(
        {
            (hub_id, "queries"): {"test": [{"query-id": 0, "query": "What is the date?"}]},
            (hub_id, "corpus"): {"test": [{"corpus-id": 7, "image": {"bytes": b"page-7", "path": "x.png"}}]},
            (hub_id, "qrels"): {"test": [{"query-id": 0, "corpus-id": 7, "score": 1}]},
        }
    )
    monkeypatch.setitem(sys.modules, "datasets", fake)
    dataset = read_dataset(
        config("ViDoRe_docvqa", "vidore", annotations=hub_id, image_root="visdoc-tasks/ViDoRe_docvqa"), tmp_path
    )
    assert (tmp_path / "visdoc-tasks/ViDoRe_docvqa/7.png").read_bytes() == b"page-7"
    assert dataset.queries[0].labels == ("7",)


def test_hub_image_task_uses_dataset_name_as_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    touch(tmp_path / IMAGE_ROOT, "Country211/1.jpg")
    record = imagenet_record("Country211/1.jpg", ["France", "Peru"])
    fake = FakeDatasets({("ziyjiang/MMEB_Test_Instruct", "Country211"): {"test": [record]}})
    monkeypatch.setitem(sys.modules, "datasets", fake)
    entry = {
        "dataset_parser": "image_cls",
        "dataset_name": "Country211",
        "image_root": IMAGE_ROOT,
        "eval_type": "local",
    }
    dataset = read_dataset(parse_entry("Country211", entry), tmp_path)  # no 'annotations': the MMEB default
    assert fake.calls == [("ziyjiang/MMEB_Test_Instruct", "Country211", "test")]
    assert dataset.queries[0].labels == ("France",)


def test_hub_without_datasets_package_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails
    with pytest.raises(ValueError, match="pip install datasets"):
        read_dataset(config("ImageNet-1K", "image_cls", annotations="ziyjiang/MMEB_Test_Instruct"), tmp_path)


# -- video ------------------------------------------------------------------------------------------------


def make_frames(folder: Path, count: int, pattern: str = "frame_{:04d}.jpg") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(1, count + 1):
        (folder / pattern.format(index)).write_bytes(b"jpg")


def test_sample_frame_indices_follow_vlm2vec() -> None:
    assert sample_frame_indices(64, 8) == [0, 9, 18, 27, 36, 45, 54, 63]
    assert sample_frame_indices(10, 8) == [0, 1, 2, 3, 5, 6, 7, 9]  # linspace truncated (dtype=int)
    assert sample_frame_indices(8, 8) == list(range(8))
    assert sample_frame_indices(3, 8) == [0, 1, 2, 2, 2, 2, 2, 2]  # fewer frames: the last one repeats
    assert sample_frame_indices(0, 8) == []


def test_frames_sort_naturally_and_skip_other_files(tmp_path: Path) -> None:
    folder = tmp_path / "video7"
    make_frames(folder, 12, pattern="{}.JPG")
    (folder / "notes.txt").write_text("x")
    (folder / "sub.png").mkdir()  # a folder, not a frame
    frames = sample_frames(folder, 4)
    # linspace(0, 11, 4) -> 0, 3.67, 7.33, 11 -> frames 1, 4, 8, 12 (natural order: 2 before 10)
    assert [Path(frame).name for frame in frames] == ["1.JPG", "4.JPG", "8.JPG", "12.JPG"]
    assert sample_frames(tmp_path / "absent", 4) == []


def test_video_retrieval_msrvtt_and_msvd_records(tmp_path: Path) -> None:
    frame_root = "video-tasks/frames/video_ret/MSR-VTT/"
    make_frames(tmp_path / frame_root / "video7020", 20)
    make_frames(tmp_path / frame_root / "video7021", 5)
    write_jsonl(
        tmp_path / "annotations/MSR-VTT/test.jsonl",
        [
            {"video_id": "video7020", "video": "video7020.mp4", "caption": "a woman creating a fondant baby"},
            {"video_id": "video7021", "video": "video7021.mp4", "caption": ["a boy plays a video game", "kid gaming"]},
            {"video_id": "video7020", "video": "video7020.mp4", "caption": "someone decorates a cake"},
            {"video_id": "video9999", "video": "video9999.mp4", "caption": "frames were never extracted"},
            {"video": "video7021.mp4"},  # no caption
        ],
    )
    cfg = config("MSR-VTT", "video_ret", frame_root=frame_root, num_frames=4, max_frames_saved=64)
    dataset = read_dataset(cfg, tmp_path)

    assert dataset.modality == "video" and dataset.eval_type == "global"
    assert [(q.query_id, q.labels) for q in dataset.queries] == [
        ("0", ("video7020",)),
        ("1", ("video7021",)),
        ("2", ("video7020",)),
    ]
    assert dataset.queries[1].item == {
        "text": "a boy plays a video game",  # a caption list gives one query, its first caption (as MSVD)
        "instruction": "Find a video that contains the following visual content:",
    }
    assert list(dataset.candidates) == ["video7020", "video7021"]
    video = dataset.candidates["video7020"]
    assert video["instruction"] == "Understand the content of the provided video."
    # 20 frames, 4 kept: linspace(0, 19, 4) -> 0, 6.33, 12.67, 19 -> truncated 0, 6, 12, 19
    assert [Path(p).name for p in video["images"]] == [
        "frame_0001.jpg",
        "frame_0007.jpg",
        "frame_0013.jpg",
        "frame_0020.jpg",
    ]
    assert len(dataset.candidates["video7021"]["images"]) == 4  # 5 frames, 4 kept
    problems = "\n".join(dataset.problems)
    assert "test.jsonl line 4: query dropped (no frames in" in problems
    assert "test.jsonl line 5: query dropped (no caption (caption, enCap or sentence))" in problems


def test_video_classification_pool_is_every_label(tmp_path: Path) -> None:
    frame_root = "video-tasks/frames/video_cls/HMDB51"
    for video in ("brush_hair_1", "clap_2", "brush_hair_3"):
        make_frames(tmp_path / frame_root / video, 8)
    folder = tmp_path / "annotations/HMDB51"
    write_jsonl(
        folder / "test.jsonl",
        [
            {"video_id": "brush_hair_1", "pos_text": "brush_hair"},
            {"video_id": "clap_2", "pos_text": "clap"},
            {"video_id": "brush_hair_3", "pos_text": "brush_hair"},
            {"video_id": "missing_4", "pos_text": "wave"},
        ],
    )
    (folder / "labels.txt").write_text("ride_bike\nclap\nwave\n")
    dataset = read_dataset(config("HMDB51", "video_cls", frame_root=frame_root), tmp_path)

    assert [q.labels for q in dataset.queries] == [("brush_hair",), ("clap",), ("brush_hair",)]
    assert all(q.candidate_names is None for q in dataset.queries)
    # Every record's label first (first seen; an unusable video's label too: the label set is the dataset's),
    # then the rest of labels.txt, as VLM2Vec's pool + label corpus.
    assert list(dataset.candidates) == ["brush_hair", "clap", "wave", "ride_bike"]
    assert dataset.candidates["clap"] == {"text": "clap"}
    query = dataset.queries[0].item
    assert query["instruction"] == "What actions or objects interactions are the person in the video doing?"
    assert len(query["images"]) == 8
    assert len(dataset.problems) == 1 and "line 4: query dropped (no frames in" in dataset.problems[0]


# -- missing annotations, parquet ---------------------------------------------------------------------------


def test_missing_annotations_raise_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"'ImageNet-1K'.*annotations"):
        read_dataset(config("ImageNet-1K", "image_cls"), tmp_path)
    write_jsonl(tmp_path / "annotations/ViDoRe_arxivqa/queries.jsonl", [{"query-id": 1, "query": "q"}])
    write_jsonl(tmp_path / "annotations/ViDoRe_arxivqa/qrels.jsonl", [])
    with pytest.raises(FileNotFoundError, match="'corpus' annotations"):
        read_dataset(config("ViDoRe_arxivqa", "vidore"), tmp_path)


def test_parquet_without_pyarrow_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "annotations/ImageNet-1K"
    folder.mkdir(parents=True)
    (folder / "test-00000-of-00001.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ValueError, match="pip install pyarrow"):
        read_dataset(config("ImageNet-1K", "image_cls"), tmp_path)


def test_parquet_layouts(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    touch(tmp_path / IMAGE_ROOT, "ImageNet-1K/1.jpg")
    folder = tmp_path / "annotations/ImageNet-1K"
    folder.mkdir(parents=True)
    pq.write_table(
        pa.Table.from_pylist([imagenet_record("ImageNet-1K/1.jpg", ["tench", "goldfish"])]),
        folder / "test-00000-of-00001.parquet",
    )
    dataset = read_dataset(config("ImageNet-1K", "image_cls", image_root=IMAGE_ROOT, eval_type="local"), tmp_path)
    assert dataset.queries[0].candidate_names == ("tench", "goldfish") and dataset.problems == []

    beir = tmp_path / "annotations/ViDoRe_tabfquad"
    for part, rows in {
        "queries": [{"query-id": 3, "query": "Quel est le total ?"}],
        "corpus": [{"corpus-id": 5, "image": {"bytes": b"page-5", "path": "5.jpg"}}],
        "qrels": [{"query-id": 3, "corpus-id": 5, "score": 1}],
    }.items():
        (beir / part).mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows), beir / part / "test-00000-of-00001.parquet")
    visdoc = read_dataset(config("ViDoRe_tabfquad", "vidore", image_root="visdoc-tasks/ViDoRe_tabfquad"), tmp_path)
    assert (tmp_path / "visdoc-tasks/ViDoRe_tabfquad/5.png").read_bytes() == b"page-5"
    assert visdoc.queries[0].labels == ("5",) and visdoc.queries[0].rel_scores == (1,)


# -- configs ----------------------------------------------------------------------------------------------

VLM2VEC_YAML = """\
# CLS
ImageNet-1K:
    dataset_parser: image_cls
    dataset_name: ImageNet-1K
    dataset_split: test
    image_root: image-tasks/MMEB/
    eval_type: local
# VG (i -> i)
RefCOCO:
    dataset_parser: image_i2i_vg
    dataset_name: RefCOCO
    dataset_split: test
    image_root: image-tasks/MMEB/
    eval_type: local
ViDoRe_biomedical_lectures_v2:
    dataset_parser: vidore
    dataset_name: ViDoRe_biomedical_lectures_v2
    image_root: visdoc-tasks/biomedical_lectures_v2
    eval_type: global
VisRAG_ArxivQA:
    dataset_parser: visrag
    dataset_name: VisRAG_ArxivQA
    image_root: visdoc-tasks/VisRAG_ArxivQA
    eval_type: global
MSR-VTT:
    dataset_parser: video_ret
    dataset_name: MSR-VTT
    video_root: video-tasks/videos/video_ret/MSR-VTT/
    frame_root: video-tasks/frames/video_ret/MSR-VTT/
    num_sample_per_subset: None
    max_frames_saved: 64
    num_frames: 8
    eval_type: global
"""


def test_load_configs_reads_vlm2vec_yaml(tmp_path: Path) -> None:
    path = tmp_path / "mmeb.yaml"
    path.write_text(VLM2VEC_YAML)
    configs = {c.name: c for c in load_configs(path)}
    assert list(configs) == ["ImageNet-1K", "RefCOCO", "ViDoRe_biomedical_lectures_v2", "VisRAG_ArxivQA", "MSR-VTT"]
    imagenet = configs["ImageNet-1K"]
    assert (imagenet.dataset_parser, imagenet.image_root, imagenet.eval_type, imagenet.meta_task) == (
        "image_cls",
        "image-tasks/MMEB/",
        "local",
        "CLS",
    )
    assert imagenet.annotation_source() == "ziyjiang/MMEB_Test_Instruct"
    assert configs["RefCOCO"].meta_task == "VG"
    assert configs["ViDoRe_biomedical_lectures_v2"].modality == "visdoc"
    msrvtt = configs["MSR-VTT"]
    assert (msrvtt.frame_root, msrvtt.num_frames, msrvtt.modality) == (
        "video-tasks/frames/video_ret/MSR-VTT/",
        8,
        "video",
    )
    assert msrvtt.extra == {"num_sample_per_subset": "None", "max_frames_saved": 64}  # unknown keys kept
