"""Head-only training on cached backbone states (Think-Then-Embed's unified design, made cheap to train).

With a frozen backbone and a head that reads the backbone's ``source_layer`` states without appending
anything to its input (``attention_pooler``, ``self_attention``), the backbone's output for an item never
changes during training. :class:`BackboneStateCache` computes it once per distinct (side, item) and then
serves left-padded batches of it, exactly as the live backbone would, so a training step runs the head only.

It stands in for the embedder in :func:`mmcascade.training.grad_cache.contrastive_step`: ``tokenize`` returns
the cached states of a batch (``{"hidden_states": (B, L, H), "attention_mask": (B, L)}``), calling it runs the
head. Computed states can be spilled to ``<output_dir>/state_cache/*.safetensors`` so a resumed run reuses them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

from mmcascade.backbones.base import Backbone, BatchInputs
from mmcascade.data.items import Item, as_items
from mmcascade.embedder import Embedder
from mmcascade.embedder.heads import Side
from mmcascade.embedder.heads.base import SIDES
from mmcascade.reasoner.pipeline import image_digest
from mmcascade.utils.fs import write_bytes_atomically

CACHE_KEY = "training.cache_backbone_states"
CACHE_DIR = "state_cache"
STORE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def check_cacheable(embedder: Embedder) -> None:
    """Raise ValueError unless the backbone is frozen and the head reads ``source_layer`` states only."""
    head = embedder.head
    if head.source_layer is None or any(head.appended_embeddings(side) is not None for side in SIDES):
        raise ValueError(
            f"{CACHE_KEY} needs a head that reads the backbone's source_layer states (attention_pooler, "
            f"self_attention); head {head.head_type!r} reads the last layer or appends tokens to the backbone's "
            f"input: set {CACHE_KEY}: false or use a unified head"
        )
    training = [name for name, parameter in embedder.backbone.named_parameters() if parameter.requires_grad]
    if training:
        raise ValueError(
            f"{CACHE_KEY} needs a frozen backbone (finetune.mode: head, no finetune.train pattern on backbone "
            f"weights); {len(training)} backbone weight(s) train here (e.g. {training[0]!r}): set {CACHE_KEY}: false "
            "or freeze the backbone"
        )


def state_key(item: Item, side: Side) -> str:
    """A content digest of what the backbone reads for ``item`` on ``side``: text, instruction, image bytes."""
    parts = [side, item.text, item.instruction, [image_digest(image) for image in item.images]]
    return hashlib.sha256(json.dumps(parts).encode("utf-8")).hexdigest()


class BackboneStateCache:
    """The frozen backbone's ``source_layer`` states, computed once per distinct (side, item), served to the head.

    Args:
        embedder: the embedder whose head trains (checked with :func:`check_cacheable`).
        store_dtype: ``"float32"`` (exact) or ``"bfloat16"`` (half the memory).
        spill_dir: where computed states are written by :meth:`spill` and read back at start; None: memory only.
        rank: the process rank, in shard names (each rank spills what it computed).
    """

    def __init__(
        self,
        embedder: Embedder,
        store_dtype: str = "float32",
        spill_dir: str | Path | None = None,
        rank: int = 0,
    ):
        check_cacheable(embedder)
        if store_dtype not in STORE_DTYPES:
            raise ValueError(f"training.state_cache_dtype must be one of {sorted(STORE_DTYPES)}; got {store_dtype!r}")
        self.embedder, self.head = embedder, embedder.head
        self.store_dtype = STORE_DTYPES[store_dtype]
        self.spill_dir = None if spill_dir is None else Path(spill_dir)
        self.rank = rank
        self.states: dict[str, torch.Tensor] = {}  # key -> (L_item, H), real tokens only, on the CPU
        self.pending: list[str] = []  # computed since the last spill
        self.items_computed = 0
        self.signature = _signature(embedder.backbone, self.head.source_layer, self.store_dtype)
        if self.spill_dir is not None:
            self._load_shards()

    # ----------------------------------------------------------------- the encoder seam of contrastive_step
    def tokenize(self, items: Sequence[Any], side: Side) -> BatchInputs:
        """The cached states of a batch, left-padded: ``hidden_states (B, L, H)``, ``attention_mask (B, L)``."""
        item_list = as_items(items)
        keys = [state_key(item.with_instruction(self._instruction(side)), side) for item in item_list]
        missing = {key: item for key, item in zip(keys, item_list, strict=True) if key not in self.states}
        if missing:
            self._compute(list(missing), list(missing.values()), side)
        return _left_pad([self.states[key] for key in keys], self._head_dtype(), self._head_device())

    def __call__(self, inputs: BatchInputs, side: Side) -> torch.Tensor:
        """``(B, n_vectors, dim)`` vectors of cached states; differentiable in the head's weights."""
        return self.head(inputs["hidden_states"], inputs["attention_mask"], side)

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        return self.head.parameters()

    # ----------------------------------------------------------------- filling
    def _compute(self, keys: list[str], items: list[Item], side: Side) -> None:
        backbone = self.embedder.backbone
        with torch.no_grad(), _eval_mode(backbone):
            # embedder.tokenize fills the side's default instruction, as the live forward does
            output = backbone(self.embedder.tokenize(items, side), output_hidden_states=True)
        states = output.hidden_states[self.head.source_layer]  # (b, L, H)
        for row, key in enumerate(keys):
            self.states[key] = _real_positions(states[row], output.attention_mask[row]).to(
                device="cpu", dtype=self.store_dtype
            )  # (L_item, H)
        self.pending.extend(keys)
        self.items_computed += len(keys)

    def _instruction(self, side: Side) -> str | None:
        config = self.embedder.config
        return config.query_instruction if side == "query" else config.document_instruction

    def _head_dtype(self) -> torch.dtype:
        return next(self.head.parameters()).dtype

    def _head_device(self) -> torch.device:
        return next(self.head.parameters()).device

    # ----------------------------------------------------------------- spilling
    def spill(self, step: int) -> Path | None:
        """Write the states computed since the last spill to one new shard; returns it (None: nothing new)."""
        if self.spill_dir is None or not self.pending:
            return None
        path = self.spill_dir / f"shard-{self.rank:03d}-{step:07d}.safetensors"
        tensors = {key: self.states[key].contiguous() for key in self.pending}
        write_bytes_atomically(path, save(tensors, metadata={"signature": self.signature}))
        self.pending = []
        return path

    def _load_shards(self) -> None:
        for path in sorted(self.spill_dir.glob("shard-*.safetensors")):
            with safe_open(str(path), framework="pt") as shard:
                metadata = shard.metadata() or {}
            if metadata.get("signature") != self.signature:
                raise ValueError(
                    f"{path} holds states of another backbone, source_layer or {CACHE_KEY} dtype; delete "
                    f"{self.spill_dir} (it is rebuilt) or train in another training.output_dir"
                )
            self.states.update(load_file(str(path)))


