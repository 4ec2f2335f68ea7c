"""Build the mini MMEB-V2 benchmark (seven small datasets in MMEB's formats) from offline data.

    python scripts/build_mini_mmeb.py [--out DIR] [--seed 0] [--scale 1.0]

Needs the optional packages: pip install easy-vqa conformal-clip-data scikit-learn

The default folder is the one ``mmcascade.data.synthetic.mini_benchmark.ensure_mini_benchmark`` uses
(``mini-mmeb-v1`` under $MMCASCADE_CACHE, else $XDG_CACHE_HOME/mmcascade, else ~/.cache/mmcascade).
The folder is replaced in one rename; the same seed, scale and package versions give identical files.
See the folder's README.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from mmcascade.data.synthetic.mini_benchmark import build_mini_benchmark, default_mini_benchmark_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=None, help=f"output folder (default {default_mini_benchmark_dir()})"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every dataset's size (default 1.0)")
    args = parser.parse_args(argv)
    out = args.out if args.out is not None else default_mini_benchmark_dir()
    started = time.perf_counter()
    try:
        manifest = build_mini_benchmark(out, seed=args.seed, scale=args.scale)
    except (ValueError, ImportError, FileExistsError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - started
    for name, info in manifest["datasets"].items():
        if info["modality"] == "visdoc":
            detail = f"{info['corpus']} pages, {info['qrels']} qrels"
        else:
            low, high = info["candidates_per_query"]
            detail = f"{low if low == high else f'{low}-{high}'} candidates per query"
        print(f"{name:16s} {info['dataset_parser']:13s} {info['eval_type']:6s} {info['queries']:4d} queries, {detail}")
    for note in manifest["notes"]:
        print(f"note: {note}")
    total = sum(path.stat().st_size for path in Path(out).expanduser().rglob("*") if path.is_file())
    totals = manifest["totals"]
    print(
        f"wrote {out}: {totals['queries']} queries, {totals['images']} images, {totals['files']} files, "
        f"{total / 2**20:.1f} MiB in {seconds:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
