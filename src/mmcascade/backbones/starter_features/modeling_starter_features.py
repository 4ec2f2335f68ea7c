"""A frozen late-fusion starter backbone: MiniLM token states and EfficientNet grid cells, side by side.

Nothing in it trains. An item becomes one sequence of feature vectors, each ``hidden_size`` wide and made of
blocks (zeros where a block does not apply)::

    [ MiniLM state (384) | EfficientNet cell (1280) | cell one-hot (g*g) | (instruction) | image-mean | sentence ]

- text (``text_segments: joint``, the default): one row per token of all-MiniLM-L6-v2's last-layer states of
  ``[CLS] instruction [SEP] text [SEP]``, then a *sentence* row: their mean. With ``separate``, the instruction
  and the text are encoded on their own (instruction rows flagged in an extra column), and the sentence row
  is the text's own mean: exactly the sentence-transformers feature a linear probe reads;
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
#: config fields a caller may override at load time (``model.processor_options`` in a training config)
PROCESSOR_OPTIONS = {"max_text_tokens", "text_segments"}
INSTRUCTION, TEXT = 0, 1
# the last three columns flag a row's kind (cells carry their one-hot grid position before them)
INSTRUCTION_FLAG, IMAGE_MEAN_FLAG, SENTENCE_FLAG = -3, -2, -1


@dataclass
class StarterFeaturesConfig:
    model_type: str = MODEL_TYPE
    image_size: int = 224
    max_text_tokens: int = 64
    # "joint": one MiniLM pass over ``[CLS] instruction [SEP] text [SEP]`` (token rows + their mean);
    # "separate": the instruction and the text each encoded on their own, instruction rows flagged, and the
    # sentence row the text's own mean (exactly a linear probe's text feature).
    text_segments: str = "joint"

    def __post_init__(self) -> None:
        if self.model_type != MODEL_TYPE:
            raise ValueError(f"model_type must be {MODEL_TYPE!r}; got {self.model_type!r}")
        if self.text_segments not in ("joint", "separate"):
            raise ValueError(f"text_segments must be 'joint' or 'separate'; got {self.text_segments!r}")
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
        flags = 3 if self.text_segments == "separate" else 2  # [instruction,] image mean, sentence
        return TEXT_WIDTH + VISION_CHANNELS + self.cells + flags


class StarterFeaturesBackbone(FrozenImageFeatures, Backbone):
    family = "starter_features"
    model_types: ClassVar[tuple[str, ...]] = (MODEL_TYPE,)
    lora_target_modules: ClassVar[tuple[str, ...]] = ()
    #: part of the training state cache's signature: bump when the rows computed for an item change
    states_version: ClassVar[int] = 1

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
        unknown = set(processor_options) - PROCESSOR_OPTIONS
        if unknown:
            raise ValueError(
                f"unknown processor options {sorted(unknown)} for {config_file}; valid: {sorted(PROCESSOR_OPTIONS)}"
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
        # Each text segment (an item's instruction, its text) is encoded on its own: (S, T), right-padded.
        segments: list[list[int]] = []
        owners: list[int] = []  # (S,) the item of each segment
        kinds: list[int] = []  # (S,) INSTRUCTION or TEXT
        for index, item in enumerate(items):
            text = " ".join(piece.strip() for piece in (item.text or "").split(IMAGE_PLACEHOLDER) if piece.strip())
            instruction = (item.instruction or "").strip()
            if self.config.text_segments == "joint":
                segments.append(self._token_ids(text, instruction))
                owners.append(index)
                kinds.append(TEXT)
                continue
            if instruction:
                segments.append(self._token_ids(instruction))
                owners.append(index)
                kinds.append(INSTRUCTION)
            if text or not item.images:  # an item with neither text nor image still gets its (empty) sentence
                segments.append(self._token_ids(text))
                owners.append(index)
                kinds.append(TEXT)
        length = max((len(ids) for ids in segments), default=1)
        input_ids = torch.full((len(segments), length), self.tokenizer.pad_token_id, dtype=torch.long)  # (S, T)
        text_mask = torch.zeros((len(segments), length), dtype=torch.long)  # (S, T)
        for row, ids in enumerate(segments):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            text_mask[row, : len(ids)] = 1
        inputs: dict[str, Any] = {
            "input_ids": input_ids,
            "text_mask": text_mask,
            "segment_items": torch.tensor(owners, dtype=torch.long),  # (S,)
            "segment_kinds": torch.tensor(kinds, dtype=torch.long),  # (S,)
            "images_per_item": torch.tensor([len(item.images) for item in items], dtype=torch.long),  # (B,)
        }
        sources = [source for item in items for source in item.images]
        if sources:
            inputs["pixel_values"] = torch.stack([efficientnet_pixels(s, self.config.image_size) for s in sources])
            inputs["image_keys"] = [image_key(source) for source in sources]
        return inputs

    def _token_ids(self, text: str, instruction: str = "") -> list[int]:
        """``[CLS] text [SEP]`` (a sentence, as sentence-transformers encodes it), or with an instruction
        ``[CLS] instruction [SEP] text [SEP]`` (one joint segment)."""
        tokenizer, limit = self.tokenizer, self.config.max_text_tokens
        ids = [tokenizer.cls_token_id]
        if instruction:
            ids += [*tokenizer(instruction, add_special_tokens=False)["input_ids"][:limit], tokenizer.sep_token_id]
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
        text_mask = inputs["text_mask"].to(device)  # (S, T)
        if text_mask.shape[0]:
            states = self.text(input_ids=inputs["input_ids"].to(device), attention_mask=text_mask).last_hidden_state
        else:  # images only: no text segment in the batch
            states = torch.zeros((0, text_mask.shape[1], TEXT_WIDTH), dtype=dtype, device=device)  # (0, T, 384)
        weights = text_mask.unsqueeze(-1).to(states.dtype)  # (S, T, 1)
        sentences = (states * weights).sum(1) / weights.sum(1).clamp(min=1)  # (S, 384)
        cells = None
        if "pixel_values" in inputs:
            features = self._image_features(inputs["pixel_values"], inputs.get("image_keys"))  # (n, C, g, g)
            cells = features.flatten(2).transpose(1, 2).to(dtype)  # (n, g*g, C), row-major over the grid
        segments = [
            (int(owner), int(kind), states[row, : int(text_mask[row].sum())].to(dtype), sentences[row].to(dtype))
            for row, (owner, kind) in enumerate(zip(inputs["segment_items"], inputs["segment_kinds"], strict=True))
        ]
        rows = self._rows(segments, cells, inputs["images_per_item"].tolist())
        length = max(row.shape[0] for row in rows)
        fused = torch.zeros((len(rows), length, self.hidden_size), dtype=dtype, device=device)  # (B, L, H)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long, device=device)  # (B, L), left-padded
        for index, row in enumerate(rows):
            fused[index, length - row.shape[0] :] = row
            attention_mask[index, length - row.shape[0] :] = 1
        return BackboneOutput(last_hidden_state=fused, attention_mask=attention_mask, hidden_states=(fused,))

    def _rows(
        self,
        segments: list[tuple[int, int, torch.Tensor, torch.Tensor]],
        cells: torch.Tensor | None,
        images_per_item: list[int],
    ) -> list[torch.Tensor]:
        """Each item's ``(n_rows, H)`` block: instruction tokens, text tokens and the sentence row, then per
        image its cells and their mean."""
        n_cells, width = self.config.cells, self.hidden_size
        image_start, cell_start = TEXT_WIDTH, TEXT_WIDTH + VISION_CHANNELS
        blocks: list[list[torch.Tensor]] = [[] for _ in images_per_item]
        for owner, kind, token_states, sentence in segments:
            block = token_states.new_zeros((token_states.shape[0] + (kind == TEXT), width))
            block[: token_states.shape[0], :TEXT_WIDTH] = token_states
            if kind == INSTRUCTION:
                block[:, INSTRUCTION_FLAG] = 1.0
            else:
                block[-1, :TEXT_WIDTH] = sentence
                block[-1, SENTENCE_FLAG] = 1.0
            blocks[owner].append(block)
        next_image = 0
        for owner, n_images in enumerate(images_per_item):
            for _ in range(n_images):
                image_cells = cells[next_image]  # (g*g, C)
                block = image_cells.new_zeros((n_cells + 1, width))
                block[:n_cells, image_start:cell_start] = image_cells
                block[:n_cells, cell_start : cell_start + n_cells] = torch.eye(n_cells, dtype=block.dtype)
                block[n_cells, image_start:cell_start] = image_cells.mean(0)
                block[n_cells, IMAGE_MEAN_FLAG] = 1.0
                blocks[owner].append(block)
                next_image += 1
        return [torch.cat(parts) for parts in blocks]

    def estimate_length(self, item: Item) -> int:
        return (
            len(item.text or "") // 4
            + len(item.instruction or "") // 4
            + (self.config.cells + 1) * len(item.images)
            + 5
        )
