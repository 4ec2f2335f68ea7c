"""Train the starter embedder (EfficientNet-Lite0 + MiniLM + meta tokens) on the bundled offline data.

    python examples/train_starter.py               # ~20 min on a 2-core CPU; `make starter` also evaluates
    python examples/train_starter.py --steps 20    # a quick look

The same code path as `mmcascade train embedder -c configs/starter.yaml`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mmcascade.data.synthetic.starter_split import build_starter_data
from mmcascade.training.trainer import train_from_config

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "starter")
    parser.add_argument("--output", default="runs/starter-example")
    parser.add_argument("--steps", type=int, default=None, help="stop after this many steps")
    args = parser.parse_args()
    if not (args.data / "manifest.json").is_file():
        build_starter_data(args.data, seed=0, scale=1.0)
    overrides = {"data.train": str(args.data / "train.jsonl"), "training.output_dir": args.output}
    if args.steps:
        overrides["training.max_steps"] = args.steps
    final = train_from_config(ROOT / "configs" / "starter.yaml", overrides=overrides)
    print(f"trained starter: {final}")


if __name__ == "__main__":
    main()
