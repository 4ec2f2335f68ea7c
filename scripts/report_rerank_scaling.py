"""Cascade scaling report on the starter's held-out data: Hit@1 against reranker reasoning tokens, rerank
depth and retrieval budget (with latency), and one round of reranker feedback to the retriever.

    python scripts/report_rerank_scaling.py                        # the grid and the feedback round
    python scripts/report_rerank_scaling.py --queries-per-task 4 --skip-feedback   # a quick look

**Grid.** Per task of the held-out split, every positive and negative of the task's records is indexed
(exact backend) with the starter embedder at each document budget; ``--queries-per-task`` queries per task
(the first ones of the file) search it through :class:`mmcascade.cascade.Cascade` with K = 20 and
``k`` in (0, 5, 20) at three retrieval budgets, the reranker (``--reranker``, default the starter reasoner)
judging directly; at the full retrieval budget also after reasoning ``t`` tokens per pair, t in (16, 64, 256). Reasoning is cached across points (it does not depend on k or the retrieval
budget), so Hit@1 is exact for every point while the run stays affordable; latency is measured with the
cache off on the first ``--latency-queries`` queries of each task.

**Feedback.** ``mmcascade mine`` on ``--feedback-records`` training records (top-10 retrieval, reranker
threshold 0.5) writes hard negatives and drops likely false negatives; the starter embedder is then
fine-tuned ``--feedback-steps`` steps on the mined records and, as a control, the same steps on the
original records; held-out Hit@1 of all three retrievers (all 600 queries) is reported.

Writes ``<out>/README.md``, ``<out>/results.json`` and ``<out>/rerank_scaling.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

try:
    import mmcascade  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _starter_finetune import finetune_starter

from mmcascade.budget import Budget
from mmcascade.data.items import Item
from mmcascade.data.records import TrainingRecord, read_records, write_records
from mmcascade.search import Cascade

COMMAND = "python scripts/report_rerank_scaling.py"
RETRIEVE_K = 20
DEPTHS = (0, 5, 20)
THINK_TOKENS = (0, 16, 64, 256)
RETRIEVAL_BUDGETS = ((1, 1), (4, 8), (16, 64))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/starter"))
    parser.add_argument("--embedder", default="starter")
    parser.add_argument("--reranker", default="starter")
    parser.add_argument("--queries-per-task", type=int, default=3)
    parser.add_argument("--latency-queries", type=int, default=1, help="per task, timed with the cache off")
    parser.add_argument("--think-tokens", default=",".join(map(str, THINK_TOKENS)))
    parser.add_argument("--skip-feedback", action="store_true")
    parser.add_argument("--feedback-records", type=int, default=80)
    parser.add_argument("--feedback-steps", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("reports/rerank-scaling-starter"))
    args = parser.parse_args()

    from mmcascade import Embedder
    from mmcascade.rerank import Reranker, make_reranker

    think_budgets = tuple(int(value) for value in args.think_tokens.split(","))
    heldout = read_records(args.data / "heldout.jsonl")
    embedder = Embedder.from_pretrained(args.embedder)
    work = Path(tempfile.mkdtemp(prefix="rerank-scaling-"))
    results: dict = {"settings": vars(args) | {"out": str(args.out), "data": str(args.data)}}
    try:
        with _reasoning_cache(args.out / ".work") as cache:
            reranker = make_reranker(args.reranker, cache=cache)
            uncached = Reranker(reranker.model, template=reranker.template)  # the same weights, no cache
            results["grid"] = _grid(heldout, embedder, reranker, uncached, think_budgets, args, work)
        if not args.skip_feedback:
            results["feedback"] = _feedback(heldout, embedder, reranker, args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["machine"] = f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    _plot(results["grid"], args.out / "rerank_scaling.png")
    (args.out / "README.md").write_text(_readme(results))
    print((args.out / "README.md").read_text())


@contextlib.contextmanager
def _reasoning_cache(work: Path):
    from mmcascade.reasoner import TraceCache

    work.mkdir(parents=True, exist_ok=True)  # kept between runs (not committed): a rerun reuses the reasoning
    with TraceCache(work / "reasoning.sqlite") as cache:
        yield cache


def _grid(heldout, embedder, reranker, uncached, think_budgets, args, work: Path) -> list[dict]:
    from mmcascade.search import Index

    by_task: dict[str, list[TrainingRecord]] = defaultdict(list)
    for record in heldout:
        by_task[record.meta["task"]].append(record)
    points: dict[tuple, dict] = {}
    for task, records in sorted(by_task.items()):
        documents, positives = _pool(records)
        queries = records[: args.queries_per_task]
        for query_vectors, doc_vectors in RETRIEVAL_BUDGETS:
            name = f"{task}-d{doc_vectors}"
            with Index.create(
                name, args.embedder, backend="exact", doc_budget=doc_vectors, data_dir=work, embedder=embedder
            ) as index:
                ids = [f"doc{number}" for number in range(len(documents))]
                index.add(list(documents), ids=ids, payloads=[_payload(item) for item in documents])
                retrieve_k = min(RETRIEVE_K, len(documents))  # label tasks have 3 or 10 documents in all
                for depth in sorted({min(depth, retrieve_k) for depth in DEPTHS}):
                    # reasoning budgets at the full retrieval budget only: CPU time goes where the question is
                    full = (query_vectors, doc_vectors) == RETRIEVAL_BUDGETS[-1]
                    for think in think_budgets if depth and full else (0,):
                        budget = Budget(query_vectors, doc_vectors, retrieve_k, depth, think)
                        _run_point(points, task, index, reranker, uncached, budget, queries, positives, args)
                        print(f"  {task} q{query_vectors}xd{doc_vectors} k={depth} t={think}", file=sys.stderr)
    return [_summarise(key, value) for key, value in points.items()]


def _pool(records: list[TrainingRecord]) -> tuple[list[Item], dict[int, str]]:
    """Every distinct document of the task, and the id of each record's positive."""
    index: dict[tuple, int] = {}
    documents: list[Item] = []
    positives = {}
    for number, record in enumerate(records):
        for item in (record.positive, *record.negatives):
            key = (item.text, tuple(map(str, item.images)))
            if key not in index:
                index[key] = len(documents)
                documents.append(Item(text=item.text, images=item.images, instruction=item.instruction))
        positives[number] = f"doc{index[(record.positive.text, tuple(map(str, record.positive.images)))]}"
    return documents, positives


