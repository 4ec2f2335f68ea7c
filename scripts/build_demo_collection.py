"""Build the small demo collection bundled with mmcascade (``src/mmcascade/assets/demo/``).

    python scripts/build_demo_collection.py [--out src/mmcascade/assets/demo]

Needs the optional packages: pip install conformal-clip-data scikit-learn

Everything the starter embedder could be asked about, none of it seen in training:

- 40 scenes (8 with one object, 16 with two, 16 with three), drawn with fixed seeds from scene
  configurations the starter's training never used (``is_heldout_configuration``), all with
  different signatures and no two alike objects in one scene; caption style "list".
- 10 handwritten digits, one per class, from the starter's held-out split of scikit-learn's digits.
- 6 textile photos, two per class (nominal, local, global), from the starter's held-out split of
  conformal-clip-data.

Each image has a same-named ``.txt`` caption (one line, no trailing newline); ``manifest.json`` lists
every file with its kind, caption and source (for scenes, the objects that define the configuration).
The output folder is replaced in one rename; the same seed and package versions give identical bytes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mmcascade.data.synthetic import scenes
from mmcascade.data.synthetic.sources import (
    DIGIT_SIZE,
    TEXTILE_LABELS,
    TEXTILE_SIZE,
    check_replaceable,
    digit_image,
    digit_label,
    file_digest,
    package_versions,
    textile_image,
)

# The starter split's own helpers: the held-out digits and textiles are picked exactly as the starter
# data build picks them, so the demo follows any change to that split.
from mmcascade.data.synthetic.starter_split import class_order, class_positions, is_heldout_configuration
from mmcascade.utils.fs import atomic_directory

COLLECTION_NAME = "mmcascade-demo-collection"
FORMAT_VERSION = 1
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "mmcascade" / "assets" / "demo"
SCENE_SEED = 2024
SCENES_PER_OBJECT_COUNT = {1: 8, 2: 16, 3: 16}  # only 12 one-object configurations are held out
TEXTILES_PER_CLASS = 2
# The starter model was trained on the data built with these (scripts/train_starter.py).
STARTER_SEED = 0
STARTER_SCALE = 1.0
MAX_SCENE_DRAWS = 100_000
INSTALL_HINT = "pip install conformal-clip-data scikit-learn"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    try:
        manifest = build_demo_collection(args.out)
    except (ImportError, FileExistsError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    total = sum(path.stat().st_size for path in args.out.rglob("*") if path.is_file())
    counts: dict[str, int] = {}
    for item in manifest["items"]:
        counts[item["kind"]] = counts.get(item["kind"], 0) + 1
    print(f"wrote {args.out}: {counts}, {total / 1024:.0f} KiB")
    return 0


def build_demo_collection(out_dir: Path) -> dict[str, Any]:
    """Write the demo collection to ``out_dir`` (replaced atomically) and return its manifest.

    Raises:
        ImportError: scikit-learn or conformal-clip-data is missing (with the pip command).
        FileExistsError: ``out_dir`` holds something other than an earlier build of this collection.
        RuntimeError: a source has fewer suitable held-out samples than the collection needs.
    """
    try:
        import conformal_clip_data
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError(f"building the demo collection needs {error.name}; run: {INSTALL_HINT}") from error
    out_dir = Path(out_dir).expanduser()
    check_replaceable(out_dir, name=COLLECTION_NAME, what="demo-collection")
    digits = load_digits()
    textile_dirs = {
        "nominal": conformal_clip_data.nominal_dir(),
        "local": conformal_clip_data.local_dir(),
        "global": conformal_clip_data.global_dir(),
    }
    with atomic_directory(out_dir) as staging:
        staging.chmod(0o755)  # a temporary folder is private (0700); this one ships as package data
        items = _write_scenes(staging)
        items += _write_digits(staging, np.asarray(digits.images), np.asarray(digits.target))
        items += _write_textiles(staging, textile_dirs)
        manifest = _manifest(items)
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        (staging / "README.md").write_text(_readme(manifest))
    return manifest


def _save(root: Path, relative: str, image: Image.Image, caption: str) -> dict[str, str]:
    """Write the image (PNG) and its one-line caption next to it; return their paths for the manifest."""
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", optimize=True)
    path.with_suffix(".txt").write_text(caption)
    return {"image": relative, "caption_file": str(Path(relative).with_suffix(".txt")), "caption": caption}


# ---- scenes ----------------------------------------------------------------------------------------


def _write_scenes(root: Path) -> list[dict[str, Any]]:
    rng = np.random.default_rng(SCENE_SEED)
    chosen: list[scenes.Scene] = []
    seen: set[tuple] = set()
    for n_objects, wanted in SCENES_PER_OBJECT_COUNT.items():
        found = 0
        for _ in range(MAX_SCENE_DRAWS):
            if found == wanted:
                break
            scene = scenes.random_scene(rng, n_objects)
            if is_heldout_configuration(scene) and scene.signature not in seen and _objects_differ(scene):
                seen.add(scene.signature)
                chosen.append(scene)
                found += 1
        if found < wanted:
            raise RuntimeError(f"found only {found} held-out {n_objects}-object scene configurations, need {wanted}")
    items = []
    for number, scene in enumerate(chosen, start=1):
        caption = scenes.caption(scene, style="list").strip()
        entry = _save(root, f"scenes/scene-{number:02d}.png", scenes.render(scene), caption)
        entry["kind"] = "scene"
        entry["objects"] = [scenes.object_to_json(obj) for obj in scene.objects]
        items.append(entry)
    return items


def _objects_differ(scene: scenes.Scene) -> bool:
    """No two objects alike: "a small red star and a small red star" reads like a typo in a demo."""
    return len({obj.attributes for obj in scene.objects}) == len(scene.objects)


# ---- starter held-out split ------------------------------------------------------------------------


def _write_digits(root: Path, pixels: np.ndarray, targets: np.ndarray) -> list[dict[str, Any]]:
    members = {str(digit): np.flatnonzero(targets == digit) for digit in range(10)}
    heldout = class_positions("digit_label", "heldout", {name: len(m) for name, m in members.items()}, STARTER_SCALE)
    # A sample whose exact pixels occur twice in the source could have a twin in training: skip those.
    counts: dict[bytes, int] = {}
    for sample in pixels:
        counts[sample.tobytes()] = counts.get(sample.tobytes(), 0) + 1
    items = []
    for name, indices in members.items():
        order = class_order(STARTER_SEED, "digits", name, len(indices))
        candidates = [int(indices[int(order[position])]) for position in heldout[name]]
        unique = [sample for sample in candidates if counts[pixels[sample].tobytes()] == 1]
        if not unique:
            raise RuntimeError(f"no held-out digit {name} without a pixel-identical twin in scikit-learn's digits")
        sample = unique[0]
        entry = _save(root, f"digits/digit-{name}.png", digit_image(pixels[sample]), digit_label(name))
        entry.update(kind="digit", label=name, source=f"sklearn-digits/{sample}")
        items.append(entry)
    return items


def _write_textiles(root: Path, textile_dirs: dict[str, Path]) -> list[dict[str, Any]]:
    files = {name: sorted(textile_dirs[name].glob("*.jpg")) for name in TEXTILE_LABELS}
    heldout = class_positions("textile_label", "heldout", {name: len(f) for name, f in files.items()}, STARTER_SCALE)
    # As for digits: skip a file whose exact bytes occur twice in the source.
    counts: dict[str, int] = {}
    for path in (path for paths in files.values() for path in paths):
        counts[file_digest(path)] = counts.get(file_digest(path), 0) + 1
    items = []
    for name, paths in files.items():
        order = class_order(STARTER_SEED, "textile", name, len(paths))
        candidates = [paths[int(order[position])] for position in heldout[name]]
        unique = [path for path in candidates if counts[file_digest(path)] == 1]
        if len(unique) < TEXTILES_PER_CLASS:
            raise RuntimeError(f"only {len(unique)} usable held-out {name} textiles, need {TEXTILES_PER_CLASS}")
        for number, path in enumerate(unique[:TEXTILES_PER_CLASS], start=1):
            entry = _save(root, f"textiles/textile-{name}-{number}.png", textile_image(path), TEXTILE_LABELS[name])
            entry.update(kind="textile", label=name, source=f"conformal-clip-data/simulated/{name}/{path.name}")
            items.append(entry)
    return items


# ---- manifest and README ---------------------------------------------------------------------------


def _manifest(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": COLLECTION_NAME,
        "format_version": FORMAT_VERSION,
        "description": (
            "A small collection for `mmcascade demo`: coloured-shape scenes, handwritten digits and textile "
            "photos that the starter embedder never saw in training. Paths are relative to this folder."
        ),
        "rebuild": "python scripts/build_demo_collection.py",
        "scene_seed": SCENE_SEED,
        "starter_split": {"seed": STARTER_SEED, "scale": STARTER_SCALE},
        "image_sizes": {
            "scene": [scenes.IMAGE_SIZE, scenes.IMAGE_SIZE],
            "digit": [DIGIT_SIZE, DIGIT_SIZE],
            "textile": [TEXTILE_SIZE, TEXTILE_SIZE],
        },
        "package_versions": package_versions(("mmcascade", "scikit-learn", "conformal-clip-data", "numpy", "pillow")),
        "items": items,
    }


def _readme(manifest: dict[str, Any]) -> str:
    counts: dict[str, int] = {}
    for item in manifest["items"]:
        counts[item["kind"]] = counts.get(item["kind"], 0) + 1
    versions = manifest["package_versions"]
    return f"""# mmcascade demo collection

