"""Evaluation: retrieval metrics over record files (and, later, the MMEB-V2 harness)."""

from mmcascade.evaluation.records_eval import RecordScores, evaluate_records

__all__ = ["RecordScores", "evaluate_records"]
