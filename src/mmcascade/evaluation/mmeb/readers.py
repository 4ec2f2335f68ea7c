"""Readers: one MMEB-V2 dataset (annotations + media on disk) -> an :class:`EvalDataset`.

:func:`read_dataset` dispatches on ``config.dataset_parser``. Every reader follows VLM2Vec's V2 eval loaders
(``src/data/eval_dataset/*.py``) for *what* is a query, a candidate, a candidate's name and a label, and
returns items in this project's format (instruction / text / image paths kept apart; the processor places
the image). Nothing is decoded: media are checked with ``Path.is_file()`` only.

Where annotations come from (``config.annotation_source()``):

* a folder (relative to the data root, or absolute), holding one sub-folder per dataset::

      <folder>/<dataset_name>/<split>.jsonl                 first match wins, in this order
      <folder>/<dataset_name>/<split>*.jsonl                (e.g. test-00000-of-00002.jsonl, all of them)
      <folder>/<dataset_name>/<split>-*.parquet             (the Hugging Face snapshot layout; needs pyarrow)
      <folder>/<dataset_name>/*.parquet
      # visual documents (BEIR), per part in queries / corpus / qrels:
      <folder>/<dataset_name>/<part>.jsonl
      <folder>/<dataset_name>/<part>/<split>-*.parquet  or  <part>/*.parquet
      # video classification, optional: the full label set, one per line (VLM2Vec's label corpus)
      <folder>/<dataset_name>/labels.txt

* a Hugging Face Hub dataset id (``owner/name``), read with ``datasets.load_dataset`` (imported lazily):
  image tasks ``load_dataset(id, dataset_name, split=split)``; visual documents the configs ``queries``,
  ``corpus`` and ``qrels``; video ``load_dataset(id, extra["subset_name"], split=split)``.

Media: images at ``<data_root>/<image_root>/<path in the record>``; video frames at
``<data_root>/<frame_root>/<video id>/*.{jpg,jpeg,png}``; document pages at
``<data_root>/<image_root>/<path in corpus.jsonl>``, or, for Hub-style corpora that carry the image bytes,
written once to ``<data_root>/<image_root>/<corpus-id>.png`` (VisRAG: VLM2Vec's shortened hashed name).

Bad input never crashes a run: a malformed record, a missing media file, an empty candidate list or a
label that is not among the candidates drops that query (or candidate) and adds a line to
``EvalDataset.problems``. Absent annotations raise :class:`FileNotFoundError`, which the harness reports
as a skipped dataset.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mmcascade.data.items import as_item
from mmcascade.evaluation.mmeb.config import DatasetConfig
from mmcascade.evaluation.mmeb.dataset import EvalDataset, EvalQuery

# The image placeholder of MMEB records; our processor places the image itself, so it is removed.
MMEB_IMAGE_TOKEN = "<|image_1|>"
FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")

# Instructions VLM2Vec hard-codes in its loaders (the annotations of these datasets carry none).
# Overridable per dataset with the config keys ``query_instruction`` / ``target_instruction``.
VISDOC_QUERY_INSTRUCTION = "Find a document image that matches the given query:"  # vidore/visrag_dataset.py
VISDOC_TARGET_INSTRUCTION = "Understand the content of the provided document image."
VIDEO_TARGET_INSTRUCTION = "Understand the content of the provided video."  # msrvtt_dataset.py & co.
VIDEO_RET_QUERY_INSTRUCTIONS: dict[str, str] = {
    "MSR-VTT": "Find a video that contains the following visual content:",
    "MSVD": "Find the video snippet that corresponds to the given summary:",
    "DiDeMo": "Find a video that includes the following described scenes:",
    "YouCook2": "Find a video that demonstrates the following action while making a recipe:",
    "VATEX": "Select a video that fits the description provided:",
}
VIDEO_CLS_QUERY_INSTRUCTIONS: dict[str, str] = {  # video_classification_utils.py DATASET_INSTRUCTION
    "Kinetics-700": "Recognize the category of the video content.",
    "K700": "Recognize the category of the video content.",
    "SmthSmthV2": "What actions or object interactions are being performed by the person in the video?",
    "UCF101": "What activities or sports are being performed by the person in the video?",
    "HMDB51": "What actions or objects interactions are the person in the video doing?",
    "Breakfast": "Recognize the breakfast type that the person is cooking in the video.",
}

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_Records = Iterator[tuple[str, Any]]  # (where the record is, for problem lines; the record)


class _BadRecordError(ValueError):
    """A record this reader cannot use; the message says why."""


def read_dataset(config: DatasetConfig, data_root: str | os.PathLike) -> EvalDataset:
    """Read one dataset: its queries, candidates and labels, with the records it skipped in ``problems``.

    Raises:
        FileNotFoundError: the dataset's annotations are not where the config says.
        ValueError: the parser is unknown, or an optional dependency (``pyarrow``, ``datasets``) that
            these annotations need is missing.
    """
    reader = _READERS.get(config.dataset_parser)
    if reader is None:
        raise ValueError(
            f"dataset {config.name!r}: no reader for dataset_parser {config.dataset_parser!r}; "
            f"choose one of {sorted(_READERS)}"
        )
    return reader(config, Path(data_root).expanduser())


# ----------------------------------------------------------------------------------------------------
# image tasks: records {qry_inst?, qry_text, qry_img_path, tgt_inst?, tgt_text: [..], tgt_img_path: [..]}


def _read_image_task(config: DatasetConfig, root: Path) -> EvalDataset:
    parser = config.dataset_parser
    media_root = str(root / config.image_root)
    problems: list[str] = []
    records = _limit(_open_records(config, root, problems), config)
    is_global = config.eval_type == "global"
    file_exists = _FileCache()
    queries: list[EvalQuery] = []
    pool: dict[str, dict[str, Any]] = {}
    # name -> (item, why it is unusable or None), decided at the name's first sighting: MMEB lists repeat
    # the same candidates across thousands of queries, and VLM2Vec keeps a name's first item anyway.
    verdicts: dict[str, tuple[dict[str, Any], str | None]] = {}

    for index, (where, record) in enumerate(records):
        try:
            query_item, target_instruction, candidates = _parse_image_record(record, parser, media_root)
        except _BadRecordError as error:
            problems.append(f"{where}: {error}")
            continue
        kept: list[str] = []
        label_problem = None
        for position, (name, text, image_path) in enumerate(candidates):
            verdict = verdicts.get(name)
            if verdict is None:
                item = _image_candidate_item(parser, text, image_path, target_instruction)
                if image_path is not None and not file_exists(image_path):
                    reason = f"candidate image not found: {image_path}"
                else:
                    reason = _invalid_item(item)
                verdict = verdicts[name] = (item, reason)
                if reason is not None:  # reported once per name, not once per query listing it
                    problems.append(f"{where}: candidate {name!r} dropped ({reason})")
            if verdict[1] is None:
                kept.append(name)
            elif position == 0:  # the positive: VLM2Vec's label is the first candidate
                label_problem = verdict[1]
        query_image = query_item.get("image")
        if query_image is not None and not file_exists(query_image):
            query_problem = f"query image not found: {query_image}"
        else:
            query_problem = _invalid_item(query_item)
        if query_problem is None and label_problem is not None:
            query_problem = f"its positive, the first candidate, was dropped: {label_problem}"
        if query_problem is None or is_global:  # a global pool keeps every valid candidate, as VLM2Vec's
            for name in kept:
                if name not in pool:
                    pool[name] = verdicts[name][0]
        if query_problem is not None:
            problems.append(f"{where}: query dropped ({query_problem})")
            continue
        queries.append(
            EvalQuery(
                query_id=str(index),
                item=query_item,
                candidate_names=None if is_global else tuple(kept),
                labels=(candidates[0][0],),
            )
        )
    return _dataset(config, queries, pool, problems)


def _parse_image_record(
    record: Any, parser: str, media_root: str
) -> tuple[dict[str, Any], str, list[tuple[str, str, str | None]]]:
    """One MMEB image record -> (query item, tgt_inst, [(candidate name, text, image path or None)])."""
    if not isinstance(record, dict):
        raise _BadRecordError(f"expected a JSON object, got {type(record).__name__}")
    query: dict[str, Any] = {}
    instruction = _clean(_string(record, "qry_inst", required=False))
    if instruction:
        query["instruction"] = instruction
    text = _clean(_string(record, "qry_text", required=True))
    if text:
        query["text"] = text
    # t2i queries are text only in VLM2Vec (image_t2i_eval.py ignores qry_img_path).
    if parser != "image_t2i":
        image = _string(record, "qry_img_path", required=True).strip()
        if image:
            query["image"] = os.path.join(media_root, image)

    texts = _string_list(record, "tgt_text")
    if not texts:
        raise _BadRecordError("empty candidate list (tgt_text)")
    target_instruction = _clean(_string(record, "tgt_inst", required=False))
    if parser in ("image_cls", "image_qa", "image_i2t"):
        return query, target_instruction, [(text, text, None) for text in texts]  # named by their text

    paths = _string_list(record, "tgt_img_path")
    if len(paths) != len(texts):
        if any(t.strip() for t in texts):
            raise _BadRecordError(f"tgt_text has {len(texts)} entries but tgt_img_path has {len(paths)}")
        texts = [""] * len(paths)  # captionless image candidates (e.g. MSCOCO_t2i): captions unused
    if not paths:
        raise _BadRecordError("empty candidate list (tgt_img_path)")
    candidates: list[tuple[str, str, str | None]] = []
    for text, path in zip(texts, paths, strict=True):
        # t2i: the image path; i2i/VG: path + ":" + caption, so objects of one image stay distinct.
        name = path if parser == "image_t2i" else f"{path}:{text.strip(chr(34))}"
        candidates.append((name, text, os.path.join(media_root, path.strip()) if path.strip() else None))
    return query, target_instruction, candidates


def _image_candidate_item(parser: str, text: str, image_path: str | None, instruction: str) -> dict[str, Any]:
    """A candidate's item. VLM2Vec V2 encodes text candidates (cls/qa/i2t) as tgt_text alone, without
    tgt_inst (image_cls_dataset.py, image_qa_dataset.py, image_i2t_eval.py); image candidates get tgt_inst."""
    item: dict[str, Any] = {}
    if parser not in ("image_cls", "image_qa", "image_i2t"):
        if instruction:
            item["instruction"] = instruction
        if image_path is not None:
            item["image"] = image_path
    if _clean(text):
        item["text"] = _clean(text)
    return item


# ----------------------------------------------------------------------------------------------------
# visual documents (BEIR): queries {query-id, query, language?}, corpus {corpus-id, image}, qrels


def _read_visdoc(config: DatasetConfig, root: Path) -> EvalDataset:
    media_root = root / config.image_root
    problems: list[str] = []
    # Open all three parts first, so a missing part is reported before anything is written.
    query_records = _open_records(config, root, problems, part="queries")
    corpus_records = _open_records(config, root, problems, part="corpus")
    qrel_records = _open_records(config, root, problems, part="qrels")

    relevance = _read_qrels(qrel_records, problems)

    pool: dict[str, dict[str, Any]] = {}
    target_instruction = _instruction(config, "target_instruction", VISDOC_TARGET_INSTRUCTION)
    for where, record in corpus_records:
        try:
            name, image_path = _corpus_image(record, config, media_root)
        except _BadRecordError as error:
            problems.append(f"{where}: document dropped ({error})")
            continue
        if name in pool:
            problems.append(f"{where}: duplicate corpus-id {name!r}; the first one is kept")
            continue
        item = {"image": image_path}
        if target_instruction:
            item["instruction"] = target_instruction
        pool[name] = item

    language = _query_language(config)
    query_instruction = _instruction(config, "query_instruction", VISDOC_QUERY_INSTRUCTION)
    queries: list[EvalQuery] = []
    kept_queries = (
        (where, record)
        for where, record in query_records
        if language is None or not isinstance(record, dict) or record.get("language", language) == language
    )
    for where, record in _limit(kept_queries, config):
        try:
            if not isinstance(record, dict):
                raise _BadRecordError(f"expected a JSON object, got {type(record).__name__}")
            query_id = _identifier(record, "query-id")
            text = _string(record, "query", required=True).strip()
        except _BadRecordError as error:
            problems.append(f"{where}: query dropped ({error})")
            continue
        graded = relevance.get(query_id)
        if not graded:
            problems.append(f"{where}: query {query_id!r} dropped (no qrel with score > 0)")
            continue
        missing = [doc for doc in graded if doc not in pool]
        if missing:
            problems.append(f"{where}: query {query_id!r}: relevant documents not in the corpus, ignored: {missing}")
        labels = tuple(doc for doc in graded if doc in pool)
        if not labels:
            problems.append(f"{where}: query {query_id!r} dropped (none of its relevant documents is in the corpus)")
            continue
        item: dict[str, Any] = {"text": text}
        if query_instruction:
            item["instruction"] = query_instruction
        reason = _invalid_item(item)
        if reason is not None:
            problems.append(f"{where}: query {query_id!r} dropped ({reason})")
            continue
        queries.append(
            EvalQuery(
                query_id=query_id,
                item=item,
                candidate_names=tuple(labels) if config.eval_type == "local" else None,
                labels=labels,
                rel_scores=tuple(graded[doc] for doc in labels),
            )
        )
    return _dataset(config, queries, pool, problems)


def _read_qrels(records: _Records, problems: list[str]) -> dict[str, dict[str, int | float]]:
    """qrels -> {query-id: {corpus-id: grade}}: grades > 0 only; a repeated pair keeps its highest grade."""
    relevance: dict[str, dict[str, int | float]] = {}
    for where, record in records:
        try:
            if not isinstance(record, dict):
                raise _BadRecordError(f"expected a JSON object, got {type(record).__name__}")
            query_id = _identifier(record, "query-id")
            doc_id = _identifier(record, "corpus-id")
            score = record.get("score")
            if isinstance(score, str):
                score = float(score) if re.fullmatch(r"\s*-?\d+(\.\d*)?\s*", score) else None
            if isinstance(score, bool) or not isinstance(score, (int, float)):
                raise _BadRecordError(f"score must be a number, got {record.get('score')!r}")
        except _BadRecordError as error:
            problems.append(f"{where}: qrel ignored ({error})")
            continue
        grade = int(score) if float(score).is_integer() else score
        if grade > 0:
            per_query = relevance.setdefault(query_id, {})
            per_query[doc_id] = max(per_query.get(doc_id, grade), grade)
    return relevance


def _corpus_image(record: Any, config: DatasetConfig, media_root: Path) -> tuple[str, str]:
    """A corpus row -> (corpus-id, path of its page image), writing Hub image bytes to disk once."""
    if not isinstance(record, dict):
        raise _BadRecordError(f"expected a JSON object, got {type(record).__name__}")
    name = _identifier(record, "corpus-id")
    # Where VLM2Vec materialises a Hub corpus image (vidore_dataset.py / visrag_dataset.py corpus_prepare).
    target = media_root / _materialised_name(config.dataset_parser, name)
    image = record.get("image")
    if isinstance(image, str) and image.strip():
        path = media_root / image.strip()
        if not path.is_file():
            raise _BadRecordError(f"page image not found: {path}")
        return name, str(path)
    if target.is_file():  # written by an earlier run (ours or VLM2Vec's)
        return name, str(target)
    if isinstance(image, dict):
        data = image.get("bytes")
        if data:
            _write_once(target, bytes(data))
            return name, str(target)
        original = image.get("path")
        if isinstance(original, str) and original:
            for path in (media_root / original, Path(original)):
                if path.is_file():
                    return name, str(path)
        raise _BadRecordError(f"image has neither bytes nor an existing path (looked for {target})")
    if image is not None and hasattr(image, "save"):  # a PIL image, from a decoded Hub column
        target.parent.mkdir(parents=True, exist_ok=True)
        image.save(target)
        return name, str(target)
    raise _BadRecordError(f"no page image: 'image' is {type(image).__name__} and {target} does not exist")


def _materialised_name(parser: str, corpus_id: str) -> str:
    if parser == "visrag":  # some VisRAG ids are long file names: VLM2Vec shortens them and adds a hash
        base, extension = os.path.splitext(corpus_id)
        return f"{base[:50]}_{hashlib.md5(corpus_id.encode('utf-8')).hexdigest()[:8]}{extension}"
    return f"{corpus_id}.png"


def _write_once(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    partial.write_bytes(data)
    os.replace(partial, target)  # atomic: a reader never sees half a file


def _query_language(config: DatasetConfig) -> str | None:
    """Which ``language`` to keep: ViDoRe-v2 english variants are filtered (VLM2Vec dataset_hf_path.py)."""
    if "language" in config.extra:
        return config.extra["language"] or None
    name = config.dataset_name
    if name.endswith("_v2") and "multilingual" not in name and "human_labeled" not in name:
        return "english"
    return None


# ----------------------------------------------------------------------------------------------------
# video: frame folders <data_root>/<frame_root>/<video id>/


def _read_video_ret(config: DatasetConfig, root: Path) -> EvalDataset:
    """Text -> video: one query per record (its first caption), ranked against every video."""
    frame_root = root / config.frame_root
    problems: list[str] = []
    query_instruction = _instruction(config, "query_instruction", VIDEO_RET_QUERY_INSTRUCTIONS.get(config.dataset_name))
    target_instruction = _instruction(config, "target_instruction", VIDEO_TARGET_INSTRUCTION)
    queries: list[EvalQuery] = []
    pool: dict[str, dict[str, Any]] = {}
    for index, (where, record) in enumerate(_limit(_open_records(config, root, problems), config)):
        try:
            video_id = _video_id(record)
            caption = _caption(record)
        except _BadRecordError as error:
            problems.append(f"{where}: query dropped ({error})")
            continue
        if video_id not in pool:
            frames = sample_frames(frame_root / video_id, config.num_frames)
            if not frames:
                problems.append(f"{where}: query dropped (no frames in {frame_root / video_id})")
                continue
            video: dict[str, Any] = {"images": frames}
            if target_instruction:
                video["instruction"] = target_instruction
            pool[video_id] = video
        item: dict[str, Any] = {"text": caption}
        if query_instruction:
            item["instruction"] = query_instruction
        queries.append(
            EvalQuery(
                query_id=str(index),
                item=item,
                candidate_names=(video_id,) if config.eval_type == "local" else None,
                labels=(video_id,),
            )
        )
    return _dataset(config, queries, pool, problems)


def _read_video_cls(config: DatasetConfig, root: Path) -> EvalDataset:
    """Video -> label: each video ranked against every distinct label (plus ``labels.txt`` if present)."""
    frame_root = root / config.frame_root
    problems: list[str] = []
    query_instruction = _instruction(
        config,
        "query_instruction",
        VIDEO_CLS_QUERY_INSTRUCTIONS.get(config.dataset_name) or VIDEO_CLS_QUERY_INSTRUCTIONS.get(config.name),
    )
    records = _limit(_open_records(config, root, problems), config)
    queries: list[EvalQuery] = []
    pool: dict[str, dict[str, Any]] = {}
    for index, (where, record) in enumerate(records):
        try:
            video_id = _video_id(record)
            label = _string(record, "pos_text", required=True)
            if not label.strip():
                raise _BadRecordError("empty pos_text")
        except _BadRecordError as error:
            problems.append(f"{where}: query dropped ({error})")
            continue
        # The label joins the pool even when this video is unusable: the label set belongs to the dataset.
        pool.setdefault(label, {"text": label.strip()})
        frames = sample_frames(frame_root / video_id, config.num_frames)
        if not frames:
            problems.append(f"{where}: query dropped (no frames in {frame_root / video_id})")
            continue
        item: dict[str, Any] = {"images": frames}
        if query_instruction:
            item["instruction"] = query_instruction
        queries.append(EvalQuery(query_id=str(index), item=item, candidate_names=None, labels=(label,)))
    # VLM2Vec adds the dataset's whole label list as a corpus after the queries' own labels.
    for label in _label_file(config, root):
        pool.setdefault(label, {"text": label})
    if config.eval_type == "local":
        every_label = tuple(pool)
        queries = [EvalQuery(q.query_id, q.item, every_label, q.labels, q.rel_scores) for q in queries]
    return _dataset(config, queries, pool, problems)


def _label_file(config: DatasetConfig, root: Path) -> list[str]:
    folder = _local_folder(config, root)
    if folder is None:
        return []
    path = folder / config.dataset_name / "labels.txt"
    if not path.is_file():
        return []
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _video_id(record: Any) -> str:
    """The frame-folder name: MSR-VTT/MSVD ``video_id``, VATEX ``videoID``, YouCook2 ``id``, DiDeMo ``video``."""
    if not isinstance(record, dict):
        raise _BadRecordError(f"expected a JSON object, got {type(record).__name__}")
    for key in ("video_id", "videoID", "id"):
        value = record.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
            return str(value).strip()
    for key in ("video", "video_path"):
        value = record.get(key)
        if isinstance(value, str) and value.strip():
            return os.path.splitext(os.path.basename(value.strip()))[0]
    raise _BadRecordError("no video id (video_id, videoID, id or video)")


def _caption(record: dict[str, Any]) -> str:
    """The query text: a caption string, or the first of a caption list (MSVD ``caption``, VATEX ``enCap``)."""
    for key in ("caption", "enCap", "sentence"):
        if key not in record:
            continue
        value = record[key]
        if isinstance(value, (list, tuple)):
            value = value[0] if value else None
        if not isinstance(value, str) or not value.strip():
            raise _BadRecordError(f"{key} must be a non-empty string or list of strings, got {record[key]!r}")
        return value.strip()
    raise _BadRecordError("no caption (caption, enCap or sentence)")


def list_frames(frame_dir: str | os.PathLike) -> list[Path]:
    """The frames of one video: .jpg/.jpeg/.png files, sorted naturally (``frame_2`` before ``frame_10``)."""
    frame_dir = Path(frame_dir)
    if not frame_dir.is_dir():
        return []
    frames = [
        Path(entry.path)
        for entry in os.scandir(frame_dir)
        if entry.name.lower().endswith(FRAME_EXTENSIONS) and entry.is_file()
    ]
    return sorted(frames, key=lambda path: _natural_key(path.name))


def sample_frame_indices(n_frames: int, num_frames: int) -> list[int]:
    """Which of ``n_frames`` frames to keep: VLM2Vec's ``np.linspace(0, n - 1, num_frames, dtype=int)``.

    The float positions are truncated (``dtype=int``), as VLM2Vec does. With fewer frames than
    ``num_frames`` every frame is kept and the last one repeated, so a clip always has ``num_frames``.
    """
    if n_frames <= 0 or num_frames <= 0:
        return []
    if n_frames < num_frames:
        return list(range(n_frames)) + [n_frames - 1] * (num_frames - n_frames)
    return np.linspace(0, n_frames - 1, num_frames, dtype=int).tolist()


def sample_frames(frame_dir: str | os.PathLike, num_frames: int) -> list[str]:
    """``num_frames`` frame paths of one video (empty when the folder is missing or holds no frame)."""
    frames = list_frames(frame_dir)
    return [str(frames[i]) for i in sample_frame_indices(len(frames), num_frames)]


def _natural_key(name: str) -> list[int | str]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


# ----------------------------------------------------------------------------------------------------
# annotation loading: local JSONL / parquet, or the Hub


def _local_folder(config: DatasetConfig, root: Path) -> Path | None:
    """The annotation folder, or None when the source is a Hub dataset id."""
    source = config.annotation_source()
    path = Path(source).expanduser()
    if path.is_absolute():
        return path
    if (root / source).exists() or not _HUB_ID.fullmatch(source):
        return root / source
    return None


def _open_records(config: DatasetConfig, root: Path, problems: list[str], part: str | None = None) -> _Records:
    """The records of one dataset (or one BEIR part), as (where, record) pairs.

    Files are looked up now, so a missing dataset raises :class:`FileNotFoundError` before any reading.
    """
    folder = _local_folder(config, root)
    if folder is None:
        return _hub_records(config, part, problems)
    directory = folder / config.dataset_name
    split = config.dataset_split
    if part is None:
        patterns = [f"{split}.jsonl", f"{split}*.jsonl", f"{split}-*.parquet", "*.parquet"]
        where = directory
    else:
        patterns = [f"{part}.jsonl", f"{part}/{split}-*.parquet", f"{part}/*.parquet"]
        where = directory / part
    files: list[Path] = []
    if directory.is_dir():
        for pattern in patterns:
            files = sorted(path for path in directory.glob(pattern) if path.is_file())
            if files:
                break
    if not files:
        what = f"{part!r} annotations" if part else "annotations"
        raise FileNotFoundError(
            f"dataset {config.name!r}: no {what} for {config.dataset_name!r} in {where} "
            f"(looked for {', '.join(patterns)} under {directory})"
        )
    if files[0].suffix == ".parquet":
        _require_pyarrow(config, files[0])
    return itertools.chain.from_iterable(_file_records(path, directory, problems) for path in files)


def _file_records(path: Path, directory: Path, problems: list[str]) -> _Records:
    label = path.relative_to(directory).as_posix()
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        row = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            for record in batch.to_pylist():
                yield f"{label} row {row}", record
                row += 1
        return
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                problems.append(f"{label} line {number}: not valid JSON ({error.msg}); skipped")
                continue
            yield f"{label} line {number}", record


def _require_pyarrow(config: DatasetConfig, path: Path) -> None:
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError as error:
        raise ValueError(
            f"dataset {config.name!r}: reading {path} needs pyarrow: `pip install pyarrow` "
            "(or convert the annotations to JSONL)"
        ) from error


def _hub_records(config: DatasetConfig, part: str | None, problems: list[str]) -> _Records:
    try:
        import datasets
    except ImportError as error:
        raise ValueError(
            f"dataset {config.name!r}: annotations {config.annotation_source()!r} are a Hugging Face Hub id, "
            "which needs the `datasets` package: `pip install datasets` (or point 'annotations' at a local folder)"
        ) from error
    source, split = config.annotation_source(), config.dataset_split
    if part is not None:
        subset = part
    elif config.modality == "image":
        subset = config.dataset_name
    else:
        subset = config.extra.get("subset_name")
    label = f"{source}[{subset}]" if subset else source
    try:
        table = datasets.load_dataset(source, subset, split=split)
    except ValueError as error:
        # e.g. VisRAG's BEIR sets have only a "train" split while the yaml leaves the default "test".
        if "split" not in str(error).lower():
            raise
        splits = datasets.load_dataset(source, subset)
        if len(splits) != 1:
            raise
        ((only_split, table),) = splits.items()
        problems.append(f"{label}: no split {split!r}; read its only split {only_split!r}")
    features = getattr(table, "features", None) or {}
    image_feature = getattr(datasets, "Image", None)
    if image_feature is not None and isinstance(features.get("image"), image_feature):
        table = table.cast_column("image", image_feature(decode=False))  # keep the bytes; never decode
    return ((f"{label} row {row}", record) for row, record in enumerate(table))


def _limit(records: Iterable[tuple[str, Any]], config: DatasetConfig) -> Iterable[tuple[str, Any]]:
    """VLM2Vec's ``num_sample_per_subset``: keep the first n queries (an int or digit string; else all)."""
    limit = config.extra.get("num_sample_per_subset")
    if isinstance(limit, str) and limit.strip().isdigit():
        limit = int(limit)
    if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0:
        return itertools.islice(records, limit)
    return records


