"""Dataset configs: VLM2Vec's eval yaml (``image.yaml``, ``video.yaml``, ``visdoc.yaml``) plus a few keys of ours.

A config file maps dataset names to entries::

    ImageNet-1K:
        dataset_parser: image_cls          # which reader (see PARSERS)
        dataset_name: ImageNet-1K          # the annotation config / folder name
        dataset_split: test
        image_root: image-tasks/MMEB/      # media root, relative to the data root
        eval_type: local                   # local: own candidate list; global: the whole pool (default)
        # ours, all optional:
        annotations: annotations          # a folder under the data root, or a Hub dataset id
        meta_task: CLS                     # grouping for averages (default: from the parser / dataset)
        num_frames: 8                      # video: frames sampled per clip

Keys this project does not know (VLM2Vec has a few more, e.g. ``subset_name``) are kept in ``extra``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmcascade.evaluation.mmeb.dataset import Modality

# parser -> (modality, default meta-task)
PARSERS: dict[str, tuple[Modality, str]] = {
    "image_cls": ("image", "CLS"),
    "image_qa": ("image", "QA"),
    "image_i2t": ("image", "RET"),
    "image_t2i": ("image", "RET"),
    "image_i2i_vg": ("image", "RET"),
    "vidore": ("visdoc", "VisDoc"),
    "visrag": ("visdoc", "VisDoc"),
    "video_cls": ("video", "CLS"),
    "video_ret": ("video", "RET"),
}
# VLM2Vec groups image_i2i_vg datasets into RET or VG by name (image.yaml comments).
VISUAL_GROUNDING = frozenset({"MSCOCO", "RefCOCO", "RefCOCO-Matching", "Visual7W-Pointing"})
DEFAULT_IMAGE_ANNOTATIONS = "ziyjiang/MMEB_Test_Instruct"
_KNOWN = frozenset(
    {
        "dataset_parser",
        "dataset_name",
        "dataset_split",
        "image_root",
        "video_root",
        "frame_root",
        "eval_type",
        "annotations",
        "meta_task",
        "num_frames",
    }
)


@dataclass(frozen=True)
class DatasetConfig:
    """One dataset entry of an eval config file."""

    name: str
    dataset_parser: str
    dataset_name: str
    dataset_split: str = "test"
    image_root: str = ""
    frame_root: str = ""
    eval_type: str = "global"
    annotations: str | None = None
    meta_task: str = ""
    num_frames: int = 8
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def modality(self) -> Modality:
        return PARSERS[self.dataset_parser][0]

    def annotation_source(self) -> str:
        """Where the annotations come from: the configured folder/Hub id, or the MMEB default for images."""
        if self.annotations:
            return self.annotations
        if self.modality == "image":
            return DEFAULT_IMAGE_ANNOTATIONS
        raise ValueError(f"dataset {self.name!r}: set 'annotations' (a folder under the data root or a Hub id)")


def load_configs(path: str | os.PathLike) -> list[DatasetConfig]:
    """Read an eval yaml; every entry is checked, with the dataset and key named in errors."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"eval config not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML: {error}") from error
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{path} must map dataset names to entries (see VLM2Vec's image.yaml)")
    return [parse_entry(str(name), entry, path) for name, entry in raw.items()]


def parse_entry(name: str, entry: Any, source: str | os.PathLike = "<config>") -> DatasetConfig:
    where = f"{source}: dataset {name!r}"
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be a mapping of keys, got {type(entry).__name__}")
    parser = entry.get("dataset_parser")
    if parser not in PARSERS:
        raise ValueError(f"{where}: dataset_parser {parser!r} is not supported; choose one of {sorted(PARSERS)}")
    eval_type = entry.get("eval_type", "global")
    if eval_type not in ("local", "global"):
        raise ValueError(f"{where}: eval_type must be 'local' or 'global'; got {eval_type!r}")
    num_frames = entry.get("num_frames", 8)
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"{where}: num_frames must be a positive int; got {num_frames!r}")
    dataset_name = str(entry.get("dataset_name", name))
    meta_task = entry.get("meta_task") or (
        "VG" if parser == "image_i2i_vg" and dataset_name in VISUAL_GROUNDING else PARSERS[parser][1]
    )
    return DatasetConfig(
        name=name,
        dataset_parser=parser,
        dataset_name=dataset_name,
        dataset_split=str(entry.get("dataset_split", "test")),
        image_root=str(entry.get("image_root") or entry.get("video_root") or ""),
        frame_root=str(entry.get("frame_root", "")),
        eval_type=eval_type,
        annotations=entry.get("annotations"),
        meta_task=str(meta_task),
        num_frames=num_frames,
        extra={key: value for key, value in entry.items() if key not in _KNOWN},
    )
