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
    #: whether the backbone keeps a language-model head: generate, completion_loss, continuation_logits
    generative: ClassVar[bool] = False
    #: ``(B, L)`` inputs besides ids and mask that move with the tokens when a completion is appended
    completion_aligned_keys: ClassVar[tuple[str, ...]] = ()
    #: the layers LoRA adapters wrap (the last part of their module names, as peft's ``target_modules``) when
    #: the finetune config names none; they live in :meth:`lora_host`
    lora_target_modules: ClassVar[tuple[str, ...]] = ("q_proj", "k_proj", "v_proj", "o_proj")

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

    def lora_host(self) -> nn.Module:
        """The module holding :attr:`lora_target_modules`, which peft wraps in place (the backbone keeps using
        it): the backbone itself unless a family keeps its language model in a wrapped Hugging Face model."""
        return self

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

    def completion_loss(
        self,
        items: Sequence[Item],
        systems: Sequence[str | None] | None,
        targets: Sequence[str],
        *,
        max_target_tokens: int | None = None,
    ) -> tuple[torch.Tensor, int]:
        """Mean cross-entropy of ``targets`` as the assistant's reply to each item's chat prompt, and the
        number of target tokens it averages over (generative backbones only; used for SFT).

        Each prompt is built exactly as :meth:`generate` builds it; the target's tokens and the
        end-of-turn token that stops generation follow it. Only those positions carry a label.
        """
        self.require_generative("compute a completion loss")
        if len(targets) != len(items):
            raise ValueError(f"got {len(targets)} targets for {len(items)} items")
        tokenizer = self._tokenizer()
        end_id = end_of_turn_token_id(tokenizer, self._stop_token_ids())
        completions = completion_token_ids(tokenizer, targets, end_id, max_target_tokens)
        hidden, labels = self.continued_states(items, systems, completions)  # (B, L', H), (B, L')
        return next_token_loss(hidden, labels, self._output_layer())

    def continuation_logits(
        self,
        items: Sequence[Item],
        systems: Sequence[str | None] | None,
        continuations: Sequence[str],
        token_ids: Sequence[int],
    ) -> torch.Tensor:
        """Logits ``(B, len(token_ids))`` of the token after each chat prompt + assistant ``continuation``.

        The prompt is built as :meth:`generate` builds it and the continuation is the start of the
        assistant's reply (no end-of-turn token), so the logits are those generation would sample the
        next token from (generative backbones only; used to read a reranker's yes/no judgement).
        """
        self.require_generative("score continuations")
        if len(continuations) != len(items):
            raise ValueError(f"got {len(continuations)} continuations for {len(items)} items")
        prefixes = continuation_token_ids(self._tokenizer(), continuations)
        hidden, _ = self.continued_states(items, systems, prefixes)  # (B, L', H)
        return last_position_logits(hidden, self._output_layer(), token_ids)

    def continued_states(
        self, items: Sequence[Item], systems: Sequence[str | None] | None, completions: Sequence[Sequence[int]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Last hidden states ``(B, L', H)`` of each chat prompt followed by its completion ids, and labels
        ``(B, L')`` holding those ids at their positions (-100 elsewhere). Generative backbones only.

        The prompts come from the processor :meth:`generate` uses; each row's completion follows its prompt and
        the batch is left-padded again (``append_completions``), so :meth:`forward` gives every token the
        position generation would.
        """
        self.require_generative("continue a chat prompt")
        prompts = self.processor(items, systems)
        inputs, labels = append_completions(
            prompts, completions, self.processor.pad_token_id, row_aligned=self.completion_aligned_keys
        )  # (B, L') each
        return self.forward(inputs).last_hidden_state, labels

    def require_generative(self, job: str) -> None:
        if not self.generative:
            raise ValueError(
                f"the {self.family} backbone cannot {job}: it does not generate text; use a generative VLM "
                "(Qwen-VL family or the starter reasoner) as reasoner or reranker"
            )

    def _tokenizer(self) -> Any:
        return self.processor.tokenizer  # every generative family keeps its chat processor on ``processor``

    def _output_layer(self) -> nn.Module:
        raise ValueError(f"the {self.family} backbone has no language-model head")

    def _stop_token_ids(self) -> Sequence[int] | int | None:
        return None

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


def completion_token_ids(
    tokenizer: Any, targets: Sequence[str], end_token_id: int, max_target_tokens: int | None = None
) -> list[list[int]]:
    """Token ids of each target reply followed by ``end_token_id``; a target cut to ``max_target_tokens``
    gets no end token, so the model is not taught to stop where the teacher did not."""
    if max_target_tokens is not None and max_target_tokens < 1:
        raise ValueError(f"max_target_tokens must be >= 1 or None; got {max_target_tokens}")
    completions = []
    for index, target in enumerate(targets):
        if not isinstance(target, str) or not target:
            raise ValueError(f"target {index} must be a non-empty string; got {target!r}")
        ids = tokenizer(target, add_special_tokens=False)["input_ids"]
        if max_target_tokens is not None and len(ids) >= max_target_tokens:
            completions.append(ids[:max_target_tokens])
        else:
            completions.append([*ids, end_token_id])
    return completions


def append_completions(
    inputs: BatchInputs,
    completions: Sequence[Sequence[int]],
    pad_token_id: int,
    row_aligned: Sequence[str] = (),
) -> tuple[BatchInputs, torch.Tensor]:
    """Append each row's completion ids right after its (left-padded) prompt and left-pad again.

    Every row is unpadded, extended with its completion and padded back on the left, so the prompt
    tokens keep the positions they have in :meth:`Backbone.generate` (positions count real tokens
    only) and the completion takes the positions generation would give it. ``row_aligned`` names
    further ``(B, L)`` tensors (image masks, token types) that move with the ids; appended positions
    get zeros there. Returns the new inputs and the labels ``(B, L')``: the completion ids at their
    positions, -100 elsewhere (prompt, image and padding positions).
    """
    input_ids, attention_mask = inputs["input_ids"], inputs["attention_mask"]  # (B, L), (B, L)
    if len(completions) != input_ids.shape[0]:
        raise ValueError(f"got {len(completions)} targets for {input_ids.shape[0]} prompts")
    prompt_lengths = attention_mask.sum(dim=1).tolist()
    length = max(int(n) + len(c) for n, c in zip(prompt_lengths, completions, strict=True))
    batch = input_ids.shape[0]
    new_ids = torch.full((batch, length), pad_token_id, dtype=input_ids.dtype)  # (B, L')
    new_mask = torch.zeros((batch, length), dtype=attention_mask.dtype)  # (B, L')
    labels = torch.full((batch, length), -100, dtype=torch.long)  # (B, L')
    aligned = {key: inputs[key].new_zeros((batch, length)) for key in row_aligned}  # (B, L') each
    for row, (n_prompt, completion) in enumerate(zip(prompt_lengths, completions, strict=True)):
        n_prompt = int(n_prompt)
        total = n_prompt + len(completion)
        start = length - total
        tail = input_ids.shape[1] - n_prompt  # the prompt's first real position in the old row
        new_ids[row, start : start + n_prompt] = input_ids[row, tail:]
        new_ids[row, start + n_prompt :] = torch.tensor(completion, dtype=input_ids.dtype)
        new_mask[row, start:] = 1
        labels[row, start + n_prompt :] = torch.tensor(completion, dtype=torch.long)
        for key in row_aligned:
            aligned[key][row, start : start + n_prompt] = inputs[key][row, tail:]
    return {**inputs, "input_ids": new_ids, "attention_mask": new_mask, **aligned}, labels


def sampling_options(temperature: float, top_p: float) -> dict[str, Any]:
    """``generate`` keyword arguments: greedy decoding at temperature 0, else nucleus sampling."""
    if temperature == 0:
        return {"do_sample": False}
    return {"do_sample": True, "temperature": temperature, "top_p": top_p}


def next_token_loss(hidden_states: torch.Tensor, labels: torch.Tensor, lm_head: nn.Module) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy of the labelled tokens, predicted from the hidden state one position earlier.

    Only the labelled positions go through ``lm_head``, so a long prompt costs no vocabulary-wide logits.
    """
    labels = labels.to(hidden_states.device)
    targets = labels[:, 1:]  # (B, L-1): position t predicts the token at t+1
    chosen = targets != -100  # (B, L-1)
    n_tokens = int(chosen.sum())
    if n_tokens == 0:
        raise ValueError("no target token to compute a loss on: every target is empty")
    predictors = hidden_states[:, :-1][chosen]  # (n, H)
    logits = lm_head(predictors).float()  # (n, V)
    loss = nn.functional.cross_entropy(logits, targets[chosen], reduction="mean")
    return loss, n_tokens


def last_position_logits(hidden_states: torch.Tensor, lm_head: nn.Module, token_ids: Sequence[int]) -> torch.Tensor:
    """Logits ``(B, T)`` of ``token_ids`` predicted from the last position of left-padded ``(B, L, H)`` states."""
    vocabulary = lm_head(hidden_states[:, -1]).float()  # (B, V): one position per row, cheap
    index = torch.as_tensor(list(token_ids), dtype=torch.long, device=vocabulary.device)
    if index.numel() == 0 or int(index.min()) < 0 or int(index.max()) >= vocabulary.shape[-1]:
        raise ValueError(
            f"token ids {list(token_ids)} are not all in this model's vocabulary of {vocabulary.shape[-1]}"
        )
    return vocabulary[:, index]  # (B, T)


def continuation_token_ids(tokenizer: Any, continuations: Sequence[str]) -> list[list[int]]:
    """Token ids of each assistant-reply prefix, as generation would have produced them (no end token)."""
    for index, text in enumerate(continuations):
        if not isinstance(text, str):
            raise ValueError(f"continuation {index} must be a string; got {type(text).__name__}")
    return [tokenizer(text, add_special_tokens=False)["input_ids"] if text else [] for text in continuations]


def end_of_turn_token_id(tokenizer: Any, stop_token_ids: Sequence[int] | int | None) -> int:
    """The ChatML ``<|im_end|>`` id, checked to be one of the ids generation stops on."""
    token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise ValueError("the tokenizer lacks the ChatML end-of-turn token <|im_end|>; SFT needs a ChatML model")
    stops = [stop_token_ids] if isinstance(stop_token_ids, int) else list(stop_token_ids or [])
    if token_id not in stops:
        raise ValueError(
            f"generation stops on token ids {stops}, not on <|im_end|> ({token_id}): a model trained to end "
            "its reply with <|im_end|> would not stop; set eos_token_id in the checkpoint's generation_config.json"
        )
    return int(token_id)
