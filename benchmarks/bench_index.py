"""Index benchmark: every IndexStore kind on clustered random vectors (not a test).

    OMP_NUM_THREADS=2 python -m benchmarks.bench_index            # N=100_000, dim 576
    python -m benchmarks.bench_index --n 20000 --kinds flat,hnsw

Data: ``--clusters`` (1000) Gaussian clusters in ``--dim`` dimensions (576: the default
model's hidden size), centers N(0, 1), per-dimension noise ``--noise`` (2.0: clusters
overlap, so neighbours are not trivially found), L2-normalized float32; queries are fresh
draws from the same clusters.
Metric: cosine. For each kind it measures

- build_s: one ``add`` of all N vectors (IVF kinds: training included);
- batch QPS: ``store.search_batch(Q, k)`` with all queries at once; single QPS: one query
  per call (a subset of the queries);
- recall@k against exact search (FAISS IndexFlatIP), unfiltered, with a filter
  matching 5% of the documents (at this size the store searches the matches exactly)
  and with one matching 50% (the FAISS IDSelector path);
- bytes per vector: index.faiss / N (for ``flat``: its vector segments, ``seg-*.vec.arr``,
  from which the index is built), the kept float vectors (vectors.npy) / N, and
  their sum (the docstore JSON is left out: it depends on texts and metadata);
- save_s / load_s of ``IndexStore.save`` / ``IndexStore.load``.

Writes ``benchmarks/results/index_<date>.json`` (machine info, command, numbers) and
prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llm2vec_retrieval.index import KINDS, IndexStore  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def clustered(
    n: int,
    dim: int,
    n_clusters: int,
    seed: int,
    centers: np.ndarray | None = None,
    noise: float = 2.0,
):
    rng = np.random.default_rng(seed)
    if centers is None:
        centers = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    labels = rng.integers(0, len(centers), n)
    for s in range(0, n, 8192):  # chunks keep the float64 temporaries small
        e = min(n, s + 8192)
        out[s:e] = centers[labels[s:e]] + noise * rng.standard_normal((e - s, dim))
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out, centers


def exact_topk(
    x: np.ndarray, q: np.ndarray, k: int, subset: np.ndarray | None = None
) -> np.ndarray:
    import faiss

    base = x if subset is None else x[subset]
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(base)
    _, i = index.search(q, k)
    return i if subset is None else subset[i]


def recall_at(hits, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(
        np.mean(
            [
                len({int(h.id) for h in r} & set(t.tolist())) / k
                for r, t in zip(hits, truth, strict=True)
            ]
        )
    )


def machine_info() -> dict:
    import faiss

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "omp_wait_policy_env": os.environ.get("OMP_WAIT_POLICY"),
        "faiss_omp_max_threads": faiss.omp_get_max_threads(),
        "faiss_version": faiss.__version__,
        "numpy_version": np.__version__,
    }
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            info["cpu_model"] = names[0]
    except OSError:
        pass
    try:
        info["load_average_at_start"] = os.getloadavg()
    except OSError:
        pass
    return info


def bench_kind(kind: str, x, q, truth, truth_f, truth_h, bucket, args, tmp: Path) -> dict:
    n = len(x)
    ids = [str(i) for i in range(n)]
    metas = [{"bucket": int(b)} for b in bucket]
    t0 = time.perf_counter()
    store = IndexStore(x.shape[1], kind=kind, metric="cosine")
    store.add(ids, x, metadatas=metas)
    build_s = time.perf_counter() - t0

    store.search_batch(q[:10], k=args.k)  # warm-up
    t0 = time.perf_counter()
    hits = store.search_batch(q, k=args.k)
    batch_s = time.perf_counter() - t0

    n_single = min(args.single_queries, len(q))
    t0 = time.perf_counter()
    for row in q[:n_single]:
        store.search(row, k=args.k)
    single_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    hits_f = store.search_batch(q, k=args.k, filter={"bucket": 0})
    filtered_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    hits_h = store.search_batch(q, k=args.k, filter={"bucket": {"$lt": 10}})
    half_s = time.perf_counter() - t0
    exact_k_filtered = all(len(r) == args.k for r in hits_f) and all(
        len(r) == args.k for r in hits_h
    )

    path = tmp / kind
    t0 = time.perf_counter()
    store.save(path)
    save_s = time.perf_counter() - t0
    index_bytes = (path / "index.faiss").stat().st_size if (path / "index.faiss").exists() else 0
    index_bytes += sum(f.stat().st_size for f in path.glob("seg-*.vec.arr"))  # flat
    float_bytes = (path / "vectors.npy").stat().st_size if (path / "vectors.npy").exists() else 0
    docstore_bytes = sum(f.stat().st_size for f in path.glob("seg-*.docs.arr"))
    params = store.params
    with store.snapshot() as snap:
        nlist = getattr(snap.backend, "nlist", None)
    del store
    t0 = time.perf_counter()
    loaded = IndexStore.load(path)
    load_s = time.perf_counter() - t0
    assert len(loaded) == n
    del loaded
    shutil.rmtree(path)
    return {
        "kind": kind,
        "params": params,
        "nlist": nlist,
        "build_s": round(build_s, 3),
        "batch_qps": round(len(q) / batch_s, 1),
        "single_qps": round(n_single / single_s, 1),
        "single_queries": n_single,
        "recall_at_k": round(recall_at(hits, truth), 4),
        "filtered_batch_qps": round(len(q) / filtered_s, 1),
        "filtered_recall_at_k": round(recall_at(hits_f, truth_f), 4),
        "half_filter_batch_qps": round(len(q) / half_s, 1),
        "half_filter_recall_at_k": round(recall_at(hits_h, truth_h), 4),
        "filtered_exactly_k": exact_k_filtered,
        "index_bytes_per_vector": round(index_bytes / n, 1),
        "float_bytes_per_vector": round(float_bytes / n, 1),
        "total_bytes_per_vector": round((index_bytes + float_bytes) / n, 1),
        "docstore_bytes_per_vector": round(docstore_bytes / n, 1),
        "save_s": round(save_s, 3),
        "load_s": round(load_s, 3),
    }


def markdown(rows: list[dict], k: int) -> str:
    cols = [
        ("kind", "kind", "{}"),
        ("build s", "build_s", "{:.1f}"),
        ("batch QPS", "batch_qps", "{:.0f}"),
        ("single QPS", "single_qps", "{:.0f}"),
        (f"recall@{k}", "recall_at_k", "{:.3f}"),
        (f"5% filter recall@{k}", "filtered_recall_at_k", "{:.3f}"),
        ("5% filter QPS", "filtered_batch_qps", "{:.0f}"),
        (f"50% filter recall@{k}", "half_filter_recall_at_k", "{:.3f}"),
        ("50% filter QPS", "half_filter_batch_qps", "{:.0f}"),
        ("index B/vec", "index_bytes_per_vector", "{:.0f}"),
        ("floats B/vec", "float_bytes_per_vector", "{:.0f}"),
        ("total B/vec", "total_bytes_per_vector", "{:.0f}"),
        ("save s", "save_s", "{:.2f}"),
        ("load s", "load_s", "{:.2f}"),
    ]
    lines = ["| " + " | ".join(c[0] for c in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(fmt.format(r[key]) for _, key, fmt in cols) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="vectors in the index (default 100000)")
    ap.add_argument(
        "--dim", type=int, default=576, help="dimension (default 576, the default model's)"
    )
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--single-queries", type=int, default=200, help="queries timed one per call")
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument(
        "--noise", type=float, default=2.0, help="per-dimension noise around unit-variance centers"
    )
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument(
        "--kinds", default=",".join(KINDS), help="comma-separated subset of " + ",".join(KINDS)
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON path (default benchmarks/results/index_<date>.json)",
    )
    args = ap.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    for kind in kinds:
        if kind not in KINDS:
            ap.error(f"unknown kind {kind!r}; valid: {', '.join(KINDS)}")

    started = time.perf_counter()
    machine = machine_info()  # load average as the run starts
    x, centers = clustered(args.n, args.dim, args.clusters, args.seed, noise=args.noise)
    q, _ = clustered(
        args.queries, args.dim, args.clusters, args.seed + 1, centers, noise=args.noise
    )
    bucket = np.arange(args.n) % 20  # bucket 0: a filter matching 5% of the documents
    truth = exact_topk(x, q, args.k)
    truth_f = exact_topk(x, q, args.k, np.nonzero(bucket == 0)[0])
    truth_h = exact_topk(x, q, args.k, np.nonzero(bucket < 10)[0])
    print(
        f"data: n={args.n} dim={args.dim} queries={args.queries} ({time.perf_counter() - started:.1f}s)",
        flush=True,
    )

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_index_") as td:
        for kind in kinds:
            t0 = time.perf_counter()
            row = bench_kind(kind, x, q, truth, truth_f, truth_h, bucket, args, Path(td))
            rows.append(row)
            print(f"{kind}: {json.dumps(row)} ({time.perf_counter() - t0:.1f}s)", flush=True)

    now = _dt.datetime.now(_dt.timezone.utc)
    result = {
        "benchmark": "index",
        "date": now.isoformat(timespec="seconds"),
        "command": " ".join(
            shlex.quote(a)
            for a in [
                Path(sys.executable).name,
                "-m",
                "benchmarks.bench_index",
                *(argv if argv is not None else sys.argv[1:]),
            ]
        ),
        "machine": machine,
        "config": {
            "n": args.n,
            "dim": args.dim,
            "queries": args.queries,
            "single_queries": args.single_queries,
            "clusters": args.clusters,
            "noise": args.noise,
            "k": args.k,
            "metric": "cosine",
            "seed": args.seed,
            "filters": {
                "5%": "{'bucket': 0}: 5% of documents (exact over the matches when <= exact_filter_max)",
                "50%": "{'bucket': {'$lt': 10}}: 50% of documents (FAISS IDSelector path)",
            },
        },
        "results": rows,
        "total_s": round(time.perf_counter() - started, 1),
        "load_average_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    out = args.out or RESULTS / f"index_{now.strftime('%Y-%m-%d')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(markdown(rows, args.k))
    print(f"\nwrote {out} (total {result['total_s']:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