def _real_positions(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(L, H)`` row states -> ``(n_real, H)``: a left-padded row's real tokens are its last ``n_real``."""
    n_real = int(mask.sum())
    if not bool(mask[mask.shape[0] - n_real :].all()):
        raise ValueError("the backbone's attention mask is not left-padded; its states cannot be cached")
    return states[states.shape[0] - n_real :]


def _left_pad(rows: list[torch.Tensor], dtype: torch.dtype, device: torch.device) -> BatchInputs:
    """Rows ``(L_i, H)`` -> ``hidden_states (B, L, H)`` (zeros before each row) and ``attention_mask (B, L)``."""
    length, width = max(row.shape[0] for row in rows), rows[0].shape[1]
    states = torch.zeros((len(rows), length, width), dtype=dtype)  # (B, L, H)
    mask = torch.zeros((len(rows), length), dtype=torch.long)  # (B, L)
    for index, row in enumerate(rows):
        states[index, length - row.shape[0] :] = row.to(dtype)
        mask[index, length - row.shape[0] :] = 1
    return {"hidden_states": states.to(device), "attention_mask": mask.to(device)}


@contextlib.contextmanager
def _eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """Deterministic states (no dropout) while filling, whatever mode training left the backbone in."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def _signature(backbone: Backbone, source_layer: int, store_dtype: torch.dtype) -> str:
    """What cached states depend on besides the item: the backbone's family, config and ``states_version`` (bumped
    when a family's code computes different states), every backbone weight (a rounded float64 sum per tensor:
    cheap, and the same whatever the thread count), the layer read and the stored dtype."""
    version = getattr(backbone, "states_version", 0)
    config = getattr(backbone, "config", None)
    digest = hashlib.sha256(f"{backbone.family}|{version}|{config!r}|{source_layer}|{store_dtype}".encode())
    with torch.no_grad():
        for name, tensor in backbone.named_parameters():
            digest.update(f"{name}:{float(tensor.double().sum()):.9g}|".encode())
    return digest.hexdigest()
