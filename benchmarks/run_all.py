"""Run every benchmark, then build benchmarks/RESULTS.md and the plots (what `make bench` runs).

    python -m benchmarks.run_all                 # quick: about 30-45 minutes on 2 CPU cores
    python -m benchmarks.run_all --full          # full SciFact / STS-B, 100k-vector index: hours on a small CPU
    python -m benchmarks.run_all --skip server,index --dry-run

Steps (each a subprocess; a failing step is reported and the others still run):
  quality  python -m benchmarks.quality: bm25, minilm, ours (the shipped default), ours-causal,
           ours-bidirectional and official llm2vec 0.2.3 (both on SmolLM2) on SciFact and STS-B test.
           Quick: SciFact subset (first 100 queries, their judged documents + a seeded
           sample: 300 documents), first 300 STS-B pairs; our models in bfloat16. --full: everything.
  speed    python -m benchmarks.speed: ours / official llm2vec 0.2.3 / sentence-transformers / bare
           transformers, float32 and bfloat16, plus index build time vs LangChain. Quick: the harness
           defaults; --full: 128 documents. Creates the official venv on first use.
  index    python -m benchmarks.bench_index (if present): IndexStore kinds. Quick: 20,000 vectors;
           --full: its default (100,000).
  server   python -m benchmarks.bench_server (if present): HTTP load. Quick: 10 s per level; --full: 30 s.
  report   python -m benchmarks.report -> benchmarks/RESULTS.md, benchmarks/results/plots/*.png
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BENCH = PROJECT_ROOT / "benchmarks"
RESULTS_DIR = BENCH / "results"
STEPS = ("quality", "speed", "index", "server")

QUICK = {
    "quality": [
        "--models",
        "bm25,minilm,ours,ours-causal,ours-bidirectional,official",
        "--tasks",
        "scifact,stsb",
        "--max-queries",
        "100",
        "--max-docs",
        "300",
        "--max-pairs",
        "300",
        "--dtype",
        "bfloat16",
    ],
    "speed": [],
    "index": ["--n", "20000", "--queries", "500"],
    "server": ["--duration", "10"],
}
FULL = {
    "quality": [
        "--models",
        "bm25,minilm,ours,ours-causal,ours-bidirectional,official",
        "--tasks",
        "scifact,stsb",
        "--dtype",
        "bfloat16",
    ],
    "speed": ["--n-docs", "128"],
    "index": [],
    "server": ["--duration", "30"],
}
MODULES = {
    "quality": "benchmarks.quality",
    "speed": "benchmarks.speed",
    "index": "benchmarks.bench_index",
    "server": "benchmarks.bench_server",
}


def commands(args) -> list[tuple[str, list[str]]]:
    table = FULL if args.full else QUICK
    skip = {s.strip() for s in (args.skip or "").split(",") if s.strip()}
    bad = skip - set(STEPS)
    if bad:
        raise SystemExit(
            f"unknown step(s) to skip: {', '.join(sorted(bad))}; valid: {', '.join(STEPS)}"
        )
    out = []
    for step in STEPS:
        if step in skip:
            continue
        module = MODULES[step]
        if not (PROJECT_ROOT / (module.replace(".", "/") + ".py")).exists():
            print(f"[{step}] {module} not found: skipped")
            continue
        extra = list(table[step])
        if step in ("speed", "quality"):
            if args.official_venv:
                extra += ["--official-venv", args.official_venv]
            if args.threads:
                extra += ["--threads", str(args.threads)]
        out.append((step, [sys.executable, "-m", module, *extra]))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run_all",
        description=(__doc__ or "").split("\n")[0],
        epilog=(__doc__ or "").split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--full", action="store_true", help="full data sets (takes hours on a small CPU)"
    )
    p.add_argument(
        "--skip", default="", help=f"comma-separated steps to skip, from {', '.join(STEPS)}"
    )
    p.add_argument(
        "--official-venv",
        default=None,
        help="venv with llm2vec 0.2.3 for the speed and quality benchmarks",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for quality and speed (default: all cores)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = p.parse_args(argv)

    steps = commands(args)
    steps.append(("report", [sys.executable, "-m", "benchmarks.report"]))
    before = {f.name for f in RESULTS_DIR.glob("*.json")} if RESULTS_DIR.exists() else set()
    status = []
    t_all = time.perf_counter()
    for step, cmd in steps:
        print(f"\n=== [{step}] $ {shlex.join(cmd)}", flush=True)
        if args.dry_run:
            continue
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, cwd=str(PROJECT_ROOT)).returncode
        status.append((step, rc, time.perf_counter() - t0))
        print(f"=== [{step}] exit {rc} after {time.perf_counter() - t0:.0f} s", flush=True)
    if args.dry_run:
        return 0
    new = (
        sorted({f.name for f in RESULTS_DIR.glob("*.json")} - before)
        if RESULTS_DIR.exists()
        else []
    )
    print(f"\n=== done in {(time.perf_counter() - t_all) / 60:.1f} min")
    for step, rc, secs in status:
        print(f"  {step:<8} {'ok' if rc == 0 else f'FAILED (exit {rc})'}  {secs:.0f} s")
    print("new result files:" if new else "no new result files")
    for name in new:
        print(f"  {(RESULTS_DIR / name).relative_to(PROJECT_ROOT)}")
    print(
        f"report: {(BENCH / 'RESULTS.md').relative_to(PROJECT_ROOT)}, plots: "
        f"{(RESULTS_DIR / 'plots').relative_to(PROJECT_ROOT)}/"
    )
    return 0 if all(rc == 0 for _, rc, _ in status) else 1


if __name__ == "__main__":
    sys.exit(main())