# ----------------------------------------------------------------------------------------------------
# small helpers


def _dataset(
    config: DatasetConfig, queries: list[EvalQuery], pool: dict[str, dict[str, Any]], problems: list[str]
) -> EvalDataset:
    return EvalDataset(
        name=config.name,
        modality=config.modality,
        meta_task=config.meta_task,
        eval_type=config.eval_type,  # type: ignore[arg-type]  # checked by load_configs
        queries=queries,
        candidates=pool,
        problems=problems,
    )


def _clean(text: str) -> str:
    """Text or instruction without MMEB's image placeholder, whitespace stripped."""
    return text.replace(MMEB_IMAGE_TOKEN, "").strip()


def _string(record: dict[str, Any], key: str, *, required: bool) -> str:
    if key not in record:
        if required:
            raise _BadRecordError(f"missing field {key!r}")
        return ""
    value = record[key]
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _BadRecordError(f"{key} must be a string, got {type(value).__name__}")
    return value


def _string_list(record: dict[str, Any], key: str) -> list[str]:
    if key not in record:
        raise _BadRecordError(f"missing field {key!r}")
    values = record[key]
    if isinstance(values, np.ndarray):
        values = values.tolist()
    if not isinstance(values, (list, tuple)):
        raise _BadRecordError(f"{key} must be a list of strings, got {type(values).__name__}")
    if any(value is not None and not isinstance(value, str) for value in values):
        raise _BadRecordError(f"{key} must be a list of strings")
    return ["" if value is None else value for value in values]


