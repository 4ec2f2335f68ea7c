"""Model names -> local folders: the one alias table, model fingerprints and the one cache root.

Every place that takes a model name (``Embedder.from_pretrained``, ``load_backbone``, the reasoners and
judges, the CLI's ``--model`` / ``--reasoner`` / ``--reranker``) resolves it here:

- an existing folder is used as is;
- a name in :data:`ALIASES` is a model this package ships or builds (``starter-embedder``,
  ``starter-reasoner``, their untrained ``-base`` folders). ``starter`` is the documented shorthand: it
  means the starter embedder where an embedder is wanted and the starter reasoner where a generative
  model (reasoner, reranker) is wanted;
- anything else is a Hugging Face Hub id (safetensors only; read from the cache when ``HF_HUB_OFFLINE=1``).

This module imports nothing heavy: the builders of the ``-base`` folders are named by import path and
loaded only when such a folder is first built.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mmcascade.utils.fs import atomic_directory

Role = Literal["embedder", "generative"]

#: ``$MMCASCADE_CACHE`` overrides the cache root (else ``$XDG_CACHE_HOME/mmcascade``, else ``~/.cache/mmcascade``)
CACHE_ENV = "MMCASCADE_CACHE"
ASSETS = Path(__file__).parent / "assets"

# Files a Hub checkpoint needs; weights only as safetensors (never pickle).
_ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.md"]
_ALLOW_PATTERNS += [f"*/{pattern}" for pattern in _ALLOW_PATTERNS if pattern != "*.md"]
# Files up to this size are fingerprinted whole; bigger weight files by size plus their first and last MiB.
_FULL_HASH_BYTES = 64 * 2**20
_EDGE_BYTES = 2**20


def cache_root() -> Path:
    """Where mmcascade keeps what it builds or downloads (built models, the mini benchmark, traces, indexes):
    ``$MMCASCADE_CACHE``, else ``$XDG_CACHE_HOME/mmcascade``, else ``~/.cache/mmcascade``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "mmcascade"


@dataclass(frozen=True)
class ModelAlias:
    """A model this package ships (``asset``: a folder under ``assets/``) or builds once into the cache
    (``builder``: ``"module:Class"`` whose ``save_base(folder)`` writes an untrained, seeded checkpoint)."""

    name: str
    role: Role
    description: str
    asset: str | None = None
    builder: str | None = None
    build_hint: str = ""

    def folder(self) -> Path:
        return self._shipped_folder() if self.asset is not None else self._built_folder()

    def _shipped_folder(self) -> Path:
        folder = ASSETS / str(self.asset)
        if not (folder / "config.json").is_file() and not (folder / "mmcascade.json").is_file():
            raise FileNotFoundError(f"{self.name} is not in {folder}; build it with {self.build_hint}")
        return folder

    def _built_folder(self) -> Path:
        folder = cache_root() / self.name
        if not (folder / "config.json").is_file():
            module_name, _, class_name = str(self.builder).partition(":")
            backbone_class = getattr(importlib.import_module(module_name), class_name)
            with atomic_directory(folder) as staging:
                backbone_class.save_base(staging)
        return folder


