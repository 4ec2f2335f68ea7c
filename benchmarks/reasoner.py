"""Local reasoner throughput: batched vs one-at-a-time greedy generation, and cached vs uncached traces.

    python benchmarks/reasoner.py            # 32 short prompts x 64 new tokens
    python benchmarks/reasoner.py --quick    # 8 prompts x 16 new tokens, a smoke run
    python benchmarks/reasoner.py --full-length   # every sequence runs to the budget: the pure batching gain

Model: the untrained ``starter-reasoner-base`` alias (SmolLM2-135M + EfficientNet-Lite0); its first use
converts a GGUF (about 20 s, not timed). Both rows of each table run in this process, on this machine:

* generation: ``LocalReasoner.complete`` over the same prompts with ``batch_size`` = N (one left-padded,
  KV-cached ``generate`` call) and with ``batch_size`` = 1. Tokens/s counts the generated tokens
  (the model's tokenizer over the returned text). With natural stopping a batch runs until its longest
  sequence stops, so finished rows still cost steps; ``--full-length`` sets the model's generation
  ``min_new_tokens`` to the budget so both rows generate exactly the same number of tokens.
* evaluation repeated: ``reason()`` over the same prompts twice with a ``TraceCache`` in a temporary
  folder; the first run generates and stores every trace, the second finds them all in the cache.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

try:
    from mmcascade.reasoner import GenerationSettings, TraceCache, reason
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from mmcascade.reasoner import GenerationSettings, TraceCache, reason
from mmcascade.data.items import Item
from mmcascade.reasoner.local import LocalReasoner
from mmcascade.reasoner.prompts import load_template, render_prompt

MODEL = "starter-reasoner-base"
SHAPES = ("circle", "square", "triangle", "star")
COLOURS = ("red", "orange", "yellow", "green", "blue", "purple")


def captions(n: int) -> list[str]:
    """``n`` short, distinct scene captions (distinct prompts, so nothing is deduplicated)."""
    return [
        f"a small {COLOURS[index % 6]} {SHAPES[index % 4]} left of a large {COLOURS[(index // 6) % 6]} "
        f"{SHAPES[(index // 4) % 4]}, picture {index}"
        for index in range(n)
    ]


def timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="8 prompts x 16 new tokens")
    parser.add_argument("--prompts", type=int, default=None, help="number of prompts (default 32, quick 8)")
    parser.add_argument("--tokens", type=int, default=None, help="new tokens per prompt (default 64, quick 16)")
    parser.add_argument("--full-length", action="store_true", help="no early stop: every sequence gets --tokens")
    args = parser.parse_args()
    n_prompts = args.prompts or (8 if args.quick else 32)
    n_tokens = args.tokens or (16 if args.quick else 64)

    start = time.perf_counter()
    reasoner = LocalReasoner.from_pretrained(MODEL, batch_size=n_prompts)
    load_s = time.perf_counter() - start
    if args.full_length:
        language_model = getattr(reasoner.backbone, "lm", None) or reasoner.backbone.model
        language_model.generation_config.min_new_tokens = n_tokens  # generate() reads its defaults from here
    settings = GenerationSettings(max_new_tokens=n_tokens)  # greedy
    template = load_template("retrieval")
    texts = captions(n_prompts)
    prompts = [render_prompt(Item(text=text), template) for text in texts]
    print(
        f"model {MODEL} (loaded in {load_s:.1f} s), {torch.get_num_threads()} threads, "
        f"{n_prompts} prompts x {n_tokens} new tokens, greedy"
        + (", full length (min_new_tokens = budget)" if args.full_length else ", natural stopping")
    )

    with torch.inference_mode():
        reasoner.batch_size = 1
        reasoner.complete(prompts[:1], settings)  # warm-up: first-call allocations, lazy imports
        single, single_s = timed(lambda: reasoner.complete(prompts, settings))
        reasoner.batch_size = n_prompts
        batched, batched_s = timed(lambda: reasoner.complete(prompts, settings))
    single_tokens = sum(reasoner.count_tokens(text) for text in single)
    batched_tokens = sum(reasoner.count_tokens(text) for text in batched)
    single_rate, batched_rate = single_tokens / single_s, batched_tokens / batched_s
    print()
    print(f"{'generation':<26}{'seconds':>10}{'tokens':>10}{'tokens/s':>12}{'x one-by-one':>15}")
    print(f"{'one at a time':<26}{single_s:>10.2f}{single_tokens:>10}{single_rate:>12.1f}{1.0:>15.2f}")
    print(
        f"{f'batch {n_prompts}':<26}{batched_s:>10.2f}{batched_tokens:>10}{batched_rate:>12.1f}"
        f"{batched_rate / single_rate:>15.2f}"
    )
    same = sum(a == b for a, b in zip(single, batched, strict=True))
    print(f"(greedy outputs identical batched vs one-by-one: {same}/{n_prompts})")

    with tempfile.TemporaryDirectory() as folder, TraceCache(Path(folder) / "traces.sqlite") as cache:
        with torch.inference_mode():
            _, cold_s = timed(lambda: reason(reasoner, texts, settings=settings, cache=cache, batch_size=n_prompts))
            hits_before = cache.hits
            _, warm_s = timed(lambda: reason(reasoner, texts, settings=settings, cache=cache, batch_size=n_prompts))
        hits = cache.hits - hits_before
    print()
    print(f"{'reason() x2, TraceCache':<26}{'seconds':>10}{'hits':>10}{'x cached':>12}")
    print(f"{'first run (uncached)':<26}{cold_s:>10.3f}{0:>10}{1.0:>12.1f}")
    print(f"{'second run (cached)':<26}{warm_s:>10.4f}{hits:>10}{cold_s / warm_s:>12.1f}")


if __name__ == "__main__":
    main()
