"""The frozen-feature linear probe: the baseline every starter quality number is reported next to.

Frozen EfficientNet-Lite0 pooled image features (1280) and frozen all-MiniLM-L6-v2 sentence embeddings
(384, mean-pooled and L2-normalised as sentence-transformers does), read through the loaders the starter
backbone uses; two linear maps to ``dim`` (256) trained with symmetric InfoNCE on the (query, positive)
pairs of a records file (docs/notes: quality-calibration.md). An item's vector is the L2-normalised sum
of its mapped image and text features (either may be absent); instructions are not read.

It speaks the embedder's evaluation interface (``encode_queries`` / ``encode_documents`` -> ``(n, 1, dim)``,
``similarity`` -> cosine), so :func:`~mmcascade.evaluation.records_eval.evaluate_records` scores it as it
scores the starter. Saved as ``model.safetensors`` + ``config.json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from mmcascade.backbones.starter.components import load_text_model, load_vision_model
from mmcascade.backbones.starter.processing_starter import efficientnet_pixels, image_key
from mmcascade.data.items import Item, as_items
from mmcascade.data.records import TrainingRecord

IMAGE_FEATURES, TEXT_FEATURES = 1280, 384
PROBE_TYPE = "mmcascade-linear-probe"


@dataclass
class LinearProbeConfig:
    """The probe's shape and training recipe (serialised next to its weights)."""

    dim: int = 256
    image_size: int = 160  # the starter's EfficientNet input size
    temperature: float = 0.05
    epochs: int = 20
    batch_size: int = 256
    learning_rate: float = 2e-3
    seed: int = 0


