"""Training a generative backbone as a yes/no reranker on training records (query, positive, negatives).

Every record gives the pair (query, positive), labelled yes, and one pair (query, negative) per negative,
labelled no. Each pair's prompt is rendered exactly as :class:`~mmcascade.rerank.Reranker` renders it
(``render_rerank_prompt(query, candidate, template)``), the assistant reply is continued with
``judgement_prefix("")`` and the logits of ``" yes"`` and ``" no"`` are read at the next position, where
:class:`~mmcascade.rerank.local.LocalJudge` reads them. The loss is the cross-entropy of the label over
those two logits (label 0 = yes, 1 = no): it trains exactly the score the reranker reports,
``P(yes) = softmax([yes, no])[0]``. With ``balance_labels`` (the default) pairs are weighted so that yes
and no pairs count equally however many negatives a query has; a step's loss is the weighted loss averaged
over its pairs.

The judgement is trained without reasoning (``think_tokens=0`` at inference). Checkpoints, resuming, the
metrics log and ``<output_dir>/final`` (which loads with ``LocalJudge.from_pretrained``) are the reasoner
SFT's (:class:`~mmcascade.training.sft.GenerativeTrainer`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional

from mmcascade.backbones.base import Backbone
from mmcascade.data.items import Item
from mmcascade.data.records import RecordProblem, read_records
from mmcascade.rerank.judgement import JudgementTokens, judgement_prefix, judgement_tokens
from mmcascade.rerank.prompts import RerankTemplate, load_rerank_template, render_rerank_prompt
from mmcascade.training.rerank_config import RerankerOptimConfig, RerankerTrainConfig
from mmcascade.training.sft import GenerativeTrainer, load_trainable_backbone, problem_listing, resolve_config

YES_LABEL, NO_LABEL = 0, 1  # indices into the logits [yes, no]


@dataclass(frozen=True)
class RerankPair:
    """One training pair: the backbone item and system prompt the reranker would send, and the answer."""

    item: Item  # the rendered user message with the query's images, then the candidate's
    system: str
    label: int  # YES_LABEL for the record's positive, NO_LABEL for a negative
    weight: float  # the pair's weight in the loss (1.0 unless labels are balanced)
    line: int  # the record's line in the training file


@dataclass(frozen=True)
class RerankDataset:
    """The pairs of a records file and the lines that were skipped."""

    path: Path
    pairs: tuple[RerankPair, ...]
    problems: tuple[RecordProblem, ...]


def read_rerank_pairs(
    path: str | os.PathLike,
    *,
    negatives_per_query: int | None = None,
    template: RerankTemplate | str | os.PathLike | None = None,
    balance_labels: bool = True,
) -> RerankDataset:
    """The yes/no pairs of a training-records JSONL; invalid lines are skipped and reported (a warning naming
    ``file:line`` and the reason).

    Args:
        path: the records file (``query``, ``positive``, ``negatives``; image paths relative to it).
        negatives_per_query: keep the first this many negatives of each record (None: all of them).
        template: the rerank template, or its file (None: the bundled one).
        balance_labels: weight yes pairs ``n / (2 * n_yes)`` and no pairs ``n / (2 * n_no)`` (``n`` pairs in
            all), so both labels count equally and the weights average 1; False: every pair weighs 1.

    Raises:
        FileNotFoundError: ``path`` (or the template file) does not exist.
        ValueError: no line holds a usable record, or no record has a negative.
    """
    if negatives_per_query is not None and negatives_per_query < 1:
        raise ValueError(f"negatives_per_query must be >= 1 or None (all); got {negatives_per_query}")
    if not isinstance(template, RerankTemplate):
        template = load_rerank_template(template)
    records = read_records(path, on_error="skip")  # raises, listing the lines, when none is valid
    path = records.path
    problems = list(records.problems)
    labelled: list[tuple[Item, str, int, int]] = []  # (item, system, label, line)
    n_used = 0
    for record in records:
        negatives = record.negatives[:negatives_per_query] if negatives_per_query else record.negatives
        candidates = [(record.positive, YES_LABEL), *((negative, NO_LABEL) for negative in negatives)]
        try:
            prompts = [
                (render_rerank_prompt(record.query, candidate, template), label) for candidate, label in candidates
            ]
        except ValueError as error:
            problems.append(RecordProblem(line=record.line, reason=str(error)))
            continue
        labelled += [(Item(text=p.user, images=p.images), p.system, label, record.line) for p, label in prompts]
        n_used += 1
    problems.sort(key=lambda problem: problem.line)
    listing = problem_listing(path, problems)
    if not labelled:
        raise ValueError(
            f"{path}: no usable training record:\n{listing}\nFix the lines; write one JSON object per line."
        )
    if not any(label == NO_LABEL for _, _, label, _ in labelled):
        raise ValueError(
            f"{path}: no record has negatives, so there is no 'no' pair to learn from; add 'negatives' to the "
            "records (e.g. mined hard negatives)"
        )
    weights = label_weights([label for _, _, label, _ in labelled], balance=balance_labels)
    pairs = tuple(
        RerankPair(item=item, system=system, label=label, weight=weights[label], line=line)
        for item, system, label, line in labelled
    )
    if problems:
        warnings.warn(f"{path}: skipped {len(problems)} invalid line(s) ({n_used} usable):\n{listing}", stacklevel=2)
    return RerankDataset(path=path, pairs=pairs, problems=tuple(problems))


def label_weights(labels: Sequence[int], *, balance: bool = True) -> dict[int, float]:
    """The loss weight of each label: ``n / (2 * n_label)`` when balanced (each label then carries half the
    loss and the weights average 1 over the ``n`` pairs), else 1."""
    if not balance:
        return {YES_LABEL: 1.0, NO_LABEL: 1.0}
    counts = {label: sum(value == label for value in labels) for label in (YES_LABEL, NO_LABEL)}
    return {label: len(labels) / (2 * count) if count else 1.0 for label, count in counts.items()}


def judgement_losses(backbone: Backbone, pairs: Sequence[RerankPair], tokens: JudgementTokens) -> torch.Tensor:
    """Cross-entropy ``(B,)`` of each pair's label over the logits ``[yes, no]`` read after ``judgement_prefix("")``,
    i.e. ``-log P(yes)`` for a positive and ``-log P(no)`` for a negative (differentiable)."""
    logits = backbone.continuation_logits(
        [pair.item for pair in pairs],
        [pair.system for pair in pairs],
        [judgement_prefix("")] * len(pairs),
        (tokens.yes, tokens.no),
    )  # (B, 2)
    labels = torch.tensor([pair.label for pair in pairs], dtype=torch.long, device=logits.device)  # (B,)
    return functional.cross_entropy(logits.float(), labels, reduction="none")  # (B,)


class RerankerTrainer(GenerativeTrainer):
    """Fine-tunes a generative ``backbone`` as a yes/no reranker on ``pairs`` (:func:`read_rerank_pairs`).

    A step's loss is the mean over its pairs of ``weight * cross_entropy([yes, no], label)``; everything else
    (schedule, accumulation over ``micro_batch_size`` pairs, checkpoints, resuming, the final folder) is
    :class:`~mmcascade.training.sft.GenerativeTrainer`'s.

    Args:
        backbone: the model; its trainable parameters are those with ``requires_grad``.
        pairs: rendered prompts with their labels and weights.
        optim: batch sizes (in pairs), schedule, checkpointing.
        peft_model: the peft wrapper in LoRA mode, merged into the weights when the final model is saved.
        config_snapshot: the full config, stored in every checkpoint for provenance.
    """

    progress_label = "training reranker"
    count_key = "pairs"
    rate_key = "pairs_per_second"

    def __init__(
        self,
        backbone: Backbone,
        pairs: Sequence[RerankPair],
        optim: RerankerOptimConfig,
        *,
        peft_model: Any | None = None,
        config_snapshot: dict[str, Any] | None = None,
    ):
        backbone.require_generative("be trained as a reranker")
        self.tokens = judgement_tokens(backbone.processor.tokenizer, model_id="the model to train as a reranker")
        super().__init__(backbone, pairs, optim, peft_model=peft_model, config_snapshot=config_snapshot)

    def _mean_loss(self, chunk: list[RerankPair]) -> tuple[torch.Tensor, int]:
        """The weighted judgement loss averaged over the chunk's pairs, and their count."""
        losses = judgement_losses(self.backbone, chunk, self.tokens)  # (b,)
        weights = torch.tensor([pair.weight for pair in chunk], dtype=losses.dtype, device=losses.device)  # (b,)
        return (losses * weights).mean(), len(chunk)