ALIASES: dict[str, ModelAlias] = {
    alias.name: alias
    for alias in (
        ModelAlias(
            "starter-embedder",
            "embedder",
            "the trained starter embedder shipped in this package",
            asset="starter",
            build_hint="`make starter` (about 30 minutes on a CPU)",
        ),
        ModelAlias(
            "starter-embedder-minilm",
            "embedder",
            "the first starter embedder (MiniLM with image tokens, adapters and meta tokens), superseded",
            asset="starter_minilm",
            build_hint="`python scripts/train_starter_minilm.py`",
        ),
        ModelAlias(
            "starter-reasoner",
            "generative",
            "the trained starter reasoner / reranker shipped in this package",
            asset="starter_reasoner",
            build_hint="`python scripts/train_starter_reasoner.py`",
        ),
        ModelAlias(
            "starter-embedder-base",
            "embedder",
            "an untrained starter embedder backbone (packaged parts, fresh seeded projector and adapters)",
            builder="mmcascade.backbones.starter.modeling_starter:StarterBackbone",
        ),
        ModelAlias(
            "starter-features-base",
            "embedder",
            "a frozen late-fusion starter backbone (packaged MiniLM token states + EfficientNet cells; no weights)",
            builder="mmcascade.backbones.starter_features.modeling_starter_features:StarterFeaturesBackbone",
        ),
        ModelAlias(
            "starter-reasoner-base",
            "generative",
            "an untrained starter reasoner (packaged SmolLM2 + EfficientNet-Lite0, fresh seeded projector)",
            builder="mmcascade.backbones.starter_reasoner.modeling_starter_reasoner:StarterReasonerBackbone",
        ),
    )
}

#: shorthands: a name that means a different alias depending on the role wanted
SHORTHANDS: dict[str, dict[Role, str]] = {
    "starter": {"embedder": "starter-embedder", "generative": "starter-reasoner"},
    "starter-base": {"embedder": "starter-embedder-base", "generative": "starter-reasoner-base"},
}

#: the generative model that serves an embedder by default (``--think`` / ``--rerank`` without a model)
COMPANION_REASONERS = {"starter-embedder": "starter-reasoner", "starter-embedder-minilm": "starter-reasoner"}


def canonical_name(name: str | os.PathLike, role: Role = "embedder") -> str:
    """The alias a name means for ``role`` (``starter`` -> ``starter-embedder`` or ``starter-reasoner``);
    any other name comes back unchanged."""
    text = os.fspath(name)
    return SHORTHANDS.get(text, {}).get(role, text)


def resolve_model(name_or_path: str | os.PathLike, role: Role = "embedder", *, revision: str | None = None) -> Path:
    """A local folder for ``name_or_path`` (see the module docstring for the order of the rules).

    Raises FileNotFoundError for a path-like name that does not exist, ValueError for a file, or for a
    Hub id the Hub cannot provide.
    """
    text = canonical_name(name_or_path, role)
    if text in ALIASES:
        return ALIASES[text].folder()
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"{path} is a file; pass the model folder that holds config.json")
    if _looks_like_path(text):
        raise FileNotFoundError(f"model folder not found: {path}")
    return _download(text, revision)


def companion_reasoner(embedder: str | os.PathLike | None) -> str | None:
    """The reasoner / reranker that goes with ``embedder`` by default (the starter reasoner for the starter
    embedder), or None when the user has to name one."""
    if embedder is None:
        return None
    return COMPANION_REASONERS.get(canonical_name(embedder, "embedder"))


def model_fingerprint(folder: Path) -> str:
    """A short hash of a model folder's files: configs, tokenizers and weights (not dot-files, not ``.md``).

    Weight files above 64 MiB are hashed by name, size and their first and last MiB, which tells
    checkpoints apart in practice without reading gigabytes.
    """
    digest = hashlib.sha256()
    for file in sorted(path for path in folder.rglob("*") if path.is_file()):
        relative = file.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or file.suffix == ".md":
            continue
        size = file.stat().st_size
        digest.update(f"{relative.as_posix()}\0{size}\0".encode())
        with file.open("rb") as handle:
            if size <= _FULL_HASH_BYTES:
                digest.update(handle.read())
            else:
                digest.update(handle.read(_EDGE_BYTES))
                handle.seek(size - _EDGE_BYTES)
                digest.update(handle.read(_EDGE_BYTES))
    return digest.hexdigest()[:16]


def _looks_like_path(text: str) -> bool:
    return (
        text.startswith((".", "~", os.sep))
        or (os.altsep is not None and os.altsep in text)
        or text.count("/") > 1
        or text.endswith("/")
    )


def _download(repo_id: str, revision: str | None) -> Path:
    from huggingface_hub import snapshot_download  # the Hub client only when a Hub id is named
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
