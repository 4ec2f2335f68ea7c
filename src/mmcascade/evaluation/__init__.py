"""Evaluation: the MMEB-V2-compatible harness, retrieval metrics, and held-out Hit@1 over record files."""

from mmcascade.evaluation.harness import EvalRun, run_eval
from mmcascade.evaluation.metrics import mean_metrics, query_metrics, rank_candidates
from mmcascade.evaluation.records_eval import RecordScores, evaluate_records

__all__ = [
    "EvalRun",
    "RecordScores",
    "evaluate_records",
    "mean_metrics",
    "query_metrics",
    "rank_candidates",
    "run_eval",
]
