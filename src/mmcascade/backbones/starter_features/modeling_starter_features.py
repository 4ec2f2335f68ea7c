"""A frozen late-fusion starter backbone: MiniLM token states and EfficientNet grid cells, side by side.

Nothing in it trains. An item becomes one sequence of feature vectors, each ``hidden_size`` wide and made of
blocks (zeros where a block does not apply)::

    [ MiniLM state (384) | EfficientNet cell (1280) | cell one-hot (g*g) | image-mean flag | sentence flag ]

- one row per text token: all-MiniLM-L6-v2's last-layer state of ``[CLS] instruction [SEP] text [SEP]``;
- one *sentence* row: the masked mean of those states (the sentence-transformers embedding, unnormalised);
- per image, one row per grid cell (``image_size / 32`` squared cells of 1280 channels, with the cell's
  one-hot position) and one *image* row: the mean over cells (the pooled feature a linear probe reads).

A trainable head (``fusion``: a small transformer with MetaEmbed meta tokens) reads these rows. Because the
backbone is frozen, its output per item never changes during training, so ``training.cache_backbone_states``
computes it once and a training step runs only the head. Compared with the MiniLM starter, images are never
pushed through a text encoder that was not trained for them: the image rows are the CNN's own features.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import save_file
from torch import nn

from mmcascade.backbones.base import Backbone, BackboneOutput, BatchInputs
from mmcascade.backbones.starter.components import load_text_model, load_vision_model
from mmcascade.backbones.starter.image_features import FrozenImageFeatures
from mmcascade.backbones.starter.processing_starter import efficientnet_pixels, image_key
from mmcascade.data.items import IMAGE_PLACEHOLDER, Item
from mmcascade.utils.progress import library_progress

MODEL_TYPE = "mmcascade_starter_features"
TEXT_WIDTH = 384
VISION_CHANNELS = 1280
WEIGHTS_NAME = "model.safetensors"


@dataclass
class StarterFeaturesConfig:
    model_type: str = MODEL_TYPE
    image_size: int = 224
    max_text_tokens: int = 64

    def __post_init__(self) -> None:
        if self.model_type != MODEL_TYPE:
            raise ValueError(f"model_type must be {MODEL_TYPE!r}; got {self.model_type!r}")
        if self.image_size < 32 or self.image_size % 32:
            raise ValueError(
                f"image_size must be a positive multiple of 32 (EfficientNet's stride); got {self.image_size}"
            )
        if self.max_text_tokens < 1:
            raise ValueError(f"max_text_tokens must be >= 1; got {self.max_text_tokens}")

    @property
    def cells(self) -> int:
        return (self.image_size // 32) ** 2

    @property
    def hidden_size(self) -> int:
        return TEXT_WIDTH + VISION_CHANNELS + self.cells + 2


class StarterFeaturesBackbone(FrozenImageFeatures, Backbone):
    family = "starter_features"
    model_types: ClassVar[tuple[str, ...]] = (MODEL_TYPE,)
    lora_target_modules: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: StarterFeaturesConfig, text_model: nn.Module, tokenizer: Any, vision_model: nn.Module):
        super().__init__()
        self.config = config
        self.text = text_model
        self.vision = vision_model
        self.tokenizer = tokenizer
        self.requires_grad_(False)
        self._init_feature_cache()

    @classmethod
    def is_available(cls) -> bool:
        return True

    @classmethod
    def from_components(cls, config: StarterFeaturesConfig | None = None) -> StarterFeaturesBackbone:
        with library_progress():
            text_model, tokenizer = load_text_model()
            vision_model = load_vision_model()
        return cls(config or StarterFeaturesConfig(), text_model, tokenizer, vision_model)

    @classmethod
    def save_base(cls, folder: str | os.PathLike) -> None:
        """Write the checkpoint of ``models.ALIASES``: a config only (every weight comes from a package)."""
        cls.from_components().save_pretrained(folder)

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        *,
        dtype: torch.dtype | None = None,
        trust_remote_code: bool = False,
        attn_implementation: str | None = None,
        **processor_options: Any,
    ) -> StarterFeaturesBackbone:
        config_file = Path(path) / "config.json"
        payload = json.loads(config_file.read_text())
        unknown = set(processor_options) - {"max_text_tokens"}
        if unknown:
            raise ValueError(
                f"unknown processor options {sorted(unknown)} for {config_file}; valid: ['max_text_tokens']"
            )
        known = set(StarterFeaturesConfig.__dataclass_fields__)
        if set(payload) - known:
            raise ValueError(f"{config_file}: unknown keys {sorted(set(payload) - known)}; valid: {sorted(known)}")
        backbone = cls.from_components(StarterFeaturesConfig(**{**payload, **processor_options}))
        if dtype is not None:
            backbone.to(dtype)
        return backbone.eval()

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(asdict(self.config), indent=2))
        # No weights of its own (all come from packages); the empty file marks a complete checkpoint folder.
        save_file({}, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})

    def lora_host(self) -> nn.Module:
        raise ValueError("the starter-features backbone is frozen by design: train its head (finetune.mode: head)")

    # ------------------------------------------------------------------------ the forward path
    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def num_hidden_layers(self) -> int:
        return 0  # hidden_states holds one entry: the fused rows (source_layer 0 or -1)

    def prepare(self, items: Sequence[Item]) -> BatchInputs:
        texts = [self._token_ids(item) for item in items]
        length = max(len(ids) for ids in texts)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(items), length), pad, dtype=torch.long)  # (B, T), right-padded for MiniLM
        text_mask = torch.zeros((len(items), length), dtype=torch.long)  # (B, T)
        for row, ids in enumerate(texts):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            text_mask[row, : len(ids)] = 1
        inputs: dict[str, Any] = {
            "input_ids": input_ids,
            "text_mask": text_mask,
            "images_per_item": torch.tensor([len(item.images) for item in items], dtype=torch.long),  # (B,)
        }
        sources = [source for item in items for source in item.images]
        if sources:
            inputs["pixel_values"] = torch.stack([efficientnet_pixels(s, self.config.image_size) for s in sources])
            inputs["image_keys"] = [image_key(source) for source in sources]
        return inputs

    def _token_ids(self, item: Item) -> list[int]:
        tokenizer, limit = self.tokenizer, self.config.max_text_tokens
        ids = [tokenizer.cls_token_id]
        if item.instruction and item.instruction.strip():
            ids += [*tokenizer(item.instruction, add_special_tokens=False)["input_ids"][:limit], tokenizer.sep_token_id]
        text = " ".join(piece.strip() for piece in (item.text or "").split(IMAGE_PLACEHOLDER) if piece.strip())
        if text:
            ids += tokenizer(text, add_special_tokens=False)["input_ids"][:limit]
        return [*ids, tokenizer.sep_token_id]

    def forward(
        self,
        inputs: BatchInputs,
        appended_embeddings: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> BackboneOutput:
        if appended_embeddings is not None:
            raise ValueError("the starter-features backbone takes no appended tokens: use the 'fusion' head")
        device, dtype = self.device, self.dtype
        text_mask = inputs["text_mask"].to(device)  # (B, T)
        states = self.text(input_ids=inputs["input_ids"].to(device), attention_mask=text_mask).last_hidden_state
        weights = text_mask.unsqueeze(-1).to(states.dtype)  # (B, T, 1)
        sentence = (states * weights).sum(1) / weights.sum(1).clamp(min=1)  # (B, 384)
        cells = None
        if "pixel_values" in inputs:
            features = self._image_features(inputs["pixel_values"], inputs.get("image_keys"))  # (n, C, g, g)
            cells = features.flatten(2).transpose(1, 2).to(dtype)  # (n, g*g, C), row-major over the grid
        rows = self._rows(states.to(dtype), text_mask, sentence.to(dtype), cells, inputs["images_per_item"].tolist())
        length = max(row.shape[0] for row in rows)
        fused = torch.zeros((len(rows), length, self.hidden_size), dtype=dtype, device=device)  # (B, L, H)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long, device=device)  # (B, L), left-padded
        for index, row in enumerate(rows):
            fused[index, length - row.shape[0] :] = row
            attention_mask[index, length - row.shape[0] :] = 1
        return BackboneOutput(last_hidden_state=fused, attention_mask=attention_mask, hidden_states=(fused,))

    def _rows(
        self,
        states: torch.Tensor,
        text_mask: torch.Tensor,
        sentence: torch.Tensor,
        cells: torch.Tensor | None,
        images_per_item: list[int],
    ) -> list[torch.Tensor]:
        """Each item's ``(n_rows, H)`` block: text tokens, the sentence row, then per image its cells and mean."""
        n_cells, width = self.config.cells, self.hidden_size
        image_start, cell_start = TEXT_WIDTH, TEXT_WIDTH + VISION_CHANNELS
        rows, next_image = [], 0
        for item, n_images in enumerate(images_per_item):
            n_tokens = int(text_mask[item].sum())
            block = states.new_zeros((n_tokens + 1 + n_images * (n_cells + 1), width))
            block[:n_tokens, :TEXT_WIDTH] = states[item, :n_tokens]
            block[n_tokens, :TEXT_WIDTH] = sentence[item]
            block[n_tokens, -1] = 1.0  # sentence flag
            at = n_tokens + 1
            for _ in range(n_images):
                image_cells = cells[next_image]  # (g*g, C)
                block[at : at + n_cells, image_start:cell_start] = image_cells
                block[at : at + n_cells, cell_start : cell_start + n_cells] = torch.eye(n_cells, dtype=block.dtype)
                block[at + n_cells, image_start:cell_start] = image_cells.mean(0)
                block[at + n_cells, -2] = 1.0  # image-mean flag
                at += n_cells + 1
                next_image += 1
            rows.append(block)
        return rows

    def estimate_length(self, item: Item) -> int:
        return len(item.text or "") // 4 + len(item.instruction or "") // 4 + (self.config.cells + 1) * len(item.images)
