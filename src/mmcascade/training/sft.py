"""Supervised fine-tuning (SFT) of a generative reasoner on a teacher's ECR traces (Think-Then-Embed distillation).

Every example is one item and the trace a teacher wrote for it. The prompt is rendered exactly as the
reasoner renders it at inference (``render_prompt(item, load_template(task))``, then the backbone's chat
format), and the loss is the cross-entropy of the trace tokens only (:meth:`Backbone.completion_loss`).
Checkpoints, resuming, the metrics log and the final folder follow the embedder trainer
(:mod:`mmcascade.training.trainer`): a killed run resumes where it stopped and ends where an
uninterrupted run would, and ``<output_dir>/final`` loads with ``LocalReasoner.from_pretrained``.
That machinery is :class:`GenerativeTrainer`, which the reranker trainer (:mod:`mmcascade.training.rerank_train`)
shares: a subclass only says what the loss of a micro-batch is.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch

from mmcascade.backbones import load_backbone
from mmcascade.backbones.base import Backbone
from mmcascade.data.items import Item
from mmcascade.data.traces import TraceProblem, iter_traces
from mmcascade.reasoner.prompts import load_template, render_prompt
from mmcascade.training.checkpointing import prune_checkpoints, save_checkpoint
from mmcascade.training.finetune import merge_lora, set_trainable, trainable_parameters
from mmcascade.training.loop import DTYPES, TrainerParts
from mmcascade.training.sft_config import (
    ReasonerFinetuneConfig,
    ReasonerModelConfig,
    ReasonerOptimConfig,
    ReasonerTrainConfig,
)
from mmcascade.utils.config import apply_overrides, config_from_dict, config_to_dict, load_config_file

MAX_PROBLEMS_SHOWN = 20
ConfigT = TypeVar("ConfigT")


@dataclass(frozen=True)
class SFTExample:
    """One training example: the backbone item and system prompt the reasoner would send, and the target."""

    item: Item  # the rendered user message with the item's images
    system: str
    trace: str
    line: int


SFTProblem = TraceProblem  # why a line of the traces file was skipped


@dataclass(frozen=True)
class SFTDataset:
    path: Path
    examples: tuple[SFTExample, ...]
    problems: tuple[SFTProblem, ...]


def read_sft_examples(
    path: str | os.PathLike, *, task: str = "retrieval", template_dir: str | os.PathLike | None = None
) -> SFTDataset:
    """Read a traces JSONL: every invalid line is skipped and reported (a warning naming line and reason).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: no line holds a usable example.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training data not found: {path}")
    templates: dict[str, Any] = {}
    examples: list[SFTExample] = []
    problems: list[SFTProblem] = []
    for entry in iter_traces(path, default_task=task):  # the format: mmcascade.data.traces
        if isinstance(entry, TraceProblem):
            problems.append(entry)
            continue
        try:
            if not entry.trace.strip():
                raise ValueError("'trace' must be a non-empty string")
            if entry.task not in templates:
                templates[entry.task] = load_template(entry.task, template_dir=template_dir)
            prompt = render_prompt(entry.item, templates[entry.task])
        except (ValueError, FileNotFoundError) as error:
            problems.append(SFTProblem(line=entry.line, reason=str(error)))
            continue
        item = Item(text=prompt.user, images=prompt.images)
        examples.append(SFTExample(item=item, system=prompt.system, trace=entry.trace, line=entry.line))
    listing = problem_listing(path, problems)
    if not examples:
        detail = f":\n{listing}" if problems else " (the file is empty)"
        raise ValueError(f"{path}: no usable training example{detail}\nFix the lines; write one JSON object per line.")
    if problems:
        warnings.warn(
            f"{path}: skipped {len(problems)} invalid line(s) ({len(examples)} usable):\n{listing}", stacklevel=2
        )
    return SFTDataset(path=path, examples=tuple(examples), problems=tuple(problems))


def problem_listing(path: Path, problems: Sequence[Any]) -> str:
    """One ``  path:line: reason`` row per rejected line (objects with ``line`` and ``reason``), the first
    ``MAX_PROBLEMS_SHOWN`` of them, then how many more there are."""
    listing = "\n".join(f"  {path}:{problem.line}: {problem.reason}" for problem in problems[:MAX_PROBLEMS_SHOWN])
    if len(problems) > MAX_PROBLEMS_SHOWN:
        listing += f"\n  ... and {len(problems) - MAX_PROBLEMS_SHOWN} more"
    return listing


