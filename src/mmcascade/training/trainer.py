"""Contrastive training of an Embedder: plain or GradCache steps, multi-process, resumable.

Runs as one process or under ``torchrun`` (every rank's positives are negatives for every query,
through the losses' cross-rank gather; gradients are averaged across ranks after each step).
Checkpoints are safetensors + JSON; a killed run resumes from its last checkpoint with the same
data order and random state, so it ends where an uninterrupted run would.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from mmcascade.data.records import TrainingRecord, read_records
from mmcascade.embedder import Embedder
from mmcascade.training.checkpointing import prune_checkpoints, save_checkpoint
from mmcascade.training.config import LossConfig, OptimConfig, TrainConfig
from mmcascade.training.finetune import apply_finetune_mode, merge_lora, trainable_parameters
from mmcascade.training.grad_cache import ContrastiveBatch, contrastive_step
from mmcascade.training.loop import DTYPES, TrainerParts
from mmcascade.training.objective import ContrastiveLoss
from mmcascade.training.state_cache import CACHE_DIR, BackboneStateCache
from mmcascade.utils.config import apply_overrides, config_from_dict, config_to_dict, load_config_file

MAX_DEFAULT_NEGATIVES = 8


class EmbedderTrainer(TrainerParts):
    """Trains ``embedder`` on contrastive records.

    Args:
        embedder: the model; its trainable parameters are those with ``requires_grad``.
        records: query / positive / hard-negative records (:func:`mmcascade.data.records.read_records`).
        loss: the loss configuration (checked against the model's meta tokens before training starts).
        optim: batch sizes, schedule, checkpointing.
        negatives_per_query: hard negatives used per query (None: the smallest count in the data, capped at 8).
        peft_model: the peft wrapper in LoRA mode, merged into the weights when the final model is saved.
        config_snapshot: the full config, stored in every checkpoint for provenance.
    """

    final_marker = "mmcascade.json"
    progress_label = "training"

    def _device(self) -> torch.device:
        return self.embedder.backbone.device

    def __init__(
        self,
        embedder: Embedder,
        records: Sequence[TrainingRecord],
        loss: LossConfig,
        optim: OptimConfig,
        *,
        negatives_per_query: int | None = None,
        fill_negatives: bool = False,
        peft_model: Any | None = None,
        config_snapshot: dict[str, Any] | None = None,
    ):
        if not records:
            raise ValueError("the training data is empty: no record to train on")
        self.embedder = embedder
        self.records = list(records)
        self.optim = optim
        self.peft_model = peft_model
        self.config_snapshot = config_snapshot or {}
        self.loss = ContrastiveLoss(loss, embedder)
        self.negatives_per_query = _choose_negatives(self.records, negatives_per_query, fill_negatives)
        if fill_negatives:
            self.records = _fill_negatives(self.records, self.negatives_per_query, optim.seed)
        self.rank, self.world_size = _distributed_rank_and_size()
        self.global_batch = optim.batch_size * self.world_size
        if len(self.records) < self.global_batch:
            raise ValueError(
                f"{len(self.records)} records cannot fill one batch of {optim.batch_size} x {self.world_size} "
                "process(es); lower training.batch_size"
            )
        self.steps_per_epoch = len(self.records) // self.global_batch
        total = self.steps_per_epoch * optim.epochs
        self.total_steps = min(total, optim.max_steps) if optim.max_steps else total
        self.parameters = trainable_parameters(embedder)
        self.optimizer = self._make_optimizer()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._learning_rate_factor)
        self.output_dir = Path(optim.output_dir)
        self.step = 0
        self.state_cache = self._make_state_cache()
        # what a step encodes with: the whole embedder, or the head on cached backbone states
        self.encoder = self.state_cache or embedder

    # ----------------------------------------------------------------------------------- public
    def train(self, resume_from: str | os.PathLike | None = None) -> Path:
        """Train to ``total_steps``; returns the folder of the final model (``<output_dir>/final``).

        ``resume_from``: a checkpoint folder, or ``"latest"`` for the newest one under ``output_dir``
        (training starts fresh if there is none).
        """
        torch.manual_seed(self.optim.seed)
        if str(resume_from) == "latest" and self._finished():
            return self.output_dir / "final"  # nothing left to do: resuming a finished run is a no-op
        if resume_from is not None:
            self._resume(resume_from)
        self.embedder.train()
        progress = self._progress_bar()
        started, pairs_done = time.perf_counter(), 0
        try:
            while self.step < self.total_steps:
                epoch, step_in_epoch = divmod(self.step, self.steps_per_epoch)
                batch = self._batch(epoch, step_in_epoch)
                self.optimizer.zero_grad(set_to_none=True)
                with self._autocast():
                    loss, metrics = contrastive_step(self.encoder, batch, self.loss, self.optim.micro_batch_size)
                self._average_gradients_across_ranks()
                loss, metrics = self._average_metrics_across_ranks(loss, metrics)
                grad_norm = self._clip_gradients()
                self.optimizer.step()
                self.scheduler.step()
                self.step += 1
                pairs_done += len(batch.queries) * self.world_size
                elapsed = time.perf_counter() - started
                if progress is not None:
                    progress.update(1)
                    progress.set_postfix(loss=f"{loss:.4f}")
                if self.step % self.optim.log_every == 0 or self.step == self.total_steps:
                    self._log(
                        {
                            "step": self.step,
                            "epoch": epoch + (step_in_epoch + 1) / self.steps_per_epoch,
                            "loss": loss,
                            **metrics,
                            "learning_rate": self.scheduler.get_last_lr()[0],
                            "grad_norm": grad_norm,
                            "pairs_per_second": pairs_done / max(elapsed, 1e-9),
                            "elapsed_seconds": elapsed,
                        }
                    )
                if self.step % self.optim.save_every == 0 and self.step < self.total_steps:
                    self._save_checkpoint()
        finally:
            if progress is not None:
                progress.close()
        self.embedder.eval()
        return self._save_final()

    # ----------------------------------------------------------------------------------- data
    def _make_state_cache(self) -> BackboneStateCache | None:
        if not self.optim.cache_backbone_states:
            return None
        spill_dir = self.output_dir / CACHE_DIR if self.optim.state_cache_spill else None
        return BackboneStateCache(self.embedder, self.optim.state_cache_dtype, spill_dir, rank=self.rank)

    def _batch(self, epoch: int, step_in_epoch: int) -> ContrastiveBatch:
        # The order depends only on (seed, epoch): a resumed run sees exactly the batches it would have.
        order = np.random.default_rng([self.optim.seed, epoch]).permutation(len(self.records))
        start = step_in_epoch * self.global_batch + self.rank * self.optim.batch_size
        chosen = [self.records[index] for index in order[start : start + self.optim.batch_size]]
        return ContrastiveBatch(
            queries=[record.query for record in chosen],
            positives=[record.positive for record in chosen],
            negatives=[list(record.negatives[: self.negatives_per_query]) for record in chosen],
        )

    # ----------------------------------------------------------------------------------- optimisation
    def _make_optimizer(self) -> torch.optim.Optimizer:
        head_rate = self.optim.head_learning_rate or self.optim.learning_rate
        head = [p for name, p in self.parameters.items() if name.startswith("head.")]
        rest = [p for name, p in self.parameters.items() if not name.startswith("head.")]
        groups = [{"params": rest, "lr": self.optim.learning_rate}, {"params": head, "lr": head_rate}]
        return torch.optim.AdamW([group for group in groups if group["params"]], weight_decay=self.optim.weight_decay)

    def _average_gradients_across_ranks(self) -> None:
        if self.world_size == 1:
            return
        parameters = list(self.parameters.values())
        # A parameter no rank used keeps grad None (AdamW then leaves it alone, as in one process);
        # one used on some ranks only gets zeros elsewhere, as DDP would.
        used = torch.tensor([p.grad is not None for p in parameters], dtype=torch.uint8, device=parameters[0].device)
        dist.all_reduce(used, op=dist.ReduceOp.MAX)
        active = [p for p, flag in zip(parameters, used.tolist(), strict=True) if flag]
        gradients = [p.grad if p.grad is not None else torch.zeros_like(p) for p in active]
        if not gradients:
            return
        flat = torch.cat([g.reshape(-1) for g in gradients])  # one collective for all gradients
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world_size
        offset = 0
        for parameter in active:
            size = parameter.numel()
            parameter.grad = flat[offset : offset + size].view_as(parameter).clone()
            offset += size

    def _average_metrics_across_ranks(self, loss: float, metrics: dict[str, float]) -> tuple[float, dict[str, float]]:
        """The logged loss is the global batch's (the mean of the ranks' local means), not rank 0's."""
        if self.world_size == 1:
            return loss, metrics
        names = sorted(metrics)
        device = next(iter(self.parameters.values())).device  # nccl reduces GPU tensors only
        values = torch.tensor([loss] + [metrics[name] for name in names], dtype=torch.float64, device=device)
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= self.world_size
        return float(values[0]), {name: float(value) for name, value in zip(names, values[1:], strict=True)}

    # ----------------------------------------------------------------------------------- persistence
    def _save_checkpoint(self) -> None:
        if self.state_cache is not None:
            self.state_cache.spill(self.step)  # every rank spills the states it computed
        if self.rank == 0:
            state = {
                "step": self.step,
                "total_steps": self.total_steps,
                "world_size": self.world_size,
                "scheduler": self.scheduler.state_dict(),
                "config": self.config_snapshot,
                "optim": asdict(self.optim),
            }
            path = self.output_dir / f"checkpoint-{self.step:07d}"
            save_checkpoint(path, trainable=dict(self.parameters), optimizer=self.optimizer, state=state)
            prune_checkpoints(self.output_dir, self.optim.keep_checkpoints)
        if self.world_size > 1:
            dist.barrier()

    def _check_resumable(self, path: Path, state: dict[str, Any]) -> None:
        if state["world_size"] != self.world_size:
            raise ValueError(
                f"{path} was written by {state['world_size']} process(es); resume with the same number "
                f"(now {self.world_size}) so the data order matches"
            )

    def _save_final(self) -> Path:
        final = self.output_dir / "final"
        if self.state_cache is not None:
            self.state_cache.spill(self.step)
        if self.rank == 0:
            merge_lora(self.peft_model)
            self.embedder.save_pretrained(final)
        if self.world_size > 1:
            dist.barrier()
        return final

    # ----------------------------------------------------------------------------------- reporting


