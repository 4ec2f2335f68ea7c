"""Turn a model name into a local folder: a folder path as is, a Hub id through the HF cache."""

from __future__ import annotations

import os
from pathlib import Path

# Files a checkpoint needs; weights only as safetensors (never pickle).
_ALLOW_PATTERNS = [
    "*.json",
    "*.safetensors",
    "*.txt",
    "*.model",
    "*.jinja",
    "*.md",
    "*/*.json",
    "*/*.safetensors",
    "*/*.txt",
    "*/*.model",
    "*/*.jinja",
]


def resolve_pretrained(name_or_path: str | os.PathLike, *, revision: str | None = None) -> Path:
    """Return a local folder for ``name_or_path``.

    An existing folder is used as is. A name that looks like a path (absolute, ``./``, ``~``) but does not
    exist raises FileNotFoundError. Anything else is treated as a Hub repo id and fetched (or read from the
    cache when ``HF_HUB_OFFLINE=1``); an id that cannot be found raises ValueError.
    """
    text = os.fspath(name_or_path)
    if text in ALIASES:
        return ALIASES[text]()
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"{path} is a file; pass the model folder that holds config.json")
    if _looks_like_path(text):
        raise FileNotFoundError(f"model folder not found: {path}")
    return _download(text, revision)


def starter_embedder_folder() -> Path:
    """The trained starter embedder that ships inside this package (``make starter`` rebuilds it)."""
    folder = Path(__file__).parent / "assets" / "starter"
    if not (folder / "mmcascade.json").is_file():
        raise FileNotFoundError(
            f"the starter model is not in {folder}; build it with `make starter` (about 30 minutes on a CPU)"
        )
    return folder


def starter_base_folder() -> Path:
    """An untrained starter backbone (packaged parts + fresh projector/adapters), written once to the cache."""
    from mmcascade.backbones.starter.modeling_starter import StarterBackbone

    cache = Path(os.environ.get("MMCASCADE_CACHE", Path.home() / ".cache" / "mmcascade")) / "starter-base"
    if not (cache / "config.json").is_file():
        import torch

        from mmcascade.utils.fs import atomic_directory

        with torch.random.fork_rng(), atomic_directory(cache) as staging:
            torch.manual_seed(0)
            StarterBackbone.from_components().save_pretrained(staging)
    return cache


def starter_reasoner_base_folder() -> Path:
    """An untrained starter reasoner (packaged SmolLM2 + EfficientNet-Lite0, fresh seeded projector), built once."""
    from mmcascade.backbones.starter_reasoner.components import cache_root
    from mmcascade.backbones.starter_reasoner.modeling_starter_reasoner import StarterReasonerBackbone

    cache = cache_root() / "starter-reasoner-base"
    if not (cache / "config.json").is_file():
        import torch

        from mmcascade.utils.fs import atomic_directory

        with torch.random.fork_rng(), atomic_directory(cache) as staging:
            torch.manual_seed(0)
            StarterReasonerBackbone.from_components().save_pretrained(staging)
    return cache


def starter_reasoner_folder() -> Path:
    """The trained starter reasoner that ships inside this package (``scripts/train_starter_reasoner.py``)."""
    folder = Path(__file__).parent / "assets" / "starter_reasoner"
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"the starter reasoner is not in {folder}; build it with `python scripts/train_starter_reasoner.py`"
        )
    return folder


ALIASES = {
    "starter": starter_embedder_folder,
    "starter-reasoner": starter_reasoner_folder,
    "starter-base": starter_base_folder,
    "starter-reasoner-base": starter_reasoner_base_folder,
}


def _looks_like_path(text: str) -> bool:
    return (
        text.startswith((".", "~", os.sep))
        or (os.altsep is not None and os.altsep in text)
        or text.count("/") > 1
        or text.endswith("/")
    )


def _download(repo_id: str, revision: str | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=_ALLOW_PATTERNS))
    except HFValidationError as error:
        raise ValueError(f"unknown model {repo_id!r}: not a local folder and not a valid Hub id ({error})") from error
    except Exception as error:  # network, auth, missing repo, offline cache miss: all mean "not available"
        raise ValueError(
            f"unknown model {repo_id!r}: not a local folder, and the Hugging Face Hub could not provide it "
            f"({type(error).__name__}: {error}). Pass a local checkpoint folder, or check the id and your network."
        ) from error