def _payload(item: Item) -> dict:
    payload = {"text": item.text} if item.text else {}
    if item.images:
        payload["image"] = os.path.abspath(str(item.images[0]))
    return payload


def _run_point(points, task, index, reranker, uncached, budget: Budget, queries, positives, args) -> None:
    # a task with fewer than k documents reranks all it has: it counts as depth k
    depth = next(depth for depth in DEPTHS if depth >= budget.rerank_k)
    key = (budget.query_vectors, budget.document_vectors, depth, budget.think_tokens)
    point = points.setdefault(key, {"hits": 0, "n": 0, "retrieve_s": 0.0, "rerank_s": 0.0, "timed": 0})
    items = [record.query for record in queries]
    hits = Cascade(index, reranker).search_many(items, budget)
    for number, ranked in enumerate(hits):
        point["hits"] += int(ranked[0].id == positives[number])
        point["n"] += 1
    timed = items[: args.latency_queries]
    if timed:
        cascade = Cascade(index, uncached)
        cascade.search_many(timed, budget)
        point["retrieve_s"] += cascade.stage_seconds["retrieve"]
        point["rerank_s"] += cascade.stage_seconds["rerank"]
        point["timed"] += len(timed)


def _summarise(key: tuple, point: dict) -> dict:
    query_vectors, doc_vectors, depth, think = key
    timed = max(1, point["timed"])
    return {
        "query_vectors": query_vectors,
        "document_vectors": doc_vectors,
        "rerank_k": depth,
        "think_tokens": think,
        "hit@1": point["hits"] / point["n"],
        "n_queries": point["n"],
        "retrieve_ms_per_query": 1000 * point["retrieve_s"] / timed,
        "rerank_ms_per_query": 1000 * point["rerank_s"] / timed,
        "timed_queries": point["timed"],
    }


