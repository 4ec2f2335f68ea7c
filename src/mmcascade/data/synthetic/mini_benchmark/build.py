"""Build, find and check the mini benchmark: the entry points, the manifest, ``mmeb.yaml`` and the README."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from mmcascade.data.records import read_records
from mmcascade.data.synthetic.mini_benchmark.documents import documents
from mmcascade.data.synthetic.mini_benchmark.label_tasks import digits, textiles, vqa
from mmcascade.data.synthetic.mini_benchmark.layout import (
    ANNOTATIONS,
    BENCHMARK_NAME,
    DATASETS,
    DEFAULT_DIR_NAME,
    FORMAT_VERSION,
    HELDOUT_POLICY,
    IMAGE_ROOT,
    STARTER_SCALE,
    STARTER_SEED,
    VISDOC_ROOT,
    BuildContext,
    DatasetSpec,
    instructions,
)
from mmcascade.data.synthetic.mini_benchmark.scene_tasks import SCENES_SOURCE, scenes_i2t, scenes_t2i, scenes_vg
from mmcascade.data.synthetic.sources import (
    check_build_settings,
    check_replaceable,
    load_sources,
    pixel_digest,
    read_manifest,
)
from mmcascade.models import cache_root
from mmcascade.utils.fs import atomic_directory

MODULE = "mmcascade.data.synthetic.mini_benchmark"
_BUILDERS: dict[str, Callable[[BuildContext, DatasetSpec], dict[str, Any]]] = {
    "MiniTextile-CLS": textiles,
    "MiniDigits-CLS": digits,
    "MiniShapes-VQA": vqa,
    "MiniScenes-t2i": scenes_t2i,
    "MiniScenes-i2t": scenes_i2t,
    "MiniScenes-VG": scenes_vg,
    "MiniDocs": documents,
}


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
    check_build_settings(seed, scale)
    sources = load_sources("building the mini MMEB benchmark")  # fail on a missing package before touching out_dir
    out_dir = Path(out_dir).expanduser()
    check_replaceable(out_dir, name=BENCHMARK_NAME, what="mini-MMEB")
    with atomic_directory(out_dir) as staging:
        staging.chmod(0o755)  # a temporary folder is private (0700); this one is shared data
        context = BuildContext(staging, int(seed), float(scale), sources)
        info, notes = _build_datasets(context)
        (staging / "mmeb.yaml").write_text(_yaml())
        manifest = _manifest(context, info, notes)
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        (staging / "README.md").write_text(_readme(manifest))
    return manifest


def default_mini_benchmark_dir() -> Path:
    """``mini-mmeb-v1`` under the cache root (:func:`mmcascade.models.cache_root`)."""
    return cache_root() / DEFAULT_DIR_NAME


def ensure_mini_benchmark(path: str | os.PathLike | None = None) -> Path:
    """The benchmark folder, built (seed 0, scale 1.0) the first time or when its format version is stale.

    Args:
        path: where it lives; default :func:`default_mini_benchmark_dir`.

    Raises:
        FileExistsError: ``path`` holds something other than a build of this benchmark.
        ImportError: a source package is missing (see :func:`build_mini_benchmark`).
    """
    folder = Path(path).expanduser() if path is not None else default_mini_benchmark_dir()
    manifest = read_manifest(folder, BENCHMARK_NAME)
    if manifest is None or manifest.get("format_version") != FORMAT_VERSION or not (folder / "mmeb.yaml").is_file():
        build_mini_benchmark(folder)
    return folder


def training_image_overlap(out_dir: str | os.PathLike, starter_train_jsonl: str | os.PathLike) -> int:
    """How many benchmark image files have the same pixels (:func:`pixel_digest`) as an image of a training file.

    Args:
        out_dir: a benchmark folder (every PNG under ``image-tasks/`` and ``visdoc-tasks/`` is checked).
        starter_train_jsonl: a training records file (:mod:`mmcascade.data.records`); its image paths are
            relative to its folder.

    Raises:
        FileNotFoundError: either input is missing, or the training file names an image that is missing.
        ValueError: a line of the training file is not a valid record.
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
    for path in sorted(_record_images(train_file)):
        if not path.is_file():
            raise FileNotFoundError(f"{train_file} names the image {path}, which is missing")
        with Image.open(path) as image:
            if image.size in sizes:  # a different size can never have the same pixels
                training.add(pixel_digest(image))
    return sum(len(paths) for digest, paths in ours.items() if digest in training)


def _record_images(train_file: Path) -> set[Path]:
    """Every image (absolute) named by a records file: queries, positives and negatives."""
    return {
        Path(image)
        for record in read_records(train_file, check_images=False)
        for item in (record.query, record.positive, *record.negatives)
        for image in item.images
    }


