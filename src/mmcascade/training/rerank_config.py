"""Reranker training configuration: the reasoner SFT's sections (model, finetune, training) and its own data."""

from __future__ import annotations

from dataclasses import dataclass, field

from mmcascade.training.sft_config import ReasonerFinetuneConfig, ReasonerModelConfig, ReasonerOptimConfig


@dataclass
class RerankerDataConfig:
    """``train``: a training-records JSONL (``{"query": ..., "positive": ..., "negatives": [...]}``, image paths
    relative to the file); each record gives the pair (query, positive) labelled yes and one pair
    (query, negative) labelled no per negative, the first ``negatives_per_query`` of them (null: all).

    ``template``: a rerank template file (null: the bundled ``relevance.yaml``); it must be the one the
    reranker will use, since prompts are rendered exactly as :class:`~mmcascade.rerank.Reranker` renders them.

    ``balance_labels``: weight the pairs so that yes and no pairs count equally in the loss (a positive weighs
    ``n_pairs / (2 * n_positives)``, a negative ``n_pairs / (2 * n_negatives)``), so that a dataset with
    many negatives per query does not teach the model to answer "no" to everything; false: every pair weighs 1.
    """

    train: str
    negatives_per_query: int | None = None
    template: str | None = None
    balance_labels: bool = True

    def __post_init__(self) -> None:
        if self.negatives_per_query is not None and self.negatives_per_query < 1:
            raise ValueError(
                f"negatives_per_query must be >= 1 or null (all); got {self.negatives_per_query}: "
                "a yes/no reranker needs negative pairs"
            )


@dataclass
class RerankerOptimConfig(ReasonerOptimConfig):
    """As the reasoner SFT's ``training`` section; ``batch_size`` counts (query, candidate) pairs, and
    micro-batches are weighted by their pair count so the step equals one full-batch step."""

    output_dir: str = "runs/reranker"


@dataclass
class RerankerTrainConfig:
    """``mmcascade train reranker``: fine-tune a generative backbone as a yes/no reranker (LoRA or full)."""

    model: ReasonerModelConfig
    data: RerankerDataConfig
    finetune: ReasonerFinetuneConfig = field(default_factory=ReasonerFinetuneConfig)
    training: RerankerOptimConfig = field(default_factory=RerankerOptimConfig)
