"""Two gloo processes under torchrun train exactly like one process with the doubled batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from test_trainer import make_config, write_dataset

from mmcascade.training.config import TrainConfig
from mmcascade.training.trainer import train_from_config
from mmcascade.utils.config import config_from_dict


@pytest.mark.distributed
def test_two_processes_match_one_process_with_the_global_batch(qwen2_vl_checkpoint: Path, tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", n_records=16)
    # 2 processes x batch 4 see the same 8 records per step as 1 process x batch 8; the loss gathers
    # positives across ranks, so every query meets the same negatives in both runs. After step 1 the
    # checkpointed AdamW state holds exp_avg = (1 - beta1) * gradient: the averaged gradients must agree.
    # (Final weights are not compared: Adam turns rounding-level gradient noise into lr-sized steps.)
    options = {"epochs": 1, "micro_batch_size": None, "save_every": 1, "max_grad_norm": None}
    distributed = make_config(qwen2_vl_checkpoint, data, tmp_path / "ddp", batch_size=4, **options)
    config_file = tmp_path / "ddp.yaml"
    config_file.write_text(yaml.safe_dump(distributed))
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "mmcascade", "train", "embedder", "--config", str(config_file), "--resume", "none",
    ]  # fmt: skip
    result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    single = make_config(qwen2_vl_checkpoint, data, tmp_path / "single", batch_size=8, **options)
    train_from_config(config_from_dict(TrainConfig, single), resume_from=None)
    expected = load_file(str(tmp_path / "single" / "checkpoint-0000001" / "optimizer.safetensors"))
    got = load_file(str(tmp_path / "ddp" / "checkpoint-0000001" / "optimizer.safetensors"))
    moments = [name for name in expected if name.endswith(".exp_avg")]
    assert len(moments) > 10 and set(got) == set(expected)
    for name in moments:
        torch.testing.assert_close(got[name], expected[name], atol=1e-7, rtol=1e-4, msg=name)
    assert any(expected[name].abs().max() > 1e-4 for name in moments)
    logged = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    reference = [json.loads(line) for line in (tmp_path / "single" / "metrics.jsonl").read_text().splitlines()]
    assert logged[0]["loss"] == pytest.approx(reference[0]["loss"], rel=1e-5)
