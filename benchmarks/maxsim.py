"""MaxSim scan speed on CPU against a naive baseline, a plain memory read and a GEMM probe, in one run.

    python benchmarks/maxsim.py            # full sizes: 100k x 16 x 128 and ColPali-like 2k x 1030 x 128
    python benchmarks/maxsim.py --quick    # small sizes, a smoke run of a few seconds

Columns (all per query; a batch of queries shares one scan of the documents):
    ms/q       median wall time per query
    GB/s       document bytes scanned per query / time (a batch can exceed memory bandwidth)
    GFLOP/s    2 * Q * D * d * n_docs per query / time
    x naive    speed-up over ``einsum('qd,nkd->nqk').amax(-1).sum(-1)`` run query by query
    %read      GB/s as a fraction of a plain read of the same document tensor (``torch.sum``)
    %roof      roofline time / time, roofline = max(bytes / read bandwidth, FLOPs / GEMM rate),
               GEMM rate from the same-shape GEMM alone (the matmuls the kernel runs, nothing else)
    %peak      the same with the best square-GEMM rate of this machine (an upper bound no skinny GEMM meets)
Bytes for the roofline are the documents read once per query block (batching amortises them).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

try:
    from mmcascade.scoring import maxsim, maxsim_topk
    from mmcascade.scoring.maxsim import DEFAULT_WORKSPACE_BYTES, _chunk_size, _query_blocks
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from mmcascade.scoring import maxsim, maxsim_topk
    from mmcascade.scoring.maxsim import DEFAULT_WORKSPACE_BYTES, _chunk_size, _query_blocks

TOP_K = 10


@dataclass(frozen=True)
class Case:
    name: str
    n_docs: int
    doc_vectors: int
    query_vectors: int
    n_queries: int
    dtype: torch.dtype
    dim: int = 128


# Seconds to wait at most, before each round of timings, for the other processes on the machine to go idle
# (--wait-quiet); 0 = never wait. Shared 2-core machines are often busy, and a busy core stalls every
# parallel region of our threads, which distorts timings far more than it slows them. With waiting on, a
# round during which other processes used more than OTHERS_LIMIT of the CPUs is thrown away and rerun.
WAIT_QUIET_SECONDS = 0.0
OTHERS_LIMIT = 0.1
ROUND_ATTEMPTS = 4
discarded_rounds = 0


def machine_cpu_seconds() -> tuple[float, float] | None:
    """``(busy, total)`` CPU seconds of the whole machine since boot, from /proc/stat; None off Linux."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(value) for value in stat.readline().split()[1:]]
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / ticks, sum(fields) / ticks


def wait_until_quiet(threshold: float = 0.15, interval: float = 0.5) -> None:
    """Sleep until the machine's busy fraction over ``interval`` (others only: we sleep) is below ``threshold``."""
    deadline = time.monotonic() + WAIT_QUIET_SECONDS
    while time.monotonic() < deadline:
        before = machine_cpu_seconds()
        time.sleep(interval)
        after = machine_cpu_seconds()
        if before is None or after is None:
            return
        if (after[0] - before[0]) / max(1e-9, after[1] - before[1]) < threshold:
            return


