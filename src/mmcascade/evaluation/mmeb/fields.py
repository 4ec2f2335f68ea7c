"""The fields of one MMEB record: typed reads that say why a record is unusable, shared by every reader."""

from __future__ import annotations

from typing import Any

import numpy as np

from mmcascade.data.items import as_item
from mmcascade.evaluation.mmeb.config import DatasetConfig

# The image placeholder of MMEB records; our processor places the image itself, so it is removed.
MMEB_IMAGE_TOKEN = "<|image_1|>"


class BadRecordError(ValueError):
    """A record this reader cannot use; the message says why."""


def clean_text(text: str) -> str:
    """Text or instruction without MMEB's image placeholder, whitespace stripped."""
    return text.replace(MMEB_IMAGE_TOKEN, "").strip()


def string_field(record: dict[str, Any], key: str, *, required: bool) -> str:
    """``record[key]`` as a string: ``""`` when null or (unless ``required``) absent."""
    if key not in record:
        if required:
            raise BadRecordError(f"missing field {key!r}")
        return ""
    value = record[key]
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRecordError(f"{key} must be a string, got {type(value).__name__}")
    return value


def string_list(record: dict[str, Any], key: str) -> list[str]:
    """``record[key]`` as a list of strings (a list, tuple or parquet array; nulls become ``""``)."""
    if key not in record:
        raise BadRecordError(f"missing field {key!r}")
    values = record[key]
    if isinstance(values, np.ndarray):
        values = values.tolist()
    if not isinstance(values, (list, tuple)):
        raise BadRecordError(f"{key} must be a list of strings, got {type(values).__name__}")
    if any(value is not None and not isinstance(value, str) for value in values):
        raise BadRecordError(f"{key} must be a list of strings")
    return ["" if value is None else value for value in values]


def identifier(record: dict[str, Any], key: str) -> str:
    """``record[key]`` as a non-empty id string (BEIR ids may be ints)."""
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise BadRecordError(f"{key} must be a non-empty string or int, got {value!r}")
    return str(value).strip()


def configured_instruction(config: DatasetConfig, key: str, default: str | None) -> str | None:
    """The instruction the config sets under ``key`` (``""`` or null: none), else ``default``."""
    value = config.extra.get(key, default)
    return (value.strip() or None) if isinstance(value, str) else None


def invalid_item_reason(item: dict[str, Any]) -> str | None:
    """Why ``item`` is not a valid item (e.g. neither text nor image), or None."""
    try:
        as_item(item)
    except ValueError as error:
        return str(error)
    return None
