"""The reasoner seam: items -> prompts -> generated text -> parsed traces (ECR), with a cache in between.

A :class:`Reasoner` only has to turn rendered :class:`Prompt` objects into completions
(:meth:`Reasoner.complete`); prompt rendering (``reasoner/prompts.py``), trace parsing
(``reasoner/trace.py``) and the trace cache (``reasoner/cache.py``) are shared by every backend:
local Hugging Face models, the starter reasoner, and OpenAI-compatible servers.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol, runtime_checkable

from mmcascade.budget import DEFAULT_TRACE_TOKENS, MAX_TOKEN_BUDGET, check_token_budget
from mmcascade.data.items import ImageSource

__all__ = ["MAX_TOKEN_BUDGET", "GenerationSettings", "Prompt", "Reasoner", "TokenCounter"]


@dataclass(frozen=True)
class GenerationSettings:
    """How to generate. ``max_new_tokens`` is the reasoning token budget; temperature 0 means greedy."""

    max_new_tokens: int = DEFAULT_TRACE_TOKENS
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        check_token_budget(self.max_new_tokens, "max_new_tokens (the token budget)", minimum=1)
        if not isinstance(self.temperature, (int, float)) or self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy); got {self.temperature!r}")
        if not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1]; got {self.top_p!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def key(self) -> str:
        """A stable string for cache keys."""
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class Prompt:
    """A rendered chat prompt: a system message and a user message whose ``<image>`` placeholders
    mark where each of ``images`` goes (one placeholder per image, in order)."""

    system: str
    user: str
    images: tuple[ImageSource, ...] = field(default_factory=tuple)


class Reasoner(ABC):
    """Writes completions for prompts; see the module docstring for what is shared."""

    #: identifies the model in cache keys (a path, a Hub id, or a server's model name + URL)
    model_id: str

    @abstractmethod
    def complete(self, prompts: Sequence[Prompt], settings: GenerationSettings) -> list[str]:
        """One completion per prompt (the generated text only, without the prompt)."""


@runtime_checkable
class TokenCounter(Protocol):
    """A reasoner that can count tokens for its model (``mmcascade serve reasoner`` reports usage with it)."""

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` for this model, without special tokens."""
