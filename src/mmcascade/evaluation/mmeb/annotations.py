"""Where a dataset's annotation records come from: a local folder (JSONL or parquet) or a Hugging Face Hub id.

See :mod:`mmcascade.evaluation.mmeb.readers` for the folder layout. Records stream as ``(where, record)``
pairs; ``where`` (file and line, or Hub config and row) starts every problem line a reader writes.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from mmcascade.evaluation.mmeb.config import DatasetConfig

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
Records = Iterator[tuple[str, Any]]  # (where the record is, for problem lines; the record)


def local_folder(config: DatasetConfig, root: Path) -> Path | None:
    """The annotation folder, or None when the source is a Hub dataset id."""
    source = config.annotation_source()
    path = Path(source).expanduser()
    if path.is_absolute():
        return path
    if (root / source).exists() or not _HUB_ID.fullmatch(source):
        return root / source
    return None


def open_records(config: DatasetConfig, root: Path, problems: list[str], part: str | None = None) -> Records:
    """The records of one dataset (or one BEIR part), as (where, record) pairs.

    Files are looked up now, so a missing dataset raises :class:`FileNotFoundError` before any reading.
    """
    folder = local_folder(config, root)
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


def _file_records(path: Path, directory: Path, problems: list[str]) -> Records:
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


def _hub_records(config: DatasetConfig, part: str | None, problems: list[str]) -> Records:
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


def limit_queries(records: Iterable[tuple[str, Any]], config: DatasetConfig) -> Iterable[tuple[str, Any]]:
    """VLM2Vec's ``num_sample_per_subset``: keep the first n queries (an int or digit string; else all)."""
    limit = config.extra.get("num_sample_per_subset")
    if isinstance(limit, str) and limit.strip().isdigit():
        limit = int(limit)
    if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0:
        return itertools.islice(records, limit)
    return records
