"""Score a late-fusion starter candidate (a trained folder or a training checkpoint) on the validation split.

    python scripts/train_starter.py --roles linear_probe --no-install     # the split and the probe, once
    mmcascade train embedder -c configs/starter-fusion.yaml --set data.train=runs/starter-split/train.jsonl \\
        --set training.output_dir=runs/lever-x [--set model.head_options.pooled_skip=true] \\
        [--set model.processor_options.text_segments=separate]
    python scripts/ablate_fusion_starter.py runs/lever-x/checkpoint-0000300 -c configs/starter-fusion.yaml

MODEL is an embedder folder, or a checkpoint folder (``trainable.safetensors``), rebuilt from the config's
model section (with the same ``--set`` overrides the run had). ``--split val`` (default) scores the
validation records carved from the training data, where the levers of the model card were chosen;
``--split heldout`` the held-out records (measure once, at the end). Hit@1 ± standard error at the five
Matryoshka budgets, per kind; written as JSON next to the split.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from _siblings import sibling
from safetensors.torch import load_file

from mmcascade import Embedder
from mmcascade.budget import MATRYOSHKA_BUDGETS, Budget
from mmcascade.data.records import read_records
from mmcascade.training.config import TrainConfig
from mmcascade.utils.config import apply_overrides, config_from_dict, config_to_dict, load_config_file, parse_override

ROOT = Path(__file__).resolve().parent.parent


def load_candidate(model: Path, config: Path, overrides: list[str]) -> Embedder:
    """An embedder folder as saved, or a checkpoint's trainable weights on the model its config builds."""
    if not (model / "trainable.safetensors").is_file():
        return Embedder.from_pretrained(model)
    loaded = load_config_file(TrainConfig, config)
    changes = dict(parse_override(text) for text in overrides)  # the run's --set, exactly as the CLI reads them
    spec = config_from_dict(TrainConfig, apply_overrides(config_to_dict(loaded), changes)).model
    embedder = Embedder.from_pretrained(
        spec.name_or_path, head=spec.head, head_options=spec.head_options or None, **spec.processor_options
    )
    result = embedder.load_state_dict(load_file(str(model / "trainable.safetensors")), strict=False)
    if result.unexpected_keys:
        raise ValueError(f"{model} holds weights the config's model lacks: {result.unexpected_keys[:5]}")
    return embedder.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("-c", "--config", type=Path, default=ROOT / "configs" / "starter-fusion.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="as for mmcascade train")
    parser.add_argument("--split", choices=["val", "heldout"], default="val")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "starter")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "starter-split")
    args = parser.parse_args()
    name, path = (
        ("validation", args.work / "val.jsonl") if args.split == "val" else ("heldout", args.data / "heldout.jsonl")
    )
    model = load_candidate(args.model, args.config, args.overrides)
    budgets = Budget.parse_many(MATRYOSHKA_BUDGETS) if model.is_multi_vector else [Budget(1, 1)]
    scores = sibling("train_starter").score_model(model, budgets, {name: list(read_records(path))})
    for entry in scores[name]:
        p, n = entry["hit@1"], entry["n_queries"]
        print(f"{entry['budget']}: {p:.3f} ± {math.sqrt(p * (1 - p) / n):.3f} {entry['per_kind']}")
    out = args.work / f"scores-{str(args.model).strip('/').replace('/', '_')}-{args.split}.json"
    out.write_text(json.dumps(scores, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
