"""Video tasks on frame folders ``<data_root>/<frame_root>/<video id>/``: retrieval (text -> video) and
classification (video -> label)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mmcascade.evaluation.mmeb.annotations import limit_queries, local_folder, open_records
from mmcascade.evaluation.mmeb.config import DatasetConfig
from mmcascade.evaluation.mmeb.dataset import EvalDataset, EvalQuery
from mmcascade.evaluation.mmeb.fields import BadRecordError, configured_instruction, string_field
from mmcascade.evaluation.mmeb.frames import sample_frames

# Instructions VLM2Vec hard-codes in its video loaders (the annotations carry none); overridable per dataset
# with the config keys ``query_instruction`` / ``target_instruction``.
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


def read_video_retrieval(config: DatasetConfig, root: Path) -> EvalDataset:
    """Text -> video: one query per record (its first caption), ranked against every video."""
    frame_root = root / config.frame_root
    problems: list[str] = []
    query_instruction = configured_instruction(
        config, "query_instruction", VIDEO_RET_QUERY_INSTRUCTIONS.get(config.dataset_name)
    )
    target_instruction = configured_instruction(config, "target_instruction", VIDEO_TARGET_INSTRUCTION)
    queries: list[EvalQuery] = []
    pool: dict[str, dict[str, Any]] = {}
    for index, (where, record) in enumerate(limit_queries(open_records(config, root, problems), config)):
        try:
            video_id = _video_id(record)
            caption = _caption(record)
        except BadRecordError as error:
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
    return EvalDataset.from_config(config, queries, pool, problems)


def read_video_classification(config: DatasetConfig, root: Path) -> EvalDataset:
    """Video -> label: each video ranked against every distinct label (plus ``labels.txt`` if present)."""
    frame_root = root / config.frame_root
    problems: list[str] = []
    query_instruction = configured_instruction(
        config,
        "query_instruction",
        VIDEO_CLS_QUERY_INSTRUCTIONS.get(config.dataset_name) or VIDEO_CLS_QUERY_INSTRUCTIONS.get(config.name),
    )
    records = limit_queries(open_records(config, root, problems), config)
    queries: list[EvalQuery] = []
    pool: dict[str, dict[str, Any]] = {}
    for index, (where, record) in enumerate(records):
        try:
            video_id = _video_id(record)
            label = string_field(record, "pos_text", required=True)
            if not label.strip():
                raise BadRecordError("empty pos_text")
        except BadRecordError as error:
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
    return EvalDataset.from_config(config, queries, pool, problems)


def _label_file(config: DatasetConfig, root: Path) -> list[str]:
    folder = local_folder(config, root)
    if folder is None:
        return []
    path = folder / config.dataset_name / "labels.txt"
    if not path.is_file():
        return []
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _video_id(record: Any) -> str:
    """The frame-folder name: MSR-VTT/MSVD ``video_id``, VATEX ``videoID``, YouCook2 ``id``, DiDeMo ``video``."""
    if not isinstance(record, dict):
        raise BadRecordError(f"expected a JSON object, got {type(record).__name__}")
    for key in ("video_id", "videoID", "id"):
        value = record.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
            return str(value).strip()
    for key in ("video", "video_path"):
        value = record.get(key)
        if isinstance(value, str) and value.strip():
            return os.path.splitext(os.path.basename(value.strip()))[0]
    raise BadRecordError("no video id (video_id, videoID, id or video)")


def _caption(record: dict[str, Any]) -> str:
    """The query text: a caption string, or the first of a caption list (MSVD ``caption``, VATEX ``enCap``)."""
    for key in ("caption", "enCap", "sentence"):
        if key not in record:
            continue
        value = record[key]
        if isinstance(value, (list, tuple)):
            value = value[0] if value else None
        if not isinstance(value, str) or not value.strip():
            raise BadRecordError(f"{key} must be a non-empty string or list of strings, got {record[key]!r}")
        return value.strip()
    raise BadRecordError("no caption (caption, enCap or sentence)")
