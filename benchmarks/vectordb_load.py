"""Load throughput of `llm2vec_retrieval.vectordb.load_shards` into each database, and the
disk each one uses per row.

    python -m benchmarks.vectordb_load [--rows 5000] [--dim 640] [--batch-rows 1024]

Writes a shard folder of ``--rows`` random unit vectors (float32, ``--dim``) with texts of
about 600 characters and small metadata, then loads it (a fresh collection each) into
PostgreSQL + pgvector (a throwaway local server on a unix socket, fsync on), Qdrant local
mode (a folder) and LanceDB (a folder), and once more into each (the idempotent rerun:
every row updated in place). Records rows/s and the bytes on disk per row after each load. Writes
benchmarks/results/vectordb_load_<stamp>.json with the command line and machine_info().
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORDS = (
    "vaccines train the immune system rivers flood after heavy rain glaciers carve valleys "
    "transformers attend to every token contrastive training pulls paraphrases together"
).split()


def make_shards(out: Path, rows: int, dim: int) -> Path:
    import numpy as np

    from llm2vec_retrieval.shards import ShardWriter

    rng = np.random.default_rng(0)
    header = {
        "embedder": {"model_path": "random"},
        "fingerprint": {"model": "random", "dim": dim},
        "dimension": dim,
        "chunking": {"chunk_tokens": 128, "overlap": 16},
        "query_instruction": "",
        "source_root": str(out.parent),
    }
    per_file, per_shard = 10, 1000
    with ShardWriter(out, header) as w:
        for start in range(0, rows, per_shard):
            n = min(per_shard, rows - start)
            x = rng.standard_normal((n, dim)).astype(np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            ids, texts, metas, files = [], [], [], {}
            for i in range(start, start + n):
                src = f"docs/file{i // per_file:05d}.txt"
                ids.append(f"{src}#{i % per_file}")
                texts.append(" ".join(rng.choice(WORDS, 90)))
                metas.append({"source": src, "chunk": i % per_file})
                files[src] = {"sha256": "0" * 64, "chunks": per_file, "bytes": 1, "tokens": 1}
            w.write(f"part-{start:06d}", files, ids, texts, metas, x, position=start)
    return out


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def pg_bytes(url: str, table: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        return int(conn.execute("SELECT pg_total_relation_size(%s)", (table,)).fetchone()[0])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.vectordb_load", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--rows", type=int, default=5000)
    p.add_argument("--dim", type=int, default=640)
    p.add_argument("--batch-rows", type=int, default=1024)
    p.add_argument("--only", nargs="*", default=["postgresql", "qdrant", "lancedb"])
    p.add_argument("--results-dir", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)

    from benchmarks.speed import machine_info
    from llm2vec_retrieval.vectordb import load_shards
    from llm2vec_retrieval.vectordb.localpg import temporary_postgres

    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="vdb-bench-") as tmp:
        tmp_path = Path(tmp)
        shards = make_shards(tmp_path / "shards", args.rows, args.dim)
        for kind in args.only:
            with (
                temporary_postgres(fsync=True) if kind == "postgresql" else contextlib.nullcontext()
            ) as pg_url:
                folder = tmp_path / kind
                target = pg_url if kind == "postgresql" else f"{kind}://{folder}"
                runs = []
                for label in ("first load", "rerun (all rows updated)"):
                    t0 = time.perf_counter()
                    r = load_shards(
                        shards,
                        target,
                        collection="bench",
                        batch_rows=args.batch_rows,
                        show_progress_bar=False,
                    )
                    secs = time.perf_counter() - t0
                    size = pg_bytes(pg_url, "data_bench") if kind == "postgresql" else du(folder)
                    runs.append(
                        {
                            "run": label,
                            "rows": r.rows,
                            "count": r.count,
                            "seconds": round(secs, 3),
                            "rows_per_s": round(r.rows / secs, 1),
                            "bytes_on_disk": size,
                            "bytes_per_row": round(size / args.rows, 1),
                        }
                    )
                    print(f"{kind:10s} {label:26s} {r.rows / secs:9.1f} rows/s", flush=True)
                results[kind] = {
                    "runs": runs,
                    "note": {
                        "postgresql": "pg_total_relation_size(data_bench): heap, TOAST, unique index on node_id; the rerun leaves dead row versions until VACUUM",
                        "qdrant": "qdrant-client local mode folder (SQLite; one commit per point)",
                        "lancedb": "LanceDB folder (the rerun keeps the old versions until table.optimize())",
                    }[kind],
                }
    out = {
        "benchmark": "vectordb_load",
        "command": " ".join(
            [Path(sys.executable).name, "-m", "benchmarks.vectordb_load", *(argv or sys.argv[1:])]
        ),
        "time": _dt.datetime.now().isoformat(timespec="seconds"),
        "machine": machine_info(),
        "load_average_at_end": os.getloadavg(),  # other processes on the machine
        "rows": args.rows,
        "dimension": args.dim,
        "batch_rows": args.batch_rows,
        "vector_bytes_per_row": 4 * args.dim,
        "versions": _versions(),
        "results": results,
    }
    Path(args.results_dir).mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(args.results_dir) / f"vectordb_load_{stamp}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("psycopg", "pgvector", "qdrant-client", "lancedb", "pylance", "pyarrow"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    try:
        out["postgresql_server"] = sorted(os.listdir("/usr/lib/postgresql"))[-1]
    except OSError:
        out["postgresql_server"] = None
    return out


if __name__ == "__main__":
    raise SystemExit(main())
