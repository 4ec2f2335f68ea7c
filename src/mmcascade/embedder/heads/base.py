"""The head seam and its persistence: ``<dir>/config.json`` + ``<dir>/model.safetensors``."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from safetensors.torch import load_file, save_file
from torch import nn

Side = Literal["query", "document"]
SIDES: tuple[str, ...] = ("query", "document")

HEAD_CONFIG_NAME = "config.json"
HEAD_WEIGHTS_NAME = "model.safetensors"

_REGISTRY: dict[str, type[Head]] = {}


class Head(nn.Module):
    """Maps backbone hidden states to ``(B, n_vectors, dim)`` L2-normalised vectors.

    A head may also contribute embeddings the backbone appends after every input
    (:meth:`appended_embeddings`), which is how meta tokens enter the model.
    """

    head_type: ClassVar[str]
    config_class: ClassVar[type]

    def __init__(self, config: Any):
        super().__init__()
        self.config = config

    @property
    def source_layer(self) -> int | None:
        """Which entry of the backbone's ``hidden_states`` the head reads, or None for ``last_hidden_state``.

        Indexed as transformers does: ``0`` is the embeddings, ``i`` the output of decoder layer ``i``
        (1-based), and ``-1`` the last layer's output after the final norm (same as ``last_hidden_state``).
        """
        return None

    @classmethod
    def options_from_backbone(cls, backbone: Any) -> dict[str, Any]:
        """Config options a new head takes from the backbone it will sit on (e.g. the decoder's shape)."""
        return {}

    def appended_embeddings(self, side: Side) -> torch.Tensor | None:
        """``(n, hidden)`` embeddings to place after the input on ``side``, or None."""
        return None

    def num_vectors(self, side: Side) -> int:
        raise NotImplementedError

    @property
    def output_dim(self) -> int:
        raise NotImplementedError

    @property
    def is_multi_vector(self) -> bool:
        return self.num_vectors("query") > 1 or self.num_vectors("document") > 1

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor, side: Side) -> torch.Tensor:
        """``hidden_states (B, L, H)``, ``attention_mask (B, L)`` -> ``(B, n_vectors, dim)``."""
        raise NotImplementedError

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        payload = {"head_type": self.head_type, **asdict(self.config)}
        (directory / HEAD_CONFIG_NAME).write_text(json.dumps(payload, indent=2))
        state = {name: tensor.detach().contiguous().cpu() for name, tensor in self.state_dict().items()}
        if state:
            save_file(state, str(directory / HEAD_WEIGHTS_NAME), metadata={"format": "pt"})


def register_head(head_class: type[Head]) -> type[Head]:
    _REGISTRY[head_class.head_type] = head_class
    return head_class


def head_types() -> list[str]:
    return sorted(_REGISTRY)


def head_class_for(head_type: str) -> type[Head]:
    """The registered class of ``head_type``."""
    if head_type not in _REGISTRY:
        raise ValueError(f"unknown head {head_type!r}; valid heads: {head_types()}")
    return _REGISTRY[head_type]


def build_head(head_type: str, hidden_size: int, **options: Any) -> Head:
    """A freshly initialised head of ``head_type`` for a backbone of width ``hidden_size``."""
    head_class = head_class_for(head_type)
    return head_class(_make_config(head_class, {"hidden_size": hidden_size, **options}, source="head options"))


def load_head(directory: str | os.PathLike) -> Head:
    directory = Path(directory)
    config_file = directory / HEAD_CONFIG_NAME
    if not config_file.is_file():
        raise FileNotFoundError(f"head config not found: {config_file}")
    try:
        payload = json.loads(config_file.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_file} is not valid JSON: {error}") from error
    head_type = payload.pop("head_type", None)
    if head_type not in _REGISTRY:
        raise ValueError(f"{config_file}: unknown head_type {head_type!r}; valid heads: {head_types()}")
    head_class = _REGISTRY[head_type]
    head = head_class(_make_config(head_class, payload, source=str(config_file)))
    weights_file = directory / HEAD_WEIGHTS_NAME
    expected = head.state_dict()
    if expected:
        if not weights_file.is_file():
            raise FileNotFoundError(f"head weights not found: {weights_file}")
        head.load_state_dict(load_file(str(weights_file)), strict=True)
    return head


def _make_config(head_class: type[Head], values: dict[str, Any], source: str) -> Any:
    valid = {field.name for field in fields(head_class.config_class)}
    unknown = set(values) - valid
    if unknown:
        raise ValueError(
            f"{source}: unknown option(s) {sorted(unknown)} for head {head_class.head_type!r}; valid: {sorted(valid)}"
        )
    return head_class.config_class(**values)


def check_side(side: str) -> None:
    if side not in SIDES:
        raise ValueError(f"side must be 'query' or 'document'; got {side!r}")


def project_and_normalize(vectors: torch.Tensor, projection: nn.Module | None, normalize: bool) -> torch.Tensor:
    """Optional linear projection, then per-vector L2 normalisation (MetaEmbed M5)."""
    if projection is not None:
        vectors = projection(vectors)
    if normalize:
        vectors = torch.nn.functional.normalize(vectors, p=2, dim=-1)
    return vectors
