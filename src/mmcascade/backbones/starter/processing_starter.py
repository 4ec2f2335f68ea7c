"""Items -> starter inputs: ``[CLS] instruction [SEP] <image tokens> text [SEP]``, left-padded, plus pixels."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from mmcascade.data.items import IMAGE_PLACEHOLDER, Item, load_image

IMAGE_TOKEN = "[unused0]"  # an unused BERT vocabulary entry marks image positions


class StarterProcessor:
    def __init__(self, tokenizer: Any, image_size: int, tokens_per_image: int, max_text_tokens: int = 64):
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.tokens_per_image = tokens_per_image
        self.max_text_tokens = max_text_tokens
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.pad_token_id = tokenizer.pad_token_id
        self.cls_token_id, self.sep_token_id = tokenizer.cls_token_id, tokenizer.sep_token_id

    def __call__(self, items: Sequence[Item]) -> dict[str, Any]:
        sequences = [self._token_ids(item) for item in items]
        length = max(len(sequence) for sequence in sequences)
        input_ids = torch.full((len(items), length), self.pad_token_id, dtype=torch.long)  # (B, L)
        attention_mask = torch.zeros((len(items), length), dtype=torch.long)  # (B, L)
        for row, sequence in enumerate(sequences):
            input_ids[row, length - len(sequence) :] = torch.tensor(sequence)
            attention_mask[row, length - len(sequence) :] = 1
        inputs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        sources = [source for item in items for source in item.images]
        if sources:
            inputs["pixel_values"] = torch.stack([self.pixels(source) for source in sources])  # (n, 3, S, S)
            inputs["image_keys"] = [image_key(source) for source in sources]
        return inputs

    def pixels(self, source: Any) -> torch.Tensor:
        return efficientnet_pixels(source, self.image_size)

    def _token_ids(self, item: Item) -> list[int]:
        ids = [self.cls_token_id]
        if item.instruction:
            ids += [*self._encode(item.instruction), self.sep_token_id]
        image_span = [self.image_token_id] * self.tokens_per_image
        text = item.text or ""
        if IMAGE_PLACEHOLDER in text:
            pieces = text.split(IMAGE_PLACEHOLDER)
            ids += self._encode(pieces[0])
            for piece in pieces[1:]:
                ids += image_span + self._encode(piece)
        else:
            ids += image_span * len(item.images) + self._encode(text)
        return [*ids, self.sep_token_id]

    def _encode(self, text: str) -> list[int]:
        if not text.strip():
            return []
        return self.tokenizer(text, add_special_tokens=False)["input_ids"][: self.max_text_tokens]


def efficientnet_pixels(source: Any, image_size: int) -> torch.Tensor:
    """TF-Lite style preprocessing of EfficientNet-Lite: resize, then (x - 127) / 128."""
    image = load_image(source).resize((image_size, image_size), Image.BICUBIC)
    array = (np.asarray(image, dtype=np.float32) - 127.0) / 128.0  # (S, S, 3)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()  # (3, S, S)


def image_key(source: Any) -> str | None:
    """Identity for caching an image's features: path, size and mtime (None for in-memory images)."""
    if isinstance(source, (bytes, Image.Image, io.IOBase)):
        return None
    try:
        stat = os.stat(source)
    except OSError:
        return None  # load_image reports the missing file
    return f"{os.fspath(source)}:{stat.st_size}:{stat.st_mtime_ns}"