A small bundled collection that `mmcascade demo` indexes with the starter embedder
(`src/mmcascade/assets/starter`) and queries with text and images. Nothing here was seen in the
starter's training. Generated by `scripts/build_demo_collection.py`; do not edit by hand.

Each image has a same-named `.txt` caption (one line, no trailing newline). `manifest.json` lists
every file with its kind (`scene`, `digit`, `textile`), its caption and its source; for scenes also the
objects (shape, colour, size, slot) that define the scene configuration.

| folder | images | size | caption | source |
|---|---|---|---|---|
| `scenes/` | {counts.get("scene", 0)} | {scenes.IMAGE_SIZE}x{scenes.IMAGE_SIZE} PNG | `scenes.caption(scene, "list")`, e.g. "a small red circle on the left" | drawn by `mmcascade.data.synthetic.scenes` (seed {SCENE_SEED}) |
| `digits/` | {counts.get("digit", 0)} | {DIGIT_SIZE}x{DIGIT_SIZE} PNG | "the digit seven" | scikit-learn `load_digits()` |
| `textiles/` | {counts.get("textile", 0)} | {TEXTILE_SIZE}x{TEXTILE_SIZE} PNG | "a textile with a local defect" | conformal-clip-data, simulated textile images |

## Where each part comes from
- **Scenes**: PIL drawings by `mmcascade.data.synthetic.scenes` (this project, Apache-2.0), 1 to 3 coloured shapes.
  Only held-out configurations (`mmcascade.data.synthetic.starter_split.is_heldout_configuration`): no training
  query, positive or negative of the starter has the same signature. All {counts.get("scene", 0)} signatures differ.
- **Digits**: scikit-learn {versions["scikit-learn"]} (BSD-3-Clause), `sklearn.datasets.load_digits`, a copy of
  the test set of UCI's "Optical Recognition of Handwritten Digits" (listed by UCI under CC BY 4.0).
  One per class, from the starter's held-out split (seed {STARTER_SEED}), drawn as the starter data
  draws them: dark ink on white, 8x8 -> 64x64 bicubic.
- **Textiles**: conformal-clip-data {versions["conformal-clip-data"]} (MIT, (c) 2025 Megahed; the simulated
  textile images of Megahed et al., 2025). Two per class (nominal, local, global defect), from the starter's
  held-out split, resized 250x250 -> 128x128 (Lanczos) as in the starter data.
- easy-VQA (used in the starter's training) is not used here.

## Rebuild
```
pip install conformal-clip-data scikit-learn   # or: pip install -e ".[starter]"
python scripts/build_demo_collection.py
```
The same package versions give identical files (built with numpy {versions["numpy"]}, pillow {versions["pillow"]}).
"""


if __name__ == "__main__":
    sys.exit(main())