class GenerativeTrainer(TrainerParts):
    """Fine-tunes a generative ``backbone`` on a list of examples; a subclass says what one micro-batch's loss is.

    Everything else is shared by the reasoner SFT and the reranker trainer: the seeded data order, gradient
    accumulation, checkpoints, resuming, the metrics log and ``<output_dir>/final`` (a plain model folder).

    Args:
        backbone: the model; its trainable parameters are those with ``requires_grad``.
        examples: what one step draws ``optim.batch_size`` of (the subclass knows their type).
        optim: batch sizes, schedule, checkpointing.
        peft_model: the peft wrapper in LoRA mode, merged into the weights when the final model is saved.
        config_snapshot: the full config, stored in every checkpoint for provenance.
    """

    final_marker = "config.json"
    #: the metrics-log keys of the units a step's loss is averaged over, and of their throughput
    count_key: ClassVar[str] = "target_tokens"
    rate_key: ClassVar[str] = "tokens_per_second"

    def _device(self) -> torch.device:
        return self.backbone.device

    def __init__(
        self,
        backbone: Backbone,
        examples: Sequence[Any],
        optim: ReasonerOptimConfig,
        *,
        peft_model: Any | None = None,
        config_snapshot: dict[str, Any] | None = None,
    ):
        if not examples:
            raise ValueError("the training data is empty: no example to train on")
        if len(examples) < optim.batch_size:
            raise ValueError(f"{len(examples)} examples cannot fill one batch of {optim.batch_size}; lower batch_size")
        self.backbone = backbone
        self.examples = list(examples)
        self.optim = optim
        self.peft_model = peft_model
        self.config_snapshot = config_snapshot or {}
        self.steps_per_epoch = len(self.examples) // optim.batch_size
        total = self.steps_per_epoch * optim.epochs
        self.total_steps = min(total, optim.max_steps) if optim.max_steps else total
        self.parameters = trainable_parameters(backbone)
        if not self.parameters:
            raise ValueError("no parameter is trainable: check finetune.mode and finetune.freeze")
        self.optimizer = torch.optim.AdamW(
            list(self.parameters.values()), lr=optim.learning_rate, weight_decay=optim.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._learning_rate_factor)
        self.output_dir = Path(optim.output_dir)
        self.step = 0

    def _mean_loss(self, chunk: list[Any]) -> tuple[torch.Tensor, int]:
        """The mean loss over the units (tokens, pairs) of a micro-batch, and how many units it averages."""
        raise NotImplementedError

    # ----------------------------------------------------------------------------------- public
    def train(self, resume_from: str | os.PathLike | None = None) -> Path:
        """Train to ``total_steps``; returns ``<output_dir>/final``. ``resume_from``: a checkpoint folder,
        or ``"latest"`` (the newest under ``output_dir``; a fresh start if there is none)."""
        torch.manual_seed(self.optim.seed)
        if str(resume_from) == "latest" and self._finished():
            return self.output_dir / "final"  # resuming a finished run is a no-op
        if resume_from is not None:
            self._resume(resume_from)
        self.backbone.train()
        progress = self._progress_bar()
        started, units_done = time.perf_counter(), 0
        try:
            while self.step < self.total_steps:
                epoch, step_in_epoch = divmod(self.step, self.steps_per_epoch)
                loss, n_units = self._train_step(self._batch(epoch, step_in_epoch))
                grad_norm = self._clip_gradients()
                self.optimizer.step()
                self.scheduler.step()
                self.step += 1
                units_done += n_units
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
                            self.count_key: n_units,
                            "learning_rate": self.scheduler.get_last_lr()[0],
                            "grad_norm": grad_norm,
                            self.rate_key: units_done / max(elapsed, 1e-9),
                            "elapsed_seconds": elapsed,
                        }
                    )
                if self.step % self.optim.save_every == 0 and self.step < self.total_steps:
                    self._save_checkpoint()
        finally:
            if progress is not None:
                progress.close()
        self.backbone.eval()
        return self._save_final()

    # ----------------------------------------------------------------------------------- steps
    def _batch(self, epoch: int, step_in_epoch: int) -> list[Any]:
        # The order depends only on (seed, epoch): a resumed run sees exactly the batches it would have.
        order = np.random.default_rng([self.optim.seed, epoch]).permutation(len(self.examples))
        start = step_in_epoch * self.optim.batch_size
        return [self.examples[index] for index in order[start : start + self.optim.batch_size]]

    def _train_step(self, batch: list[Any]) -> tuple[float, int]:
        """Accumulate the gradient of the batch's unit-weighted mean loss, micro-batch by micro-batch."""
        self.optimizer.zero_grad(set_to_none=True)
        micro = self.optim.micro_batch_size or len(batch)
        loss_sum, n_total = 0.0, 0
        for start in range(0, len(batch), micro):
            with self._autocast():
                loss, n_units = self._mean_loss(batch[start : start + micro])
            (loss * n_units).backward()  # summed over units; divided by the batch's count below
            loss_sum += float(loss.detach()) * n_units
            n_total += n_units
        for parameter in self.parameters.values():
            if parameter.grad is not None:
                parameter.grad /= n_total
        return loss_sum / n_total, n_total

    # ----------------------------------------------------------------------------------- persistence
    def _save_checkpoint(self) -> None:
        epoch, step_in_epoch = divmod(self.step, self.steps_per_epoch)
        state = {
            "step": self.step,
            "total_steps": self.total_steps,
            "data_position": {"epoch": epoch, "step_in_epoch": step_in_epoch, "batch_size": self.optim.batch_size},
            "scheduler": self.scheduler.state_dict(),
            "config": self.config_snapshot,
            "optim": asdict(self.optim),
        }
        path = self.output_dir / f"checkpoint-{self.step:07d}"
        save_checkpoint(path, trainable=dict(self.parameters), optimizer=self.optimizer, state=state)
        prune_checkpoints(self.output_dir, self.optim.keep_checkpoints)

    def _check_resumable(self, path: Path, state: dict[str, Any]) -> None:
        saved_batch = state.get("data_position", {}).get("batch_size", self.optim.batch_size)
        if saved_batch != self.optim.batch_size:
            raise ValueError(
                f"{path} was written with batch_size {saved_batch}; resume with the same batch size "
                f"(now {self.optim.batch_size}) so the data order matches"
            )

    def _save_final(self) -> Path:
        final = self.output_dir / "final"
        merge_lora(self.peft_model)
        self.backbone.save_pretrained(final)
        return final