def _feedback(heldout, embedder, reranker, args, work: Path) -> dict:
    from mmcascade.evaluation.records_eval import evaluate_records
    from mmcascade.training.mining import mine

    train = list(read_records(args.data / "train.jsonl"))
    random.Random(0).shuffle(train)
    subset = work / "feedback" / "train.jsonl"
    subset.parent.mkdir(parents=True)
    write_records(subset, train[: args.feedback_records])
    started = time.perf_counter()
    mined = mine(
        subset,
        work / "feedback" / "mined.jsonl",
        retriever=embedder,
        reranker=reranker,
        retriever_id=args.embedder,
        top_n=10,
        n_negatives=3,
        threshold=0.5,
        log=lambda line: print(f"  mine: {line}", file=sys.stderr),
    )
    mining_seconds = time.perf_counter() - started
    scores = {"before": evaluate_records(embedder, list(heldout))[0].as_dict()}
    for label, records_path in (("after_mined", mined.out_path), ("after_original", subset)):
        final = finetune_starter(records_path, work / f"run-{label}", args.feedback_steps, embedder=args.embedder)
        from mmcascade import Embedder

        scores[label] = evaluate_records(Embedder.from_pretrained(final), list(heldout))[0].as_dict()
    return {
        "mining_seconds": mining_seconds,
        "mining_counts": asdict(mined.counts),
        "hit@1": {label: value["hit@1"] for label, value in scores.items()},
        "per_kind": {label: value["per_kind"] for label, value in scores.items()},
        "steps": args.feedback_steps,
    }


def _plot(grid: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for (query_vectors, doc_vectors), style in zip(RETRIEVAL_BUDGETS, ("o:", "s--", "^-"), strict=True):
        for depth in DEPTHS[1:]:
            rows = sorted(
                (
                    row
                    for row in grid
                    if (row["query_vectors"], row["document_vectors"], row["rerank_k"])
                    == (query_vectors, doc_vectors, depth)
                ),
                key=lambda row: row["think_tokens"],
            )
            if not rows:
                continue
            label = f"q{query_vectors}xd{doc_vectors}, k={depth}"
            axes[0].plot([row["think_tokens"] for row in rows], [row["hit@1"] for row in rows], style, label=label)
            axes[1].plot(
                [row["retrieve_ms_per_query"] + row["rerank_ms_per_query"] for row in rows],
                [row["hit@1"] for row in rows],
                style,
                label=label,
            )
        base = [
            row
            for row in grid
            if (row["query_vectors"], row["document_vectors"], row["rerank_k"]) == (query_vectors, doc_vectors, 0)
        ]
        if base:
            axes[0].axhline(base[0]["hit@1"], linestyle=style[1:] or "-", color="grey", linewidth=0.8)
    axes[0].set_xscale("symlog", linthresh=16)
    axes[0].set_xlabel("reranker reasoning tokens per pair")
    axes[0].set_ylabel("Hit@1 (held-out)")
    axes[0].set_title("grey: retrieval only (k=0)")
    axes[1].set_xscale("log")
    axes[1].set_xlabel("latency per query (ms, cache off)")
    axes[1].set_ylabel("Hit@1")
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def _readme(results: dict) -> str:
    settings = results["settings"]
    lines = [
        "# Cascade scaling on the starter's held-out data",
        "",
        f"Embedder `{settings['embedder']}`, reranker `{settings['reranker']}`; {settings['queries_per_task']} "
        f"held-out queries per task (5 tasks), each searching every document of its task; K = {RETRIEVE_K} (the "
        "label tasks have 10 and 3 documents: K and k are capped there). "
        f"Latency: mean per query over {settings['latency_queries']} queries per task with the reasoning cache "
        f"off, on {results['machine']}.",
        "",
        "![Hit@1 against reasoning tokens and latency](rerank_scaling.png)",
        "",
        "| query x doc vectors | k | reasoning tokens | Hit@1 | retrieve ms/query | rerank ms/query |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in sorted(results["grid"], key=lambda row: (row["query_vectors"], row["rerank_k"], row["think_tokens"])):
        lines.append(
            f"| {row['query_vectors']}x{row['document_vectors']} | {row['rerank_k']} | {row['think_tokens']} | "
            f"{row['hit@1']:.3f} | {row['retrieve_ms_per_query']:.1f} | {row['rerank_ms_per_query']:.0f} |"
        )
    feedback = results.get("feedback")
    if feedback:
        counts = feedback["mining_counts"]
        lines += [
            "",
            "## One feedback round",
            "",
            f"Mining {settings['feedback_records']} training records (top-10, threshold 0.5) took "
            f"{feedback['mining_seconds']:.0f} s: {json.dumps(counts)}.",
            "",
            "| retriever | held-out Hit@1 (600 queries) |",
            "|---|---:|",
        ]
        for label, value in feedback["hit@1"].items():
            lines.append(f"| {label} | {value:.3f} |")
        lines.append("")
        lines.append(
            f"`after_mined`: {feedback['steps']} fine-tuning steps on the mined records; `after_original`: the "
            "same steps on the same records with their original negatives (the control)."
        )
    lines += ["", f"Regenerate: `{COMMAND}` (settings in results.json).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