def _identifier(record: dict[str, Any], key: str) -> str:
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise _BadRecordError(f"{key} must be a non-empty string or int, got {value!r}")
    return str(value).strip()


def _instruction(config: DatasetConfig, key: str, default: str | None) -> str | None:
    value = config.extra.get(key, default)
    return (value.strip() or None) if isinstance(value, str) else None


def _invalid_item(item: dict[str, Any]) -> str | None:
    """Why ``item`` is not a valid item (e.g. neither text nor image), or None."""
    try:
        as_item(item)
    except ValueError as error:
        return str(error)
    return None


class _FileCache:
    """``Path.is_file`` with memory: MMEB lists repeat the same images across thousands of queries."""

    def __init__(self) -> None:
        self._seen: dict[str, bool] = {}

    def __call__(self, path: str) -> bool:
        found = self._seen.get(path)
        if found is None:
            found = self._seen[path] = Path(path).is_file()
        return found


_READERS: dict[str, Callable[[DatasetConfig, Path], EvalDataset]] = {
    "image_cls": _read_image_task,
    "image_qa": _read_image_task,
    "image_i2t": _read_image_task,
    "image_t2i": _read_image_task,
    "image_i2i_vg": _read_image_task,
    "vidore": _read_visdoc,
    "visrag": _read_visdoc,
    "video_cls": _read_video_cls,
    "video_ret": _read_video_ret,
}
