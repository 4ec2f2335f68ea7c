"""The Embedder: items -> backbone hidden states -> head vectors, saved as a folder of modules.

Checkpoint layout (every file JSON or safetensors)::

    <dir>/mmcascade.json      EmbedderConfig
    <dir>/backbone/           a Hugging Face checkpoint (config, safetensors, tokenizer, image processor)
    <dir>/head/               head config.json + model.safetensors
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from mmcascade.backbones import Backbone, load_backbone
from mmcascade.backbones.base import BatchInputs
from mmcascade.data.items import as_items
from mmcascade.embedder.heads import Head, Side, build_head, load_head
from mmcascade.embedder.heads.base import check_side, head_class_for
from mmcascade.models import resolve_model
from mmcascade.reasoner.trace import Trace, parse_trace, with_trace
from mmcascade.scoring import cosine, maxsim
from mmcascade.utils.fs import atomic_directory

CONFIG_NAME = "mmcascade.json"
BACKBONE_DIR = "backbone"
HEAD_DIR = "head"
FORMAT_VERSION = 1

OutputFormat = Literal["torch", "numpy"]


@dataclass
class EmbedderConfig:
    """What a saved embedder is: which family, which head, which default instructions."""

    backbone_family: str
    head_type: str
    query_instruction: str | None = None
    document_instruction: str | None = None
    format_version: int = FORMAT_VERSION


class Embedder(nn.Module):
    """Encodes queries and documents into (multi-)vectors.

    Single-vector heads return ``(n, dim)``; multi-vector heads (meta tokens) return ``(n, n_vectors, dim)``.
    Every vector is L2-normalised. Use :meth:`similarity` to score them (cosine or MaxSim).
    """

    def __init__(self, backbone: Backbone, head: Head, config: EmbedderConfig | None = None):
        super().__init__()
        if head.config.hidden_size != backbone.hidden_size:
            raise ValueError(
                f"head hidden_size {head.config.hidden_size} does not match the backbone's {backbone.hidden_size}"
            )
        if head.source_layer is not None:
            _check_source_layer(head.source_layer, backbone)
        self.backbone = backbone
        self.head = head
        self.config = config or EmbedderConfig(backbone_family=backbone.family, head_type=head.head_type)

    # ----------------------------------------------------------------- loading and saving
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        head: str | Head | None = None,
        head_options: dict[str, Any] | None = None,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        trust_remote_code: bool = False,
        attn_implementation: str | None = None,
        **processor_options: Any,
    ) -> Embedder:
        """Load a saved embedder folder, or wrap a plain Hugging Face VLM checkpoint with a new head.

        Args:
            name_or_path: an mmcascade folder (with ``mmcascade.json``), a Hugging Face VLM folder, or a Hub id.
            head: for a plain VLM checkpoint, the head to attach: ``"last_token"`` (default), ``"mean"``,
                ``"meta_tokens"`` (freshly initialised: train it before use), ``"attention_pooler"``,
                ``"self_attention"`` (unified Think-Then-Embed head: its decoder layers start as copies of the
                backbone's last layers; keep the backbone frozen so it still reasons), or a :class:`Head`.
            head_options: options of a new head (e.g. ``{"num_query_tokens": 16, "projection_dim": 128}``).
            dtype: weights dtype (default float32).
            device: where to put the model.
            trust_remote_code: passed to the tokenizer/image-processor loaders; off unless you ask.
            attn_implementation: transformers attention kernel, e.g. ``"sdpa"`` or ``"flash_attention_2"``.
            processor_options: e.g. ``image_max_pixels=200704``, ``max_text_tokens=256``.
        """
        path = resolve_model(name_or_path, "embedder")
        backbone_options = {
            "dtype": dtype,
            "trust_remote_code": trust_remote_code,
            "attn_implementation": attn_implementation,
            **processor_options,
        }
        if (path / CONFIG_NAME).is_file():
            if head is not None or head_options:
                raise ValueError(f"{path} already has a trained head; do not pass head/head_options to load it")
            embedder = cls._load_saved(path, backbone_options)
        else:
            backbone = load_backbone(path, **backbone_options)
            if isinstance(head, Head):
                new_head = head
            else:
                head_type = head or "last_token"
                options = {**head_class_for(head_type).options_from_backbone(backbone), **(head_options or {})}
                new_head = build_head(head_type, backbone.hidden_size, **options)
                init_token = getattr(new_head.config, "init_token", None)
                if init_token is not None:
                    new_head.initialise_from(backbone.token_embedding(init_token))
                if getattr(new_head.config, "init_from_backbone", False):
                    new_head.initialise_from_backbone(backbone)
            embedder = cls(backbone, new_head)
        embedder.head.to(embedder.backbone.dtype)
        if device is not None:
            embedder.to(device)
        return embedder.eval()

    @classmethod
    def _load_saved(cls, path: Path, backbone_options: dict[str, Any]) -> Embedder:
        config_file = path / CONFIG_NAME
        try:
            payload = json.loads(config_file.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{config_file} is not valid JSON: {error}") from error
        known = {field.name for field in fields(EmbedderConfig)}
        unknown = set(payload) - known
        if unknown:
            raise ValueError(f"{config_file}: unknown keys {sorted(unknown)}; valid: {sorted(known)}")
        config = EmbedderConfig(**payload)
        if config.format_version > FORMAT_VERSION:
            raise ValueError(
                f"{config_file} has format_version {config.format_version}; this mmcascade reads up to "
                f"{FORMAT_VERSION}: upgrade mmcascade"
            )
        backbone = load_backbone(path / BACKBONE_DIR, **backbone_options)
        return cls(backbone, load_head(path / HEAD_DIR), config)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write the embedder folder; it appears complete or not at all (a killed save leaves the old one)."""
        with atomic_directory(directory) as staging:
            self.backbone.save_pretrained(staging / BACKBONE_DIR)
            self.head.save_pretrained(staging / HEAD_DIR)
            (staging / CONFIG_NAME).write_text(json.dumps(asdict(self.config), indent=2))

    # ----------------------------------------------------------------- the forward path (training uses it)
    def tokenize(self, items: Sequence[Any], side: Side) -> BatchInputs:
        """Model inputs for a batch; the side's default instruction fills items that have none."""
        check_side(side)
        default = self.config.query_instruction if side == "query" else self.config.document_instruction
        return self.backbone.prepare([item.with_instruction(default) for item in as_items(items)])

    def forward(self, inputs: BatchInputs, side: Side) -> torch.Tensor:
        """``(B, n_vectors, dim)`` vectors for tokenised inputs; differentiable."""
        check_side(side)
        source_layer = self.head.source_layer
        output = self.backbone(
            inputs,
            appended_embeddings=self.head.appended_embeddings(side),
            output_hidden_states=source_layer is not None,
        )
        states = output.last_hidden_state if source_layer is None else output.hidden_states[source_layer]
        return self.head(states, output.attention_mask, side)

    # ----------------------------------------------------------------- encoding
    def encode_queries(
        self,
        items: Iterable[Any],
        *,
        batch_size: int = 8,
        query_budget: int | None = None,
        instruction: str | None = None,
        show_progress: bool = False,
        convert_to: OutputFormat = "torch",
        traces: Sequence[Any] | None = None,
        trace_mode: str = "answer",
    ) -> torch.Tensor | np.ndarray:
        """Encode queries as ``(n, V, dim)`` vectors (V = 1 for single-vector heads); ``query_budget`` keeps the
        first k vectors (Matryoshka prefix).

        ``traces`` (Think-Then-Embed): one reasoning trace per query (a :class:`~mmcascade.reasoner.trace.Trace`,
        the raw generated text, or None); each query is embedded together with its trace's answer
        (``trace_mode="answer"``) or its whole reasoning (``"full"``).
        """
        if traces is not None:
            items = _with_traces(items, traces, trace_mode)
        return self._encode(items, "query", batch_size, query_budget, instruction, show_progress, convert_to)

    def encode_documents(
        self,
        items: Iterable[Any],
        *,
        batch_size: int = 8,
        doc_budget: int | None = None,
        instruction: str | None = None,
        show_progress: bool = False,
        convert_to: OutputFormat = "torch",
    ) -> torch.Tensor | np.ndarray:
        """Encode documents as ``(n, V, dim)`` vectors; ``doc_budget`` keeps the first k (Matryoshka prefix)."""
        return self._encode(items, "document", batch_size, doc_budget, instruction, show_progress, convert_to)

    def similarity(
        self,
        queries: torch.Tensor,
        documents: torch.Tensor,
        *,
        query_budget: int | None = None,
        doc_budget: int | None = None,
    ) -> torch.Tensor:
        """``(n_q, n_d)`` scores of ``(n, V, d)`` embeddings: MaxSim (sum over query vectors of the best
        document vector); for single vectors (V = 1, or ``(n, d)``) that is their cosine."""
        queries, documents = torch.as_tensor(queries), torch.as_tensor(documents)
        if queries.ndim == 2 and documents.ndim == 2:
            queries, documents = queries.unsqueeze(1), documents.unsqueeze(1)  # (n, 1, d): plain vectors in
        if queries.shape[1] == 1 and documents.shape[1] == 1:
            if query_budget not in (None, 1) or doc_budget not in (None, 1):
                raise ValueError("budgets apply to multi-vector embeddings; these are single vectors")
            return cosine(queries[:, 0].float(), documents[:, 0].float())
        return maxsim(queries, documents, query_budget=query_budget, doc_budget=doc_budget)

    @property
    def is_multi_vector(self) -> bool:
        return self.head.is_multi_vector

    def num_vectors(self, side: Side) -> int:
        return self.head.num_vectors(side)

    @property
    def dim(self) -> int:
        return self.head.output_dim

    def _encode(
        self,
        items: Iterable[Any],
        side: Side,
        batch_size: int,
        budget: int | None,
        instruction: str | None,
        show_progress: bool,
        convert_to: OutputFormat,
    ) -> torch.Tensor | np.ndarray:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
        if convert_to not in ("torch", "numpy"):
            raise ValueError(f"convert_to must be 'torch' or 'numpy'; got {convert_to!r}")
        budget_name = "query_budget" if side == "query" else "doc_budget"
        available = self.head.num_vectors(side)
        if budget is not None and (
            isinstance(budget, bool) or not isinstance(budget, int) or not 1 <= budget <= available
        ):
            raise ValueError(
                f"{budget_name}={budget!r} is out of range: valid values are 1..{available} ({side} vectors)"
            )
        item_list = [item.with_instruction(instruction) for item in as_items(items)]
        n_vectors = budget or available
        result = torch.empty((len(item_list), n_vectors, self.head.output_dim), dtype=torch.float32)
        # Similar lengths together: less padding, same vectors (padding never reaches a vector).
        order = sorted(range(len(item_list)), key=lambda index: self.backbone.estimate_length(item_list[index]))
        batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
        progress = _progress(batches, show_progress, f"encoding {side}s")
        with torch.inference_mode():
            for batch in progress:
                inputs = self.tokenize([item_list[index] for index in batch], side)
                vectors = self.forward(inputs, side)[:, :n_vectors]  # (b, n_vectors, dim)
                result[batch] = vectors.float().cpu()
        return result.numpy() if convert_to == "numpy" else result


def _check_source_layer(source_layer: int, backbone: Backbone) -> None:
    try:
        n_layers = backbone.num_hidden_layers
    except ValueError:
        return  # a backbone that does not expose its layers: indexing hidden_states will tell
    if not -(n_layers + 1) <= source_layer <= n_layers:
        raise ValueError(
            f"head source_layer={source_layer} is out of range for this {n_layers}-layer backbone: valid values "
            f"are {-(n_layers + 1)}..{n_layers} (0 = embeddings, -1 = after the final norm)"
        )


def _with_traces(items: Iterable[Any], traces: Sequence[Any], mode: str) -> list[Any]:
    item_list = as_items(items)
    if len(traces) != len(item_list):
        raise ValueError(f"got {len(traces)} traces for {len(item_list)} queries: pass one per query (None for none)")
    result = []
    for item, trace in zip(item_list, traces, strict=True):
        if trace is None:
            result.append(item)
            continue
        if not isinstance(trace, Trace):
            trace = parse_trace(trace)
        result.append(with_trace(item, trace, mode))
    return result


def _progress(batches: list, enabled: bool, description: str) -> Iterable:
    if not enabled:
        return batches
    from tqdm.auto import tqdm

    return tqdm(batches, desc=description, unit="batch")