def _build_datasets(context: BuildContext) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Every dataset's manifest entry, and a note for each that its source could not fill."""
    info, notes = {}, []
    for spec in DATASETS:
        entry = _BUILDERS[spec.name](context, spec)
        wanted = context.count(spec)
        if entry["queries"] < wanted:
            notes.append(f"{spec.name}: {entry['queries']} queries, not {wanted}: the source has no more")
        info[spec.name] = entry
    return info, notes


def _manifest(context: BuildContext, info: dict[str, dict[str, Any]], notes: list[str]) -> dict[str, Any]:
    files = sorted(path for path in context.root.rglob("*") if path.is_file())
    return {
        "name": BENCHMARK_NAME,
        "format_version": FORMAT_VERSION,
        "description": (
            "A mini MMEB-V2 benchmark in MMEB's own formats (image-task records with qry_inst, qry_text, "
            "qry_img_path, tgt_inst, tgt_text, tgt_img_path; BEIR queries/corpus/qrels for visual documents), "
            f"built offline by {MODULE}.build_mini_benchmark."
        ),
        "rebuild": f"python scripts/build_mini_mmeb.py --seed {context.seed} --scale {context.scale:g}",
        "seed": context.seed,
        "scale": context.scale,
        "config": "mmeb.yaml",
        "datasets": {
            spec.name: {
                "dataset_parser": spec.parser,
                "eval_type": spec.eval_type,
                "meta_task": spec.meta_task,
                "modality": spec.modality,
                "image_root": spec.image_root,
                "description": spec.description,
                "query_instruction": instructions(spec)[0],
                "candidate_instruction": instructions(spec)[1],
                **info[spec.name],
            }
            for spec in DATASETS
        },
        "totals": {
            "queries": sum(entry["queries"] for entry in info.values()),
            "images": sum(entry["images"] for entry in info.values()),
            "files": len(files) + 2,  # + manifest.json and README.md
            "image_bytes": sum(path.stat().st_size for path in files if path.suffix == ".png"),
        },
        "heldout_policy": HELDOUT_POLICY,
        "starter_split": {"seed": STARTER_SEED, "scale": STARTER_SCALE},
        "sources": {
            "scenes": f"{SCENES_SOURCE} (this project)",
            "textiles": "conformal-clip-data (MIT): simulated textile images of Megahed et al., 2025",
            "digits": "scikit-learn load_digits (BSD-3-Clause): UCI optical handwritten digits",
            "easy-vqa": "easy-vqa (MIT): synthetic shapes VQA, test split",
            "documents": "drawn by this module with PIL",
        },
        "package_versions": context.sources.versions,
        "notes": notes,
    }


def _yaml() -> str:
    """The dataset configs (VLM2Vec's keys plus ``annotations`` and ``meta_task``), written without pyyaml."""
    lines = [f"# Mini MMEB-V2 benchmark ({MODULE}); paths are relative to this folder."]
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


def _readme_table(manifest: dict[str, Any]) -> str:
    rows = []
    for name, info in manifest["datasets"].items():
        if info["modality"] == "visdoc":
            size = f"{info['queries']} queries, {info['corpus']} pages, {info['qrels']} qrels"
        else:
            low, high = info["candidates_per_query"]
            size = f"{info['queries']} queries x {low if low == high else f'{low}-{high}'} candidates"
        rows.append(f"| `{name}` | {info['dataset_parser']} | {info['eval_type']} | {info['meta_task']} | {size} |")
    return "\n".join(rows)


def _readme(manifest: dict[str, Any]) -> str:
    versions = manifest["package_versions"]
    return f"""# Mini MMEB-V2 benchmark

Seven small datasets in MMEB-V2's own formats, built offline from installed packages by
`{MODULE}.build_mini_benchmark` (seed {manifest["seed"]}, scale {manifest["scale"]:g}).
Do not edit by hand; rebuild with `{manifest["rebuild"]}`.

| dataset | parser | eval | meta-task | size |
|---|---|---|---|---|
{_readme_table(manifest)}

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
- Scenes and document pages: drawn by mmcascade (`{SCENES_SOURCE}`; pages with PIL's default font).
- Textiles: conformal-clip-data {versions["conformal-clip-data"]} (MIT; simulated textile images of Megahed et al., 2025).
- Digits: scikit-learn {versions["scikit-learn"]} `load_digits` (BSD-3-Clause; UCI optical recognition of handwritten digits).
- easy-VQA: easy-vqa {versions["easy-vqa"]} (MIT), test split.

The same seed and package versions give identical files (numpy {versions["numpy"]}, pillow {versions["pillow"]}).
"""
