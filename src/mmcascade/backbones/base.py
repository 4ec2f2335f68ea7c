"""The backbone seam: items -> model inputs -> hidden states, for any vision-language family."""

from __future__ import annotations

import abc
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from mmcascade.data.items import Item

BatchInputs = dict[str, torch.Tensor]


@dataclass
class BackboneOutput:
    """Hidden states of a batch; ``attention_mask`` covers any appended tokens."""

    last_hidden_state: torch.Tensor  # (B, L, H), after the final norm
    attention_mask: torch.Tensor  # (B, L), 1 = real token, 0 = padding (padding is on the left)
    hidden_states: tuple[torch.Tensor, ...] | None = None  # embeddings + every layer, when asked for


@dataclass
class TextDecoder:
    """The text decoder's layers and shape, for heads that copy its last layers (Qwen2-style layers:
    RMSNorm -> GQA attention with q/k/v/o projections and RoPE -> RMSNorm -> SwiGLU MLP)."""

    layers: list[nn.Module]  # every decoder layer, first to last
    final_norm: nn.Module  # the RMSNorm after the last layer
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    rms_norm_eps: float
    rope_theta: float
    attention_bias: bool  # q/k/v projections have a bias (Qwen2), or not (Qwen3)
    qk_norm: bool  # per-head RMSNorm on queries and keys (Qwen3)


class Backbone(nn.Module, abc.ABC):
    """A vision-language model plus its input processing.

    Subclasses live in one ``modeling_<family>.py`` / ``processing_<family>.py`` pair and register the
    Hugging Face ``model_type`` values they read. Sequences are left-padded, so appended tokens
    (MetaEmbed's meta tokens) are always the final positions of every row.
    """

    family: ClassVar[str]
    model_types: ClassVar[tuple[str, ...]]

    @classmethod
    @abc.abstractmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        *,
        dtype: torch.dtype | None = None,
        trust_remote_code: bool = False,
        attn_implementation: str | None = None,
        **processor_options: Any,
    ) -> Backbone:
        """Load weights and processing from a local checkpoint folder."""

    @abc.abstractmethod
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write weights (safetensors), config and processing files so ``from_pretrained`` reads them back."""

    @abc.abstractmethod
    def prepare(self, items: Sequence[Item]) -> BatchInputs:
        """Tokenise and preprocess a batch of items (left-padded) into model inputs on the CPU."""

    @abc.abstractmethod
    def forward(
        self,
        inputs: BatchInputs,
        appended_embeddings: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> BackboneOutput:
        """Run the model; ``appended_embeddings (n, H)`` are placed after every sequence."""

    @property
    @abc.abstractmethod
    def hidden_size(self) -> int:
        """Width of the hidden states."""

    def token_embedding(self, token: str) -> torch.Tensor:
        """The input embedding ``(H,)`` of one vocabulary token (used to initialise meta tokens)."""
        raise NotImplementedError(f"{type(self).__name__} cannot look up token embeddings")

    @property
    def num_hidden_layers(self) -> int:
        """Number of text decoder layers (``hidden_states`` has one more entry: the embeddings)."""
        return len(self.text_decoder().layers)

    def text_decoder(self) -> TextDecoder:
        """The text decoder's layers and shape (heads initialised from the backbone's last layers use it)."""
        raise ValueError(
            f"the {self.family} backbone does not expose its text decoder layers, so a head cannot be "
            "initialised from them; use a Qwen-VL backbone or pass init_from_backbone=False"
        )

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def generate(
        self,
        items: Sequence[Item],
        *,
        systems: Sequence[str | None] | None = None,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
    ) -> list[str]:
        """Generated continuations of each item's chat prompt (generative backbones only)."""
        raise ValueError(f"the {self.family} backbone cannot generate text; use a generative VLM as reasoner")

    def estimate_length(self, item: Item) -> int:
        """A cheap sequence-length estimate used to batch items of similar length together."""
        return len(item.text or "") // 4 + 256 * len(item.images) + len(item.instruction or "") // 4


def require_checkpoint_folder(path: Path) -> None:
    """Fail early, naming the folder, when it cannot hold a Hugging Face checkpoint."""
    if not path.is_dir():
        raise FileNotFoundError(f"model folder not found: {path}")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json: it is not a Hugging Face model folder")
    has_safetensors = any(path.glob("*.safetensors")) or (path / "model.safetensors.index.json").is_file()
    if not has_safetensors:
        found_bin = any(path.glob("*.bin"))
        hint = (
            " It holds only pickle (.bin) weights, which mmcascade does not load: convert them to safetensors."
            if found_bin
            else ""
        )
        raise FileNotFoundError(f"{path} has no *.safetensors weights.{hint}")


def lookup_token_embedding(tokenizer: Any, embeddings: nn.Module, token: str) -> torch.Tensor:
    """Embedding ``(H,)`` of ``token``, which must be a single vocabulary entry."""
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or (token_id == tokenizer.unk_token_id and token != tokenizer.unk_token):
        raise ValueError(f"init_token {token!r} is not a single token of this tokenizer")
    with torch.no_grad():
        return embeddings(torch.tensor([token_id], device=embeddings.weight.device))[0].detach().cpu()