class FrozenFeatures:
    """The two frozen encoders, with a per-image / per-text feature cache (features are computed once)."""

    def __init__(self, image_size: int = 160) -> None:
        self.image_size = image_size
        self.vision = load_vision_model()
        self.text_model, self.tokenizer = load_text_model()
        self.text_model.eval()
        self.cache: dict[tuple[str, Any], torch.Tensor] = {}

    @torch.inference_mode()
    def images(self, sources: Sequence[Any], batch_size: int = 16) -> torch.Tensor:
        """``(n, 1280)`` pooled EfficientNet-Lite0 features."""
        keys = [("image", image_key(source)) for source in sources]  # in-memory images (key None) are not cached
        fresh: dict[int, torch.Tensor] = {}
        missing = [index for index, key in enumerate(keys) if key[1] is None or key not in self.cache]
        for start in range(0, len(missing), batch_size):
            batch = missing[start : start + batch_size]
            pixels = torch.stack([efficientnet_pixels(sources[i], self.image_size) for i in batch])  # (b, 3, S, S)
            pooled = self.vision.extract_features(pixels).mean(dim=(2, 3))  # (b, 1280)
            fresh.update(zip(batch, pooled, strict=True))
            self.cache.update({keys[i]: fresh[i] for i in batch if keys[i][1] is not None})
        vectors = [fresh[i] if i in fresh else self.cache[key] for i, key in enumerate(keys)]
        return torch.stack(vectors) if vectors else torch.zeros(0, IMAGE_FEATURES)

    @torch.inference_mode()
    def texts(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """``(n, 384)`` mean-pooled, L2-normalised MiniLM sentence embeddings."""
        keys = [("text", text) for text in texts]
        missing = sorted({text for key, text in zip(keys, texts, strict=True) if key not in self.cache})
        for start in range(0, len(missing), batch_size):
            batch = missing[start : start + batch_size]
            encoded = self.tokenizer(batch, padding=True, truncation=True, max_length=256, return_tensors="pt")
            states = self.text_model(**encoded).last_hidden_state  # (b, L, 384)
            mask = encoded["attention_mask"].unsqueeze(-1).to(states.dtype)  # (b, L, 1)
            pooled = F.normalize((states * mask).sum(1) / mask.sum(1).clamp(min=1), dim=-1)  # (b, 384)
            self.cache.update({("text", text): vector for text, vector in zip(batch, pooled, strict=True)})
        return torch.stack([self.cache[key] for key in keys]) if keys else torch.zeros(0, TEXT_FEATURES)

    def items(self, items: Sequence[Item]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(n, 1280)`` image and ``(n, 384)`` text features; zeros where an item has no image / no text."""
        image_features = torch.zeros(len(items), IMAGE_FEATURES)
        text_features = torch.zeros(len(items), TEXT_FEATURES)
        with_image = [i for i, item in enumerate(items) if item.images]
        with_text = [i for i, item in enumerate(items) if item.text]
        if with_image:
            image_features[with_image] = self.images([items[i].images[0] for i in with_image])
        if with_text:
            text_features[with_text] = self.texts([str(items[i].text) for i in with_text])
        return image_features, text_features


class LinearProbe(nn.Module):
    """Two linear maps over frozen features; see the module docstring."""

    def __init__(self, config: LinearProbeConfig | None = None, features: FrozenFeatures | None = None) -> None:
        super().__init__()
        self.config = config or LinearProbeConfig()
        self.image_map = nn.Linear(IMAGE_FEATURES, self.config.dim, bias=False)
        self.text_map = nn.Linear(TEXT_FEATURES, self.config.dim, bias=False)
        self._features = features

    @property
    def features(self) -> FrozenFeatures:
        """The frozen encoders, loaded on first use (a probe can be built and saved without them)."""
        if self._features is None:
            self._features = FrozenFeatures(self.config.image_size)
        return self._features

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """``(n, 1280)`` + ``(n, 384)`` features -> ``(n, dim)`` L2-normalised vectors (absent parts are zeros)."""
        return F.normalize(self.image_map(image_features) + self.text_map(text_features), dim=-1)

    # ---- the embedder's evaluation interface -------------------------------------------------------
    def encode_queries(self, items: Iterable[Any], *, batch_size: int = 32, **_: Any) -> torch.Tensor:
        """``(n, 1, dim)`` query vectors (queries and documents share the maps)."""
        return self._encode(items, batch_size)

    def encode_documents(self, items: Iterable[Any], *, batch_size: int = 32, **_: Any) -> torch.Tensor:
        """``(n, 1, dim)`` document vectors."""
        return self._encode(items, batch_size)

    def similarity(
        self,
        queries: torch.Tensor,
        documents: torch.Tensor,
        *,
        query_budget: int | None = None,
        doc_budget: int | None = None,
    ) -> torch.Tensor:
        """``(n_q, n_d)`` cosines of ``(n, 1, dim)`` vectors; a single-vector model has no budgets beyond 1."""
        if query_budget not in (None, 1) or doc_budget not in (None, 1):
            raise ValueError(f"the linear probe makes one vector per item; got budget ({query_budget}, {doc_budget})")
        return queries[:, 0].float() @ documents[:, 0].float().T  # (n_q, n_d)

    @torch.inference_mode()
    def _encode(self, items: Iterable[Any], batch_size: int) -> torch.Tensor:
        item_list = as_items(items)
        image_features, text_features = self.features.items(item_list)
        return self(image_features, text_features).unsqueeze(1)  # (n, 1, dim)

    # ---- save / load --------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """``model.safetensors`` (the two maps) and ``config.json`` (type + :class:`LinearProbeConfig`)."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        save_file(
            {name: tensor.contiguous() for name, tensor in self.state_dict().items()}, folder / "model.safetensors"
        )
        (folder / "config.json").write_text(json.dumps({"type": PROBE_TYPE, **asdict(self.config)}, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, features: FrozenFeatures | None = None) -> LinearProbe:
        """Load a probe saved by :meth:`save_pretrained`.

        Raises:
            ValueError: the folder does not hold a linear probe.
        """
        folder = Path(directory)
        config = json.loads((folder / "config.json").read_text())
        if config.pop("type", None) != PROBE_TYPE:
            raise ValueError(f"{folder} does not hold a linear probe (config.json type is not {PROBE_TYPE!r})")
        probe = cls(LinearProbeConfig(**config), features)
        probe.load_state_dict(load_file(folder / "model.safetensors"))
        return probe


def train_linear_probe(
    records: Sequence[TrainingRecord],
    config: LinearProbeConfig | None = None,
    *,
    features: FrozenFeatures | None = None,
    log: Any = None,
) -> LinearProbe:
    """Train a probe with symmetric InfoNCE on the records' (query, positive) pairs, in-batch negatives.

    Pairs that share a positive (or a query) are not negatives of each other. Features are computed once.
    """
    if not records:
        raise ValueError("no records to train the linear probe on")
    probe = LinearProbe(config, features)
    config = probe.config
    query_parts = probe.features.items([record.query for record in records])  # (n, 1280), (n, 384)
    positive_parts = probe.features.items([record.positive for record in records])
    positive_ids = _group_ids([_item_key(record.positive) for record in records])  # (n,)
    query_ids = _group_ids([_item_key(record.query) for record in records])  # (n,)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(probe.parameters(), lr=config.learning_rate)
    for epoch in range(config.epochs):
        order = torch.randperm(len(records), generator=generator)
        losses = []
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            loss = _batch_loss(probe, query_parts, positive_parts, positive_ids, query_ids, batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        if log is not None:
            log(f"linear probe epoch {epoch + 1}/{config.epochs}: loss {sum(losses) / len(losses):.3f}")
    return probe.eval()


def _batch_loss(
    probe: LinearProbe,
    query_parts: tuple[torch.Tensor, torch.Tensor],
    positive_parts: tuple[torch.Tensor, torch.Tensor],
    positive_ids: torch.Tensor,
    query_ids: torch.Tensor,
    batch: torch.Tensor,
) -> torch.Tensor:
    queries = probe(query_parts[0][batch], query_parts[1][batch])  # (b, dim)
    positives = probe(positive_parts[0][batch], positive_parts[1][batch])  # (b, dim)
    logits = queries @ positives.T / probe.config.temperature  # (b, b)
    same = (positive_ids[batch][:, None] == positive_ids[batch][None, :]) | (
        query_ids[batch][:, None] == query_ids[batch][None, :]
    )  # (b, b): another pair with the same positive or query is no negative
    eye = torch.eye(len(batch), dtype=torch.bool)
    logits = logits.masked_fill(same & ~eye, float("-inf"))
    targets = torch.arange(len(batch))
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def _item_key(item: Item) -> tuple:
    return (item.text, tuple(str(image) for image in item.images))


def _group_ids(keys: Sequence[tuple]) -> torch.Tensor:
    """``(n,)``: equal keys, equal ids."""
    ids: dict[tuple, int] = {}
    return torch.tensor([ids.setdefault(key, len(ids)) for key in keys])
