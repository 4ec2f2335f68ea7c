"""Tiny random checkpoints of every supported family, built offline, for tests and examples.

They load through exactly the path a user's real checkpoint takes (``from_pretrained`` on a folder).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
JUDGEMENT_WORDS = (" yes", " no")

_CORPUS = """
a red circle on a white background. a small blue square left of a large green triangle.
find an image that matches the caption. represent the given image. what colour is the shape?
the cat sits on the mat next to a cup of coffee. an astronaut in a white suit holds a helmet.
retrieve the document that answers the question. which class does this image belong to?
two yellow stars above one brown rectangle. a grey rocket stands on the launch pad at night.
the quick brown fox jumps over the lazy dog. numbers 0 1 2 3 4 5 6 7 8 9 and letters a b c.
"""


def build_tiny_tokenizer(vocab_size: int = 384) -> Any:
    """A byte-level BPE tokenizer with the Qwen chat and vision special tokens, trained in memory."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS.strip().splitlines() * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[3:],
    )
    # A reranker reads single " yes" / " no" tokens, as real Qwen and Llama vocabularies have them.
    fast.add_tokens([AddedToken(word, normalized=False) for word in JUDGEMENT_WORDS])
    return fast


def build_tiny_checkpoint(
    family: str,
    directory: str | os.PathLike,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    seed: int = 0,
) -> Path:
    """Save a randomly initialised ``family`` model (qwen2_vl, qwen2_5_vl, qwen3_vl) with its processing files.

    Images are capped at 64 visual tokens so CPU tests stay fast.
    """
    import transformers
    from transformers import Qwen2VLImageProcessorPil

    tokenizer = build_tiny_tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    head_dim = 16
    text_config: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden_size,
        "intermediate_size": hidden_size * 2,
        "num_hidden_layers": num_layers,
        "num_attention_heads": hidden_size // head_dim,
        "num_key_value_heads": max(1, hidden_size // head_dim // 2),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "mrope_section": [2, 3, 3]},
    }
    token_ids = {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }
    patch_size = 14
    if family == "qwen2_vl":
        config = transformers.Qwen2VLConfig(
            text_config=text_config,
            vision_config={"depth": 2, "embed_dim": 32, "hidden_size": hidden_size, "num_heads": 2, "mlp_ratio": 2},
            **token_ids,
        )
        model_class = transformers.Qwen2VLForConditionalGeneration
    elif family == "qwen2_5_vl":
        config = transformers.Qwen2_5_VLConfig(
            text_config=text_config,
            vision_config={
                "depth": 2,
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_heads": 2,
                "out_hidden_size": hidden_size,
                "window_size": 112,
                "fullatt_block_indexes": [1],
            },
            **token_ids,
        )
        model_class = transformers.Qwen2_5_VLForConditionalGeneration
    elif family == "qwen3_vl":
        if not hasattr(transformers, "Qwen3VLConfig"):
            raise ValueError("this transformers has no Qwen3-VL; upgrade transformers to build a qwen3_vl checkpoint")
        text_config["head_dim"] = head_dim
        text_config["rope_parameters"] = {**text_config["rope_parameters"], "mrope_interleaved": True}
        config = transformers.Qwen3VLConfig(
            text_config=text_config,
            vision_config={
                "depth": 2,
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_heads": 2,
                "out_hidden_size": hidden_size,
                "patch_size": 16,
                "num_position_embeddings": 64,
                "deepstack_visual_indexes": [0],
            },
            **token_ids,
        )
        model_class = transformers.Qwen3VLForConditionalGeneration
        patch_size = 16
    else:
        raise ValueError(f"unknown family {family!r}; choose one of qwen2_vl, qwen2_5_vl, qwen3_vl")
    factor = patch_size * 2  # one visual token per 2x2 merged patches
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=patch_size, size={"shortest_edge": 4 * factor * factor, "longest_edge": 64 * factor * factor}
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = model_class(config).eval()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    image_processor.save_pretrained(directory)
    return directory


def build_tiny_llama(
    directory: str | os.PathLike, *, hidden_size: int = 64, num_layers: int = 2, seed: int = 0
) -> Path:
    """Save a randomly initialised Llama causal LM with a ChatML tokenizer: a stand-in for SmolLM2 in tests
    (pass the folder as the starter reasoner's ``lm_source``)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tiny_tokenizer()
    head_dim = 16
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=hidden_size // head_dim,
        num_key_value_heads=max(1, hidden_size // head_dim // 2),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 1e5},
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).eval()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory
