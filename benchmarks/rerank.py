"""Reranker throughput by batch size, and cascade latency split into retrieve and rerank, in one run.

    python benchmarks/rerank.py                       # 32 pairs, batch 1/8/32; 2 cascade queries (minutes)
    python benchmarks/rerank.py --quick               # 4 pairs, 1 query, k in (0, 5): a smoke run (< 1 min)
    python benchmarks/rerank.py --think-tokens 0      # judgement only: no reasoning rows
    python benchmarks/rerank.py --pairs-from heldout  # pairs from data/starter/heldout.jsonl (caption -> image)

Judge: ``--judge`` (default ``starter``, the trained starter reasoner); while that is not built
(``src/mmcascade/assets/starter_reasoner``), the untrained ``starter-reasoner-base`` (SmolLM2-135M +
EfficientNet-Lite0): its scores mean nothing, its speed is the real one. Every row runs in this process:

* throughput: ``Reranker.score`` over the same (query, candidate) pairs with ``LocalJudge.batch_size`` = 1
  (one pair per forward pass, timed on the first ``--one-by-one-pairs`` pairs: its rate does not depend on
  how many there are) and = 8, 32 (all pairs); with ``think_tokens`` = 0 (the judgement: one forward pass)
  and ``--think-tokens`` (greedy reasoning first, then the judgement). Pairs are text queries (demo scenes
  captioned in another wording) and demo documents as the cascade hands them to the reranker (the
  image and its caption), shuffled with a fixed seed; ``x batch 1`` divides pairs/s by the batch-1 rate.
* cascade: an ``exact`` index of the demo collection built with the starter embedder in a temporary
  folder; ``Cascade.search_many`` over the same text queries at each budget, one call per budget, and
  ``Cascade.stage_seconds`` divided by the number of queries. ``x k=0`` divides the total by the total of
  the retrieve-only budget. Nothing is cached between budgets (the reranker has no trace cache).

Timings on a shared machine are noisy: the load average is printed before and after. When other
processes hold the cores, every parallel region waits for its slowest thread, and generation (a parallel
region per layer per token) suffers most: on a busy 2-core machine, greedy reasoning ran about 9x slower
with 2 threads than with 1. ``--threads 1`` gives steadier numbers there; compare rows of one run only.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

try:
    from mmcascade.budget import Budget
    from mmcascade.search import Cascade
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from mmcascade.budget import Budget
    from mmcascade.search import Cascade
from mmcascade.cli.demo import DOCUMENT_INSTRUCTION, QUERY_INSTRUCTION, demo_collection
from mmcascade.data.items import Item
from mmcascade.data.synthetic import scenes
from mmcascade.rerank import Reranker
from mmcascade.rerank.local import LocalJudge

FALLBACK_JUDGE = "starter-reasoner-base"
QUERY_STYLES = ("anchored", "right_of", "sequence")  # caption wordings other than the stored one, as in the demo
CANDIDATES_PER_QUERY = 4  # the query's own scene and three other demo documents
HELDOUT = Path(__file__).resolve().parents[1] / "data" / "starter" / "heldout.jsonl"
SEED = 0


# ----------------------------------------------------------------------------------------------- data
def demo_items(collection: Path) -> list[dict[str, Any]]:
    """The demo collection's manifest items, with absolute image paths."""
    items = json.loads((collection / "manifest.json").read_text())["items"]
    return [{**item, "image": str(collection / item["image"])} for item in items]


def demo_document(item: dict[str, Any]) -> Item:
    """A demo document as the cascade gives it to the reranker: its caption and its image."""
    return Item(text=item["caption"], images=(item["image"],))


def scene_queries(items: list[dict[str, Any]], n: int) -> list[tuple[str, dict[str, Any]]]:
    """``n`` text queries, each a demo scene captioned in a wording other than the stored caption, with its scene."""
    scene_items = [item for item in items if item["kind"] == "scene"]
    queries = []
    for number in range(n):
        item = scene_items[(5 + 6 * number) % len(scene_items)]  # spread over the scenes: 06, 12, 18, ...
        scene = scenes.Scene(objects=tuple(scenes.SceneObject(**obj) for obj in item["objects"]))
        queries.append((scenes.caption(scene, style=QUERY_STYLES[number % len(QUERY_STYLES)]), item))
    return queries


