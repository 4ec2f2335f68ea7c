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

from mmcascade.data.items import ImageSource

MAX_TOKEN_BUDGET = 32_768


@dataclass(frozen=True)
class GenerationSettings:
    """How to generate. ``max_new_tokens`` is the reasoning token budget; temperature 0 means greedy."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        budget = self.max_new_tokens
        if isinstance(budget, bool) or not isinstance(budget, int) or not 1 <= budget <= MAX_TOKEN_BUDGET:
            raise ValueError(
                f"max_new_tokens (the token budget) must be an int in 1..{MAX_TOKEN_BUDGET}; got {budget!r}"
            )
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
