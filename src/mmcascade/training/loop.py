"""What every trainer here shares: schedule, autocast, clipping, resuming, the metrics log, the progress bar.

A trainer mixes in :class:`TrainerParts` and provides ``optim`` (learning rate, warmup, clipping,
autocast, progress options), ``output_dir``, ``total_steps``, ``step``, ``parameters`` (name -> trainable
parameter), ``optimizer``, ``scheduler``, :meth:`TrainerParts._device`,
:meth:`TrainerParts._check_resumable`, and the two class attributes below.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path
from typing import Any, ClassVar

import torch

from mmcascade.training.checkpointing import list_checkpoints, load_checkpoint

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


class TrainerParts:
    """Shared pieces of the embedder and reasoner trainers (see the module docstring)."""

    #: a file that exists in ``<output_dir>/final`` once the final model is saved
    final_marker: ClassVar[str]
    #: the progress bar's label
    progress_label: ClassVar[str] = "training"
    rank: int = 0
    world_size: int = 1

    optim: Any
    output_dir: Path
    total_steps: int
    step: int
    parameters: dict[str, torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: Any

    def _check_resumable(self, path: Path, state: dict[str, Any]) -> None:
        """Raise ValueError when the checkpoint at ``path`` cannot continue this run (a different data order)."""
        raise NotImplementedError

    def _resume(self, resume_from: str | os.PathLike) -> None:
        """Restore weights, optimizer, schedule and step from ``resume_from`` (a folder, or ``latest``: the
        newest checkpoint in the output dir, if any), and drop log lines written after it."""
        if str(resume_from) == "latest":
            checkpoints = list_checkpoints(self.output_dir)
            if not checkpoints:
                return
            path = checkpoints[-1]
        else:
            path = Path(resume_from)
            if not path.is_dir():
                raise FileNotFoundError(f"checkpoint folder not found: {path}")
        trainable, state = load_checkpoint(path, self.optimizer)
        self._check_resumable(path, state)
        missing = set(self.parameters) - set(trainable)
        if missing:
            raise ValueError(f"{path} lacks trainable weights {sorted(missing)[:5]}...: was the config changed?")
        with torch.no_grad():
            for name, parameter in self.parameters.items():
                parameter.copy_(trainable[name])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self._truncate_log(self.step)

    def _device(self) -> torch.device:
        raise NotImplementedError

    # ----------------------------------------------------------------------------------- optimisation
    def _autocast(self) -> Any:
        if self.optim.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self._device().type, dtype=DTYPES[self.optim.autocast])

    def _learning_rate_factor(self, step: int) -> float:
        """Linear warmup over ``warmup_ratio`` of the steps, then linear decay to zero."""
        warmup = math.ceil(self.optim.warmup_ratio * self.total_steps)
        if step < warmup:
            return (step + 1) / warmup
        remaining = max(1, self.total_steps - warmup)
        return max(0.0, 1.0 - (step - warmup) / remaining)

    def _clip_gradients(self) -> float:
        """Clip to ``max_grad_norm`` (if set); returns the gradient norm before clipping."""
        parameters = list(self.parameters.values())
        if self.optim.max_grad_norm is None:
            norms = [p.grad.norm() for p in parameters if p.grad is not None]
            return float(torch.stack(norms).norm()) if norms else 0.0
        return float(torch.nn.utils.clip_grad_norm_(parameters, self.optim.max_grad_norm))

    # ----------------------------------------------------------------------------------- reporting
    @property
    def metrics_path(self) -> Path:
        return self.output_dir / "metrics.jsonl"

    def _finished(self) -> bool:
        """A final model exists and the log reached the last step: running again is a no-op."""
        if not (self.output_dir / "final" / self.final_marker).is_file() or not self.metrics_path.is_file():
            return False
        logged = self._logged()
        return bool(logged) and logged[-1]["step"] >= self.total_steps

    def _log(self, record: dict[str, Any]) -> None:
        if self.rank != 0:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with self.metrics_path.open("a") as stream:
            stream.write(json.dumps(record) + "\n")

    def _truncate_log(self, step: int) -> None:
        """Drop log lines written after the checkpoint we resume from (they will be written again)."""
        if self.rank != 0 or not self.metrics_path.is_file():
            return
        kept = [json.dumps(entry) for entry in self._logged() if entry["step"] <= step]
        self.metrics_path.write_text("".join(line + "\n" for line in kept))

    def _logged(self) -> list[dict[str, Any]]:
        """Entries of the metrics log; a line cut short by a kill is dropped."""
        entries = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return entries

    def _progress_bar(self) -> Any:
        if not self.optim.progress_bar or self.rank != 0:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.total_steps, initial=self.step, desc=self.progress_label, unit="step")
