"""Training checkpoints in safetensors + JSON (no pickle): trainable weights, optimizer, random state."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from mmcascade.utils.fs import atomic_directory

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
STATE_NAME = "trainer_state.json"


def save_checkpoint(
    directory: Path,
    *,
    trainable: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
) -> None:
    """Write ``directory`` atomically: a killed save leaves the previous checkpoints untouched."""
    with atomic_directory(directory) as staging:
        save_file(
            {name: t.detach().contiguous().cpu() for name, t in trainable.items()},
            str(staging / "trainable.safetensors"),
        )
        tensors, meta = _flatten_optimizer(optimizer.state_dict())
        save_file(tensors, str(staging / "optimizer.safetensors"))
        (staging / "optimizer.json").write_text(json.dumps(meta))
        random_state = {"torch_cpu": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            for index, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
                random_state[f"torch_cuda_{index}"] = cuda_state
        save_file(random_state, str(staging / "rng.safetensors"))
        (staging / STATE_NAME).write_text(json.dumps(state, indent=2))


def load_checkpoint(
    directory: Path, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Restore the optimizer and random state; return the trainable weights and the trainer state."""
    for name in ("trainable.safetensors", "optimizer.safetensors", "optimizer.json", "rng.safetensors", STATE_NAME):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"checkpoint {directory} is incomplete: {name} is missing")
    trainable = load_file(str(directory / "trainable.safetensors"))
    meta = json.loads((directory / "optimizer.json").read_text())
    optimizer.load_state_dict(_unflatten_optimizer(load_file(str(directory / "optimizer.safetensors")), meta))
    random_state = load_file(str(directory / "rng.safetensors"))
    torch.set_rng_state(random_state["torch_cpu"])
    cuda_states = [random_state[key] for key in sorted(random_state) if key.startswith("torch_cuda_")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    return trainable, json.loads((directory / STATE_NAME).read_text())


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints under ``output_dir``, oldest first."""
    if not output_dir.is_dir():
        return []
    found = []
    for path in output_dir.iterdir():
        match = CHECKPOINT_PATTERN.match(path.name)
        if match and path.is_dir() and (path / STATE_NAME).is_file():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def prune_checkpoints(output_dir: Path, keep: int) -> None:
    for path in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def _flatten_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, param_state in state_dict["state"].items():
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{param_id}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(param_id), {})[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        param_id, key = name.split(".", 1)
        state.setdefault(int(param_id), {})[key] = tensor
    for param_id, values in meta["scalars"].items():
        state.setdefault(int(param_id), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}