def demo_pairs(collection: Path, n_pairs: int) -> tuple[list[Item], list[Item]]:
    """(query, candidate) pairs: per text query its own scene and three other demo documents, shuffled."""
    items = demo_items(collection)
    rng = random.Random(SEED)
    pairs = []
    for caption, scene_item in scene_queries(items, -(-n_pairs // CANDIDATES_PER_QUERY)):
        query = Item(text=caption, instruction=QUERY_INSTRUCTION)
        others = rng.sample([item for item in items if item is not scene_item], CANDIDATES_PER_QUERY - 1)
        pairs.extend((query, demo_document(item)) for item in [scene_item, *others])
    rng.shuffle(pairs)
    return [query for query, _ in pairs[:n_pairs]], [candidate for _, candidate in pairs[:n_pairs]]


def heldout_pairs(path: Path, n_pairs: int) -> tuple[list[Item], list[Item]]:
    """(caption, image) pairs from the starter held-out ``caption_to_image`` lines: positive and negatives."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: build the starter data (`make starter`) or use --pairs-from demo")
    pairs = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            if record["meta"]["task"] != "caption_to_image":
                continue
            query = Item(text=record["query"]["text"], instruction=record["query"].get("instruction"))
            for document in [record["positive"], *record["negatives"]]:
                pairs.append((query, Item(images=(str(path.parent / document["image"]),))))
            if len(pairs) >= 4 * n_pairs:
                break
    random.Random(SEED).shuffle(pairs)
    if len(pairs) < n_pairs:
        raise ValueError(f"{path} holds only {len(pairs)} caption_to_image pairs; pass --pairs {len(pairs)} or fewer")
    return [query for query, _ in pairs[:n_pairs]], [candidate for _, candidate in pairs[:n_pairs]]


# ------------------------------------------------------------------------------------------ benchmarks
def timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def throughput(
    reranker: Reranker,
    queries: list[Item],
    candidates: list[Item],
    batch_sizes: list[int],
    one_by_one_pairs: int,
    think_tokens: int,
) -> None:
    """Print pairs/s of ``reranker.score`` per batch size, against one pair per forward pass."""
    judge = reranker.model
    judge.batch_size = 1
    reranker.score(queries[:1], candidates[:1], think_tokens=think_tokens)  # warm-up: first-call allocations
    rows, scores = [], {}
    for batch_size in batch_sizes:
        n = min(one_by_one_pairs, len(queries)) if batch_size == 1 else len(queries)
        judge.batch_size = batch_size
        scores[batch_size], seconds = timed(
            lambda n=n: reranker.score(queries[:n], candidates[:n], think_tokens=think_tokens)
        )
        rows.append((batch_size, n, seconds, n / seconds))
        print(f"  think {think_tokens}, batch {batch_size}: {seconds:.1f} s", file=sys.stderr, flush=True)
    baseline = next((rate for batch_size, _, _, rate in rows if batch_size == 1), None)
    title = "judgement only (think 0)" if think_tokens == 0 else f"reasoning, then judgement (think {think_tokens})"
    print()
    print(f"{title:<44}{'pairs':>7}{'seconds':>10}{'pairs/s':>10}{'ms/pair':>10}{'x batch 1':>11}")
    for batch_size, n, seconds, rate in rows:
        label = "one pair at a time (batch 1)" if batch_size == 1 else f"batch {batch_size}"
        ratio = f"{rate / baseline:>11.2f}" if baseline else f"{'-':>11}"
        print(f"{label:<44}{n:>7}{seconds:>10.2f}{rate:>10.2f}{1000 / rate:>10.0f}{ratio}")
    if 1 in scores:  # batching must not change the scores (padding, length sorting)
        common = len(scores[1])
        drift = max(
            (abs(a.score - b.score) for size in scores for a, b in zip(scores[1], scores[size][:common], strict=True)),
            default=0.0,
        )
        print(f"(max |P(yes) batched - one at a time| over the first {common} pairs: {drift:.1e})")


def cascade_latency(cascade: Cascade, queries: list[str], budgets: list[Budget]) -> None:
    """Print per-query milliseconds of each cascade stage per budget, against the retrieve-only budget."""
    cascade.search_many(queries, Budget(retrieve_k=budgets[0].retrieve_k))  # warm-up: first-call allocations
    rows = []
    for budget in budgets:
        cascade.search_many(queries, budget)
        retrieve_ms, rerank_ms = (
            1000 * cascade.stage_seconds[stage] / len(queries) for stage in ("retrieve", "rerank")
        )
        rows.append((budget, retrieve_ms, rerank_ms))
        print(
            f"  K={budget.retrieve_k} k={budget.rerank_k} think={budget.think_tokens}: "
            f"{(retrieve_ms + rerank_ms) * len(queries) / 1000:.1f} s",
            file=sys.stderr,
            flush=True,
        )
    baseline = next((r + k for budget, r, k in rows if budget.rerank_k == 0), None)
    print()
    print(
        f"{'cascade, ms per query':<30}{'retrieve':>10}{'rerank':>10}{'total':>10}{'rerank %':>10}"
        f"{'ms/pair':>9}{'x k=0':>8}"
    )
    for budget, retrieve_ms, rerank_ms in rows:
        total = retrieve_ms + rerank_ms
        label = f"K={budget.retrieve_k} k={budget.rerank_k} think={budget.think_tokens}"
        per_pair = f"{rerank_ms / budget.rerank_k:>9.0f}" if budget.rerank_k else f"{'-':>9}"
        ratio = f"{total / baseline:>8.1f}" if baseline else f"{'-':>8}"
        print(
            f"{label:<30}{retrieve_ms:>10.0f}{rerank_ms:>10.0f}{total:>10.0f}{100 * rerank_ms / total:>9.0f}%"
            f"{per_pair}{ratio}"
        )


# ---------------------------------------------------------------------------------------------- main
def int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, e.g. 1,8,32; got {text!r}") from error
    if not values or any(value < 0 for value in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated ints >= 0, e.g. 1,8,32; got {text!r}")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 4 pairs, 1 cascade query, k in (0, 5)")
    parser.add_argument("--judge", default="starter", help=f"judge model (default starter, else {FALLBACK_JUDGE})")
    parser.add_argument("--embedder", default="starter", help="embedder of the cascade's index (default starter)")
    parser.add_argument("--pairs-from", choices=("demo", "heldout"), default="demo", help="where the pairs come from")
    parser.add_argument("--pairs", type=int, default=None, help="pairs per throughput row (default 32, quick 4)")
    parser.add_argument(
        "--one-by-one-pairs", type=int, default=None, help="pairs timed at batch 1 (default 8, quick 2; 0: all)"
    )
    parser.add_argument("--batch-sizes", type=int_list, default=[1, 8, 32], help="judge batch sizes (default 1,8,32)")
    parser.add_argument(
        "--think-tokens", type=int, default=None, help="reasoning budget of the reasoning rows (default 16; 0: none)"
    )
    parser.add_argument("--queries", type=int, default=None, help="cascade text queries (default 2, quick 1)")
    parser.add_argument("--documents", type=int, default=None, help="demo documents indexed (default all, quick 24)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--retrieve-k", type=int, default=20, help="K, documents retrieved (default 20)")
    parser.add_argument("--rerank-k", type=int_list, default=None, help="k values (default 0,5,20; quick 0,5)")
    args = parser.parse_args(argv)
    defaults = {"pairs": (32, 4), "one_by_one_pairs": (8, 2), "think_tokens": (16, 16), "queries": (2, 1)}
    for name, (full, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if args.rerank_k is None:
        args.rerank_k = [0, 5] if args.quick else [0, 5, args.retrieve_k]
    if args.documents is None:
        args.documents = 24 if args.quick else None
    for name in ("pairs", "queries", "retrieve_k", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1; got {value}")
    if args.one_by_one_pairs == 0:
        args.one_by_one_pairs = args.pairs
    if args.documents is not None and args.documents < args.retrieve_k:
        raise SystemExit(f"--documents {args.documents} is fewer than --retrieve-k {args.retrieve_k}")
    return args


def resolve_judge(name: str) -> str:
    """``name``, or the untrained base judge while the starter reasoner is not built."""
    if name != "starter":
        return name
    from mmcascade.models import resolve_model

    try:
        resolve_model("starter-reasoner", "generative")
    except FileNotFoundError:
        print(f"the starter reasoner is not built: timing the untrained {FALLBACK_JUDGE} (same architecture)")
        return FALLBACK_JUDGE
    return name


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    print(f"reproduce: python benchmarks/rerank.py {shlex.join(sys.argv[1:] if argv is None else argv)}".rstrip())
    print(
        f"machine: {os.cpu_count()} CPUs, torch {torch.__version__} with {torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.2f} (1 min)"
    )
    judge_name = resolve_judge(args.judge)
    judge, load_s = timed(lambda: LocalJudge.from_pretrained(judge_name, batch_size=1))
    reranker = Reranker(judge)
    collection = demo_collection()
    if args.pairs_from == "heldout":
        queries, candidates = heldout_pairs(HELDOUT, args.pairs)
        source = f"{HELDOUT} (caption -> image)"
    else:
        queries, candidates = demo_pairs(collection, args.pairs)
        source = "demo scenes captioned anew -> demo documents (image + caption)"
    batch_sizes = sorted({min(size, args.pairs) for size in args.batch_sizes if size > 0})
    print(f"judge {judge_name} (loaded in {load_s:.1f} s); {args.pairs} pairs: {source}")

    with torch.inference_mode():
        throughput(reranker, queries, candidates, batch_sizes, args.one_by_one_pairs, 0)
        if args.think_tokens:
            throughput(reranker, queries, candidates, batch_sizes, args.one_by_one_pairs, args.think_tokens)

    from mmcascade import Embedder
    from mmcascade.data.collections import read_collection
    from mmcascade.search import Index

    judge.batch_size = 16  # the LocalJudge default
    think_budgets = sorted({0, args.think_tokens})
    budgets = [Budget(retrieve_k=args.retrieve_k)] + [
        Budget(retrieve_k=args.retrieve_k, rerank_k=k, think_tokens=think)
        for think in think_budgets
        for k in args.rerank_k
        if k
    ]
    texts = [caption for caption, _ in scene_queries(demo_items(collection), args.queries)]
    with tempfile.TemporaryDirectory() as data_dir, torch.inference_mode():
        embedder, embedder_s = timed(lambda: Embedder.from_pretrained(args.embedder))
        index = Index.create(
            "bench-rerank",
            args.embedder,
            backend="exact",
            query_instruction=QUERY_INSTRUCTION,
            document_instruction=DOCUMENT_INSTRUCTION,
            data_dir=data_dir,
            embedder=embedder,
        )
        with index:
            records = itertools.islice(read_collection(collection, captions="payload"), args.documents)
            report, build_s = timed(lambda: index.build(records))
            print()
            print(
                f"cascade: exact index of {index.count()} demo documents ({report.added} added in {build_s:.1f} s, "
                f"embedder {args.embedder} loaded in {embedder_s:.1f} s); {len(texts)} text queries, "
                f"judge batch {judge.batch_size}"
            )
            cascade_latency(Cascade(index, reranker), texts, budgets)

    load = os.getloadavg()[0]
    busy = (
        f": above {os.cpu_count()}, other processes shared the CPU and timings are noisy"
        if load > os.cpu_count()
        else ""
    )
    print()
    print(f"finished in {time.perf_counter() - started:.0f} s; load average at the end {load:.2f} (1 min){busy}")


if __name__ == "__main__":
    main()