def build_reranker_trainer(config: RerankerTrainConfig, pairs: Sequence[RerankPair]) -> RerankerTrainer:
    """Load the backbone named in ``config``, set what trains, and check everything before the first step."""
    backbone, peft_model = load_trainable_backbone(
        config.model, config.finetune, seed=config.training.seed, job="be trained as a reranker"
    )
    return RerankerTrainer(backbone, pairs, config.training, peft_model=peft_model, config_snapshot=asdict(config))


def train_reranker_from_config(
    config: RerankerTrainConfig | str | os.PathLike,
    *,
    resume_from: str | os.PathLike | None = "latest",
    overrides: dict[str, Any] | None = None,
) -> Path:
    """Read the records, check everything, train, and return the final model folder.

    ``config`` is a :class:`RerankerTrainConfig` or a YAML file; ``overrides`` are dotted keys
    (``{"training.max_steps": 10}``) applied on top. Invalid record lines are skipped with a warning;
    the run refuses to start when none is usable. ``<output_dir>/final`` loads with ``LocalJudge.from_pretrained``.
    """
    config = resolve_config(RerankerTrainConfig, config, overrides)
    dataset = read_rerank_pairs(
        config.data.train,
        negatives_per_query=config.data.negatives_per_query,
        template=config.data.template,
        balance_labels=config.data.balance_labels,
    )
    trainer = build_reranker_trainer(config, dataset.pairs)
    return trainer.train(resume_from=resume_from)
