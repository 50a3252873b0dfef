"""Encoding speed per compute dtype on CPUs with and without native bf16 (issue 16.1).

    python -m benchmarks.dtype_cpu                      # this CPU as it is, then capped to AVX2
    python -m benchmarks.dtype_cpu --docs 16 --isas native,avx2

`--dtype auto` picks bfloat16 only where the CPU multiplies bf16 natively (avx512_bf16 or
AMX on x86, the bf16 feature on ARM). This measures why, on one machine: each row is a fresh
worker process that encodes the same documents in float32 and in bfloat16 (interleaved
repeats, median), with the CPU either as it is (`native`) or capped to AVX2 as an AVX2-only
CPU would run it (`avx2`: oneDNN limited by ONEDNN_MAX_CPU_ISA=AVX2 and ATen's vectorized
kernels by ATEN_CPU_CAPABILITY=avx2, so bf16 falls back to emulation). The cap emulates
the instruction set, not another chip (caches, clocks and core count stay this machine's).

Model and documents are the speed benchmark's: the untrained SmolLM2-135M-Instruct base, the
first N SciFact documents cut to 400 tokens. Also recorded per row: the dtype `auto` picks for
that CPU's flags (the capped row: this CPU's flags without avx512*/amx*) and the cosine of
the bf16 vectors with the fp32 ones. Writes benchmarks/results/dtype_cpu_<stamp>.json.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ISAS = {
    "native": {},
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
}

WORKER = r"""
import json, sys, time
import numpy as np, torch
from llm2vec_retrieval import LLM2Vec
from llm2vec_retrieval.sources import resolve_model_path
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
texts = args["texts"]
encoders = {
    name: LLM2Vec.from_pretrained(resolve_model_path(args["model"]), dtype=getattr(torch, name))
    for name in ("float32", "bfloat16")
}
for enc in encoders.values():  # warm-up
    enc.encode_documents(texts[:2], show_progress_bar=False)
times = {name: [] for name in encoders}
vectors = {}
for r in range(args["repeats"]):
    order = list(encoders) if r % 2 == 0 else list(reversed(encoders))
    for name in order:
        t0 = time.perf_counter()
        vectors[name] = encoders[name].encode_documents(texts, show_progress_bar=False)
        times[name].append(time.perf_counter() - t0)
cos = (vectors["float32"] * vectors["bfloat16"]).sum(axis=1)
print(json.dumps({
    "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    "seconds": times,
    "bf16_vs_fp32_cosine": {"min": float(cos.min()), "mean": float(cos.mean())},
}))
"""


def main(argv=None) -> int:
    from benchmarks.speed import (
        REFERENCE_MODEL,
        load_documents,
        prepare_texts,
        result_header,
        worker_env,
    )
    from llm2vec_retrieval.evaluation.data import default_data_dir
    from llm2vec_retrieval.hardware import CpuFeatures, cpu_dtype, read_cpu_features

    p = argparse.ArgumentParser(
        prog="python -m benchmarks.dtype_cpu", description=__doc__.split("\n")[0]
    )
    p.add_argument("--docs", type=int, default=16, help="SciFact documents to encode")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--isas", default="native,avx2", help=f"comma-separated: {', '.join(ISAS)}")
    p.add_argument("--model", default=REFERENCE_MODEL)
    p.add_argument("--data-dir", default=None, help="default: $LLM2VEC_DATA_DIR or ../shared/data")
    args = p.parse_args(argv)
    isas = [x.strip() for x in args.isas.split(",") if x.strip()]
    unknown = [x for x in isas if x not in ISAS]
    if unknown:
        p.error(f"unknown --isas {', '.join(unknown)}; valid: {', '.join(ISAS)}")

    from transformers import AutoTokenizer

    from llm2vec_retrieval.sources import resolve_model_path

    data = Path(args.data_dir) if args.data_dir else default_data_dir()
    _, texts = load_documents(data / "scifact" / "corpus.jsonl", args.docs)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(args.model))
    texts, counts, _ = prepare_texts(tokenizer, texts)
    tokens = sum(counts)

    here = read_cpu_features()
    started = _dt.datetime.now()
    out: dict = {
        **result_header("dtype_cpu", argv, started),
        "model": args.model,
        "documents": len(texts),
        "tokens": tokens,
        "threads": args.threads,
        "rows": [],
    }
    for isa in isas:
        flags = here.flags if here is not None else frozenset()
        if isa == "avx2":
            flags = frozenset(f for f in flags if not f.startswith(("avx512", "amx")))
        features = CpuFeatures(here.arch if here is not None else "unknown", flags)
        auto, reason = cpu_dtype(features)
        env = {**worker_env(args.threads, [str(ROOT)]), **ISAS[isa]}
        payload = {
            "model": args.model,
            "texts": texts,
            "threads": args.threads,
            "repeats": args.repeats,
        }
        print(f"{isa}: encoding {len(texts)} documents ({tokens} tokens) ...", flush=True)
        run = subprocess.run(
            [sys.executable, "-c", WORKER, json.dumps(payload)],
            env=env,
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        if run.returncode != 0:
            raise SystemExit(f"worker for {isa} failed:\n{run.stderr[-3000:]}")
        res = json.loads(run.stdout.strip().splitlines()[-1])
        medians = {k: statistics.median(v) for k, v in res["seconds"].items()}
        row = {
            "isa": isa,
            "env": ISAS[isa],
            "bf16_flags": features.bf16_flags,
            "auto_picks": auto,
            "auto_reason": reason,
            **res,
            "tokens_per_s": {k: round(tokens / v, 1) for k, v in medians.items()},
            "bf16_speed_vs_fp32": round(medians["float32"] / medians["bfloat16"], 3),
        }
        print(
            f"  float32 {row['tokens_per_s']['float32']} tok/s, bfloat16 "
            f"{row['tokens_per_s']['bfloat16']} tok/s (bf16 x{row['bf16_speed_vs_fp32']}); "
            f"auto picks {auto}",
            flush=True,
        )
        out["rows"].append(row)
    out["finished"] = _dt.datetime.now().isoformat(timespec="seconds")
    path = RESULTS / f"dtype_cpu_{started.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