class ReasonerTrainer(GenerativeTrainer):
    """Fine-tunes a generative ``backbone`` on ``examples`` with the completion loss.

    Args:
        backbone: the model; its trainable parameters are those with ``requires_grad``.
        examples: rendered prompts and target traces (:func:`read_sft_examples`).
        optim: batch sizes, schedule, checkpointing.
        max_target_tokens: traces are cut to this many tokens (None: whole traces).
        peft_model: the peft wrapper in LoRA mode, merged into the weights when the final model is saved.
        config_snapshot: the full config, stored in every checkpoint for provenance.
    """

    progress_label = "training reasoner"

    def __init__(
        self,
        backbone: Backbone,
        examples: Sequence[SFTExample],
        optim: ReasonerOptimConfig,
        *,
        max_target_tokens: int | None = None,
        peft_model: Any | None = None,
        config_snapshot: dict[str, Any] | None = None,
    ):
        super().__init__(backbone, examples, optim, peft_model=peft_model, config_snapshot=config_snapshot)
        self.max_target_tokens = max_target_tokens

    def _mean_loss(self, chunk: list[SFTExample]) -> tuple[torch.Tensor, int]:
        """The token-weighted mean cross-entropy of the chunk's traces, and their token count."""
        return self.backbone.completion_loss(
            [example.item for example in chunk],
            [example.system for example in chunk],
            [example.trace for example in chunk],
            max_target_tokens=self.max_target_tokens,
        )


def load_trainable_backbone(
    model: ReasonerModelConfig, finetune: ReasonerFinetuneConfig, *, seed: int, job: str
) -> tuple[Backbone, Any | None]:
    """Load a generative backbone (on the GPU when there is one) and set what trains; returns it and the peft
    model in LoRA mode (None otherwise). ``job`` completes the error for a backbone that cannot generate."""
    torch.manual_seed(seed)  # LoRA adapters are initialised reproducibly
    backbone = load_backbone(
        model.name_or_path,
        dtype=DTYPES[model.dtype],
        trust_remote_code=model.trust_remote_code,
        **model.processor_options,
    )
    backbone.require_generative(job)
    if torch.cuda.is_available():
        backbone.to("cuda")
    peft_model = set_trainable(backbone, backbone, finetune)
    return backbone, peft_model


def build_reasoner_trainer(config: ReasonerTrainConfig, examples: Sequence[SFTExample]) -> ReasonerTrainer:
    """Load the backbone named in ``config``, set what trains, and check everything before the first step."""
    backbone, peft_model = load_trainable_backbone(
        config.model, config.finetune, seed=config.training.seed, job="be fine-tuned as a reasoner"
    )
    return ReasonerTrainer(
        backbone,
        examples,
        config.training,
        max_target_tokens=config.data.max_target_tokens,
        peft_model=peft_model,
        config_snapshot=asdict(config),
    )


def resolve_config(config_class: type[ConfigT], config: Any, overrides: dict[str, Any] | None) -> ConfigT:
    """``config`` as a ``config_class``: the instance itself or a YAML file read strictly, then ``overrides``
    (dotted keys such as ``{"training.max_steps": 10}``) applied on top."""
    if not isinstance(config, config_class):
        config = load_config_file(config_class, config)
    if overrides:
        config = config_from_dict(config_class, apply_overrides(config_to_dict(config), overrides))
    return config


def train_reasoner_from_config(
    config: ReasonerTrainConfig | str | os.PathLike,
    *,
    resume_from: str | os.PathLike | None = "latest",
    overrides: dict[str, Any] | None = None,
) -> Path:
    """Read the traces, check everything, fine-tune, and return the final model folder.

    ``config`` is a :class:`ReasonerTrainConfig` or a YAML file; ``overrides`` are dotted keys
    (``{"training.max_steps": 10}``) applied on top. Invalid data lines are skipped with a warning;
    the run refuses to start when none is usable.
    """
    config = resolve_config(ReasonerTrainConfig, config, overrides)
    dataset = read_sft_examples(config.data.train, task=config.data.task, template_dir=config.data.template_dir)
    trainer = build_reasoner_trainer(config, dataset.examples)
    return trainer.train(resume_from=resume_from)
