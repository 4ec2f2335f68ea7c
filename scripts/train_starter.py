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
5. Hit@1 for all three on the validation split, the held-out split and the out-of-generator set
   (scripts/report_generalisation.py's), kept per model in runs/starter-scores/ (each measured once); then
   the model card, and the starter installed into src/mmcascade/assets/starter.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

from _siblings import sibling

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
ROLES = ("starter", "single_vector", "linear_probe")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "starter")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs")
    parser.add_argument(
        "--roles",
        default=",".join(ROLES),
        help="train and score only these (comma-separated; e.g. to score one model while another trains)",
    )
    parser.add_argument("--no-install", action="store_true", help="evaluate and write the card under runs/ only")
    args = parser.parse_args()
    roles = [role.strip() for role in args.roles.split(",") if role.strip()]
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        parser.error(f"unknown roles {unknown}; valid: {list(ROLES)}")

    tick = time.perf_counter()
    if not (args.data / "manifest.json").is_file():
        build_starter_data(args.data, seed=0, scale=1.0)
    split = args.runs / "starter-split"
    if not (split / "val.jsonl").is_file():
        train, validation = carve_validation(list(read_records(args.data / "train.jsonl")), VALIDATION_PER_TASK)
        write_records(split / "train.jsonl", train)
        write_records(split / "val.jsonl", validation)
    outside_dir = args.runs / "out-of-generator"
    build_out_of_generator(outside_dir, seed=0, scale=1.0)
    sets = {
        "validation": list(read_records(split / "val.jsonl")),
        "heldout": list(read_records(args.data / "heldout.jsonl")),
        "out_of_generator": list(read_records(outside_dir / "records.jsonl")),
    }
    data_seconds = time.perf_counter() - tick

    results = args.runs / "starter-scores"
    for role in roles:
        if (results / f"{role}.json").is_file():
            continue  # trained and scored before: scores are measured once
        model, seconds = train_role(role, args.runs, split)
        scores = score_model(model, BUDGETS if role == "starter" else [Budget(1, 1)], sets)
        (results / f"{role}.json").parent.mkdir(parents=True, exist_ok=True)
        (results / f"{role}.json").write_text(json.dumps({**scores, "training_seconds": seconds}, indent=2))
    if not all((results / f"{role}.json").is_file() for role in ROLES):
        print(f"scored {roles}; the card needs all of {list(ROLES)}")
        return

    per_role = {role: json.loads((results / f"{role}.json").read_text()) for role in ROLES}
    outside = {role: per_role[role]["out_of_generator"] for role in ROLES}
    outside["chance"] = sibling("report_generalisation").chance_table(sets["out_of_generator"])
    starter_run = args.runs / RUNS["starter"]
    report = {name: {role: per_role[role][name] for role in ROLES} for name in ("heldout", "validation")} | {
        "out_of_generator": outside,
        "timings": {"data_seconds": data_seconds}
        | {f"{role}_training_seconds": per_role[role]["training_seconds"] for role in ROLES}
        | {f"{role}_evaluation_seconds": per_role[role]["evaluation_seconds"] for role in ROLES},
        "steps": int(_last_metric(starter_run, "step")),
        "weights_mb": sum(path.stat().st_size for path in (starter_run / "final").rglob("*.safetensors")) / 1e6,
        "records": {"validation": len(sets["validation"]), "heldout": len(sets["heldout"])}
        | {"outside": len(sets["out_of_generator"])},
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


def train_role(role: str, runs: Path, split: Path) -> tuple[Any, float]:
    """The trained model of ``role`` (trained now unless its run finished) and its training wall time."""
    tick = time.perf_counter()
    if role == "linear_probe":
        folder = split / "linear-probe"
        if (folder / "config.json").is_file():
            return LinearProbe.from_pretrained(folder), 0.0
        probe = train_linear_probe(list(read_records(split / "train.jsonl")), log=print)
        probe.save_pretrained(folder)
        return probe, time.perf_counter() - tick
    output = runs / RUNS[role]
    if role == "single_vector":  # same frozen backbone rows: reuse the first run's cache
        _share_state_cache(runs / RUNS["starter"] / "state_cache", output / "state_cache")
    overrides = {"data.train": str(split / "train.jsonl"), "training.output_dir": str(output)}
    folder = train_from_config(ROOT / "configs" / f"{RUNS[role]}.yaml", overrides=overrides)
    return Embedder.from_pretrained(folder), _training_seconds(output)


def score_model(model: Any, budgets: list[Budget], sets: dict[str, list]) -> dict[str, Any]:
    """Hit@1 per budget on each records set; ``out_of_generator`` is scored per task and pool."""
    tick = time.perf_counter()
    generalisation = sibling("report_generalisation")
    scores: dict[str, Any] = {}
    for name, records in sets.items():
        if name == "out_of_generator":
            pooled = generalisation.pooled_hits(model, records, budgets)
            scores[name] = {label: generalisation.with_overall(table) for label, table in pooled.items()}
            continue
        scores[name] = [s.as_dict() for s in evaluate_records(model, records, budgets, batch_size=32)]
        print(f"{name}: " + " ".join(f"{s['hit@1']:.3f}" for s in scores[name]), flush=True)
    scores["evaluation_seconds"] = time.perf_counter() - tick
    return scores


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


def _training_seconds(run: Path) -> float:
    """Wall time of a run, summed over its resumed segments (each restarts ``elapsed_seconds``)."""
    total, previous = 0.0, 0.0
    for line in (run / "metrics.jsonl").read_text().splitlines():
        elapsed = float(json.loads(line).get("elapsed_seconds", 0.0))
        if elapsed < previous:
            total += previous
        previous = elapsed
    return total + previous


def _last_metric(run: Path, key: str) -> float:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return float(json.loads(lines[-1])[key]) if lines else 0.0


if __name__ == "__main__":
    main()
