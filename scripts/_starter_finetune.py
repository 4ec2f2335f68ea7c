"""Shared by the report scripts: continue training the starter embedder for a few steps on a records file."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def finetune_starter(records_path: Path, output_dir: Path, steps: int, *, embedder: str = "starter") -> Path:
    """The starter's own recipe, started from the trained ``embedder`` at a lower learning rate, for ``steps``
    steps; returns the final folder. The late-fusion starter trains its head on cached backbone rows
    (configs/starter-fusion.yaml); the MiniLM starter its adapters, projector and meta tokens (configs/starter.yaml)."""
    import json

    from mmcascade.models import resolve_model
    from mmcascade.training.trainer import train_from_config

    family = json.loads((resolve_model(embedder, "embedder") / "mmcascade.json").read_text())["backbone_family"]
    config = "starter-fusion.yaml" if family == "starter_features" else "starter.yaml"

    overrides = {
        "model.name_or_path": embedder,
        "model.head": None,
        "model.head_options": {},
        "data.train": str(records_path),
        "training.output_dir": str(output_dir),
        "training.max_steps": steps,
        "training.learning_rate": 1e-4,
        "training.head_learning_rate": 2e-4,
        "training.warmup_ratio": 0.0,
        "training.save_every": 10_000,
        "training.progress_bar": False,
    }
    return Path(train_from_config(ROOT / "configs" / config, resume_from=None, overrides=overrides))