def time_round_robin(functions: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per call; the functions take turns in every repeat so machine noise hits all alike."""
    global discarded_rounds
    for function in functions.values():
        function()  # warm-up: first-touch allocation, BLAS/oneDNN kernel selection
    samples: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for attempt in range(ROUND_ATTEMPTS if WAIT_QUIET_SECONDS else 1):
            if WAIT_QUIET_SECONDS:
                wait_until_quiet()
            machine_before, own_before, wall_before = machine_cpu_seconds(), time.process_time(), time.perf_counter()
            round_samples = {}
            for name, function in functions.items():
                start = time.perf_counter()
                function()
                round_samples[name] = time.perf_counter() - start
            machine_after = machine_cpu_seconds()
            if machine_before is None or machine_after is None or not WAIT_QUIET_SECONDS:
                break
            others = (machine_after[0] - machine_before[0]) - (time.process_time() - own_before)
            capacity = (machine_after[1] - machine_before[1]) or (time.perf_counter() - wall_before)
            resolution = 2 / os.sysconf("SC_CLK_TCK")  # /proc/stat counts in ticks
            if others <= OTHERS_LIMIT * capacity + resolution or attempt == ROUND_ATTEMPTS - 1:
                break
            discarded_rounds += 1
        for name, seconds in round_samples.items():
            samples[name].append(seconds)
    return {name: statistics.median(values) for name, values in samples.items()}


def naive_maxsim(queries: torch.Tensor, documents: torch.Tensor) -> torch.Tensor:
    """The baseline: one einsum per query over the whole collection, ``(n_q, n_d)``."""
    queries = queries.to(documents.dtype)
    return torch.stack([torch.einsum("qd,nkd->nqk", query, documents).amax(-1).sum(-1) for query in queries])


def gemm_only(queries: torch.Tensor, documents: torch.Tensor, workspace_bytes: int) -> None:
    """The matmuls the kernel runs (same chunks, same ``out=`` buffers) and nothing else: the GEMM library's
    rate for this shape."""
    queries = queries.to(documents.dtype)
    n_docs, doc_vectors, dim = documents.shape
    for _, block in _query_blocks(queries, documents, workspace_bytes):
        chunk = _chunk_size(block, documents, workspace_bytes)
        queries_t = block.reshape(-1, dim).T.contiguous()  # (d, n_q*Q)
        out = torch.empty((chunk * doc_vectors, queries_t.shape[1]), dtype=documents.dtype)
        flat = documents.reshape(n_docs * doc_vectors, dim)  # (n_d*D, d)
        for start in range(0, n_docs * doc_vectors, chunk * doc_vectors):
            rows = flat[start : start + chunk * doc_vectors]
            torch.matmul(rows, queries_t, out=out[: rows.shape[0]])


def peak_gemm_flops(dtype: torch.dtype, sizes: tuple[int, ...], repeats: int) -> float:
    """Best FLOP/s of square GEMMs: what this machine's BLAS reaches when the shape is easy."""
    best = 0.0
    for size in sizes:
        a = torch.randn(size, size).to(dtype)
        b = torch.randn(size, size).to(dtype)
        seconds = time_round_robin({"gemm": lambda a=a, b=b: a @ b}, repeats)["gemm"]
        best = max(best, 2 * size**3 / seconds)
    return best


def plain_read_bandwidth(documents: torch.Tensor, repeats: int) -> float:
    seconds = time_round_robin({"read": lambda: documents.sum()}, repeats)["read"]
    return documents.numel() * documents.element_size() / seconds


def make_inputs(case: Case, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    documents = torch.randn(case.n_docs, case.doc_vectors, case.dim, generator=generator)  # (n_d, D, d)
    documents = torch.nn.functional.normalize(documents, dim=-1).to(case.dtype)
    queries = torch.randn(case.n_queries, case.query_vectors, case.dim, generator=generator)  # (n_q, Q, d)
    return torch.nn.functional.normalize(queries, dim=-1), documents


def run_case(
    case: Case, repeats: int, naive_queries: int, peak: dict[torch.dtype, float], workspace_bytes: int
) -> list[dict[str, object]]:
    queries, documents = make_inputs(case)
    n_q = case.n_queries
    doc_bytes = documents.numel() * documents.element_size()
    flops_per_query = 2 * case.query_vectors * case.doc_vectors * case.dim * case.n_docs
    naive_subset = queries[:naive_queries]

    with torch.no_grad():
        ours = maxsim(queries, documents, workspace_bytes=workspace_bytes)
        reference = naive_maxsim(naive_subset, documents).float()
        tolerance = 1e-3 if case.dtype == torch.float32 else 0.1 * case.query_vectors**0.5
        error = (ours[: len(naive_subset)] - reference).abs().max().item()
        if error > tolerance:
            raise RuntimeError(f"{case.name}: maxsim disagrees with the naive baseline by {error:.3g}")
        del ours, reference

        timings = time_round_robin(
            {
                "maxsim": lambda: maxsim(queries, documents, workspace_bytes=workspace_bytes),
                f"maxsim_topk(k={TOP_K})": lambda: maxsim_topk(
                    queries, documents, TOP_K, workspace_bytes=workspace_bytes
                ),
                "naive einsum": lambda: naive_maxsim(naive_subset, documents),
                "gemm only": lambda: gemm_only(queries, documents, workspace_bytes),
                "plain read": lambda: documents.sum(),
            },
            repeats,
        )
    read_bandwidth = doc_bytes / timings["plain read"]
    gemm_rate = flops_per_query * n_q / timings["gemm only"]
    blocks = sum(1 for _ in _query_blocks(queries.to(documents.dtype), documents, workspace_bytes))
    roofline_per_query = max(doc_bytes * blocks / read_bandwidth, flops_per_query * n_q / gemm_rate) / n_q
    peak_rate = max(peak[case.dtype], gemm_rate)  # a noisy square-GEMM probe must not undercut the shape's own
    peak_per_query = max(doc_bytes * blocks / read_bandwidth, flops_per_query * n_q / peak_rate) / n_q
    naive_per_query = timings["naive einsum"] / len(naive_subset)

    rows = []
    for variant, seconds in timings.items():
        if variant == "plain read":
            continue
        per_query = seconds / (len(naive_subset) if variant == "naive einsum" else n_q)
        rows.append(
            {
                "case": case.name,
                "variant": variant,
                "ms/q": per_query * 1e3,
                "GB/s": doc_bytes / per_query / 1e9,
                "GFLOP/s": flops_per_query / per_query / 1e9,
                "x naive": naive_per_query / per_query,
                "%read": doc_bytes / per_query / read_bandwidth * 100,
                "%roof": roofline_per_query / per_query * 100,
                "%peak": peak_per_query / per_query * 100,
            }
        )
    rows.append(
        {
            "case": case.name,
            "variant": "plain read",
            "ms/q": timings["plain read"] * 1e3,
            "GB/s": read_bandwidth / 1e9,
            "GFLOP/s": float("nan"),
            "x naive": float("nan"),
            "%read": 100.0,
            "%roof": float("nan"),
            "%peak": float("nan"),
        }
    )
    return rows


def format_table(rows: list[dict[str, object]]) -> str:
    columns = ["case", "variant", "ms/q", "GB/s", "GFLOP/s", "x naive", "%read", "%roof", "%peak"]
    cells = [[f"{row[c]:.1f}" if isinstance(row[c], float) else str(row[c]) for c in columns] for row in rows]
    cells = [[cell.replace("nan", "-") for cell in line] for line in cells]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    header = "| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)) + " |" for line in cells]
    return "\n".join([header, rule, *body])


def build_cases(args: argparse.Namespace) -> list[Case]:
    cases = []
    for dtype in (torch.float32, torch.bfloat16):
        short = "fp32" if dtype == torch.float32 else "bf16"
        for n_q in (1, args.batch):
            cases.append(Case(f"{args.docs:,} x 16 {short} nq={n_q}", args.docs, 16, 16, n_q, dtype))
        for n_q in (1, args.batch):
            cases.append(
                Case(f"colpali {args.colpali_docs:,} x 1030 {short} nq={n_q}", args.colpali_docs, 1030, 20, n_q, dtype)
            )
    return cases


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--docs", type=int, default=None, help="documents of 16 vectors (default 100000)")
    parser.add_argument("--colpali-docs", type=int, default=None, help="documents of 1030 vectors (default 2000)")
    parser.add_argument("--batch", type=int, default=32, help="queries in the batched rows")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per variant (median reported)")
    parser.add_argument("--naive-queries", type=int, default=4, help="queries of a batch the naive loop runs")
    parser.add_argument("--workspace-mib", type=float, default=DEFAULT_WORKSPACE_BYTES / 2**20)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each round of timings, wait up to SECONDS for other processes to leave the CPU idle",
    )
    args = parser.parse_args(argv)
    args.docs = args.docs or (5_000 if args.quick else 100_000)
    args.colpali_docs = args.colpali_docs or (100 if args.quick else 2_000)
    args.repeats = args.repeats or (3 if args.quick else 5)
    if args.quick:
        args.batch = min(args.batch, 8)
    return args


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    global WAIT_QUIET_SECONDS
    args = parse_args(argv)
    WAIT_QUIET_SECONDS = args.wait_quiet
    torch.set_num_threads(args.threads)
    workspace_bytes = int(args.workspace_mib * 2**20)
    peak_sizes = (256, 512) if args.quick else (1024, 2048)
    peak = {dtype: peak_gemm_flops(dtype, peak_sizes, args.repeats) for dtype in (torch.float32, torch.bfloat16)}
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}, "
        f"workspace {args.workspace_mib:g} MiB, median of {args.repeats}, load average {os.getloadavg()[0]:.2f}; "
        f"peak square GEMM (n = {', '.join(map(str, peak_sizes))}): "
        + ", ".join(f"{str(d).removeprefix('torch.')} {f / 1e9:.0f} GFLOP/s" for d, f in peak.items()),
        flush=True,
    )
    rows = []
    for case in build_cases(args):
        started = time.perf_counter()
        rows.extend(run_case(case, args.repeats, min(args.naive_queries, case.n_queries), peak, workspace_bytes))
        print(f"  {case.name}: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    print(format_table(rows))
    print(
        f"load average at the end {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} CPUs; "
        f"rounds rerun because other processes took the CPU: {discarded_rounds}"
    )
    return rows


if __name__ == "__main__":
    main()
