"""Two gloo processes under torchrun train exactly like one process with the doubled batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from test_trainer import make_config, weights, write_dataset

from mmcascade.training.config import TrainConfig
from mmcascade.training.trainer import train_from_config
from mmcascade.utils.config import config_from_dict


@pytest.mark.distributed
def test_two_processes_match_one_process_with_the_global_batch(qwen2_vl_checkpoint: Path, tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", n_records=16)
    # 2 processes x batch 4 see the same 8 records per step as 1 process x batch 8; the loss gathers
    # positives across ranks, so every query meets the same negatives in both runs.
    distributed = make_config(
        qwen2_vl_checkpoint, data, tmp_path / "ddp", epochs=1, batch_size=4, micro_batch_size=None
    )
    config_file = tmp_path / "ddp.yaml"
    config_file.write_text(yaml.safe_dump(distributed))
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "mmcascade",
        "train",
        "embedder",
        "--config",
        str(config_file),
        "--resume",
        "none",
    ]
    result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    single = make_config(qwen2_vl_checkpoint, data, tmp_path / "single", epochs=1, batch_size=8, micro_batch_size=None)
    reference = train_from_config(config_from_dict(TrainConfig, single), resume_from=None)
    expected, got = weights(reference), weights(tmp_path / "ddp" / "final")
    assert set(expected) == set(got)
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, atol=1e-5, rtol=1e-4, msg=name)
