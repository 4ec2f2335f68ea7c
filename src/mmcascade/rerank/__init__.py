"""Reasoning rerankers: score (query, candidate) pairs by P(yes) after an optional, budgeted reasoning.

``from mmcascade.rerank import Reranker, make_reranker``; backends: ``mmcascade.rerank.local.LocalJudge``
(in-process generative VLMs, the starter reasoner) and ``mmcascade.rerank.remote.OpenAIJudge``
(OpenAI-compatible servers with logprobs). Nothing heavy is imported until a backend is used.
"""

from mmcascade.rerank.base import JudgeModel, Reranker, RerankScore, check_think_tokens
from mmcascade.rerank.factory import make_reranker
from mmcascade.rerank.judgement import judgement_prefix, judgement_tokens, yes_probability
from mmcascade.rerank.prompts import RerankTemplate, load_rerank_template, render_rerank_prompt

__all__ = [
    "JudgeModel",
    "RerankScore",
    "RerankTemplate",
    "Reranker",
    "check_think_tokens",
    "judgement_prefix",
    "judgement_tokens",
    "load_rerank_template",
    "make_reranker",
    "render_rerank_prompt",
    "yes_probability",
]
