"""Qwen-VL models as mmcascade backbones: hidden states with optional appended (meta) embeddings."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from mmcascade.backbones.base import (
    Backbone,
    BackboneOutput,
    BatchInputs,
    TextDecoder,
    sampling_options,
)
from mmcascade.backbones.base import lookup_token_embedding as _lookup
from mmcascade.backbones.meta_tokens import append_to_embeddings
from mmcascade.backbones.qwen_vl.processing_qwen_vl import QwenVLProcessor
from mmcascade.data.items import Item


class QwenVLBackbone(Backbone):
    """Shared code of the Qwen2-VL family; subclasses name the transformers class."""

    hf_class_name: ClassVar[str]
    generative = True
    completion_aligned_keys = ("mm_token_type_ids",)
    #: the language model's attention projections; the vision tower names its own ``qkv`` / ``proj``
    lora_target_modules = ("q_proj", "k_proj", "v_proj", "o_proj")

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

    def text_decoder(self) -> TextDecoder:
        language_model = self.model.model.language_model
        config = self.model.config.get_text_config()
        num_heads = int(config.num_attention_heads)
        first_attention = language_model.layers[0].self_attn
        return TextDecoder(
            layers=list(language_model.layers),
            final_norm=language_model.norm,
            num_heads=num_heads,
            num_kv_heads=int(config.num_key_value_heads),
            head_dim=int(getattr(config, "head_dim", None) or config.hidden_size // num_heads),
            intermediate_size=int(config.intermediate_size),
            rms_norm_eps=float(config.rms_norm_eps),
            # m-RoPE splits the rotary frequencies over (t, h, w) positions; for text all three are the same
            # position, so it equals 1-D RoPE with this base.
            rope_theta=float(config.rope_parameters["rope_theta"]),
            attention_bias=first_attention.q_proj.bias is not None,
            qk_norm=hasattr(first_attention, "q_norm"),
        )

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

    @torch.inference_mode()
    def generate(
        self,
        items: Sequence[Item],
        *,
        systems: Sequence[str | None] | None = None,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
    ) -> list[str]:
        """Continue each item's chat prompt (left-padded batch, KV-cached); returns the new text only.

        ``temperature=0`` is greedy decoding; otherwise sampling with ``temperature`` and ``top_p``
        (seed it with ``torch.manual_seed`` for repeatable samples).
        """
        inputs = self.processor(items, systems)
        device = self.device
        model_inputs = {key: value.to(device) for key, value in inputs.items()}
        if "pixel_values" in model_inputs:
            model_inputs["pixel_values"] = model_inputs["pixel_values"].to(self.dtype)
        output = self.model.generate(
            **model_inputs,
            max_new_tokens=max_new_tokens,
            pad_token_id=self.processor.pad_token_id,
            use_cache=True,
            **sampling_options(temperature, top_p),
        )  # (B, L + new)
        new_tokens = output[:, model_inputs["input_ids"].shape[1] :]  # (B, new)
        return self.processor.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)

    def lora_host(self) -> nn.Module:
        return self.model  # the *ForConditionalGeneration: peft wraps a Hugging Face model as it expects

    def _output_layer(self) -> nn.Module:
        return self.model.lm_head

    def _stop_token_ids(self) -> Sequence[int] | int | None:
        return self.model.generation_config.eos_token_id

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
