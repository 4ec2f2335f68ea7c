"""Items -> starter reasoner inputs: SmolLM2 ChatML prompts with 25 image positions per image, left-padded.

The prompt is the one SmolLM2-Instruct's chat template renders, with the user turn's images expanded::

    <|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n{instruction}\\n{content}<|im_end|>\\n<|im_start|>assistant\\n

The template inserts a default system prompt when none is given; the instruct model was tuned with it,
so it is kept (``default_system``; set it to "" to drop the system turn). An image position holds the pad
id in ``input_ids`` and is marked in ``image_mask``: the vocabulary gains no image token, so the packaged
LM's embedding matrix stays as shipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mmcascade.backbones.starter.processing_starter import efficientnet_pixels, image_key
from mmcascade.data.items import IMAGE_PLACEHOLDER, Item

SMOLLM2_DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
SYSTEM_TEMPLATE = "<|im_start|>system\n{system}<|im_end|>\n"
USER_PREFIX = "<|im_start|>user\n"
USER_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n"
IMAGE_SPAN = object()  # marks an image in a prompt's list of pieces


class StarterReasonerProcessor:
    """Builds left-padded prompts (token ids + image mask) and EfficientNet-Lite pixels from items."""

    def __init__(
        self,
        tokenizer: Any,
        *,
        image_size: int,
        tokens_per_image: int,
        max_text_tokens: int = 512,
        default_system: str = SMOLLM2_DEFAULT_SYSTEM,
    ):
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.tokens_per_image = tokens_per_image
        self.max_text_tokens = max_text_tokens
        self.default_system = default_system
        pad_id = tokenizer.pad_token_id
        self.pad_token_id = pad_id if pad_id is not None else tokenizer.eos_token_id
        if self.pad_token_id is None:
            raise ValueError("the tokenizer has neither a pad token nor an eos token to pad with")
        end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
        if end_of_turn is None or end_of_turn == tokenizer.unk_token_id:
            raise ValueError("the tokenizer lacks the ChatML token <|im_end|>; the starter reasoner needs a ChatML LM")
        self.stop_token_ids = sorted({end_of_turn, *([tokenizer.eos_token_id] if tokenizer.eos_token_id else [])})

    def __call__(self, items: Sequence[Item], systems: Sequence[str | None] | None = None) -> dict[str, Any]:
        """Model inputs for ``items``; ``systems`` (one per item) replaces the default system prompt where set."""
        if systems is not None and len(systems) != len(items):
            raise ValueError(f"got {len(systems)} system prompts for {len(items)} items")
        sequences = [
            self._token_ids(item, systems[index] if systems is not None else None) for index, item in enumerate(items)
        ]
        length = max(len(ids) for ids, _ in sequences)
        input_ids = torch.full((len(items), length), self.pad_token_id, dtype=torch.long)  # (B, L)
        attention_mask = torch.zeros((len(items), length), dtype=torch.long)  # (B, L)
        image_mask = torch.zeros((len(items), length), dtype=torch.bool)  # (B, L), True = image position
        for row, (ids, is_image) in enumerate(sequences):
            start = length - len(ids)
            input_ids[row, start:] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, start:] = 1
            image_mask[row, start:] = torch.tensor(is_image, dtype=torch.bool)
        inputs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask, "image_mask": image_mask}
        sources = [source for item in items for source in item.images]
        if sources:
            inputs["pixel_values"] = torch.stack([self.pixels(source) for source in sources])  # (n, 3, S, S)
            inputs["image_keys"] = [image_key(source) for source in sources]
        return inputs

    def pixels(self, source: Any) -> torch.Tensor:
        return efficientnet_pixels(source, self.image_size)  # (3, S, S), as the embedder starter sees it

    def prompt_pieces(self, item: Item, system: str | None = None) -> list[Any]:
        """The prompt as text pieces with ``IMAGE_SPAN`` where each image goes (images lead without placeholders)."""
        text = item.text or ""
        if IMAGE_PLACEHOLDER in text:
            parts = text.split(IMAGE_PLACEHOLDER)
            content: list[Any] = [self._truncate(parts[0])]
            for part in parts[1:]:
                content += [IMAGE_SPAN, self._truncate(part)]
        else:
            content = [IMAGE_SPAN] * len(item.images) + [self._truncate(text)]
        system = system or self.default_system
        prefix = (SYSTEM_TEMPLATE.format(system=system) if system else "") + USER_PREFIX
        if item.instruction:
            prefix += f"{item.instruction}\n"
        pieces: list[Any] = [prefix, *content, USER_SUFFIX]
        merged: list[Any] = []  # neighbouring text pieces tokenise as one string, as the chat template does
        for piece in pieces:
            if piece is not IMAGE_SPAN and merged and merged[-1] is not IMAGE_SPAN:
                merged[-1] += piece
            else:
                merged.append(piece)
        return merged

    def _token_ids(self, item: Item, system: str | None) -> tuple[list[int], list[bool]]:
        ids: list[int] = []
        is_image: list[bool] = []
        for piece in self.prompt_pieces(item, system):
            if piece is IMAGE_SPAN:
                ids += [self.pad_token_id] * self.tokens_per_image
                is_image += [True] * self.tokens_per_image
            else:
                encoded = self.tokenizer(piece, add_special_tokens=False)["input_ids"]
                ids += encoded
                is_image += [False] * len(encoded)
        return ids, is_image

    def _truncate(self, text: str) -> str:
        if len(text) <= self.max_text_tokens:  # a token is at least one character
            return text
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= self.max_text_tokens:
            return text
        return self.tokenizer.decode(ids[: self.max_text_tokens])
