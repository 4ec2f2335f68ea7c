"""A video's frames on disk, and which of them to keep (VLM2Vec's uniform sampling)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")


def list_frames(frame_dir: str | os.PathLike) -> list[Path]:
    """The frames of one video: .jpg/.jpeg/.png files, sorted naturally (``frame_2`` before ``frame_10``)."""
    frame_dir = Path(frame_dir)
    if not frame_dir.is_dir():
        return []
    frames = [
        Path(entry.path)
        for entry in os.scandir(frame_dir)
        if entry.name.lower().endswith(FRAME_EXTENSIONS) and entry.is_file()
    ]
    return sorted(frames, key=lambda path: _natural_key(path.name))


def sample_frame_indices(n_frames: int, num_frames: int) -> list[int]:
    """Which of ``n_frames`` frames to keep: VLM2Vec's ``np.linspace(0, n - 1, num_frames, dtype=int)``.

    The float positions are truncated (``dtype=int``), as VLM2Vec does. With fewer frames than
    ``num_frames`` every frame is kept and the last one repeated, so a clip always has ``num_frames``.
    """
    if n_frames <= 0 or num_frames <= 0:
        return []
    if n_frames < num_frames:
        return list(range(n_frames)) + [n_frames - 1] * (num_frames - n_frames)
    return np.linspace(0, n_frames - 1, num_frames, dtype=int).tolist()


def sample_frames(frame_dir: str | os.PathLike, num_frames: int) -> list[str]:
    """``num_frames`` frame paths of one video (empty when the folder is missing or holds no frame)."""
    frames = list_frames(frame_dir)
    return [str(frames[i]) for i in sample_frame_indices(len(frames), num_frames)]


def _natural_key(name: str) -> list[int | str]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]
