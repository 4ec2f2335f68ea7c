"""A mini MMEB-V2 benchmark built offline: seven small datasets in MMEB's own on-disk format.

:func:`build_mini_benchmark` writes the local snapshot layout documented in
:mod:`mmcascade.evaluation.mmeb.dataset` (``mmeb.yaml``, ``annotations/<Name>/test.jsonl`` with exactly
MMEB's record fields, BEIR ``queries/corpus/qrels.jsonl`` for the visual-document task, images under
``image-tasks/`` and ``visdoc-tasks/<Name>/``), plus ``manifest.json``, ``README.md`` and
``metadata/<Name>.jsonl`` (per-query ground truth aligned with the annotations; no MMEB reader needs it).

Everything comes from code or from files inside installed packages, nothing is downloaded:

================  ============  ======  ==========================================================
dataset           parser        eval    source
================  ============  ======  ==========================================================
MiniTextile-CLS   image_cls     local   conformal-clip-data simulated textiles -> 3 defect labels
MiniDigits-CLS    image_cls     local   scikit-learn digits -> 10 labels "the digit seven"
MiniShapes-VQA    image_qa      local   easy-VQA *test* split: image + question -> answer
MiniScenes-t2i    image_t2i     local   caption -> scene image among held-out hard negatives
MiniScenes-i2t    image_i2t     local   scene image -> caption among held-out hard negatives
MiniScenes-VG     image_i2i_vg  local   scene image + referring expression -> the object's crop
MiniDocs          vidore        global  rendered catalogue pages; graded qrels (2 answer, 1 topic)
================  ============  ======  ==========================================================

None of the starter embedder's *training* images is used (see :data:`HELDOUT_POLICY`): scenes use only
held-out configurations (:func:`mmcascade.data.starter_data.is_heldout_configuration`), negatives
included; textiles and digits come from samples the starter's training split (seed 0, scale 1.0)
never picks, recomputed with the starter's own split helpers; easy-VQA comes from its test split only,
minus any image whose pixels equal an easy-VQA train image. :func:`training_image_overlap` checks a
build against a starter ``train.jsonl`` by pixel digests.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mmcascade.data import scenes
from mmcascade.data.starter_data import (
    DIGIT_SIZE,
    DIGIT_WORDS,
    PLAN,
    TEXTILE_LABELS,
    TEXTILE_SIZE,
    is_heldout_configuration,
    scaled_count,
)

# The starter's own split helpers: the starter's training picks of textiles and digits are recomputed
# exactly as the starter data build makes them, so this benchmark follows any change to that split.
from mmcascade.data.starter_data import _rng as starter_rng
from mmcascade.data.starter_data import _round_robin as starter_round_robin
from mmcascade.data.starter_data import _spread as starter_spread
from mmcascade.utils.fs import atomic_directory

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
INSTALL_HINT = "pip install easy-vqa conformal-clip-data scikit-learn   # or: pip install -e '.[starter]'"

# The starter model was trained on the data built with these (scripts/train_starter.py).
STARTER_SEED = 0
STARTER_SCALE = 1.0

SCENE_CANDIDATES = 8  # t2i / i2t: the positive and 7 held-out hard negatives
MAX_COUNT_EDITS = 2  # per query, negatives with an object added or removed (the easier ones)
VG_CANDIDATES = 8  # the referred object's crop, the scene's other objects, crops of other scenes
VG_CROP = 48
VG_BACKGROUND = (242, 242, 242)
MAX_SINGLE_OBJECT_SCENES = 8  # only ~14 one-object configurations are held out
MAX_SCENE_DRAWS = 200_000

PAGE_SIZE = (192, 256)
PAGE_MARGIN = 10
PAGES_PER_TOPIC = 3

HELDOUT_POLICY = (
    "No image of the starter embedder's training split (mmcascade.data.starter_data, seed "
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

INSTRUCTIONS: dict[str, tuple[str, str]] = {  # dataset -> (qry_inst, tgt_inst)
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

VQA_SHAPES = frozenset({"circle", "rectangle", "triangle"})
VQA_YES_NO = frozenset({"yes", "no"})


# --------------------------------------------------------------------------------------------------
# public entry points


def build_mini_benchmark(out_dir: str | os.PathLike, *, seed: int = 0, scale: float = 1.0) -> dict[str, Any]:
    """Build the mini benchmark under ``out_dir`` (replaced atomically) and return its manifest.

    Args:
        out_dir: the benchmark folder. An existing folder must be empty or an earlier build of this
            benchmark (its ``manifest.json`` says so), so nothing else is ever deleted.
        seed: the same seed (and package versions) gives byte-identical files.
        scale: multiplies every dataset's size (1.0: 650 queries, ~1500 PNGs, about 4.5 MB); counts are capped
            by what the sources hold, with a note in the manifest.

    Raises:
        ValueError: a negative or non-integer seed, or a scale that is not a positive number.
        ImportError: easy-vqa, conformal-clip-data or scikit-learn is missing (with the pip command).
        FileExistsError: ``out_dir`` holds something other than an earlier build of this benchmark.
        RuntimeError: a source has fewer suitable samples than needed, or a safety check failed.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    if isinstance(scale, bool) or not (isinstance(scale, (int, float)) and np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number; got {scale!r}")
    sources = _load_sources()  # fail on a missing package before touching out_dir
    out_dir = Path(out_dir).expanduser()
    _check_replaceable(out_dir)
    with atomic_directory(out_dir) as staging:
        staging.chmod(0o755)  # a temporary folder is private (0700); this one is shared data
        manifest = _Builder(staging, int(seed), float(scale), sources).build()
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        (staging / "README.md").write_text(_readme(manifest))
    return manifest


def default_mini_benchmark_dir() -> Path:
    """``$MMCASCADE_CACHE/mini-mmeb-v1``, else ``~/.cache/mmcascade/mini-mmeb-v1``."""
    cache = os.environ.get("MMCASCADE_CACHE")
    root = Path(cache).expanduser() if cache else Path.home() / ".cache" / "mmcascade"
    return root / DEFAULT_DIR_NAME


def ensure_mini_benchmark(path: str | os.PathLike | None = None) -> Path:
    """The benchmark folder, built (seed 0, scale 1.0) the first time or when its format version is stale.

    Args:
        path: where it lives; default :func:`default_mini_benchmark_dir`.

    Raises:
        FileExistsError: ``path`` holds something other than a build of this benchmark.
        ImportError: a source package is missing (see :func:`build_mini_benchmark`).
    """
    folder = Path(path).expanduser() if path is not None else default_mini_benchmark_dir()
    manifest = _read_manifest(folder)
    if manifest is None or manifest.get("format_version") != FORMAT_VERSION or not (folder / "mmeb.yaml").is_file():
        build_mini_benchmark(folder)
    return folder


def training_image_overlap(out_dir: str | os.PathLike, starter_train_jsonl: str | os.PathLike) -> int:
    """How many benchmark image files have the same pixels as an image of a starter training file.

    Args:
        out_dir: a benchmark folder (every PNG under ``image-tasks/`` and ``visdoc-tasks/`` is checked).
        starter_train_jsonl: a training records file (:mod:`mmcascade.data.records`); its image paths are
            relative to its folder.

    Raises:
        FileNotFoundError: either input is missing, or the training file names an image that is missing.
    """
    out_dir, train_file = Path(out_dir), Path(starter_train_jsonl)
    if not train_file.is_file():
        raise FileNotFoundError(f"starter training records not found: {train_file}")
    ours: dict[str, list[Path]] = {}
    sizes: set[tuple[int, int]] = set()
    for root in (out_dir / IMAGE_ROOT, out_dir / VISDOC_ROOT):
        for path in sorted(root.rglob("*.png")) if root.is_dir() else []:
            with Image.open(path) as image:
                sizes.add(image.size)
                ours.setdefault(pixel_digest(image), []).append(path)
    if not ours:
        raise FileNotFoundError(f"no benchmark images under {out_dir}; build it first (build_mini_benchmark)")
    training: set[str] = set()
    for relative in sorted(_record_image_paths(train_file)):
        path = Path(relative) if Path(relative).is_absolute() else train_file.parent / relative
        if not path.is_file():
            raise FileNotFoundError(f"{train_file} names the image {relative}, which is missing ({path})")
        with Image.open(path) as image:
            if image.size in sizes:  # a different size can never have the same pixels
                training.add(pixel_digest(image))
    return sum(len(paths) for digest, paths in ours.items() if digest in training)


def pixel_digest(image: Image.Image) -> str:
    """A digest of an image's size and RGB pixels (independent of the file format)."""
    rgb = image.convert("RGB")
    return hashlib.blake2b(repr(rgb.size).encode() + rgb.tobytes(), digest_size=16).hexdigest()


# --------------------------------------------------------------------------------------------------
# sources


@dataclass(frozen=True)
class _Sources:
    easy_vqa: Any
    textile_dirs: dict[str, Path]
    digits: tuple[np.ndarray, np.ndarray]  # (images (n, 8, 8) in 0..16, targets (n,))
    versions: dict[str, str]


def _import_optional(module: str, package: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"building the mini MMEB benchmark needs the optional package '{package}', which is not "
            f"installed; run: {INSTALL_HINT}"
        ) from error


def _load_sources() -> _Sources:
    easy_vqa = _import_optional("easy_vqa", "easy-vqa")
    textile = _import_optional("conformal_clip_data", "conformal-clip-data")
    sklearn_datasets = _import_optional("sklearn.datasets", "scikit-learn")
    digits = sklearn_datasets.load_digits()
    versions = {}
    for package in ("mmcascade", "easy-vqa", "conformal-clip-data", "scikit-learn", "numpy", "pillow"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "unknown"
    return _Sources(
        easy_vqa=easy_vqa,
        textile_dirs={"nominal": textile.nominal_dir(), "local": textile.local_dir(), "global": textile.global_dir()},
        digits=(np.asarray(digits.images), np.asarray(digits.target)),
        versions=versions,
    )


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("name") == BENCHMARK_NAME else None


def _check_replaceable(out_dir: Path) -> None:
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a folder; choose another --out")
    if any(out_dir.iterdir()) and _read_manifest(out_dir) is None:
        raise FileExistsError(
            f"refusing to replace {out_dir}: it is not empty and is not an earlier mini-MMEB build "
            "(no manifest.json of this benchmark); choose a new folder or empty it first"
        )


def _record_image_paths(train_file: Path) -> set[str]:
    """Every image path named by a records file (sides ``query``, ``positive``, ``negatives``)."""
    paths: set[str] = set()
    with train_file.open() as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as error:
                raise ValueError(f"{train_file}:{number}: not JSON ({error})") from error
            for side in [record.get("query"), record.get("positive"), *(record.get("negatives") or [])]:
                if not isinstance(side, dict):
                    continue
                if isinstance(side.get("image"), str):
                    paths.add(side["image"])
                paths.update(image for image in side.get("images") or [] if isinstance(image, str))
    return paths


# --------------------------------------------------------------------------------------------------
# building


def _stream(seed: int, *names: str) -> np.random.Generator:
    """An independent random stream per (seed, names): changing one dataset leaves the others alone."""
    return np.random.default_rng([seed, *(zlib.crc32(name.encode()) for name in names)])


def _mmeb_record(
    qry_inst: str, qry_text: str, qry_img_path: str, tgt_inst: str, tgt_text: list[str], tgt_img_path: list[str]
) -> dict[str, Any]:
    if len(tgt_text) != len(tgt_img_path) or not tgt_text:
        raise RuntimeError(f"candidate lists differ in length or are empty: {tgt_text!r} / {tgt_img_path!r}")
    return dict(zip(MMEB_FIELDS, (qry_inst, qry_text, qry_img_path, tgt_inst, tgt_text, tgt_img_path), strict=True))


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


@dataclass
class _ImageStore:
    """Writes PNGs under one media root, refusing duplicate paths and forbidden pixels."""

    root: Path
    forbidden: set[str] = field(default_factory=set)  # pixel digests that must not appear
    written: dict[str, str] = field(default_factory=dict)  # relative path -> pixel digest

    def save(self, image: Image.Image, relative: str) -> str:
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


@dataclass(frozen=True)
class _SceneNegatives:
    edits: list[scenes.SceneEdit]  # kinds "colour", ... or "first+second" for two edits
    one_edit: int  # how many of them are one edit away (the rest are two edits away)

    @property
    def scenes(self) -> list[scenes.Scene]:
        return [edit.scene for edit in self.edits]


class _Builder:
    def __init__(self, root: Path, seed: int, scale: float, sources: _Sources) -> None:
        self.root, self.seed, self.scale, self.sources = root, seed, scale, sources
        self.images = _ImageStore(root / IMAGE_ROOT)
        self.notes: list[str] = []
        self.info: dict[str, dict[str, Any]] = {}

    def count(self, spec: DatasetSpec) -> int:
        return scaled_count(spec.base_queries, self.scale)

    def build(self) -> dict[str, Any]:
        builders = {
            "MiniTextile-CLS": self._textiles,
            "MiniDigits-CLS": self._digits,
            "MiniShapes-VQA": self._vqa,
            "MiniScenes-t2i": self._scenes_t2i,
            "MiniScenes-i2t": self._scenes_i2t,
            "MiniScenes-VG": self._scenes_vg,
            "MiniDocs": self._documents,
        }
        for spec in DATASETS:
            info = builders[spec.name](spec)
            wanted = self.count(spec)
            if info["queries"] < wanted:
                self.notes.append(f"{spec.name}: {info['queries']} queries, not {wanted}: the source has no more")
            self.info[spec.name] = info
        (self.root / "mmeb.yaml").write_text(_yaml())
        return self._manifest()

    def _write_records(
        self, spec: DatasetSpec, records: list[dict[str, Any]], metadata: list[dict[str, Any]], **info: Any
    ) -> dict[str, Any]:
        path = self.root / ANNOTATIONS / spec.name / "test.jsonl"
        _write_jsonl(path, records)
        self._write_metadata(spec, metadata)
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

    def _write_metadata(self, spec: DatasetSpec, rows: list[dict[str, Any]]) -> None:
        """Ground truth per query, line by line aligned with the annotation file (no reader needs it)."""
        _write_jsonl(self.root / METADATA / f"{spec.name}.jsonl", rows)

    # ---- textiles and digits: the samples the starter's training split never picks ----------------

    def _textiles(self, spec: DatasetSpec) -> dict[str, Any]:
        classes = list(TEXTILE_LABELS)
        files = {name: sorted(self.sources.textile_dirs[name].glob("*.jpg")) for name in classes}
        order = {
            name: starter_rng(STARTER_SEED, "textile", name).permutation(len(paths)) for name, paths in files.items()
        }
        trained = _starter_training_positions("textile_label", {name: len(paths) for name, paths in files.items()})
        trained_files = {files[name][int(order[name][p])] for name in classes for p in trained[name]}
        trained_bytes = {_file_digest(path) for path in trained_files}
        available = {
            name: [
                files[name][int(order[name][p])]
                for p in range(len(files[name]))
                if p not in trained[name] and _file_digest(files[name][int(order[name][p])]) not in trained_bytes
            ]
            for name in classes
        }
        rng = _stream(self.seed, spec.name)
        picks = _balanced_picks(available, self.count(spec), rng)
        qry_inst, tgt_inst = INSTRUCTIONS[spec.name]
        records, metadata = [], []
        for number, (name, path) in enumerate(picks):
            with Image.open(path) as source:
                image = source.convert("RGB").resize((TEXTILE_SIZE, TEXTILE_SIZE), Image.Resampling.LANCZOS)
            relative = self.images.save(image, f"{spec.name}/{number:05d}.png")
            label = TEXTILE_LABELS[name]
            others = [TEXTILE_LABELS[other] for other in classes if other != name]
            labels = [label, *(others[int(i)] for i in rng.permutation(len(others)))]
            records.append(_mmeb_record(qry_inst, "", relative, tgt_inst, labels, [""] * len(labels)))
            metadata.append({"label": name, "source": f"conformal-clip-data/simulated/{name}/{path.name}"})
        return self._write_records(
            spec,
            records,
            metadata,
            source=f"conformal-clip-data {self.sources.versions['conformal-clip-data']}: simulated textiles, "
            f"250x250 JPEG -> {TEXTILE_SIZE}x{TEXTILE_SIZE} PNG (Lanczos), as the starter data draws them",
            per_class={name: sum(1 for pick, _ in picks if pick == name) for name in classes},
        )

    def _digits(self, spec: DatasetSpec) -> dict[str, Any]:
        pixels, targets = self.sources.digits
        classes = [str(digit) for digit in range(10)]
        members = {name: np.flatnonzero(targets == int(name)) for name in classes}
        order = {name: starter_rng(STARTER_SEED, "digits", name).permutation(len(members[name])) for name in classes}
        trained = _starter_training_positions("digit_label", {name: len(members[name]) for name in classes})
        trained_pixels = {
            pixels[int(members[name][int(order[name][p])])].tobytes() for name in classes for p in trained[name]
        }
        available = {
            name: [
                int(members[name][int(order[name][p])])
                for p in range(len(members[name]))
                if p not in trained[name]
                and pixels[int(members[name][int(order[name][p])])].tobytes() not in trained_pixels
            ]
            for name in classes
        }
        rng = _stream(self.seed, spec.name)
        picks = _balanced_picks(available, self.count(spec), rng)
        labels_by_class = [f"the digit {word}" for word in DIGIT_WORDS]
        qry_inst, tgt_inst = INSTRUCTIONS[spec.name]
        records, metadata = [], []
        for number, (name, sample) in enumerate(picks):
            relative = self.images.save(_digit_image(pixels[sample]), f"{spec.name}/{number:05d}.png")
            label = labels_by_class[int(name)]
            others = [text for text in labels_by_class if text != label]
            labels = [label, *(others[int(i)] for i in rng.permutation(len(others)))]
            records.append(_mmeb_record(qry_inst, "", relative, tgt_inst, labels, [""] * len(labels)))
            metadata.append({"label": name, "source": f"sklearn-digits/{sample}"})
        return self._write_records(
            spec,
            records,
            metadata,
            source=f"scikit-learn {self.sources.versions['scikit-learn']} load_digits: 8x8 -> "
            f"{DIGIT_SIZE}x{DIGIT_SIZE} RGB PNG, dark ink on white, as the starter data draws them",
            per_class={name: sum(1 for pick, _ in picks if pick == name) for name in classes},
        )

    # ---- easy-VQA test split ------------------------------------------------------------------------

    def _vqa(self, spec: DatasetSpec) -> dict[str, Any]:
        easy_vqa = self.sources.easy_vqa
        train_pixels = set()
        for path in easy_vqa.get_train_image_paths().values():
            with Image.open(path) as image:
                train_pixels.add(pixel_digest(image))
        texts, answers, image_ids = easy_vqa.get_test_questions()
        image_paths = easy_vqa.get_test_image_paths()
        answer_types = {
            answer: "shape" if answer in VQA_SHAPES else "yes_no" if answer in VQA_YES_NO else "colour"
            for answer in easy_vqa.get_answers()
        }
        by_type: dict[str, list[int]] = {name: [] for name in sorted(set(answer_types.values()))}
        for index, answer in enumerate(answers):
            by_type[answer_types[answer]].append(index)
        rng = _stream(self.seed, spec.name)
        queues = {name: [int(i) for i in rng.permutation(indices)] for name, indices in by_type.items()}
        count = self.count(spec)
        chosen: list[tuple[int, Image.Image]] = []
        used_images: set[int] = set()
        skipped = 0
        while len(chosen) < count and any(queues.values()):  # one question per image, answer types in turn
            for name in sorted(queues):
                queue = queues[name]
                while queue and len(chosen) < count:
                    index = queue.pop(0)
                    if image_ids[index] in used_images:
                        continue
                    used_images.add(image_ids[index])
                    with Image.open(image_paths[image_ids[index]]) as source:
                        image = source.convert("RGB")
                    if pixel_digest(image) in train_pixels:
                        skipped += 1
                        continue
                    chosen.append((index, image))
                    break
        qry_inst, tgt_inst = INSTRUCTIONS[spec.name]
        records, metadata, per_type = [], [], dict.fromkeys(by_type, 0)
        for number, (index, image) in enumerate(chosen):
            answer = answers[index]
            relative = self.images.save(image, f"{spec.name}/{number:05d}.png")
            kind = answer_types[answer]
            per_type[kind] += 1
            others = sorted(a for a, t in answer_types.items() if t == kind and a != answer)
            labels = [answer, *(others[int(i)] for i in rng.permutation(len(others)))]
            records.append(_mmeb_record(qry_inst, texts[index], relative, tgt_inst, labels, [""] * len(labels)))
            metadata.append({"answer_type": kind, "source": f"easy-vqa/test/{image_ids[index]}"})
        return self._write_records(
            spec,
            records,
            metadata,
            source=f"easy-vqa {self.sources.versions['easy-vqa']}: test split (64x64 PNG, re-saved), one question "
            "per image",
            per_answer_type=per_type,
            skipped_same_pixels_as_train=skipped,
        )

    # ---- scenes ---------------------------------------------------------------------------------------

    def _query_scenes(
        self, name: str, count: int, rng: np.random.Generator, *, min_objects: int = 1
    ) -> list[scenes.Scene]:
        """``count`` held-out scenes with distinct signatures: ~10% one object, the rest two or three."""
        singles = 0 if min_objects > 1 else min(MAX_SINGLE_OBJECT_SCENES, round(0.1 * count))
        plan = [1] * singles + [2 + (k % 2) for k in range(count - singles)]
        chosen: list[scenes.Scene] = []
        seen: set[tuple] = set()
        draws = 0
        for n_objects in plan:
            while True:
                draws += 1
                if draws > MAX_SCENE_DRAWS:
                    raise RuntimeError(f"{name}: found only {len(chosen)} held-out scene configurations, need {count}")
                scene = scenes.random_scene(rng, n_objects)
                if not is_heldout_configuration(scene) or scene.signature in seen:
                    continue
                if min_objects > 1 and len({obj.attributes for obj in scene.objects}) < n_objects:
                    continue  # grounding needs objects that look different
                seen.add(scene.signature)
                chosen.append(scene)
                break
        order = rng.permutation(len(chosen))
        return [chosen[int(i)] for i in order]

    def _scenes_t2i(self, spec: DatasetSpec) -> dict[str, Any]:
        rng = _stream(self.seed, spec.name)
        qry_inst, tgt_inst = INSTRUCTIONS[spec.name]
        records, metadata, one_edit, total = [], [], 0, 0
        for number, scene in enumerate(self._query_scenes(spec.name, self.count(spec), rng)):
            negatives = _heldout_negatives(scene, rng, SCENE_CANDIDATES - 1)
            one_edit, total = one_edit + negatives.one_edit, total + len(negatives.edits)
            style = scenes.CAPTION_STYLES[int(rng.integers(len(scenes.CAPTION_STYLES)))]
            candidates = [scene, *negatives.scenes]
            # File numbers are shuffled so that no file name gives the positive away.
            numbers = rng.permutation(len(candidates))
            paths = [
                self.images.save(scenes.render(candidate), f"{spec.name}/{number:05d}_{int(k)}.png")
                for candidate, k in zip(candidates, numbers, strict=True)
            ]
            records.append(_mmeb_record(qry_inst, scenes.caption(scene, style), "", tgt_inst, [""] * len(paths), paths))
            metadata.append(
                {
                    "caption_style": style,
                    "candidates": [_scene_dict(candidate) for candidate in candidates],
                    "negative_edits": [edit.kind for edit in negatives.edits],
                }
            )
        return self._write_records(
            spec,
            records,
            metadata,
            source="mmcascade.data.scenes (held-out configurations only)",
            **_negative_info(one_edit, total),
        )

    def _scenes_i2t(self, spec: DatasetSpec) -> dict[str, Any]:
        rng = _stream(self.seed, spec.name)
        qry_inst, tgt_inst = INSTRUCTIONS[spec.name]
        records, metadata, one_edit, total = [], [], 0, 0
        for number, scene in enumerate(self._query_scenes(spec.name, self.count(spec), rng)):
            negatives = _heldout_negatives(scene, rng, SCENE_CANDIDATES - 1)
            one_edit, total = one_edit + negatives.one_edit, total + len(negatives.edits)
            style = scenes.CAPTION_STYLES[int(rng.integers(len(scenes.CAPTION_STYLES)))]
            candidates = [scene, *negatives.scenes]
            captions = [scenes.caption(candidate, style) for candidate in candidates]
            relative = self.images.save(scenes.render(scene), f"{spec.name}/{number:05d}.png")
            records.append(_mmeb_record(qry_inst, "", relative, tgt_inst, captions, [""] * len(captions)))
            metadata.append(
                {
                    "caption_style": style,
                    "candidates": [_scene_dict(candidate) for candidate in candidates],
                    "negative_edits": [edit.kind for edit in negatives.edits],
                }
            )
        return self._write_records(
            spec,
            records,
            metadata,
            source="mmcascade.data.scenes (held-out configurations only)",
            **_negative_info(one_edit, total),
        )

    def _scenes_vg(self, spec: DatasetSpec) -> dict[str, Any]:
        rng = _stream(self.seed, spec.name)
        # One background for every VG scene: otherwise a crop's background alone would tell which
        # candidates come from the query's scene.
        query_scenes = [
            replace(scene, background=VG_BACKGROUND)
            for scene in self._query_scenes(spec.name, self.count(spec), rng, min_objects=2)
        ]
        # Every object of every scene gets one crop file; other scenes' crops are the outside distractors.
        crop_paths: list[list[str]] = []
        query_paths = []
        for number, scene in enumerate(query_scenes):
            image = scenes.render(scene)
            query_paths.append(self.images.save(image, f"{spec.name}/{number:05d}.png"))
            crop_paths.append(
                [
                    self.images.save(
                        _crop_around(image, scene.centre(index), VG_CROP), f"{spec.name}/crops/{number:05d}_{index}.png"
                    )
                    for index in range(len(scene.objects))
                ]
            )
        qry_inst, tgt_inst = INSTRUCTIONS[spec.name]
        records, metadata, kinds = [], [], {"position": 0, "attributes": 0, "one_attribute": 0}
        for number, scene in enumerate(query_scenes):
            target = int(rng.integers(len(scene.objects)))
            kind, expression = _referring_expression(scene, target, rng)
            kinds[kind] += 1
            own = [(number, index) for index in range(len(scene.objects)) if index != target]
            outside = [
                (other, index)
                for other, other_scene in enumerate(query_scenes)
                if other != number
                for index, obj in enumerate(other_scene.objects)
                # an identical-looking crop from elsewhere would be right too
                if obj.attributes != scene.objects[target].attributes
            ]
            n_outside = min(VG_CANDIDATES - 1 - len(own), len(outside))
            distractors = own + [outside[int(i)] for i in rng.choice(len(outside), size=n_outside, replace=False)]
            candidates = [(number, target), *(distractors[int(i)] for i in rng.permutation(len(distractors)))]
            paths = [crop_paths[scene_number][index] for scene_number, index in candidates]
            records.append(_mmeb_record(qry_inst, expression, query_paths[number], tgt_inst, [""] * len(paths), paths))
            metadata.append(
                {
                    "scene": _scene_dict(scene),
                    "target": target,
                    "expression_kind": kind,
                    "candidates": [
                        {
                            "scene": scene_number,
                            "object": index,
                            **_object_dict(query_scenes[scene_number].objects[index]),
                        }
                        for scene_number, index in candidates
                    ],
                }
            )
        return self._write_records(
            spec,
            records,
            metadata,
            source=f"mmcascade.data.scenes (held-out configurations, 2-3 distinct objects), {VG_CROP}x{VG_CROP} crops "
            "around each object centre (Scene.centre), shifted inside the image",
            expression_kinds=kinds,
        )

    # ---- visual documents ---------------------------------------------------------------------------------

    def _documents(self, spec: DatasetSpec) -> dict[str, Any]:
        rng = _stream(self.seed, spec.name)
        media = self.root / spec.image_root
        entities = [(colour, shape) for shape in scenes.SHAPES for colour in scenes.COLOURS]
        n_topics = min(len(entities), max(2, round(20 * self.scale)))
        n_queries = min(n_topics * sum(len(facts) for facts in PAGE_FACTS.values()), self.count(spec))
        topics = [entities[int(i)] for i in rng.permutation(len(entities))[:n_topics]]
        page_numbers = rng.permutation(n_topics * PAGES_PER_TOPIC) + 1  # topic pages are not consecutive
        fonts = (_font(15), _font(11))
        store = _ImageStore(media)
        corpus, pages_of_topic, facts_of_topic = [], [], []
        for t, (colour, shape) in enumerate(topics):
            values = _fact_values(rng)
            topic_pages, topic_facts = [], []
            for p, (aspect, facts) in enumerate(PAGE_FACTS.items()):
                corpus_id = f"page-{int(page_numbers[t * PAGES_PER_TOPIC + p]):03d}"
                lines = [FACT_SENTENCES[fact].format(thing=f"the {colour} {shape}", **values) for fact in facts]
                lines = [line[0].upper() + line[1:] for line in lines]
                image = _page_image(f"The {colour} {shape}: {aspect}", lines, colour, shape, fonts)
                store.save(image, f"{corpus_id}.png")
                corpus.append({"corpus-id": corpus_id, "image": f"{corpus_id}.png"})
                topic_pages.append(corpus_id)
                topic_facts += [(fact, corpus_id) for fact in facts]
            pages_of_topic.append(topic_pages)
            facts_of_topic.append([topic_facts[int(i)] for i in rng.permutation(len(topic_facts))])
        queries, qrels, metadata = [], [], []
        depth = 0
        while len(queries) < n_queries:  # topics in turn, so every object gets questions
            for t, (colour, shape) in enumerate(topics):
                if len(queries) == n_queries or depth >= len(facts_of_topic[t]):
                    continue
                fact, answer_page = facts_of_topic[t][depth]
                query_id = f"q-{len(queries) + 1:03d}"
                queries.append(
                    {"query-id": query_id, "query": FACT_QUESTIONS[fact].format(thing=f"the {colour} {shape}")}
                )
                qrels.append({"query-id": query_id, "corpus-id": answer_page, "score": 2})
                metadata.append(
                    {"query-id": query_id, "topic": f"the {colour} {shape}", "fact": fact, "page": answer_page}
                )
                qrels += [
                    {"query-id": query_id, "corpus-id": page, "score": 1}
                    for page in pages_of_topic[t]
                    if page != answer_page
                ]
            depth += 1
        corpus.sort(key=lambda row: row["corpus-id"])
        folder = self.root / ANNOTATIONS / spec.name
        for file_name, rows in zip(BEIR_FILES, (queries, corpus, qrels), strict=True):
            _write_jsonl(folder / file_name, rows)
        self._write_metadata(spec, metadata)
        return {
            "queries": len(queries),
            "corpus": len(corpus),
            "qrels": len(qrels),
            "qrels_by_score": {
                "2": sum(row["score"] == 2 for row in qrels),
                "1": sum(row["score"] == 1 for row in qrels),
            },
            "topics": n_topics,
            "images": len(store.written),
            "files": [f"{ANNOTATIONS}/{spec.name}/{file_name}" for file_name in BEIR_FILES],
            "metadata": f"{METADATA}/{spec.name}.jsonl",
            "source": f"drawn here: {PAGE_SIZE[0]}x{PAGE_SIZE[1]} catalogue pages with PIL's default font "
            f"(pillow {self.sources.versions['pillow']}), {PAGES_PER_TOPIC} pages per object",
        }

    # ---- manifest ---------------------------------------------------------------------------------------

    def _manifest(self) -> dict[str, Any]:
        versions = self.sources.versions
        files = sorted(path for path in self.root.rglob("*") if path.is_file())
        return {
            "name": BENCHMARK_NAME,
            "format_version": FORMAT_VERSION,
            "description": (
                "A mini MMEB-V2 benchmark in MMEB's own formats (image-task records with qry_inst, qry_text, "
                "qry_img_path, tgt_inst, tgt_text, tgt_img_path; BEIR queries/corpus/qrels for visual documents), "
                "built offline by mmcascade.evaluation.mini_benchmark.build_mini_benchmark."
            ),
            "rebuild": f"python scripts/build_mini_mmeb.py --seed {self.seed} --scale {self.scale:g}",
            "seed": self.seed,
            "scale": self.scale,
            "config": "mmeb.yaml",
            "datasets": {
                spec.name: {
                    "dataset_parser": spec.parser,
                    "eval_type": spec.eval_type,
                    "meta_task": spec.meta_task,
                    "modality": spec.modality,
                    "image_root": spec.image_root,
                    "description": spec.description,
                    "query_instruction": INSTRUCTIONS.get(spec.name, (VIDORE_QUERY_INSTRUCTION, ""))[0],
                    "candidate_instruction": INSTRUCTIONS.get(spec.name, ("", VIDORE_TARGET_INSTRUCTION))[1],
                    **self.info[spec.name],
                }
                for spec in DATASETS
            },
            "totals": {
                "queries": sum(info["queries"] for info in self.info.values()),
                "images": sum(info["images"] for info in self.info.values()),
                "files": len(files) + 2,  # + manifest.json and README.md
                "image_bytes": sum(path.stat().st_size for path in files if path.suffix == ".png"),
            },
            "heldout_policy": HELDOUT_POLICY,
            "starter_split": {"seed": STARTER_SEED, "scale": STARTER_SCALE},
            "sources": {
                "scenes": "mmcascade.data.scenes (this project)",
                "textiles": "conformal-clip-data (MIT): simulated textile images of Megahed et al., 2025",
                "digits": "scikit-learn load_digits (BSD-3-Clause): UCI optical handwritten digits",
                "easy-vqa": "easy-vqa (MIT): synthetic shapes VQA, test split",
                "documents": "drawn by this module with PIL",
            },
            "package_versions": versions,
            "notes": self.notes,
        }


# --------------------------------------------------------------------------------------------------
# helpers: starter split, picks, scenes


def _starter_training_positions(task: str, available: dict[str, int]) -> dict[str, set[int]]:
    """Per class, the positions of the starter's per-class permutation that its training split uses.

    The same computation as ``starter_data._Builder._disjoint_picks`` (train branch) followed by
    ``_round_robin``, for the starter's seed and scale.
    """
    classes = list(available)
    heldout_per_class = starter_spread(scaled_count(PLAN[(task, "simple")][1], STARTER_SCALE), classes)
    picks = {name: list(range(min(heldout_per_class[name], available[name]), available[name])) for name in classes}
    used: dict[str, set[int]] = {name: set() for name in classes}
    for name, position in starter_round_robin(picks, scaled_count(PLAN[(task, "simple")][0], STARTER_SCALE)):
        used[name].add(position)
    return used


def _file_digest(path: Path) -> str:
    return hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()


def _balanced_picks(available: dict[str, list[Any]], count: int, rng: np.random.Generator) -> list[tuple[str, Any]]:
    """Up to ``count`` (class, sample) pairs, classes in turn, samples drawn at random, order shuffled."""
    shuffled = {name: [items[int(i)] for i in rng.permutation(len(items))] for name, items in available.items()}
    chosen: list[tuple[str, Any]] = []
    depth = 0
    while len(chosen) < count and any(depth < len(items) for items in shuffled.values()):
        for name, items in shuffled.items():
            if depth < len(items) and len(chosen) < count:
                chosen.append((name, items[depth]))
        depth += 1
    return [chosen[int(i)] for i in rng.permutation(len(chosen))]


def _digit_image(pixels: np.ndarray) -> Image.Image:
    """An 8x8 digit (values 0..16) as the starter data draws it: dark ink on white, 64x64 RGB."""
    ink = 255 - np.round(pixels * (255 / 16)).astype(np.uint8)
    image = Image.fromarray(ink)  # a 2-D uint8 array is a mode "L" image
    return image.resize((DIGIT_SIZE, DIGIT_SIZE), Image.Resampling.BICUBIC).convert("RGB")


def _heldout_negatives(scene: scenes.Scene, rng: np.random.Generator, n: int) -> _SceneNegatives:
    """``n`` hard negatives with held-out configurations: one edit away first, then two edits away.

    Only about one configuration in ten is held out, so a scene rarely has ``n`` held-out one-edit
    neighbours; the rest are one edit away from a (never shown) one-edit neighbour. Edit kinds are
    taken in turn, and at most :data:`MAX_COUNT_EDITS` negatives add or remove an object (there are
    many such neighbours, and they are the easy ones), unless nothing else is left.
    """
    seen = {scene.signature}
    first = scenes.one_edit_negatives(scene, rng, 400)  # every distinct edit it finds
    seen |= {edit.scene.signature for edit in first}
    heldout_first = [edit for edit in first if is_heldout_configuration(edit.scene)]
    stepping_stones = [edit for edit in first if not is_heldout_configuration(edit.scene)]
    second: list[scenes.SceneEdit] = []
    for index in rng.permutation(len(stepping_stones)):
        if len(heldout_first) + len(second) >= 3 * n:
            break
        stone = stepping_stones[int(index)]
        for edit in scenes.one_edit_negatives(stone.scene, rng, 16):
            if is_heldout_configuration(edit.scene) and edit.scene.signature not in seen:
                seen.add(edit.scene.signature)
                second.append(scenes.SceneEdit(scene=edit.scene, kind=f"{stone.kind}+{edit.kind}"))
    pool = _by_kind_in_turn(heldout_first) + _by_kind_in_turn(second)
    chosen: list[scenes.SceneEdit] = []
    for edit in pool:
        counts = sum("count" in other.kind for other in chosen)
        if len(chosen) < n and ("count" not in edit.kind or counts < MAX_COUNT_EDITS):
            chosen.append(edit)
    chosen += [edit for edit in pool if edit not in chosen][: n - len(chosen)]
    if len(chosen) < n:
        raise RuntimeError(f"only {len(chosen)} held-out negatives for the scene {scene.signature}, need {n}")
    chosen.sort(key=lambda edit: "+" in edit.kind)  # one-edit negatives first (a stable sort)
    return _SceneNegatives(edits=chosen, one_edit=sum("+" not in edit.kind for edit in chosen))


def _by_kind_in_turn(edits: Sequence[scenes.SceneEdit]) -> list[scenes.SceneEdit]:
    """The edits reordered so that kinds (the first edit's kind) take turns."""
    groups: dict[str, list[scenes.SceneEdit]] = {}
    for edit in edits:
        groups.setdefault(edit.kind.split("+")[0], []).append(edit)
    chosen: list[scenes.SceneEdit] = []
    depth = 0
    while any(depth < len(group) for group in groups.values()):
        for group in groups.values():
            if depth < len(group):
                chosen.append(group[depth])
        depth += 1
    return chosen


def _object_dict(obj: scenes.SceneObject) -> dict[str, Any]:
    return {"shape": obj.shape, "colour": obj.colour, "size": obj.size, "slot": obj.slot}


def _scene_dict(scene: scenes.Scene) -> dict[str, Any]:
    """Everything needed to re-render the scene pixel for pixel."""
    return {
        "objects": [_object_dict(obj) for obj in scene.objects],
        "jitter": [list(offset) for offset in scene.jitter],
        "background": list(scene.background),
    }


def _negative_info(one_edit: int, total: int) -> dict[str, Any]:
    return {"negatives": {"one_edit": one_edit, "two_edits": total - one_edit}}


def _crop_around(image: Image.Image, centre: tuple[int, int], size: int) -> Image.Image:
    """A ``size`` x ``size`` crop centred on ``centre``, shifted to lie inside the image."""
    left = min(max(centre[0] - size // 2, 0), image.width - size)
    top = min(max(centre[1] - size // 2, 0), image.height - size)
    return image.crop((left, top, left + size, top + size))


def _referring_expression(scene: scenes.Scene, target: int, rng: np.random.Generator) -> tuple[str, str]:
    """(kind, expression) naming ``scene.objects[target]`` unambiguously."""
    objects = scene.objects
    obj = objects[target]
    options: dict[str, list[str]] = {"attributes": [f"the {obj.size} {obj.colour} {obj.shape}"]}
    if target == 0:
        options["position"] = ["the leftmost shape", "the shape furthest to the left"]
    elif target == len(objects) - 1:
        options["position"] = ["the rightmost shape", "the shape furthest to the right"]
    else:
        options["position"] = ["the shape in the middle", "the middle one of the three shapes"]
    single = []
    if sum(other.colour == obj.colour for other in objects) == 1:
        single.append(f"the {obj.colour} shape")
    if sum(other.shape == obj.shape for other in objects) == 1:
        single.append(f"the {obj.shape}")
    if sum(other.size == obj.size for other in objects) == 1:
        single.append(f"the {obj.size} shape")
    if single:
        options["one_attribute"] = single
    kinds = sorted(options)
    kind = kinds[int(rng.integers(len(kinds)))]
    return kind, options[kind][int(rng.integers(len(options[kind])))]


# --------------------------------------------------------------------------------------------------
# helpers: document pages

VIDORE_QUERY_INSTRUCTION = "Find a document image that matches the given query:"  # what VLM2Vec's vidore reader uses
VIDORE_TARGET_INSTRUCTION = "Understand the content of the provided document image."
PAGE_FACTS: dict[str, tuple[str, ...]] = {
    "measurements": ("height", "width", "weight"),
    "history": ("year", "maker", "material"),
    "whereabouts": ("room", "city", "price"),
}
FACT_SENTENCES = {
    "height": "{thing} is {height} cm tall.",
    "width": "{thing} is {width} cm wide.",
    "weight": "{thing} weighs {weight} kg.",
    "year": "{thing} was made in {year}.",
    "maker": "{thing} was made by {maker}.",
    "material": "{thing} is made of {material}.",
    "room": "{thing} is kept in room {room}.",
    "city": "{thing} is on show in {city}.",
    "price": "{thing} is insured for {price} euros.",
}
FACT_QUESTIONS = {
    "height": "How tall is {thing}?",
    "width": "How wide is {thing}?",
    "weight": "How much does {thing} weigh?",
    "year": "In which year was {thing} made?",
    "maker": "Who made {thing}?",
    "material": "What material is {thing} made of?",
    "room": "In which room is {thing} kept?",
    "city": "In which city is {thing} on show?",
    "price": "What is {thing} insured for?",
}
MAKERS = ("Ada Brook", "Ben Okafor", "Chen Wei", "Dora Lind", "Emil Novak", "Farah Aziz", "Greta Holm", "Hugo Silva")
MATERIALS = ("oak", "glass", "copper", "clay", "marble", "felt", "steel", "paper")
CITIES = ("Lisbon", "Oslo", "Kyoto", "Lima", "Cairo", "Perth", "Quebec", "Riga")


def _fact_values(rng: np.random.Generator) -> dict[str, Any]:
    return {
        "height": int(rng.integers(10, 100)),
        "width": int(rng.integers(10, 100)),
        "weight": int(rng.integers(2, 60)),
        "year": int(rng.integers(1890, 2021)),
        "maker": MAKERS[int(rng.integers(len(MAKERS)))],
        "material": MATERIALS[int(rng.integers(len(MATERIALS)))],
        "room": int(rng.integers(1, 40)),
        "city": CITIES[int(rng.integers(len(CITIES)))],
        "price": int(rng.integers(2, 99)) * 100,
    }


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # a Pillow without FreeType has only the bitmap font
        return ImageFont.load_default()


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def _page_image(title: str, facts: list[str], colour: str, shape: str, fonts: tuple[Any, Any]) -> Image.Image:
    """A white catalogue page: a title, a rule, one paragraph per fact and the object's icon."""
    title_font, body_font = fonts
    page = Image.new("RGB", PAGE_SIZE, (255, 255, 255))
    draw = ImageDraw.Draw(page)
    width = PAGE_SIZE[0] - 2 * PAGE_MARGIN
    y = PAGE_MARGIN
    for line in _wrap(draw, title, title_font, width):
        draw.text((PAGE_MARGIN, y), line, fill=(20, 20, 20), font=title_font)
        y += 19
    draw.line((PAGE_MARGIN, y + 2, PAGE_SIZE[0] - PAGE_MARGIN, y + 2), fill=(160, 160, 160), width=1)
    y += 10
    for fact in facts:
        for line in _wrap(draw, fact, body_font, width):
            draw.text((PAGE_MARGIN, y), line, fill=(40, 40, 40), font=body_font)
            y += 14
        y += 6
    _draw_icon(
        draw, shape, scenes.COLOURS[colour], PAGE_SIZE[0] - PAGE_MARGIN - 14, PAGE_SIZE[1] - PAGE_MARGIN - 14, 12
    )
    return page


def _draw_icon(draw: ImageDraw.ImageDraw, shape: str, fill: tuple[int, int, int], cx: int, cy: int, r: int) -> None:
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        points = 3 if shape == "triangle" else 5
        steps = points if shape == "triangle" else 2 * points
        vertices = []
        for step in range(steps):
            angle = -np.pi / 2 + 2 * np.pi * step / steps
            radius = r if (shape == "triangle" or step % 2 == 0) else r * 0.45
            vertices.append((cx + radius * float(np.cos(angle)), cy + radius * float(np.sin(angle))))
        draw.polygon(vertices, fill=fill)


# --------------------------------------------------------------------------------------------------
# yaml and README


def _yaml() -> str:
    """The dataset configs (VLM2Vec's keys plus ``annotations`` and ``meta_task``), written without pyyaml."""
    lines = [
        "# Mini MMEB-V2 benchmark (mmcascade.evaluation.mini_benchmark); paths are relative to this folder.",
    ]
    for spec in DATASETS:
        lines += [
            f"{spec.name}:",
            f"  dataset_parser: {spec.parser}",
            f"  dataset_name: {spec.name}",
            "  dataset_split: test",
            f"  image_root: {spec.image_root}",
            f"  eval_type: {spec.eval_type}",
            f"  annotations: {ANNOTATIONS}",
            f"  meta_task: {spec.meta_task}",
        ]
    return "\n".join(lines) + "\n"


def _readme(manifest: dict[str, Any]) -> str:
    rows = []
    for name, info in manifest["datasets"].items():
        if info["modality"] == "visdoc":
            size = f"{info['queries']} queries, {info['corpus']} pages, {info['qrels']} qrels"
        else:
            low, high = info["candidates_per_query"]
            size = f"{info['queries']} queries x {low if low == high else f'{low}-{high}'} candidates"
        rows.append(f"| `{name}` | {info['dataset_parser']} | {info['eval_type']} | {info['meta_task']} | {size} |")
    table = "\n".join(rows)
    versions = manifest["package_versions"]
    return f"""# Mini MMEB-V2 benchmark

Seven small datasets in MMEB-V2's own formats, built offline from installed packages by
`mmcascade.evaluation.mini_benchmark.build_mini_benchmark` (seed {manifest["seed"]}, scale {manifest["scale"]:g}).
Do not edit by hand; rebuild with `{manifest["rebuild"]}`.

| dataset | parser | eval | meta-task | size |
|---|---|---|---|---|
{table}

## Layout
- `mmeb.yaml`: one entry per dataset with VLM2Vec's keys (`dataset_parser`, `dataset_name`,
  `dataset_split`, `image_root`, `eval_type`) plus `annotations` and `meta_task`.
- `annotations/<Name>/test.jsonl` (image tasks): one MMEB record per line with exactly the fields
  `qry_inst, qry_text, qry_img_path, tgt_inst, tgt_text, tgt_img_path`; the positive is at index 0 of
  the candidate lists; image paths are relative to `image-tasks/`; `<|image_1|>` marks an image in an
  instruction. Candidate names follow VLM2Vec: `tgt_text` for cls/qa/i2t, `tgt_img_path` for t2i,
  `path + ":" + text` for i2i_vg.
- `annotations/MiniDocs/{{queries,corpus,qrels}}.jsonl` (BEIR): `query-id, query`; `corpus-id, image`
  (a path relative to `visdoc-tasks/MiniDocs/`); `query-id, corpus-id, score` with score 2 for the
  page that answers and 1 for the other pages about the same object (graded NDCG).
- `metadata/<Name>.jsonl` (ours; MMEB readers ignore it): the ground truth of each query, line by
  line aligned with its annotation file: class labels and source files; every candidate scene
  (objects, jitter, background: enough to re-render it) with the kind of edit that made each negative;
  the VG target object and expression kind; the MiniDocs topic and fact.
- `manifest.json`: counts, sources, package versions, seed and scale.

## What it tests
- Scenes (t2i, i2t): every negative is a scene one edit away from the positive (a colour, shape, size,
  position, a swapped attribute pair, one object more or less) or, where too few such configurations
  are held out, two edits away: the attribute-binding and spatial cases a pooled vector gets wrong.
- VG: an image and a referring expression ("the rightmost shape", "the large red star") select one
  object's crop among the crops of the scene's other objects and of other scenes.
- MiniDocs: reading small text on a page ("How tall is the blue star?").

## Nothing the starter embedder was trained on
{manifest["heldout_policy"]}
`training_image_overlap(folder, "data/starter/train.jsonl")` counts benchmark images whose pixels
equal a training image (it must be 0).

## Sources
- Scenes and document pages: drawn by mmcascade (`mmcascade.data.scenes`; pages with PIL's default font).
- Textiles: conformal-clip-data {versions["conformal-clip-data"]} (MIT; simulated textile images of Megahed et al., 2025).
- Digits: scikit-learn {versions["scikit-learn"]} `load_digits` (BSD-3-Clause; UCI optical recognition of handwritten digits).
- easy-VQA: easy-vqa {versions["easy-vqa"]} (MIT), test split.

The same seed and package versions give identical files (numpy {versions["numpy"]}, pillow {versions["pillow"]}).
"""
