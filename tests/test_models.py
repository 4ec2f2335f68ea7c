"""Model names: Hub ids resolve through the Hugging Face cache, exactly as a downloaded model would."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants

from mmcascade import Embedder
from mmcascade.models import ALIASES, cache_root, canonical_name, companion_reasoner, model_fingerprint, resolve_model


def fake_cached_repo(cache: Path, repo_id: str, source: Path) -> Path:
    """Lay out ``source`` the way huggingface_hub caches a downloaded repo."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(source, repo / "snapshots" / commit)
    return repo / "snapshots" / commit


def test_hub_id_loads_from_the_cache_offline(qwen2_vl_checkpoint: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    snapshot = fake_cached_repo(tmp_path / "hub", "tiny-org/tiny-qwen2-vl", qwen2_vl_checkpoint)
    assert resolve_model("tiny-org/tiny-qwen2-vl").resolve() == snapshot.resolve()
    from_hub = Embedder.from_pretrained("tiny-org/tiny-qwen2-vl")
    from_folder = Embedder.from_pretrained(qwen2_vl_checkpoint)
    torch.testing.assert_close(from_hub.encode_queries(["a cat"]), from_folder.encode_queries(["a cat"]))


def test_resolution_errors(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        resolve_model("./not/here")
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        resolve_model(tmp_path / "absent")
    with pytest.raises(ValueError, match="unknown model 'someone/absent-model'"):
        resolve_model("someone/absent-model")
    (tmp_path / "file.json").write_text("{}")
    with pytest.raises(ValueError, match="is a file"):
        resolve_model(tmp_path / "file.json")


def test_cache_root_prefers_mmcascade_cache_then_xdg_then_home(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("MMCASCADE_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "mmcascade"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "mmcascade"
    monkeypatch.setenv("MMCASCADE_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"


def test_the_starter_shorthand_means_the_embedder_or_the_reasoner_by_role() -> None:
    assert canonical_name("starter") == "starter-embedder"
    assert canonical_name("starter", "generative") == "starter-reasoner"
    assert canonical_name("starter-base") == "starter-embedder-base"  # the older name of the untrained embedder
    assert canonical_name("starter-reasoner", "embedder") == "starter-reasoner"  # explicit names never change
    assert canonical_name("Qwen/Qwen2-VL-2B-Instruct", "generative") == "Qwen/Qwen2-VL-2B-Instruct"
    assert {alias.role for alias in ALIASES.values()} == {"embedder", "generative"}
    assert all(name == alias.name for name, alias in ALIASES.items())


def test_a_starter_embedder_defaults_to_the_starter_reasoner_and_nothing_else_does(tmp_path: Path) -> None:
    assert companion_reasoner("starter") == "starter-reasoner"
    assert companion_reasoner("starter-embedder") == "starter-reasoner"
    assert companion_reasoner(tmp_path) is None
    assert companion_reasoner("Qwen/Qwen2-VL-2B-Instruct") is None
    assert companion_reasoner(None) is None


def test_fingerprint_changes_with_weights_and_ignores_dot_files_and_cards(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"abc")
    before = model_fingerprint(tmp_path)
    (tmp_path / "README.md").write_text("a card")
    (tmp_path / ".lock").write_text("x")
    assert model_fingerprint(tmp_path) == before
    (tmp_path / "model.safetensors").write_bytes(b"abd")
    assert model_fingerprint(tmp_path) != before
