"""Visual documents (ViDoRe, VisRAG; BEIR layout): queries, a corpus of page images, and graded qrels.

Queries are ``{query-id, query, language?}``, the corpus ``{corpus-id, image}`` and qrels
``{query-id, corpus-id, score}``. Hub corpora that carry image bytes are written to disk once.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

from mmcascade.evaluation.mmeb.annotations import Records, limit_queries, open_records
from mmcascade.evaluation.mmeb.config import DatasetConfig
from mmcascade.evaluation.mmeb.dataset import EvalDataset, EvalQuery
from mmcascade.evaluation.mmeb.fields import (
    BadRecordError,
    configured_instruction,
    identifier,
    invalid_item_reason,
    string_field,
)
from mmcascade.utils.fs import write_bytes_atomically

# Instructions VLM2Vec hard-codes in its loaders (the annotations of these datasets carry none).
# Overridable per dataset with the config keys ``query_instruction`` / ``target_instruction``.
VISDOC_QUERY_INSTRUCTION = "Find a document image that matches the given query:"  # vidore/visrag_dataset.py
VISDOC_TARGET_INSTRUCTION = "Understand the content of the provided document image."


def read_visdoc(config: DatasetConfig, root: Path) -> EvalDataset:
    """Text -> page: each query ranked against the whole corpus, with graded relevance from the qrels."""
    media_root = root / config.image_root
    problems: list[str] = []
    # Open all three parts first, so a missing part is reported before anything is written.
    query_records = open_records(config, root, problems, part="queries")
    corpus_records = open_records(config, root, problems, part="corpus")
    qrel_records = open_records(config, root, problems, part="qrels")

    relevance = _read_qrels(qrel_records, problems)
    pool = _read_corpus(corpus_records, config, media_root, problems)
    instruction = configured_instruction(config, "query_instruction", VISDOC_QUERY_INSTRUCTION)
    queries: list[EvalQuery] = []
    for where, record in limit_queries(_in_language(query_records, config), config):
        query = _visdoc_query(record, where, config, relevance, pool, instruction, problems)
        if query is not None:
            queries.append(query)
    return EvalDataset.from_config(config, queries, pool, problems)


def _read_corpus(
    records: Records, config: DatasetConfig, media_root: Path, problems: list[str]
) -> dict[str, dict[str, Any]]:
    """corpus -> {corpus-id: page item}, the first of a repeated id kept."""
    pool: dict[str, dict[str, Any]] = {}
    target_instruction = configured_instruction(config, "target_instruction", VISDOC_TARGET_INSTRUCTION)
    for where, record in records:
        try:
            name, image_path = _corpus_image(record, config, media_root)
        except BadRecordError as error:
            problems.append(f"{where}: document dropped ({error})")
            continue
        if name in pool:
            problems.append(f"{where}: duplicate corpus-id {name!r}; the first one is kept")
            continue
        item = {"image": image_path}
        if target_instruction:
            item["instruction"] = target_instruction
        pool[name] = item
    return pool


def _in_language(records: Records, config: DatasetConfig) -> Records:
    language = _query_language(config)
    return (
        (where, record)
        for where, record in records
        if language is None or not isinstance(record, dict) or record.get("language", language) == language
    )


def _visdoc_query(
    record: Any,
    where: str,
    config: DatasetConfig,
    relevance: dict[str, dict[str, int | float]],
    pool: dict[str, dict[str, Any]],
    instruction: str | None,
    problems: list[str],
) -> EvalQuery | None:
    """One query record -> its query, or None (with a line in ``problems``) when it is unusable."""
    try:
        if not isinstance(record, dict):
            raise BadRecordError(f"expected a JSON object, got {type(record).__name__}")
        query_id = identifier(record, "query-id")
        text = string_field(record, "query", required=True).strip()
    except BadRecordError as error:
        problems.append(f"{where}: query dropped ({error})")
        return None
    graded = relevance.get(query_id)
    if not graded:
        problems.append(f"{where}: query {query_id!r} dropped (no qrel with score > 0)")
        return None
    missing = [doc for doc in graded if doc not in pool]
    if missing:
        problems.append(f"{where}: query {query_id!r}: relevant documents not in the corpus, ignored: {missing}")
    labels = tuple(doc for doc in graded if doc in pool)
    if not labels:
        problems.append(f"{where}: query {query_id!r} dropped (none of its relevant documents is in the corpus)")
        return None
    item: dict[str, Any] = {"text": text}
    if instruction:
        item["instruction"] = instruction
    reason = invalid_item_reason(item)
    if reason is not None:
        problems.append(f"{where}: query {query_id!r} dropped ({reason})")
        return None
    return EvalQuery(
        query_id=query_id,
        item=item,
        candidate_names=tuple(labels) if config.eval_type == "local" else None,
        labels=labels,
        rel_scores=tuple(graded[doc] for doc in labels),
    )


def _read_qrels(records: Records, problems: list[str]) -> dict[str, dict[str, int | float]]:
    """qrels -> {query-id: {corpus-id: grade}}: grades > 0 only; a repeated pair keeps its highest grade."""
    relevance: dict[str, dict[str, int | float]] = {}
    for where, record in records:
        try:
            if not isinstance(record, dict):
                raise BadRecordError(f"expected a JSON object, got {type(record).__name__}")
            query_id = identifier(record, "query-id")
            doc_id = identifier(record, "corpus-id")
            score = record.get("score")
            if isinstance(score, str):
                score = float(score) if re.fullmatch(r"\s*-?\d+(\.\d*)?\s*", score) else None
            if isinstance(score, bool) or not isinstance(score, (int, float)):
                raise BadRecordError(f"score must be a number, got {record.get('score')!r}")
        except BadRecordError as error:
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
        raise BadRecordError(f"expected a JSON object, got {type(record).__name__}")
    name = identifier(record, "corpus-id")
    # Where VLM2Vec materialises a Hub corpus image (vidore_dataset.py / visrag_dataset.py corpus_prepare).
    target = media_root / _materialised_name(config.dataset_parser, name)
    image = record.get("image")
    if isinstance(image, str) and image.strip():
        path = media_root / image.strip()
        if not path.is_file():
            raise BadRecordError(f"page image not found: {path}")
        return name, str(path)
    if target.is_file():  # written by an earlier run (ours or VLM2Vec's)
        return name, str(target)
    if isinstance(image, dict):
        data = image.get("bytes")
        if data:
            write_bytes_atomically(target, bytes(data))
            return name, str(target)
        original = image.get("path")
        if isinstance(original, str) and original:
            for path in (media_root / original, Path(original)):
                if path.is_file():
                    return name, str(path)
        raise BadRecordError(f"image has neither bytes nor an existing path (looked for {target})")
    if image is not None and hasattr(image, "save"):  # a PIL image, from a decoded Hub column
        target.parent.mkdir(parents=True, exist_ok=True)
        image.save(target)
        return name, str(target)
    raise BadRecordError(f"no page image: 'image' is {type(image).__name__} and {target} does not exist")


def _materialised_name(parser: str, corpus_id: str) -> str:
    if parser == "visrag":  # some VisRAG ids are long file names: VLM2Vec shortens them and adds a hash
        base, extension = os.path.splitext(corpus_id)
        return f"{base[:50]}_{hashlib.md5(corpus_id.encode('utf-8')).hexdigest()[:8]}{extension}"
    return f"{corpus_id}.png"


def _query_language(config: DatasetConfig) -> str | None:
    """Which ``language`` to keep: ViDoRe-v2 english variants are filtered (VLM2Vec dataset_hf_path.py)."""
    if "language" in config.extra:
        return config.extra["language"] or None
    name = config.dataset_name
    if name.endswith("_v2") and "multilingual" not in name and "human_labeled" not in name:
        return "english"
    return None
