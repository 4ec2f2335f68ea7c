"""Index backends against the exact scan, in one run: recall@10, queries/s, build time, disk, peak RAM.

    python benchmarks/index.py                 # 100k docs x 16 x 128, 200 queries (~10 min on 2 cores)
    python benchmarks/index.py --quick         # 5k docs, 50 queries: a smoke run of about a minute
    python benchmarks/index.py --real 3000     # also: recall on starter-model embeddings of real images

Each backend configuration runs in its own process (fresh memory, so peak RSS is its own) over the
same document file. Queries are searched one at a time (what a user's search does), and recall@10 is
the overlap of each backend's top-10 with the ``exact`` backend's top-10, averaged over queries.

Synthetic data (as in the performance notes): documents are noisy copies of cluster centres with
skewed cluster sizes (Zipf), each vector L2-normalised; queries are noisy copies of random documents.
On i.i.d. random vectors recall@10 is meaningless (ranks 2-10 are near-ties), so clusters it is.
The ``qdrant`` backend runs qdrant-client's local mode (pure Python, no HNSW): it is a test
double for a server, measured on a subset (``--qdrant-docs``) against exact on the same subset.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

try:
    import mmcascade  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

TOP_K = 10
ADD_BATCH = 1000
PREFETCHES = (100, 200, 400, 1000, 2000)


# ----------------------------------------------------------------------------------------------- data
def make_data(n_docs: int, n_queries: int, vectors: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Clustered unit vectors: (n_docs, vectors, dim) documents and (n_queries, vectors, dim) queries.

    Two levels, like topics and near-duplicates in a real collection: clusters with Zipf-skewed sizes,
    each split into sub-clusters of about ten documents. Per vector: cluster centre + 0.6 x sub-cluster
    offset + 0.25 x noise, L2-normalised; so a document's ten nearest neighbours are its sub-cluster,
    and rank 2-10 are not the near-ties of i.i.d. data.
    """
    rng = np.random.default_rng(seed)
    n_sub = max(1, n_docs // 10)
    n_clusters = max(1, n_sub // 10)
    weights = 1.0 / np.arange(1, n_clusters + 1)  # Zipf-skewed cluster sizes
    sub_cluster_of = rng.integers(0, n_sub, size=n_docs)
    cluster_of_sub = rng.choice(n_clusters, size=n_sub, p=weights / weights.sum())
    centres = _normalise(rng.standard_normal((n_clusters, vectors, dim), dtype=np.float32))
    offsets = _normalise(rng.standard_normal((n_sub, vectors, dim), dtype=np.float32))
    documents = np.empty((n_docs, vectors, dim), dtype=np.float32)
    for start in range(0, n_docs, 10_000):  # in blocks: bounded temporary memory
        stop = min(n_docs, start + 10_000)
        subs = sub_cluster_of[start:stop]
        noise = _normalise(rng.standard_normal((stop - start, vectors, dim), dtype=np.float32))
        documents[start:stop] = _normalise(centres[cluster_of_sub[subs]] + 0.6 * offsets[subs] + 0.25 * noise)
    sources = rng.choice(n_docs, size=n_queries, replace=False)
    noise = _normalise(rng.standard_normal((n_queries, vectors, dim), dtype=np.float32))
    queries = _normalise(documents[sources] + 0.1 * noise)
    return documents, queries


def _normalise(array: np.ndarray) -> np.ndarray:
    return array / np.linalg.norm(array, axis=-1, keepdims=True)


def real_embeddings(n_docs: int, n_queries: int) -> tuple[np.ndarray, np.ndarray]:
    """Starter-model document vectors of real scene/digit/textile images, and caption query vectors."""
    from mmcascade import Embedder
    from mmcascade.data.synthetic import scenes

    rng = np.random.default_rng(7)
    scene_list = [scenes.random_scene(rng) for _ in range(n_docs)]
    embedder = Embedder.from_pretrained("starter")
    documents = embedder.encode_documents(
        [{"image": scenes.render(scene)} for scene in scene_list], batch_size=64, instruction="Represent the image."
    )
    picks = rng.choice(n_docs, size=n_queries, replace=False)
    queries = embedder.encode_queries(
        [scenes.caption(scene_list[index], style="sequence") for index in picks],
        batch_size=64,
        instruction="Find the image that matches the caption.",
    )
    return documents.numpy(), queries.numpy()


# ----------------------------------------------------------------------------------------------- one backend
def run_backend(config: dict, phase: str, work_dir: Path) -> dict:
    """One phase (``build`` or ``search``) of one backend configuration, in a fresh child process."""
    import torch

    from mmcascade.index import StoreSpec, get_backend

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1)))
    baseline_rss = _current_rss_mb()
    doc_shape = np.load(work_dir / "documents.npy", mmap_mode="r").shape  # header only: no pages read
    spec = StoreSpec(dim=doc_shape[2], num_vectors=doc_shape[1])
    store_path = work_dir / config["label"]
    backend_class = get_backend(config["backend"])
    if phase == "build":
        started = time.perf_counter()
        store = backend_class.create(store_path, spec, **config.get("options", {}))
        for start, block in _document_blocks(work_dir / "documents.npy", config["n_docs"], ADD_BATCH):
            store.add([str(index) for index in range(start, start + len(block))], torch.from_numpy(block))
        store.flush()
        optimize = getattr(store, "optimize", None)
        if optimize is not None:
            optimize()
        build_seconds = time.perf_counter() - started
        store.close()
        files = [file.stat() for file in store_path.rglob("*") if file.is_file()]
        return {
            "build_s": build_seconds,
            "disk_mb": sum(stat.st_blocks * 512 for stat in files) / 2**20,  # allocated: Qdrant's files are sparse
            "apparent_mb": sum(stat.st_size for stat in files) / 2**20,
            "build_rss_mb": _peak_rss_mb() - baseline_rss,  # peak above the process after its imports
        }
    queries = torch.from_numpy(np.load(work_dir / "queries.npy"))
    results, search_rss = {}, 0.0
    for label, search_options in config.get("search_variants", {"": {}}).items():
        store = backend_class.open(store_path, spec, **search_options)
        store.search(queries[:2], TOP_K)  # warm-up: first-touch page faults, lazy matrix build
        latencies, ids = [], []
        for query in queries:
            query_started = time.perf_counter()
            (hits,) = store.search(query.unsqueeze(0), TOP_K)
            latencies.append(time.perf_counter() - query_started)
            ids.append([hit.id for hit in hits])
        search_rss = max(search_rss, _peak_rss_mb() - baseline_rss)
        store.close()
        results[label] = {
            "ids": ids,
            "ms_per_query": 1000 * float(np.median(latencies)),
            "qps": len(latencies) / sum(latencies),
        }
    return {"search_rss_mb": search_rss, "variants": results}


