"""Late-fusion starter (configs/starter-fusion.yaml) against its baselines, on validation or held-out data.

    python scripts/ablate_unified_starter.py split                       # runs/unified/{train,val}.jsonl
    mmcascade train embedder -c configs/starter-fusion.yaml --set data.train=runs/unified/train.jsonl
    python scripts/ablate_fusion_starter.py evaluate runs/starter-fusion/final --split val
    python scripts/ablate_fusion_starter.py probe --split val            # the linear probe, same training records

``--split val`` scores the validation records carved from the training data (choose settings here);
``--split heldout`` scores data/starter/heldout.jsonl (measure once, at the end). ``--outside`` adds the
out-of-generator set of scripts/report_generalisation.py. Every figure is Hit@1 ± its standard error, at the
five Matryoshka budgets; results are written as JSON into --work.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from _siblings import sibling

from mmcascade.budget import Budget
from mmcascade.data.records import read_records
from mmcascade.evaluation import evaluate_records

ROOT = Path(__file__).resolve().parent.parent
BUDGETS = [Budget(1, 1), Budget(2, 4), Budget(4, 8), Budget(8, 16), Budget(16, 64)]
OUT_OF_GENERATOR = ROOT / "reports" / "generalisation-starter" / ".work" / "out-of-generator" / "records.jsonl"


def split_records(split: str, work: Path, data: Path) -> list:
    return list(read_records(work / "val.jsonl" if split == "val" else data / "heldout.jsonl"))


def score(model: Any, name: str, records: list, budgets: list[Budget], outside: bool) -> dict:
    started = time.perf_counter()
    results: dict[str, Any] = {"in_generator": {}}
    for scores in evaluate_records(model, records, budgets, batch_size=32):
        error = math.sqrt(scores.hit_at_1 * (1 - scores.hit_at_1) / scores.n_queries)
        results["in_generator"][scores.budget.label] = {
            "hit@1": scores.hit_at_1,
            "se": error,
            "n": scores.n_queries,
            "per_kind": scores.per_kind,
        }
        print(f"{name} {scores.budget.label}: {scores.hit_at_1:.3f} ± {error:.3f} {scores.per_kind}", flush=True)
    if outside:
        generalisation = sibling("report_generalisation")
        pooled = generalisation.pooled_hits(model, list(read_records(OUT_OF_GENERATOR)), budgets)
        results["out_of_generator"] = {label: generalisation.with_overall(t) for label, t in pooled.items()}
        for label, table in results["out_of_generator"].items():
            tasks = " ".join(f"{task} {entry['hit@1']:.3f}" for task, entry in table.items() if task != "all")
            print(f"{name} outside {label}: {table['all']['hit@1']:.3f} ± {table['all']['se']:.3f} ({tasks})")
    results["seconds"] = time.perf_counter() - started
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["evaluate", "probe"])
    parser.add_argument("model", nargs="?", default="runs/starter-fusion/final")
    parser.add_argument("--split", choices=["val", "heldout"], default="val")
    parser.add_argument("--outside", action="store_true", help="also score the out-of-generator set")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "starter")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "unified")
    args = parser.parse_args()
    records = split_records(args.split, args.work, args.data)
    if args.step == "probe":
        from mmcascade.evaluation.linear_probe import LinearProbe, train_linear_probe

        folder = args.work / "linear-probe"
        if (folder / "config.json").is_file():
            model = LinearProbe.from_pretrained(folder)
        else:
            model = train_linear_probe(list(read_records(args.work / "train.jsonl")), log=print)
            model.save_pretrained(folder)
        name, budgets = "linear-probe", [Budget(1, 1)]
    else:
        from mmcascade import Embedder

        model, name, budgets = Embedder.from_pretrained(args.model), args.model, BUDGETS
    results = score(model, name, records, budgets, args.outside)
    out = args.work / f"scores-{name.replace('/', '_')}-{args.split}.json"
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
