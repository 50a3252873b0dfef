"""The GPU training recipe in one command: train from the shipped adapter, score on dev.

    python3 -m benchmarks.gpu.recipe --wheels WHEELS --data-dir DATA --out OUT   # GPU machine, < 15 min
    python -m benchmarks.gpu.recipe --tiny --out OUT                             # any CPU, tiny model

Run from the repository root. In the ours environment (`benchmarks.gpu.envs`; with --wheels
made from the carried wheels, which must include the embedded models: `benchmarks.gpu.wheels
--with-models`), a child process (`benchmarks.gpu.recipe_run`):
1. prepares the shippable supervised mix with `benchmarks.supervised_data` (SNLI triples and
   the top-level supervised-pairs/*.tsv, never restricted/; dev split by anchor hash; BM25
   hard negatives);
2. scores the shipped default (`gemma3-270m-llm2vec`) on dev: STS-B dev and the dev split;
3. trains one supervised stage on top of it with `benchmarks.train_default`'s `gpu` recipe
   (batch 256 in GradCache mini-batches of 64, max_length 256, bf16) for one pass over the
   training rows unless --max-steps says otherwise;
4. scores the result on the same dev sets and writes OUT/gpu_recipe_<stamp>.json (command,
   machine, settings, data counts, loss curve, timings, dev before/after) and the adapter in
   OUT/adapter/. SciFact and STS-B test are never read.
--tiny does the same on a CPU with a tiny random model and tiny synthetic data written in code.
Exit 2 with one line when something it needs is missing.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.gpu.envs import ROOT, EnvError, check, child_env, make_env

DATA_FILES = (
    "snli-triples-small/snli_dev_test_triples.tsv",
    "supervised-pairs/medquad.tsv",
    "supervised-pairs/altlex.tsv",
    "supervised-pairs/stackexchange.tsv",
    "stsb/sts-dev.csv",
)


def default_data_dir() -> Path:
    return Path(os.environ.get("LLM2VEC_DATA_DIR") or ROOT.parent / "shared" / "data")


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python3 -m benchmarks.gpu.recipe", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--out", required=True, help="folder for the results and the adapter")
    p.add_argument("--wheels", default=None, help="folder of benchmarks.gpu.wheels --with-models")
    p.add_argument("--site", default="/tmp/llm2vec-gpu-site", help="where the wheels are installed")
    p.add_argument("--data-dir", default=None, help="shared data folder (default ../shared/data)")
    p.add_argument("--work", default=None, help="prepared data and checkpoints (default OUT/work)")
    p.add_argument("--tiny", action="store_true", help="tiny model and data on the CPU")
    p.add_argument("--max-steps", type=int, default=0, help="0: one pass over the training rows")
    p.add_argument("--batch-size", type=int, default=None, help="default: the gpu recipe's 256")
    p.add_argument(
        "--train-seconds",
        type=int,
        default=480,
        help="training budget: steps = min(one pass, what fits by the probed step time)",
    )
    p.add_argument("--timeout", type=int, default=840, help="seconds before the run is stopped")
    args = p.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    started = _dt.datetime.now()
    stamp = started.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out)
    work = Path(args.work) if args.work else out / "work"
    work.mkdir(parents=True, exist_ok=True)
    data = Path(args.data_dir) if args.data_dir else default_data_dir()
    try:
        if not args.tiny:
            missing = [f for f in DATA_FILES if not (data / f).is_file()]
            if missing:
                raise EnvError(f"missing data files under {data}: {missing} (pass --data-dir)")
        if args.wheels:
            env = make_env("ours", Path(args.wheels), Path(args.site))
        else:
            problem = check(sys.executable, "ours")
            if problem:
                raise EnvError(f"{sys.executable} cannot train: {problem} (or pass --wheels)")
            env = {"python": sys.executable, "pythonpath": []}
    except EnvError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    spec = {
        "tiny": args.tiny,
        "data_dir": str(data),
        "work": str(work),
        "out": str(out),
        "max_steps": args.max_steps,
        "batch_size": args.batch_size,
        "train_seconds": args.train_seconds,
        "result": str(out / f"gpu_recipe_{stamp}.json"),
        "command": shlex.join(["python3", "-m", "benchmarks.gpu.recipe", *args.argv]),
        "started": started.isoformat(timespec="seconds"),
    }
    spec_path = work / "spec.json"
    spec_path.write_text(json.dumps(spec, indent=1))
    cmd = [env["python"], "-m", "benchmarks.gpu.recipe_run", str(spec_path)]
    t = time.perf_counter()
    try:
        code = subprocess.run(
            cmd, cwd=ROOT, env=child_env(env["pythonpath"]), timeout=args.timeout
        ).returncode
    except subprocess.TimeoutExpired:
        print(
            f"error: stopped after {args.timeout} s; partial results in {spec['result']}",
            file=sys.stderr,
        )
        return 1
    print(f"recipe finished with exit code {code} in {time.perf_counter() - t:.0f} s")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
