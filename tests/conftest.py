"""Shared fixtures: tiny random checkpoints of every family, saved and loaded like a user's."""

from __future__ import annotations

import importlib.util
import io
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Tests never reach the network: a Hub lookup fails at once instead of hanging. Set before any
# Hugging Face import, which reads it once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mmcascade.backbones.testing import build_tiny_checkpoint

FAMILIES = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"]

# Every index backend, skipped where its package is missing; `backend_name` runs a test on each.
BACKENDS = [
    pytest.param("exact", id="exact"),
    pytest.param(
        "qdrant-edge",
        id="qdrant-edge",
        marks=pytest.mark.skipif(importlib.util.find_spec("qdrant_edge") is None, reason="qdrant-edge-py missing"),
    ),
    pytest.param(
        "qdrant",
        id="qdrant-local",
        marks=pytest.mark.skipif(importlib.util.find_spec("qdrant_client") is None, reason="qdrant-client missing"),
    ),
]


@pytest.fixture(params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    return {family: build_tiny_checkpoint(family, root / family) for family in FAMILIES}


@pytest.fixture(scope="session")
def qwen2_vl_checkpoint(tiny_checkpoints: dict[str, Path]) -> Path:
    return tiny_checkpoints["qwen2_vl"]


def random_image(seed: int, size: tuple[int, int] = (120, 90)) -> Image.Image:
    pixels = (np.random.default_rng(seed).random((size[1], size[0], 3)) * 255).astype("uint8")
    return Image.fromarray(pixels)


@pytest.fixture
def images() -> list[Image.Image]:
    return [random_image(seed, size) for seed, size in enumerate([(120, 90), (64, 64), (200, 56)])]


def write_png_claiming_size(path: Path, size: tuple[int, int]) -> Path:
    """A tiny PNG whose header (IHDR) says ``size``: PIL sees the size without decoding anything."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1), "red").save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = 8  # after the signature: length (4), type (4), then width and height
    assert data[ihdr + 4 : ihdr + 8] == b"IHDR"
    data[ihdr + 8 : ihdr + 16] = struct.pack(">II", *size)
    body = bytes(data[ihdr + 4 : ihdr + 8 + 13])
    data[ihdr + 8 + 13 : ihdr + 8 + 17] = struct.pack(">I", zlib.crc32(body))
    path.write_bytes(bytes(data))
    return path


@pytest.fixture
def huge_png() -> Callable[[Path, tuple[int, int]], Path]:
    """Writes a PNG whose header claims a size (default 30000x30000) far over any pixel limit."""

    def write(path: Path, size: tuple[int, int] = (30000, 30000)) -> Path:
        return write_png_claiming_size(path, size)

    return write
