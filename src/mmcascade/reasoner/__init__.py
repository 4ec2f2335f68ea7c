"""Think-Then-Embed reasoners: prompts -> reasoning traces (ECR), local or remote, cached.

``from mmcascade.reasoner import reason, parse_trace, TraceCache, GenerationSettings``; backends:
``mmcascade.reasoner.local.LocalReasoner`` (in-process VLMs), ``mmcascade.reasoner.remote.OpenAIReasoner``
(OpenAI-compatible servers). Nothing heavy is imported until a backend is used.
"""

from mmcascade.reasoner.base import GenerationSettings, Prompt, Reasoner
from mmcascade.reasoner.cache import TraceCache, default_trace_cache_path
from mmcascade.reasoner.pipeline import ReasoningError, reason
from mmcascade.reasoner.prompts import load_template, render_prompt, task_kind
from mmcascade.reasoner.trace import Trace, parse_trace, with_trace

__all__ = [
    "GenerationSettings",
    "Prompt",
    "Reasoner",
    "ReasoningError",
    "Trace",
    "TraceCache",
    "default_trace_cache_path",
    "load_template",
    "parse_trace",
    "reason",
    "render_prompt",
    "task_kind",
    "with_trace",
]
