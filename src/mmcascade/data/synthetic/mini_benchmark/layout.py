"""The mini benchmark's on-disk layout and datasets, and what every dataset builder shares.

The layout is MMEB-V2's own (see :mod:`mmcascade.evaluation.mmeb.dataset`): ``mmeb.yaml``,
``annotations/<Name>/test.jsonl`` with exactly MMEB's record fields (:data:`MMEB_FIELDS`), BEIR
``queries/corpus/qrels.jsonl`` for the visual-document task, images under ``image-tasks/`` and
``visdoc-tasks/<Name>/``, plus ``metadata/<Name>.jsonl`` (ours: per-query ground truth).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mmcascade.data.synthetic.sources import Sources, pixel_digest, scaled_count, stream

BENCHMARK_NAME = "mmcascade-mini-mmeb"
FORMAT_VERSION = 1
DEFAULT_DIR_NAME = "mini-mmeb-v1"
IMAGE_ROOT = "image-tasks"
VISDOC_ROOT = "visdoc-tasks"
ANNOTATIONS = "annotations"
METADATA = "metadata"  # ours: per-query ground truth (scenes, sources); MMEB readers ignore it
IMAGE_PLACEHOLDER = "<|image_1|>"
MMEB_FIELDS = ("qry_inst", "qry_text", "qry_img_path", "tgt_inst", "tgt_text", "tgt_img_path")
BEIR_FILES = ("queries.jsonl", "corpus.jsonl", "qrels.jsonl")

# The starter model was trained on the data built with these (scripts/train_starter.py).
STARTER_SEED = 0
STARTER_SCALE = 1.0

HELDOUT_POLICY = (
    "No image of the starter embedder's training split (mmcascade.data.synthetic.starter_split, seed "
    f"{STARTER_SEED}, scale {STARTER_SCALE}) is used. Scenes: every rendered scene and every caption "
    "(queries, positives and negatives) has a held-out configuration (is_heldout_configuration), which "
    "the starter's training never shows, not even as a negative. Textiles and digits: only samples that "
    "the starter's training split does not pick (recomputed with the starter's own split helpers), "
    "minus any whose source bytes/pixels equal a picked one. easy-VQA: its test split only (the starter "
    "trains on its train split), minus any image whose pixels equal an easy-VQA train image. Document "
    "pages are drawn here and appear nowhere else."
)


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of the benchmark: its yaml entry and its size at scale 1.0."""

    name: str
    parser: str
    eval_type: str
    meta_task: str
    base_queries: int
    description: str

    @property
    def modality(self) -> str:
        return "visdoc" if self.parser in ("vidore", "visrag") else "image"

    @property
    def image_root(self) -> str:
        return f"{VISDOC_ROOT}/{self.name}" if self.modality == "visdoc" else f"{IMAGE_ROOT}/"


DATASETS: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        "MiniTextile-CLS",
        "image_cls",
        "local",
        "CLS",
        90,
        "textile photo -> one of 3 defect labels (no defect / local defect / global defect)",
    ),
    DatasetSpec("MiniDigits-CLS", "image_cls", "local", "CLS", 100, "handwritten digit -> one of 10 labels"),
    DatasetSpec(
        "MiniShapes-VQA",
        "image_qa",
        "local",
        "QA",
        100,
        "easy-VQA test image + question -> the answer among all answers of its type (colour, shape, yes/no)",
    ),
    DatasetSpec(
        "MiniScenes-t2i",
        "image_t2i",
        "local",
        "RET",
        100,
        "caption -> its scene image among 7 images of held-out scenes one (or two) edits away",
    ),
    DatasetSpec(
        "MiniScenes-i2t",
        "image_i2t",
        "local",
        "RET",
        100,
        "scene image -> its caption among 7 captions (same style) of held-out scenes one (or two) edits away",
    ),
    DatasetSpec(
        "MiniScenes-VG",
        "image_i2i_vg",
        "local",
        "VG",
        80,
        "scene image + referring expression -> the crop of the referred object, among crops of the scene's "
        "other objects and of other scenes",
    ),
    DatasetSpec(
        "MiniDocs",
        "vidore",
        "global",
        "VisDoc",
        80,
        "question -> catalogue page that answers it (qrels 2), pages of the same object score 1",
    ),
)
DATASET_NAMES = tuple(spec.name for spec in DATASETS)

