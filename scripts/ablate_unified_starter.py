"""The unified-starter ablation (configs/starter-unified.yaml) against the shipped MiniLM starter.

    python scripts/ablate_unified_starter.py split               # runs/unified/{train,val}.jsonl
    mmcascade train embedder -c configs/starter-unified.yaml --set data.train=runs/unified/train.jsonl \\
        --set training.epochs=3 --set training.max_steps=534     # 1 epoch = 178 steps
    python scripts/ablate_unified_starter.py evaluate runs/starter-unified/final [--also-starter]

``split`` carves the seeded, task-stratified validation split of scripts/ablate_loss_scale.py (60 records
per task) from data/starter/train.jsonl. ``evaluate`` prints held-out Hit@1 (data/starter/heldout.jsonl, with
standard errors and the compositional/simple split) at 1x1, 4x8 and 16x64, and the out-of-generator Hit@1 per
task (the set built by scripts/report_generalisation.py in reports/generalisation-starter/.work/), and
writes them as JSON next to the model.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from _siblings import sibling

from mmcascade import Embedder
from mmcascade.budget import Budget
from mmcascade.data.records import read_records, write_records
from mmcascade.data.synthetic.starter_split import carve_validation
from mmcascade.evaluation import evaluate_records

ROOT = Path(__file__).resolve().parent.parent
BUDGETS = [Budget(1, 1), Budget(4, 8), Budget(16, 64)]
OUT_OF_GENERATOR = ROOT / "reports" / "generalisation-starter" / ".work" / "out-of-generator" / "records.jsonl"


def split(data: Path, work: Path) -> None:
    train, validation = carve_validation(read_records(data / "train.jsonl"), 60)
    write_records(work / "train.jsonl", train)
    write_records(work / "val.jsonl", validation)
    print(f"{len(train)} training and {len(validation)} validation records in {work}")


def evaluate(model: str, data: Path) -> dict:
    generalisation = sibling("report_generalisation")
    started = time.perf_counter()
    embedder = Embedder.from_pretrained(model)
    heldout = evaluate_records(embedder, read_records(data / "heldout.jsonl"), BUDGETS, batch_size=32)
    for scores in heldout:
        error = math.sqrt(scores.hit_at_1 * (1 - scores.hit_at_1) / scores.n_queries)
        print(f"{model} held-out {scores.budget.label}: {scores.hit_at_1:.3f} ± {error:.3f} {scores.per_kind}")
    records = list(read_records(OUT_OF_GENERATOR))
    pooled = generalisation.pooled_hits(embedder, records, BUDGETS)
    outside = {label: generalisation.with_overall(table) for label, table in pooled.items()}
    for label, table in outside.items():
        print(f"{model} out-of-generator {label}: {table['all']['hit@1']:.3f} ± {table['all']['se']:.3f}")
    return {
        "heldout": [s.as_dict() for s in heldout],
        "out_of_generator": outside,
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["split", "evaluate"])
    parser.add_argument("model", nargs="?", default="runs/starter-unified/final")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "starter")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "unified")
    parser.add_argument("--also-starter", action="store_true", help="evaluate the shipped starter the same way")
    args = parser.parse_args()
    if args.step == "split":
        split(args.data, args.work)
        return
    results = {args.model: evaluate(args.model, args.data)}
    if args.also_starter:
        results["starter"] = evaluate("starter", args.data)
    out = Path(args.model) / "ablation_scores.json" if Path(args.model).is_dir() else args.work / "ablation_scores.json"
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