def _document_blocks(file: Path, n_docs: int, block: int):
    """``(start, array)`` blocks read with plain file reads: no memory map inflating the RSS figures."""
    with file.open("rb") as handle:
        major, _ = np.lib.format.read_magic(handle)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(handle)
        row = int(np.prod(shape[1:]))
        for start in range(0, min(n_docs, shape[0]), block):
            count = min(block, n_docs - start)
            data = np.fromfile(handle, dtype=dtype, count=count * row)
            yield start, data.reshape(count, *shape[1:])


def _peak_rss_mb() -> float:
    # VmHWM, not getrusage: ru_maxrss survives fork+exec, so a child would report its parent's peak.
    return _status_mb("VmHWM")


def _current_rss_mb() -> float:
    return _status_mb("VmRSS")


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"{field} not in /proc/self/status")


# ----------------------------------------------------------------------------------------------- driver
def configurations(args: argparse.Namespace) -> list[dict]:
    return [
        {"label": "exact", "backend": "exact", "n_docs": args.docs},
        {"label": "exact-bf16", "backend": "exact", "n_docs": args.docs, "options": {"dtype": "bfloat16"}},
        {
            "label": "qdrant-edge",
            "backend": "qdrant-edge",
            "n_docs": args.docs,
            "search_variants": {f"prefetch={n}": {"prefetch": n} for n in PREFETCHES},
        },
    ]


def local_mode_configurations(n_docs: int) -> list[dict]:
    return [
        {"label": "exact-subset", "backend": "exact", "n_docs": n_docs},
        {"label": "qdrant-local", "backend": "qdrant", "n_docs": n_docs},
    ]


def recall(ids: list[list[str]], reference: list[list[str]]) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(ids, reference, strict=True) if b]))


