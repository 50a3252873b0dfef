"""Scale benchmark: documents/s of `encode-corpus` on Ray (1 and 2 workers) against the
single-process `index`, on the same SciFact documents and model.

    python -m benchmarks.scale                       # 300 docs, the default model, --dtype auto
    python -m benchmarks.scale --docs 500 --dtype float32 --runs index,ray2

Method: the first N SciFact corpus documents are written as .jsonl files of ``--per-file``
documents each (title + " " + text in ``text``): `index` reads them in one process; Ray makes
one shard per file, so 2 workers share the files. Each run is a fresh child process
(``python -m benchmarks.scale --child ...``), timed end to end by the parent (``wall_s``: Python
start, imports, model load, Ray start and actor start included) and inside (``run_s``: the
command's own timing; ``encode_s``: for `index` its run after the model is loaded, for Ray
the seconds the actors spent on their shards, summed: read, chunk, encode, write).
On this machine's 2 cores: `index` uses 2 torch threads; ray1 1 actor x 2 threads; ray2 2
actors x 1 thread. Ray overhead per document = (wall_s of a Ray run - wall_s of index) / N.
The load average before and after each run is recorded: other engineers' tests run on the same
2 cores, so the numbers are noisy. Writes benchmarks/results/scale_<stamp>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.speed import machine_info

ROOT = Path(__file__).resolve().parent.parent
DATA = Path("/work/shared/data/scifact/corpus.jsonl")
RUNS = ("index", "ray1", "ray2")


def write_corpus(src: Path, dest: Path, n_docs: int, per_file: int) -> int:
    dest.mkdir(parents=True)
    docs = []
    with src.open(encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            docs.append({"id": d["_id"], "text": f"{d['title']} {d['text']}".strip()})
            if len(docs) == n_docs:
                break
    for i in range(0, len(docs), per_file):
        with (dest / f"part-{i // per_file:04d}.jsonl").open("w", encoding="utf-8") as f:
            for d in docs[i : i + per_file]:
                f.write(json.dumps(d) + "\n")
    return len(docs)


def child(args: argparse.Namespace) -> dict:
    """One run, in this (fresh) process; prints its numbers as JSON."""
    t0 = time.perf_counter()
    import torch

    corpus, out = Path(args.corpus), Path(args.out)
    if args.child == "index":
        torch.set_num_threads(2)
        from llm2vec_retrieval.hardware import resolve_dtype
        from llm2vec_retrieval.ingest import Indexer, IndexFolder, IndexSettings
        from llm2vec_retrieval.ingest.folder import embedder_spec, encoder_from_spec

        choice = resolve_dtype(args.dtype)
        t_load = time.perf_counter()
        # cached: the Indexer reuses it
        encoder_from_spec(embedder_spec(args.model, None), args.dtype)
        load_s = time.perf_counter() - t_load
        settings = IndexSettings(model=args.model, root=str(corpus))
        indexer = Indexer(IndexFolder(out), settings, show_progress_bar=False, dtype=args.dtype)
        report = indexer.run([corpus])
        return {
            "model_load_s": load_s,
            "run_s": report.seconds,  # the model is already loaded: chunk, encode, add, save
            "encode_s": report.seconds,
            "chunks": report.chunks_added,
            "tokens": report.tokens,
            "dtype": choice.name,
            "wall_in_child_s": time.perf_counter() - t0,
        }
    workers = int(args.child.removeprefix("ray"))
    from llm2vec_retrieval.distributed import CorpusSettings, encode_corpus

    actor_s: list[float] = []
    settings = CorpusSettings(
        model=args.model,
        dtype=args.dtype,
        root=str(corpus),
        workers=workers,
        cpus_per_worker=max(1, 2 // workers),
        shard_bytes=1,  # one shard per file
    )
    report = encode_corpus(
        [corpus],
        out,
        settings,
        show_progress_bar=False,
        on_shard=lambda r: actor_s.append(r["seconds"]),
    )
    parquet = list((out / "shards").glob("*.parquet"))
    return {
        "shard_files": len(parquet),
        "shard_bytes": sum(f.stat().st_size for f in parquet),
        "run_s": report.seconds,
        "chunks": report.chunks,
        "tokens": report.tokens,
        "shards": report.shards,
        "encode_s": sum(actor_s),
        "devices": sorted(set(report.devices.values())),
        "wall_in_child_s": time.perf_counter() - t0,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--docs", type=int, default=300)
    p.add_argument("--per-file", type=int, default=25)
    p.add_argument("--model", default=None, help="default: the embedded default model")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--runs", default=",".join(RUNS))
    p.add_argument("--output", default=None)
    p.add_argument("--child", choices=RUNS, help=argparse.SUPPRESS)
    p.add_argument("--corpus", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print("SCALE-RESULT " + json.dumps(child(args)), flush=True)
        return

    from llm2vec_retrieval.hardware import resolve_dtype

    started = dt.datetime.now()
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    tmp = Path(tempfile.mkdtemp(prefix="scale-"))
    results = {}
    try:
        n = write_corpus(DATA, tmp / "corpus", args.docs, args.per_file)
        for run in runs:
            cmd = [sys.executable, "-m", "benchmarks.scale", "--child", run, "--dtype", args.dtype]
            cmd += ["--corpus", str(tmp / "corpus"), "--out", str(tmp / f"out-{run}")]
            if args.model:
                cmd += ["--model", args.model]
            load0 = [round(x, 2) for x in os.getloadavg()]
            t0 = time.perf_counter()
            proc = subprocess.run(
                cmd,
                cwd=ROOT,
                capture_output=True,
                text=True,
                env={**os.environ, "OMP_NUM_THREADS": "2"},
            )
            wall = time.perf_counter() - t0
            line = next(
                (ln for ln in proc.stdout.splitlines() if ln.startswith("SCALE-RESULT ")), None
            )
            if proc.returncode or line is None:
                sys.stderr.write(proc.stderr[-4000:])
                raise SystemExit(f"run {run} failed (exit {proc.returncode})")
            r = json.loads(line.removeprefix("SCALE-RESULT "))
            r.update(
                wall_s=round(wall, 2),
                docs=n,
                docs_per_s=round(n / wall, 3),
                docs_per_s_run=round(n / r["run_s"], 3),
                tokens_per_s_run=round(r["tokens"] / r["run_s"], 1),
                loadavg_before=load0,
                loadavg_after=[round(x, 2) for x in os.getloadavg()],
            )
            # tokens/s of one encoder (the sum of the actors' busy seconds for Ray runs)
            r["tokens_per_s_encode"] = round(r["tokens"] / r["encode_s"], 1)
            results[run] = r
            print(run, json.dumps(r), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = results.get("index")
    for run, r in results.items():
        if base is not None and run != "index":
            r["ray_overhead_per_doc_s"] = round((r["wall_s"] - base["wall_s"]) / r["docs"], 4)
    stamp = started.strftime("%Y%m%d-%H%M%S")
    out = Path(args.output or ROOT / "benchmarks" / "results" / f"scale_{stamp}.json")
    payload = {
        "benchmark": "scale",
        "started": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now().isoformat(timespec="seconds"),
        "command": "python -m benchmarks.scale " + " ".join(sys.argv[1:]),
        "cwd": os.getcwd(),
        "machine": machine_info(),
        "options": {
            "docs": args.docs,
            "per_file": args.per_file,
            "model": args.model or "default (gemma3-270m-llm2vec)",
            "dtype_asked": args.dtype,
            "dtype_resolved_cpu": resolve_dtype(args.dtype).name,
            "data": str(DATA),
            "chunking": "index defaults: 256 tokens, overlap 32",
        },
        "results": results,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
