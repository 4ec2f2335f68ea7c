"""benchmarks/maxsim.py runs end to end at toy sizes, so the script cannot rot."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "maxsim.py"


def test_benchmark_main_runs_at_toy_sizes(capsys, monkeypatch):
    spec = importlib.util.spec_from_file_location("maxsim_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    try:
        rows = module.main(["--quick", "--docs", "300", "--colpali-docs", "3", "--batch", "3", "--repeats", "1"])
    finally:
        torch.set_num_threads(threads)
    variants = {row["variant"] for row in rows}
    assert {"maxsim", "maxsim_topk(k=10)", "naive einsum", "gemm only", "plain read"} <= variants
    assert len({row["case"] for row in rows}) == 8  # fp32/bf16 x 16-vector/ColPali-like x 1 query/batch
    assert all(row["ms/q"] > 0 and math.isfinite(row["ms/q"]) for row in rows)
    assert "x naive" in capsys.readouterr().out