INSTRUCTIONS: dict[str, tuple[str, str]] = {  # image dataset -> (qry_inst, tgt_inst)
    "MiniTextile-CLS": (
        f"{IMAGE_PLACEHOLDER}\nRepresent the given textile image for classification: no defect, a local "
        "defect or a global defect.",
        "",
    ),
    "MiniDigits-CLS": (
        f"{IMAGE_PLACEHOLDER}\nRepresent the given image of a handwritten digit for classification.",
        "",
    ),
    "MiniShapes-VQA": (f"{IMAGE_PLACEHOLDER}\nRepresent the given image with the following question:", ""),
    "MiniScenes-t2i": (
        "Find me an image of coloured shapes that matches the given caption:",
        f"{IMAGE_PLACEHOLDER}\nRepresent the given image.",
    ),
    "MiniScenes-i2t": (
        f"{IMAGE_PLACEHOLDER}\nFind an image caption describing the given image of coloured shapes.",
        "",
    ),
    "MiniScenes-VG": (
        f"{IMAGE_PLACEHOLDER}\nSelect the portion of the image that follows the language expression:",
        f"{IMAGE_PLACEHOLDER}\nRepresent the given cropped image of the object.",
    ),
}
# A visual-document dataset's records carry no instruction: these are what VLM2Vec's vidore reader uses.
VIDORE_QUERY_INSTRUCTION = "Find a document image that matches the given query:"
VIDORE_TARGET_INSTRUCTION = "Understand the content of the provided document image."


def instructions(spec: DatasetSpec) -> tuple[str, str]:
    """(query instruction, candidate instruction) of a dataset, as an MMEB reader applies them."""
    return INSTRUCTIONS.get(spec.name, (VIDORE_QUERY_INSTRUCTION, VIDORE_TARGET_INSTRUCTION))


def mmeb_record(
    qry_inst: str, qry_text: str, qry_img_path: str, tgt_inst: str, tgt_text: list[str], tgt_img_path: list[str]
) -> dict[str, Any]:
    """One MMEB image-task record (the positive first in the candidate lists)."""
    if len(tgt_text) != len(tgt_img_path) or not tgt_text:
        raise RuntimeError(f"candidate lists differ in length or are empty: {tgt_text!r} / {tgt_img_path!r}")
    return dict(zip(MMEB_FIELDS, (qry_inst, qry_text, qry_img_path, tgt_inst, tgt_text, tgt_img_path), strict=True))


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows into the build's staging folder (the whole folder is replaced atomically); returns the count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


@dataclass
class ImageStore:
    """Writes PNGs under one media root, refusing duplicate paths and forbidden pixels."""

    root: Path
    forbidden: set[str] = field(default_factory=set)  # pixel digests that must not appear
    written: dict[str, str] = field(default_factory=dict)  # relative path -> pixel digest

    def save(self, image: Image.Image, relative: str) -> str:
        """Write ``image`` to ``root/relative`` and return ``relative``."""
        if relative in self.written:
            raise RuntimeError(f"two images would share the file {relative}")
        digest = pixel_digest(image)
        if digest in self.forbidden:
            raise RuntimeError(f"{relative} has the same pixels as an image the starter was trained on")
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, format="PNG", optimize=True)
        self.written[relative] = digest
        return relative


@dataclass
class BuildContext:
    """What every dataset builder shares: the staging folder, seed, scale, sources and image store."""

    root: Path
    seed: int
    scale: float
    sources: Sources
    images: ImageStore = field(init=False)

    def __post_init__(self) -> None:
        self.images = ImageStore(self.root / IMAGE_ROOT)

    def count(self, spec: DatasetSpec) -> int:
        """How many queries ``spec`` gets at this scale (before capping by its source)."""
        return scaled_count(spec.base_queries, self.scale)

    def rng(self, spec: DatasetSpec) -> np.random.Generator:
        """The dataset's own random stream: changing one dataset leaves the others alone."""
        return stream(self.seed, spec.name)

    def write_records(
        self, spec: DatasetSpec, records: list[dict[str, Any]], metadata: list[dict[str, Any]], **info: Any
    ) -> dict[str, Any]:
        """Write an image dataset's annotations and metadata; return its manifest entry (``info`` added)."""
        write_jsonl(self.root / ANNOTATIONS / spec.name / "test.jsonl", records)
        self.write_metadata(spec, metadata)
        sizes = [len(record["tgt_text"]) for record in records]
        images = {record["qry_img_path"] for record in records} | {
            image for record in records for image in record["tgt_img_path"]
        }
        images.discard("")
        return {
            "queries": len(records),
            "candidates_per_query": [min(sizes), max(sizes)] if sizes else [0, 0],
            "images": len(images),
            "files": [f"{ANNOTATIONS}/{spec.name}/test.jsonl"],
            "metadata": f"{METADATA}/{spec.name}.jsonl",
            **info,
        }

    def write_metadata(self, spec: DatasetSpec, rows: list[dict[str, Any]]) -> None:
        """Ground truth per query, line by line aligned with the annotation file (no reader needs it)."""
        write_jsonl(self.root / METADATA / f"{spec.name}.jsonl", rows)
