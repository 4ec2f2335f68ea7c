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

import os
from collections.abc import Callable
from pathlib import Path

from mmcascade.evaluation.mmeb.config import DatasetConfig
from mmcascade.evaluation.mmeb.dataset import EvalDataset
from mmcascade.evaluation.mmeb.fields import MMEB_IMAGE_TOKEN
from mmcascade.evaluation.mmeb.frames import FRAME_EXTENSIONS, list_frames, sample_frame_indices, sample_frames
from mmcascade.evaluation.mmeb.image_tasks import read_image_task
from mmcascade.evaluation.mmeb.video import (
    VIDEO_CLS_QUERY_INSTRUCTIONS,
    VIDEO_RET_QUERY_INSTRUCTIONS,
    VIDEO_TARGET_INSTRUCTION,
    read_video_classification,
    read_video_retrieval,
)
from mmcascade.evaluation.mmeb.visdoc import VISDOC_QUERY_INSTRUCTION, VISDOC_TARGET_INSTRUCTION, read_visdoc

__all__ = [
    "FRAME_EXTENSIONS",
    "MMEB_IMAGE_TOKEN",
    "READERS",
    "VIDEO_CLS_QUERY_INSTRUCTIONS",
    "VIDEO_RET_QUERY_INSTRUCTIONS",
    "VIDEO_TARGET_INSTRUCTION",
    "VISDOC_QUERY_INSTRUCTION",
    "VISDOC_TARGET_INSTRUCTION",
    "list_frames",
    "read_dataset",
    "sample_frame_indices",
    "sample_frames",
]

Reader = Callable[[DatasetConfig, Path], EvalDataset]

#: ``dataset_parser`` (VLM2Vec's yaml key) -> the reader of that dataset family
READERS: dict[str, Reader] = {
    "image_cls": read_image_task,
    "image_qa": read_image_task,
    "image_i2t": read_image_task,
    "image_t2i": read_image_task,
    "image_i2i_vg": read_image_task,
    "vidore": read_visdoc,
    "visrag": read_visdoc,
    "video_cls": read_video_classification,
    "video_ret": read_video_retrieval,
}


def read_dataset(config: DatasetConfig, data_root: str | os.PathLike) -> EvalDataset:
    """Read one dataset: its queries, candidates and labels, with the records it skipped in ``problems``.

    Raises:
        FileNotFoundError: the dataset's annotations are not where the config says.
        ValueError: the parser is unknown, or an optional dependency (``pyarrow``, ``datasets``) that
            these annotations need is missing.
    """
    reader = READERS.get(config.dataset_parser)
    if reader is None:
        raise ValueError(
            f"dataset {config.name!r}: no reader for dataset_parser {config.dataset_parser!r}; "
            f"choose one of {sorted(READERS)}"
        )
    return reader(config, Path(data_root).expanduser())
