"""Build the shipped starter embedder end to end: data -> split -> training -> baselines -> evaluation -> card.

    python scripts/train_starter.py            # what `make starter` runs (about an hour on 2 CPU cores)

Steps (each resumes or is skipped when its output exists):
1. the training data, from offline packages, into data/starter (scripts/build_starter_data.py);
2. a seeded validation split carved from it (60 records per task) into runs/starter-split: settings are
   chosen there, the held-out split is measured once, at the end;
3. configs/starter-fusion.yaml (frozen late-fusion backbone + fusion head with 16/64 meta tokens) and its
   single-vector twin configs/starter-fusion-single.yaml (same head, data, loss and steps, one vector per
   side), both on cached backbone rows (the twin reuses the first run's cache);
4. the frozen-feature linear probe (mmcascade.evaluation.linear_probe) on the same training records;
5. Hit@1 with standard errors for all three on the validation split, the held-out split and the
   out-of-generator set (scripts/report_generalisation.py's), then the model card; installs the starter
   into src/mmcascade/assets/starter.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import shutil
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from mmcascade import Embedder
from mmcascade.budget import MATRYOSHKA_BUDGETS, Budget
from mmcascade.data.records import read_records, write_records
from mmcascade.data.synthetic.out_of_generator import build_out_of_generator
from mmcascade.data.synthetic.starter_split import build_starter_data, carve_validation
from mmcascade.evaluation import evaluate_records
from mmcascade.evaluation.linear_probe import LinearProbe, train_linear_probe
from mmcascade.training.trainer import train_from_config
from mmcascade.utils.fs import atomic_directory

ROOT = Path(__file__).resolve().parent.parent
BUDGETS = Budget.parse_many(MATRYOSHKA_BUDGETS)
ASSET = ROOT / "src" / "mmcascade" / "assets" / "starter"
VALIDATION_PER_TASK = 60
RUNS = {"starter": "starter-fusion", "single_vector": "starter-fusion-single"}


def sibling(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def standard_error(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "starter")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs")
    parser.add_argument("--no-install", action="store_true", help="evaluate and write the card under runs/ only")
    args = parser.parse_args()
    timings: dict[str, float] = {}

    tick = time.perf_counter()
    if not (args.data / "manifest.json").is_file():
        build_starter_data(args.data, seed=0, scale=1.0)
    split = args.runs / "starter-split"
    if not (split / "val.jsonl").is_file():
        train, validation = carve_validation(list(read_records(args.data / "train.jsonl")), VALIDATION_PER_TASK)
        write_records(split / "train.jsonl", train)
        write_records(split / "val.jsonl", validation)
    timings["data_seconds"] = time.perf_counter() - tick

    models: dict[str, Any] = {}
    for role, run in RUNS.items():
        output = args.runs / run
        if role == "single_vector":  # same frozen backbone rows: reuse the first run's cache
            _share_state_cache(args.runs / RUNS["starter"] / "state_cache", output / "state_cache")
        overrides = {"data.train": str(split / "train.jsonl"), "training.output_dir": str(output)}
        folder = train_from_config(ROOT / "configs" / f"{run}.yaml", overrides=overrides)
        timings[f"{role}_training_seconds"] = _last_metric(output, "elapsed_seconds")
        models[role] = Embedder.from_pretrained(folder)
    tick = time.perf_counter()
    probe_folder = split / "linear-probe"
    if (probe_folder / "config.json").is_file():
        models["linear_probe"] = LinearProbe.from_pretrained(probe_folder)
    else:
        models["linear_probe"] = train_linear_probe(list(read_records(split / "train.jsonl")), log=print)
        models["linear_probe"].save_pretrained(probe_folder)
    timings["probe_seconds"] = time.perf_counter() - tick

    tick = time.perf_counter()
    outside_dir = args.runs / "out-of-generator"
    build_out_of_generator(outside_dir, seed=0, scale=1.0)
    evaluation_sets = {
        "validation": list(read_records(split / "val.jsonl")),
        "heldout": list(read_records(args.data / "heldout.jsonl")),
    }
    generalisation = sibling("report_generalisation")
    outside = list(read_records(outside_dir / "records.jsonl"))
    scores: dict[str, Any] = {name: {} for name in evaluation_sets}
    scores["out_of_generator"] = {}
    for role, model in models.items():
        budgets = BUDGETS if role == "starter" else [Budget(1, 1)]
        for name, records in evaluation_sets.items():
            scores[name][role] = [s.as_dict() for s in evaluate_records(model, records, budgets, batch_size=32)]
            print(f"{role} {name}: " + " ".join(f"{s['hit@1']:.3f}" for s in scores[name][role]), flush=True)
        pooled = generalisation.pooled_hits(model, outside, budgets)
        scores["out_of_generator"][role] = {label: generalisation.with_overall(t) for label, t in pooled.items()}
    scores["out_of_generator"]["chance"] = generalisation.chance_table(outside)
    timings["evaluation_seconds"] = time.perf_counter() - tick

    starter_run = args.runs / RUNS["starter"]
    report = {
        "heldout": scores["heldout"],
        "validation": scores["validation"],
        "out_of_generator": scores["out_of_generator"],
        "timings": timings,
        "steps": int(_last_metric(starter_run, "step")),
        "weights_mb": sum(path.stat().st_size for path in (starter_run / "final").rglob("*.safetensors")) / 1e6,
        "records": {name: len(records) for name, records in evaluation_sets.items()} | {"outside": len(outside)},
    }
    (starter_run / "heldout_scores.json").write_text(json.dumps(report, indent=2))
    card = sibling("starter_card").model_card(report)
    (starter_run / "MODEL_CARD.md").write_text(card)
    print(card)
    if not args.no_install:
        with atomic_directory(ASSET) as staging:
            shutil.copytree(starter_run / "final", staging, dirs_exist_ok=True)
            (staging / "heldout_scores.json").write_text(json.dumps(report, indent=2))
            (staging / "MODEL_CARD.md").write_text(card)
        print(f"installed the starter into {ASSET}")


def _share_state_cache(source: Path, target: Path) -> None:
    """Hard-link (or copy) the cached backbone rows of one run into another run of the same frozen backbone."""
    if target.exists() or not source.is_dir():
        return
    target.mkdir(parents=True)
    for shard in sorted(source.glob("shard-*.safetensors")):
        try:
            (target / shard.name).hardlink_to(shard)
        except OSError:
            shutil.copy2(shard, target / shard.name)


def _last_metric(run: Path, key: str) -> float:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return float(json.loads(lines[-1])[key]) if lines else 0.0


if __name__ == "__main__":
    main()
