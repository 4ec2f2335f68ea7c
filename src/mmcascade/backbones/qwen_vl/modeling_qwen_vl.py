"""Qwen-VL models as mmcascade backbones: hidden states with optional appended (meta) embeddings."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from mmcascade.backbones.base import Backbone, BackboneOutput, BatchInputs
from mmcascade.backbones.base import lookup_token_embedding as _lookup
from mmcascade.backbones.meta_tokens import append_to_embeddings
from mmcascade.backbones.qwen_vl.processing_qwen_vl import QwenVLProcessor
from mmcascade.data.items import Item


class QwenVLBackbone(Backbone):
    """Shared code of the Qwen2-VL family; subclasses name the transformers class."""

    hf_class_name: ClassVar[str]

    def __init__(self, model: Any, processor: QwenVLProcessor):
        super().__init__()
        self.model = model  # a *ForConditionalGeneration: keeps the LM head so the same weights can generate
        self.processor = processor

    @classmethod
    def is_available(cls) -> bool:
        import transformers

        return hasattr(transformers, cls.hf_class_name)

    @classmethod
    def hf_class(cls) -> type:
        import transformers

        return getattr(transformers, cls.hf_class_name)

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        *,
        dtype: torch.dtype | None = None,
        trust_remote_code: bool = False,
        attn_implementation: str | None = None,
        **processor_options: Any,
    ) -> QwenVLBackbone:
        path = Path(path)
        model = cls.hf_class().from_pretrained(
            path,
            dtype=dtype or torch.float32,
            trust_remote_code=trust_remote_code,
            use_safetensors=True,
            attn_implementation=attn_implementation,
        )
        model.eval()
        processor = QwenVLProcessor.from_pretrained(path, trust_remote_code=trust_remote_code, **processor_options)
        return cls(model, processor)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory, safe_serialization=True)
        self.processor.save_pretrained(directory)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.get_text_config().hidden_size)

    def token_embedding(self, token: str) -> torch.Tensor:
        return _lookup(self.processor.tokenizer, self.model.get_input_embeddings(), token)

    def prepare(self, items: Sequence[Item]) -> BatchInputs:
        return self.processor(items)

    def forward(
        self,
        inputs: BatchInputs,
        appended_embeddings: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> BackboneOutput:
        device = self.device
        input_ids = inputs["input_ids"].to(device)  # (B, L)
        attention_mask = inputs["attention_mask"].to(device)  # (B, L)
        token_types = inputs["mm_token_type_ids"].to(device)  # (B, L)
        if appended_embeddings is not None:
            batch, n_appended = input_ids.shape[0], appended_embeddings.shape[0]
            # Placeholder ids keep the rope-index and image-placeholder logic of every family member
            # consistent; the embedding hook swaps their embeddings for the learned ones.
            filler = input_ids.new_full((batch, n_appended), self.processor.pad_token_id)
            input_ids = torch.cat([input_ids, filler], dim=1)  # (B, L + n)
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones((batch, n_appended))], dim=1)
            token_types = torch.cat([token_types, token_types.new_zeros((batch, n_appended))], dim=1)
        vision = {}
        if "pixel_values" in inputs:
            vision = {
                "pixel_values": inputs["pixel_values"].to(device, self.dtype),
                "image_grid_thw": inputs["image_grid_thw"].to(device),
            }
        with append_to_embeddings(self.model.get_input_embeddings(), appended_embeddings, input_ids.shape[1]):
            outputs = self.model.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                mm_token_type_ids=token_types,
                use_cache=False,
                output_hidden_states=output_hidden_states,
                **vision,
            )
        return BackboneOutput(
            last_hidden_state=outputs.last_hidden_state,
            attention_mask=attention_mask,
            hidden_states=outputs.hidden_states if output_hidden_states else None,
        )

    def estimate_length(self, item: Item) -> int:
        max_pixels = self.processor.config.image_max_pixels or 1024 * 28 * 28
        per_image = max_pixels // (28 * 28)
        return len(item.text or "") // 4 + per_image * len(item.images) + len(item.instruction or "") // 4


class Qwen2VLBackbone(QwenVLBackbone):
    family = "qwen2_vl"
    model_types = ("qwen2_vl",)
    hf_class_name = "Qwen2VLForConditionalGeneration"


class Qwen2_5_VLBackbone(QwenVLBackbone):  # noqa: N801 (mirrors transformers naming)
    family = "qwen2_5_vl"
    model_types = ("qwen2_5_vl",)
    hf_class_name = "Qwen2_5_VLForConditionalGeneration"


class Qwen3VLBackbone(QwenVLBackbone):
    family = "qwen3_vl"
    model_types = ("qwen3_vl",)
    hf_class_name = "Qwen3VLForConditionalGeneration"
