"""A training process killed with SIGKILL resumes from its last checkpoint and loses nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from test_trainer import make_config, weights, write_dataset

from mmcascade.training.config import TrainConfig
from mmcascade.training.trainer import train_from_config
from mmcascade.utils.config import config_from_dict


def test_sigkill_mid_run_then_resume_equals_an_uninterrupted_run(qwen2_vl_checkpoint: Path, tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", n_records=12)
    killed = make_config(qwen2_vl_checkpoint, data, tmp_path / "killed", epochs=12, save_every=3)
    config_file = tmp_path / "killed.yaml"
    config_file.write_text(yaml.safe_dump(killed))
    command = [sys.executable, "-m", "mmcascade", "train", "embedder", "-c", str(config_file)]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "killed" / "checkpoint-0000006").is_dir():
            assert process.poll() is None, "training ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / "final").exists()
    resumed = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    reference = train_from_config(
        config_from_dict(
            TrainConfig, make_config(qwen2_vl_checkpoint, data, tmp_path / "ref", epochs=12, save_every=3)
        ),
        resume_from=None,
    )
    expected, got = weights(reference), weights(tmp_path / "killed" / "final")
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, atol=1e-6, rtol=1e-5, msg=name)
    steps = [json.loads(line)["step"] for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 37))  # no step lost, none logged twice
