"""Build the starter embedder's train/held-out data offline.

    python scripts/build_starter_data.py --out data/starter [--seed 0] [--scale 1.0]

Needs the optional packages: pip install easy-vqa conformal-clip-data scikit-learn
"""

from __future__ import annotations

import argparse
import sys
import time

from mmcascade.data.synthetic.starter_split import build_starter_data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="dataset folder (replaced if it holds an earlier build)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every record count (default 1.0)")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    try:
        manifest = build_starter_data(args.out, seed=args.seed, scale=args.scale)
    except (ImportError, ValueError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - start

    counts = manifest["counts"]
    print(f"{'task':<18} {'kind':<14} {'train':>6} {'heldout':>8}")
    rows = sorted(
        {(task, kind) for split in counts.values() for task, kinds in split["by_task"].items() for kind in kinds}
    )
    for task, kind in rows:
        train = counts["train"]["by_task"].get(task, {}).get(kind, 0)
        heldout = counts["heldout"]["by_task"].get(task, {}).get(kind, 0)
        print(f"{task:<18} {kind:<14} {train:>6} {heldout:>8}")
    print(f"{'records':<33} {counts['train']['records']:>6} {counts['heldout']['records']:>8}")
    print(f"{'images':<33} {counts['train']['images']:>6} {counts['heldout']['images']:>8}")
    for note in manifest["notes"]:
        print(f"note: {note}")
    print(f"wrote {args.out} (seed {manifest['seed']}, scale {manifest['scale']}) in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
