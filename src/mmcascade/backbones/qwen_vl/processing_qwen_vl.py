"""Items -> Qwen-VL inputs: chat-formatted text with image spans, left-padded, plus image patches.

Built from the tokenizer and the image processor directly: the Qwen processors need torchvision's
video processor to construct, and building ``input_ids``/``mm_token_type_ids`` here keeps one path
for every family member.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from mmcascade.data.items import IMAGE_PLACEHOLDER, Item, load_image

PROCESSOR_CONFIG_NAME = "mmcascade_processor.json"

VISION_START, IMAGE_PAD, VISION_END = "<|vision_start|>", "<|image_pad|>", "<|vision_end|>"


@dataclass
class QwenVLProcessorConfig:
    """How an item becomes a prompt. Saved next to the tokenizer as ``mmcascade_processor.json``."""

    prompt_template: str = "<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n"
    system_template: str = "<|im_start|>system\n{system}<|im_end|>\n"  # prefixed when a system prompt is given
    instruction_template: str = "{instruction}\n"
    max_text_tokens: int = 512
    image_min_pixels: int | None = None
    image_max_pixels: int | None = None

    def __post_init__(self) -> None:
        if "{content}" not in self.prompt_template:
            raise ValueError("prompt_template must contain '{content}'")
        if self.max_text_tokens < 1:
            raise ValueError(f"max_text_tokens must be >= 1; got {self.max_text_tokens}")
        for name in ("image_min_pixels", "image_max_pixels"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be a positive number of pixels or None; got {value}")

    @classmethod
    def from_options(cls, options: dict[str, Any], base: QwenVLProcessorConfig | None = None) -> QwenVLProcessorConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(options) - known
        if unknown:
            raise ValueError(f"unknown processor options {sorted(unknown)}; valid: {sorted(known)}")
        merged = {**asdict(base or cls()), **options}
        return cls(**merged)


class QwenVLProcessor:
    """Builds left-padded Qwen-VL model inputs from items."""

    def __init__(self, tokenizer: Any, image_processor: Any, config: QwenVLProcessorConfig | None = None):
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.config = config or QwenVLProcessorConfig()
        vocab = tokenizer.get_vocab()
        missing = [token for token in (VISION_START, IMAGE_PAD, VISION_END) if token not in vocab]
        if missing:
            raise ValueError(f"the tokenizer lacks the Qwen-VL vision tokens {missing}; is this a Qwen-VL checkpoint?")
        self.image_token_id = vocab[IMAGE_PAD]
        pad_id = tokenizer.pad_token_id
        self.pad_token_id = pad_id if pad_id is not None else tokenizer.eos_token_id
        if self.pad_token_id is None:
            raise ValueError("the tokenizer has neither a pad token nor an eos token to pad with")
        self.merge_size = int(getattr(image_processor, "merge_size", 2))

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, *, trust_remote_code: bool = False, **options: Any
    ) -> QwenVLProcessor:
        from transformers import AutoImageProcessor, AutoTokenizer

        path = Path(path)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        image_processor = AutoImageProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
        saved = None
        if (path / PROCESSOR_CONFIG_NAME).is_file():
            saved = QwenVLProcessorConfig(**json.loads((path / PROCESSOR_CONFIG_NAME).read_text()))
        return cls(tokenizer, image_processor, QwenVLProcessorConfig.from_options(options, saved))

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        self.tokenizer.save_pretrained(directory)
        self.image_processor.save_pretrained(directory)
        (directory / PROCESSOR_CONFIG_NAME).write_text(json.dumps(asdict(self.config), indent=2))

    def __call__(self, items: Sequence[Item], systems: Sequence[str | None] | None = None) -> dict[str, torch.Tensor]:
        """Model inputs for ``items``; ``systems`` (one per item, or None) adds a system turn before each."""
        if systems is not None and len(systems) != len(items):
            raise ValueError(f"got {len(systems)} system prompts for {len(items)} items")
        images = [load_image(source) for item in items for source in item.images]
        image_inputs = self._process_images(images) if images else {}
        tokens_per_image = []
        if images:
            grid = image_inputs["image_grid_thw"]  # (n_images, 3): temporal, height, width patches
            tokens_per_image = (grid.prod(dim=-1) // self.merge_size**2).tolist()
        prompts, cursor = [], 0
        for item in items:
            prompt = self._prompt(item, tokens_per_image[cursor : cursor + len(item.images)])
            system = systems[len(prompts)] if systems is not None else None
            if system:
                prompt = self.config.system_template.replace("{system}", system) + prompt
            prompts.append(prompt)
            cursor += len(item.images)
        encoded = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        inputs = self._left_pad(encoded)
        inputs["mm_token_type_ids"] = (inputs["input_ids"] == self.image_token_id).to(torch.int32)  # 1 = image
        inputs.update(image_inputs)
        return inputs

    def _process_images(self, images: list) -> dict[str, torch.Tensor]:
        kwargs: dict[str, Any] = {}
        if self.config.image_min_pixels is not None or self.config.image_max_pixels is not None:
            size = dict(getattr(self.image_processor, "size", {}) or {})
            if self.config.image_min_pixels is not None:
                size["shortest_edge"] = self.config.image_min_pixels
            if self.config.image_max_pixels is not None:
                size["longest_edge"] = self.config.image_max_pixels
            kwargs["size"] = size
        processed = self.image_processor(images=images, return_tensors="pt", **kwargs)
        return {"pixel_values": processed["pixel_values"], "image_grid_thw": processed["image_grid_thw"]}

    def _prompt(self, item: Item, image_token_counts: list[int]) -> str:
        spans = [VISION_START + IMAGE_PAD * count + VISION_END for count in image_token_counts]
        text = self._truncate(item.text or "")
        if IMAGE_PLACEHOLDER in text:
            pieces = text.split(IMAGE_PLACEHOLDER)
            content = pieces[0] + "".join(span + piece for span, piece in zip(spans, pieces[1:], strict=True))
        else:
            content = "".join(spans) + text
        if item.instruction:
            content = self.config.instruction_template.format(instruction=item.instruction) + content
        return self.config.prompt_template.format(content=content)

    def _truncate(self, text: str) -> str:
        if len(text) <= self.config.max_text_tokens:  # a token is at least one character
            return text
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= self.config.max_text_tokens:
            return text
        return self.tokenizer.decode(ids[: self.config.max_text_tokens])

    def _left_pad(self, sequences: list[list[int]]) -> dict[str, torch.Tensor]:
        length = max(len(sequence) for sequence in sequences)
        input_ids = torch.full((len(sequences), length), self.pad_token_id, dtype=torch.long)  # (B, L)
        attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)  # (B, L)
        for row, sequence in enumerate(sequences):
            if sequence:
                input_ids[row, length - len(sequence) :] = torch.tensor(sequence, dtype=torch.long)
                attention_mask[row, length - len(sequence) :] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}