def build_trainer(config: TrainConfig, records: Sequence[TrainingRecord]) -> EmbedderTrainer:
    """Load the model named in ``config``, set what trains, and check everything before the first step."""
    model = config.model
    torch.manual_seed(config.training.seed)  # a new head (or LoRA) is initialised reproducibly
    embedder = Embedder.from_pretrained(
        model.name_or_path,
        head=model.head,
        head_options=model.head_options or None,
        dtype=DTYPES[model.dtype],
        trust_remote_code=model.trust_remote_code,
        **model.processor_options,
    )
    if config.data.query_instruction is not None:
        embedder.config.query_instruction = config.data.query_instruction
    if config.data.document_instruction is not None:
        embedder.config.document_instruction = config.data.document_instruction
    if torch.cuda.is_available():
        embedder.to(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    peft_model = apply_finetune_mode(embedder, config.finetune)
    return EmbedderTrainer(
        embedder,
        records,
        config.loss,
        config.training,
        negatives_per_query=config.data.negatives_per_query,
        fill_negatives=config.data.fill_negatives,
        peft_model=peft_model,
        config_snapshot=asdict(config),
    )


def init_distributed_from_environment() -> None:
    """Join the process group ``torchrun`` describes (gloo on CPU, nccl on GPU); no-op for one process."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")


def _distributed_rank_and_size() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _choose_negatives(records: Sequence[TrainingRecord], requested: int | None, fill: bool) -> int:
    counts = [len(record.negatives) for record in records]
    if requested is None:
        return min(min(counts), MAX_DEFAULT_NEGATIVES)
    short = [record for record in records if len(record.negatives) < requested]
    if short and not fill:
        raise ValueError(
            f"data.negatives_per_query is {requested} but {len(short)} record(s) have fewer hard negatives "
            f"(first at line {short[0].line} with {len(short[0].negatives)}); lower it or add negatives"
        )
    return requested


def train_from_config(
    config: TrainConfig | str | os.PathLike,
    *,
    resume_from: str | os.PathLike | None = "latest",
    overrides: dict[str, Any] | None = None,
) -> Path:
    """Read the data, check everything, train, and return the final model folder.

    ``config`` is a :class:`TrainConfig` or a YAML file. ``overrides`` are dotted keys
    (``{"training.max_steps": 10}``) applied on top of the file. Every error in the data or the
    config is raised before the first step.
    """
    if not isinstance(config, TrainConfig):
        config = load_config_file(TrainConfig, config)
    if overrides:
        config = config_from_dict(TrainConfig, apply_overrides(config_to_dict(config), overrides))
    init_distributed_from_environment()
    records = read_records(config.data.train)
    trainer = build_trainer(config, records)
    return trainer.train(resume_from=resume_from)


def _fill_negatives(records: list[TrainingRecord], per_query: int, seed: int) -> list[TrainingRecord]:
    """Top up short negative lists with other records' positives (never the record's own positive)."""
    rng = np.random.default_rng([seed, 7919])
    filled = []
    for index, record in enumerate(records):
        negatives = list(record.negatives)
        while len(negatives) < per_query:
            other = int(rng.integers(len(records)))
            if other != index and records[other].positive != record.positive:
                negatives.append(records[other].positive)
        filled.append(
            replace(record, negatives=tuple(negatives)) if len(negatives) != len(record.negatives) else record
        )
    return filled
