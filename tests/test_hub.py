"""Hub ids resolve through the Hugging Face cache, exactly as a downloaded model would."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants

from mmcascade import Embedder
from mmcascade.hub import resolve_pretrained


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
    assert resolve_pretrained("tiny-org/tiny-qwen2-vl").resolve() == snapshot.resolve()
    from_hub = Embedder.from_pretrained("tiny-org/tiny-qwen2-vl")
    from_folder = Embedder.from_pretrained(qwen2_vl_checkpoint)
    torch.testing.assert_close(from_hub.encode_queries(["a cat"]), from_folder.encode_queries(["a cat"]))


def test_resolution_errors(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        resolve_pretrained("./not/here")
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        resolve_pretrained(tmp_path / "absent")
    with pytest.raises(ValueError, match="unknown model 'someone/absent-model'"):
        resolve_pretrained("someone/absent-model")
    (tmp_path / "file.json").write_text("{}")
    with pytest.raises(ValueError, match="is a file"):
        resolve_pretrained(tmp_path / "file.json")
