"""Reasoners that run in this process on a generative backbone (the Qwen-VL family, ...).

Prompts are sorted by length and generated in left-padded batches with the KV cache on, so a batch of
32 costs little more than one prompt (``benchmarks/reasoner.py`` measures it); the results come back in
the order of the prompts.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mmcascade.backbones import Backbone, load_backbone
from mmcascade.backbones.base import continuation_token_ids
from mmcascade.data.items import Item
from mmcascade.models import resolve_model
from mmcascade.reasoner.base import GenerationSettings, Prompt, Reasoner


class LocalReasoner(Reasoner):
    """A :class:`Reasoner` over a generative backbone; ``batch_size`` prompts per ``generate`` call."""

    def __init__(self, backbone: Backbone, model_id: str, *, batch_size: int = 16):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
        self.backbone = backbone
        self.model_id = model_id
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        batch_size: int = 16,
        device: str | torch.device | None = None,
        **options: Any,
    ) -> LocalReasoner:
        """Load a generative VLM checkpoint (folder, Hub id, or ``starter``) as a reasoner on ``device``;
        ``options`` go to the backbone."""
        backbone = load_backbone(name_or_path, role="generative", **options).eval()
        if device is not None:
            backbone.to(device)
        return cls(backbone, os.fspath(name_or_path), batch_size=batch_size)

    def complete(self, prompts: Sequence[Prompt], settings: GenerationSettings) -> list[str]:
        items = [Item(text=prompt.user, images=prompt.images) for prompt in prompts]
        order = sorted(range(len(items)), key=lambda index: self.backbone.estimate_length(items[index]))
        results: list[str] = [""] * len(items)
        if settings.seed is not None:
            torch.manual_seed(settings.seed)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            texts = self.backbone.generate(
                [items[index] for index in batch],
                systems=[prompts[index].system for index in batch],
                max_new_tokens=settings.max_new_tokens,
                temperature=settings.temperature,
                top_p=settings.top_p,
            )
            for index, text in zip(batch, texts, strict=True):
                results[index] = text
        return results

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` for this model (servers report usage and ``finish_reason`` with it)."""
        tokenizer = getattr(getattr(self.backbone, "processor", None), "tokenizer", None)
        if tokenizer is None:
            raise ValueError(f"{self.model_id} exposes no tokenizer to count tokens with")
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    def count_prompt_tokens(self, prompts: Sequence[Prompt], reply_prefixes: Sequence[str] | None = None) -> list[int]:
        """Tokens the model reads for each prompt, as :meth:`complete` builds it: the chat template, the system
        and user text and every image's tokens (plus each reply prefix's tokens, when given). Servers report it
        as ``usage.prompt_tokens``; it runs the backbone's input processing again (images included), not the model.
        """
        items = [Item(text=prompt.user, images=prompt.images) for prompt in prompts]
        inputs = self.backbone.processor(items, [prompt.system for prompt in prompts])
        counts = [int(count) for count in inputs["attention_mask"].sum(dim=-1).tolist()]  # (B,) real positions
        if reply_prefixes is None:
            return counts
        prefix_ids = continuation_token_ids(self.backbone.processor.tokenizer, reply_prefixes)
        return [count + len(ids) for count, ids in zip(counts, prefix_ids, strict=True)]


def reasoner_path(name_or_path: str | os.PathLike) -> Path:
    """The folder of a generative model (``starter`` means the starter reasoner); see :mod:`mmcascade.models`."""
    return resolve_model(name_or_path, "generative")


def load_reasoner(name_or_path: str | os.PathLike, **options: Any) -> Reasoner:
    """A reasoner by name: a local VLM folder or Hub id (``LocalReasoner``)."""
    return LocalReasoner.from_pretrained(name_or_path, **options)