def report(runs: dict[str, dict], title: str) -> list[dict]:
    rows = []
    for reference_label, labels in (
        ("exact", ["exact", "exact-bf16", "qdrant-edge"]),
        ("exact-subset", ["exact-subset", "qdrant-local"]),
    ):
        if reference_label not in runs:
            continue
        reference = runs[reference_label]["variants"][""]
        for label in labels:
            run = runs.get(label)
            if run is None:
                continue
            for variant, result in run["variants"].items():
                rows.append({
                    "backend": label + (f" ({variant})" if variant else ""),
                    "docs": run["n_docs"],
                    "recall@10": recall(result["ids"], reference["ids"]),
                    "ms/query": result["ms_per_query"],
                    "qps": result["qps"],
                    "x exact qps": result["qps"] / reference["qps"],
                    "build s": run["build_s"],
                    "disk MB": run["disk_mb"],
                    "build peak RSS MB": run["build_rss_mb"],
                    "search peak RSS MB": run["search_rss_mb"],
                })  # fmt: skip
    print(f"\n## {title}\n")
    if not rows:
        print("(nothing to compare: recall and ratios need the exact run of the same set)")
        return rows
    header = list(rows[0])
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        cells = [
            f"{value:.3f}" if key == "recall@10" else f"{value:.1f}" if isinstance(value, float) else str(value)
            for key, value in row.items()
        ]
        print("| " + " | ".join(cells) + " |")
    return rows


def run_all(
    documents: np.ndarray, queries: np.ndarray, configs: list[dict], title: str, only: set[str] | None = None
) -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix="mmcascade-bench-index-"))
    try:
        np.save(work / "documents.npy", documents)
        np.save(work / "queries.npy", queries)
        runs = {}
        for config in configs:
            if only and config["label"] not in only:
                continue
            config = {**config, "n_docs": min(config["n_docs"], len(documents))}
            print(f"running {config['label']} on {config['n_docs']} documents ...", file=sys.stderr, flush=True)
            runs[config["label"]] = {"n_docs": config["n_docs"]}
            for phase in ("build", "search"):
                child = subprocess.run(
                    [sys.executable, __file__, "--child", json.dumps(config), "--phase", phase, "--work", str(work)],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if child.returncode != 0:
                    raise RuntimeError(f"{config['label']} {phase} failed:\n{child.stderr[-3000:]}")
                runs[config["label"]].update(json.loads(child.stdout.strip().splitlines()[-1]))
        return report(runs, title)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--vectors", type=int, default=16, help="vectors per document and per query")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--qdrant-docs", type=int, default=10_000, help="subset for qdrant-client local mode")
    parser.add_argument("--skip-qdrant-local", action="store_true")
    parser.add_argument("--real", type=int, default=0, help="also run on N starter embeddings of rendered scenes")
    parser.add_argument("--quick", action="store_true", help="5k documents, 50 queries")
    parser.add_argument("--only", help="comma-separated backend labels to run (e.g. exact,qdrant-edge)")
    parser.add_argument("--json", type=Path, help="write every row here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--phase", choices=("build", "search"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_backend(json.loads(args.child), args.phase, args.work)))
        return
    if args.quick:
        args.docs, args.queries, args.qdrant_docs = 5_000, 50, 2_000
    print(
        f"# index benchmark: torch threads {os.cpu_count()}, {args.docs} docs x {args.vectors} x {args.dim}, {args.queries} queries, top-{TOP_K}"
    )
    only = set(args.only.split(",")) if args.only else None
    started = time.perf_counter()
    documents, queries = make_data(args.docs, args.queries, args.vectors, args.dim, seed=0)
    rows = {"synthetic": run_all(documents, queries, configurations(args), "synthetic clustered data", only)}
    del documents
    if not args.skip_qdrant_local:
        documents, queries = make_data(args.qdrant_docs, args.queries, args.vectors, args.dim, seed=1)
        title = f"qdrant-client local mode, its own synthetic set of {args.qdrant_docs} documents"
        rows["qdrant-local"] = run_all(documents, queries, local_mode_configurations(args.qdrant_docs), title, only)
        del documents
    if args.real:
        documents, queries = real_embeddings(args.real, min(args.queries, args.real))
        title = f"starter embeddings of {args.real} rendered scenes, caption queries"
        rows["real"] = run_all(documents, queries, configurations(args), title, only)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
