"""Evaluation cost of budgets: 5 budgets against 1 on the mini benchmark, and a re-run from the cache.

    python benchmarks/eval_budgets.py [--model starter]

Three runs in one process, each into a fresh folder except the last: (a) one budget, (b) five budgets,
(c) five budgets again on (b)'s folder (every dataset's vectors from the cache). Encoding dominates, and
each budget is scored from the same cached vectors, so (b)/(a) should be close to 1 and (c) small.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

try:
    import mmcascade  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from mmcascade import Embedder
from mmcascade.budget import MATRYOSHKA_BUDGETS, Budget
from mmcascade.data.synthetic.mini_benchmark import ensure_mini_benchmark
from mmcascade.evaluation.harness import run_eval

DEFAULT_BUDGETS = Budget.parse_many(MATRYOSHKA_BUDGETS)


def timed(label: str, config: Path, model: str, out: Path, budgets, embedder) -> float:
    started = time.perf_counter()
    run = run_eval(config, model, out, budgets=budgets, embedder=embedder, log=lambda _: None)
    seconds = time.perf_counter() - started
    print(
        f"{label:<28} {seconds:7.1f} s  (encoding {run.encoding_seconds:6.1f} s, scoring {run.scoring_seconds:5.2f} s, "
        f"{len(run.encoded_from_cache)} dataset(s) from the cache)"
    )
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="starter")
    args = parser.parse_args()
    config = ensure_mini_benchmark() / "mmeb.yaml"
    embedder = Embedder.from_pretrained(args.model)
    with tempfile.TemporaryDirectory() as work:
        one = timed("1 budget (16x64)", config, args.model, Path(work) / "one", [DEFAULT_BUDGETS[-1]], embedder)
        five = timed("5 budgets", config, args.model, Path(work) / "five", list(DEFAULT_BUDGETS), embedder)
        cached = timed(
            "5 budgets, vectors cached", config, args.model, Path(work) / "five", list(DEFAULT_BUDGETS), embedder
        )
    print(f"\n5 budgets / 1 budget: {five / one:.2f}x;  cached re-run / first run: {cached / five:.3f}x")


if __name__ == "__main__":
    main()
