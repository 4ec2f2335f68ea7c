"""Ablate the Matryoshka loss's score scale on a validation split carved from the starter's training data.

    python scripts/ablate_loss_scale.py --steps 200     # ~2 x 10 min on 2 cores

MaxSim sums over query vectors, so at temperature 0.03 the (16,64) group's logits reach ~533 while a single
vector stays under ~33. This trains the starter recipe (configs/starter.yaml) for the same steps twice from
the same untrained backbone, once with MetaEmbed's summed scores and once with ``score_normalization: mean``
(colpali-engine's ``normalize_scores``), on the training records minus a seeded, task-stratified validation
split, and reports validation Hit@1 at every budget with standard errors. The held-out split is not touched.
Writes ``reports/loss-scale-ablation/{README.md,results.json}``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from mmcascade import Embedder
from mmcascade.budget import MATRYOSHKA_BUDGETS, Budget
from mmcascade.data.records import read_records, write_records
from mmcascade.data.synthetic.starter_split import build_starter_data, carve_validation
from mmcascade.evaluation import evaluate_records
from mmcascade.training.trainer import train_from_config

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "reports" / "loss-scale-ablation"
VARIANTS = {"sum": "MetaEmbed's summed MaxSim", "mean": "MaxSim / query vectors"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "starter")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--validation-per-task", type=int, default=60)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "loss-scale-ablation")
    args = parser.parse_args()
    if not (args.data / "manifest.json").is_file():
        build_starter_data(args.data, seed=0, scale=1.0)
    train, validation = carve_validation(read_records(args.data / "train.jsonl"), args.validation_per_task)
    args.work.mkdir(parents=True, exist_ok=True)
    write_records(args.work / "train.jsonl", train)
    budgets = Budget.parse_many(MATRYOSHKA_BUDGETS)
    results = {}
    for variant in VARIANTS:
        started = time.perf_counter()
        final = train_from_config(
            ROOT / "configs" / "starter.yaml",
            overrides={
                "data.train": str(args.work / "train.jsonl"),
                "loss.score_normalization": variant,
                "training.max_steps": args.steps,
                "training.output_dir": str(args.work / variant),
            },
        )
        seconds = time.perf_counter() - started
        scores = evaluate_records(Embedder.from_pretrained(final), validation, budgets)
        results[variant] = {"seconds": seconds, "scores": [score.as_dict() for score in scores]}
        print(variant, [round(score.hit_at_1, 3) for score in scores], f"{seconds:.0f} s", flush=True)
    payload = {"steps": args.steps, "n_train": len(train), "n_validation": len(validation), "results": results}
    REPORT.mkdir(parents=True, exist_ok=True)
    (REPORT / "results.json").write_text(json.dumps(payload, indent=2))
    (REPORT / "README.md").write_text(report(payload, budgets))


def standard_error(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 0.0) / n)


def report(payload: dict, budgets: list[Budget]) -> str:
    header = "| scores in the loss | " + " | ".join(budget.label for budget in budgets) + " | training s |"
    rows = [header, "|---|" + "---|" * (len(budgets) + 1)]
    for variant, result in payload["results"].items():
        cells = [f"{s['hit@1']:.3f} ± {standard_error(s['hit@1'], s['n_queries']):.3f}" for s in result["scores"]]
        rows.append(f"| {VARIANTS[variant]} | " + " | ".join(cells) + f" | {result['seconds']:.0f} |")
    return (
        "# Loss scale ablation on the starter (validation split)\n\n"
        f"`python scripts/ablate_loss_scale.py --steps {payload['steps']}`: the starter recipe for "
        f"{payload['steps']} steps from the same untrained backbone, {payload['n_train']} training records, "
        f"Hit@1 (± standard error) on {payload['n_validation']} validation records carved from the training "
        "data (each query against every document of its task, pessimistic ties). The held-out split is not used.\n\n"
        + "\n".join(rows)
        + "\n"
    )


if __name__ == "__main__":
    main()
