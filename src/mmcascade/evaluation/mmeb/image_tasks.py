"""Image tasks (classification, VQA, retrieval, visual grounding): one MMEB record per query.

Records are ``{qry_inst?, qry_text, qry_img_path, tgt_inst?, tgt_text: [..], tgt_img_path: [..]}``;
the first candidate is the positive, as in VLM2Vec's image loaders.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mmcascade.evaluation.mmeb.annotations import limit_queries, open_records
from mmcascade.evaluation.mmeb.config import DatasetConfig
from mmcascade.evaluation.mmeb.dataset import EvalDataset, EvalQuery
from mmcascade.evaluation.mmeb.fields import BadRecordError, clean_text, invalid_item_reason, string_field, string_list


def read_image_task(config: DatasetConfig, root: Path) -> EvalDataset:
    """One query per record, ranked against its own candidates (local) or every candidate (global)."""
    parser = config.dataset_parser
    media_root = str(root / config.image_root)
    problems: list[str] = []
    records = limit_queries(open_records(config, root, problems), config)
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
        except BadRecordError as error:
            problems.append(f"{where}: {error}")
            continue
        kept, label_problem = _judge_candidates(
            candidates, parser, target_instruction, verdicts, file_exists, where, problems
        )
        query_problem = _query_problem(query_item, label_problem, file_exists)
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
    return EvalDataset.from_config(config, queries, pool, problems)


def _judge_candidates(
    candidates: list[tuple[str, str, str | None]],
    parser: str,
    target_instruction: str,
    verdicts: dict[str, tuple[dict[str, Any], str | None]],
    file_exists: _FileCache,
    where: str,
    problems: list[str],
) -> tuple[list[str], str | None]:
    """The usable candidate names of one query, and why its positive is unusable (or None).

    A name's verdict is decided (and an unusable one reported) at its first sighting, in ``verdicts``.
    """
    kept: list[str] = []
    label_problem = None
    for position, (name, text, image_path) in enumerate(candidates):
        verdict = verdicts.get(name)
        if verdict is None:
            item = _image_candidate_item(parser, text, image_path, target_instruction)
            if image_path is not None and not file_exists(image_path):
                reason = f"candidate image not found: {image_path}"
            else:
                reason = invalid_item_reason(item)
            verdict = verdicts[name] = (item, reason)
            if reason is not None:  # reported once per name, not once per query listing it
                problems.append(f"{where}: candidate {name!r} dropped ({reason})")
        if verdict[1] is None:
            kept.append(name)
        elif position == 0:  # the positive: VLM2Vec's label is the first candidate
            label_problem = verdict[1]
    return kept, label_problem


def _query_problem(query_item: dict[str, Any], label_problem: str | None, file_exists: _FileCache) -> str | None:
    query_image = query_item.get("image")
    if query_image is not None and not file_exists(query_image):
        return f"query image not found: {query_image}"
    query_problem = invalid_item_reason(query_item)
    if query_problem is None and label_problem is not None:
        return f"its positive, the first candidate, was dropped: {label_problem}"
    return query_problem


def _parse_image_record(
    record: Any, parser: str, media_root: str
) -> tuple[dict[str, Any], str, list[tuple[str, str, str | None]]]:
    """One MMEB image record -> (query item, tgt_inst, [(candidate name, text, image path or None)])."""
    if not isinstance(record, dict):
        raise BadRecordError(f"expected a JSON object, got {type(record).__name__}")
    query: dict[str, Any] = {}
    instruction = clean_text(string_field(record, "qry_inst", required=False))
    if instruction:
        query["instruction"] = instruction
    text = clean_text(string_field(record, "qry_text", required=True))
    if text:
        query["text"] = text
    # t2i queries are text only in VLM2Vec (image_t2i_eval.py ignores qry_img_path).
    if parser != "image_t2i":
        image = string_field(record, "qry_img_path", required=True).strip()
        if image:
            query["image"] = os.path.join(media_root, image)

    texts = string_list(record, "tgt_text")
    if not texts:
        raise BadRecordError("empty candidate list (tgt_text)")
    target_instruction = clean_text(string_field(record, "tgt_inst", required=False))
    if parser in ("image_cls", "image_qa", "image_i2t"):
        return query, target_instruction, [(text, text, None) for text in texts]  # named by their text

    paths = string_list(record, "tgt_img_path")
    if len(paths) != len(texts):
        if any(t.strip() for t in texts):
            raise BadRecordError(f"tgt_text has {len(texts)} entries but tgt_img_path has {len(paths)}")
        texts = [""] * len(paths)  # captionless image candidates (e.g. MSCOCO_t2i): captions unused
    if not paths:
        raise BadRecordError("empty candidate list (tgt_img_path)")
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
    if clean_text(text):
        item["text"] = clean_text(text)
    return item


class _FileCache:
    """``Path.is_file`` with memory: MMEB lists repeat the same images across thousands of queries."""

    def __init__(self) -> None:
        self._seen: dict[str, bool] = {}

    def __call__(self, path: str) -> bool:
        found = self._seen.get(path)
        if found is None:
            found = self._seen[path] = Path(path).is_file()
        return found
