"""GPU throughput in one command: ours vs a bare forward, and ours vs official llm2vec 0.2.3.

    python3 -m benchmarks.gpu.measure --wheels WHEELS --out OUT     # on the GPU machine (~5 min)
    python -m benchmarks.gpu.measure --tiny --out OUT               # any CPU, tiny shapes, seconds

Run from the repository root. Two arms, each a child process in its own environment
(`benchmarks.gpu.envs`: made from the carried wheels with --wheels, else this interpreter and
an existing official venv, whose absence skips that arm with the reason):
1. the embedded models' shapes (gemma3-270m, smollm2-135m-instruct; config + tokenizer from
   WHEELS/shapes, random bf16 weights): our `encode_documents` per token budget vs a bare
   transformers forward + mean pooling per batch size, same model object and texts;
2. a Mistral-7B-shaped model (hidden 4096, 32 layers, 32 heads / 8 KV heads, MLP 14336, random
   bf16 weights): ours vs `llm2vec.LLM2Vec.encode` 0.2.3 on the same texts.
Texts: documents of consecutive sentences from ../shared/data/english-sentences (or --texts),
lengths drawn between 16 and --doc-tokens tokens. Reported per run: best and median seconds of
--repeats passes after a warm-up, tokens/s (the texts' tokens, special tokens included, no
padding), TFLOP/s and MFU against the device's dense bf16 peak (`benchmarks.gpu.flops`).
Writes OUT/gpu_measure_<stamp>.json (command, machine, settings, every run) and a table in
OUT/gpu_measure_<stamp>.md. Exit 2 with one line when something it needs is missing.
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

from benchmarks.gpu.envs import ROOT, EnvError, child_env, environments
from benchmarks.gpu.flops import PEAK_SOURCE, peak_flops, throughput
from benchmarks.gpu.shapes import EMBEDDED, MISTRAL
from benchmarks.speed import machine_info

TINY = {
    "shapes": {"tiny-gemma3": None, "tiny-llama": None, "tiny-mistral": None},
    "mistral": "tiny-mistral",
    "device": "cpu",
    "dtype": "float32",
    "docs": 24,
    "mistral_docs": 12,
    "doc_tokens": 48,
    "max_length": 64,
    "repeats": 1,
    "threads": 1,  # tiny matrices: one thread beats several fighting for a busy CPU
    "budgets": [256],
    "batch_sizes": [8],
    "mistral_budgets": [256],
    "official_batch_sizes": [8],
}


def default_texts() -> Path:
    data = os.environ.get("LLM2VEC_DATA_DIR") or str(ROOT.parent / "shared" / "data")
    return Path(data) / "english-sentences" / "all_sentences.txt"


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python3 -m benchmarks.gpu.measure", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--out", required=True, help="folder for the results (created)")
    p.add_argument(
        "--wheels", default=None, help="folder of benchmarks.gpu.wheels: make both venvs from it"
    )
    p.add_argument("--site", default="/tmp/llm2vec-gpu-site", help="where the wheels are installed")
    p.add_argument(
        "--official-venv", default=None, help="existing official venv (without --wheels)"
    )
    p.add_argument("--shapes", default=None, help="shape folders (default WHEELS/shapes)")
    p.add_argument(
        "--texts",
        default=None,
        help="sentences, one a line (default ../shared/data/english-sentences/all_sentences.txt)",
    )
    p.add_argument(
        "--tiny", action="store_true", help="tiny random shapes on the CPU (a test of the script)"
    )
    p.add_argument("--docs", type=int, default=4096, help="documents for the embedded shapes")
    p.add_argument("--mistral-docs", type=int, default=1024, help="documents for the 7B shape")
    p.add_argument("--doc-tokens", type=int, default=384, help="longest document, tokens")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--budgets", default="16384,65536", help="our token budgets (embedded shapes)")
    p.add_argument("--batch-sizes", default="32,128", help="bare forward batch sizes")
    p.add_argument("--mistral-budgets", default="16384,65536", help="our token budgets (7B)")
    p.add_argument("--official-batch-sizes", default="32,128", help="official encode batch sizes")
    p.add_argument(
        "--arm-timeout", type=int, default=420, help="seconds per arm before it is stopped"
    )
    args = p.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    return args


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def build_spec(args, work: Path) -> dict:
    """The settings both arms read (JSON), after checking the inputs exist."""
    spec = {
        "work": str(work),
        "attention": "sdpa",
        "result": str(work / "ours.json"),
        "official_result": str(work / "official.json"),
        "mistral_texts": str(work / "mistral_texts.json"),
    }
    if args.tiny:
        return {**spec, **TINY, "sentences": None}  # None: the arm's built-in tiny corpus
    texts = Path(args.texts) if args.texts else default_texts()
    shapes = (
        Path(args.shapes)
        if args.shapes
        else (Path(args.wheels) / "shapes" if args.wheels else None)
    )
    if shapes is None:
        raise EnvError(
            "no shape folders: pass --wheels WHEELS (or --shapes DIR) from benchmarks.gpu.wheels"
        )
    missing = [
        str(shapes / n) for n in (*EMBEDDED, MISTRAL) if not (shapes / n / "config.json").is_file()
    ]
    if missing:
        raise EnvError(f"missing shape folders {missing}: rerun python -m benchmarks.gpu.wheels")
    if not texts.is_file():
        raise EnvError(f"no texts file {texts}: pass --texts FILE (sentences, one a line)")
    return {
        **spec,
        "shapes": {n: str(shapes / n) for n in (*EMBEDDED, MISTRAL)},
        "mistral": MISTRAL,
        "device": "cuda",
        "dtype": "bfloat16",
        "sentences": str(texts),
        "docs": args.docs,
        "mistral_docs": args.mistral_docs,
        "doc_tokens": args.doc_tokens,
        "max_length": args.max_length,
        "repeats": args.repeats,
        "budgets": _ints(args.budgets),
        "batch_sizes": _ints(args.batch_sizes),
        "mistral_budgets": _ints(args.mistral_budgets),
        "official_batch_sizes": _ints(args.official_batch_sizes),
    }


def run_arm(env: dict, args: list[str], timeout: int, log_path: Path) -> dict:
    """Run one arm in `env` (environments()); {"ok", "s", "error"}; output to log_path, echoed."""
    t = time.perf_counter()
    cmd = [env["python"], *args]
    with open(log_path, "w") as log:
        try:
            r = subprocess.run(
                cmd,
                cwd=ROOT,
                env=child_env(env["pythonpath"]),
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout,
            )
            code = r.returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    text = log_path.read_text(errors="replace")
    print(text, end="", flush=True)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    error = None if code == 0 else f"exit {code}: {lines[-1] if lines else 'no output'}"
    return {"ok": code == 0, "s": round(time.perf_counter() - t, 1), "error": error}


def summarize(spec: dict, ours: dict, official: dict | None) -> list[dict]:
    """One row per timed run: tokens/s, TFLOP/s, MFU; the ratio to the arm's reference."""
    device = ours.get("device_name")
    peak = peak_flops(device) if spec["device"].startswith("cuda") else None
    rows = []
    for name, m in ours.get("models", {}).items():
        runs = list(m["runs"])
        if name == spec["mistral"] and official:
            runs += official["runs"]
        for run in runs:
            label = (
                f"mbt{run['max_batch_tokens']}"
                if "max_batch_tokens" in run
                else f"bs{run['batch_size']}"
            )
            rows.append(
                {
                    "model": name,
                    "impl": run["impl"],
                    "setting": label,
                    "s_best": run["s_best"],
                    **throughput(m["config"], m["lengths"], run["s_best"], peak),
                }
            )
    for name in {r["model"] for r in rows}:
        mine = [r for r in rows if r["model"] == name]
        ref = [r["tok_s"] for r in mine if r["impl"] in ("bare", "official")]
        for r in mine:
            r["x_best_reference"] = round(r["tok_s"] / max(ref), 3) if ref else None
    return rows


def write_table(rows: list[dict], path: Path, header: str) -> None:
    lines = [
        header,
        "",
        "| model | impl | setting | s | tokens/s | TFLOP/s | MFU | x best reference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        lines.append(
            f"| {r['model']} | {r['impl']} | {r['setting']} | {r['s_best']} | {r['tok_s']:,} "
            f"| {r['tflop_s']} | {mfu} | {r['x_best_reference']} |"
        )
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None) -> int:
    args = parse_args(argv)
    started = _dt.datetime.now()
    stamp = started.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out)
    work = out / f"work-{stamp}"
    work.mkdir(parents=True, exist_ok=True)
    try:
        spec = build_spec(args, work)
        envs = environments(
            Path(args.wheels) if args.wheels else None, Path(args.site), args.official_venv
        )
    except EnvError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    spec_path = work / "spec.json"
    spec_path.write_text(json.dumps(spec, indent=1))
    arms = {
        "ours": run_arm(
            envs["ours"],
            ["-m", "benchmarks.gpu.arm_ours", str(spec_path)],
            args.arm_timeout,
            work / "ours.log",
        )
    }
    official = None
    if envs["official"]["skipped"]:
        arms["official"] = {"ok": False, "skipped": envs["official"]["skipped"]}
        print(f"official arm skipped: {envs['official']['skipped']}")
    elif arms["ours"]["ok"]:
        script = str(Path(__file__).with_name("arm_official.py"))
        arms["official"] = run_arm(
            envs["official"],
            [script, str(spec_path)],
            args.arm_timeout,
            work / "official.log",
        )
        if arms["official"]["ok"]:
            official = json.loads(Path(spec["official_result"]).read_text())
    ours = json.loads(Path(spec["result"]).read_text()) if arms["ours"]["ok"] else {}
    rows = summarize(spec, ours, official)
    result = {
        "benchmark": "gpu_measure",
        "command": shlex.join(["python3", "-m", "benchmarks.gpu.measure", *args.argv]),
        "started": started.isoformat(timespec="seconds"),
        "machine": {**machine_info(), "device_name": ours.get("device_name")},
        "peak_bf16_dense_flop_s": peak_flops(ours.get("device_name")),
        "peak_source": PEAK_SOURCE,
        "environments": envs,
        "arms": arms,
        "settings": spec,
        "ours": {k: v for k, v in ours.items() if k != "models"},
        "official": {k: v for k, v in (official or {}).items() if k != "runs"},
        "models": {
            n: {k: v for k, v in m.items() if k != "lengths"} | {"tokens": sum(m["lengths"])}
            for n, m in ours.get("models", {}).items()
        },
        "rows": rows,
    }
    path = out / f"gpu_measure_{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    write_table(
        rows,
        out / f"gpu_measure_{stamp}.md",
        f"Device: {ours.get('device_name')}; torch {ours.get('torch')}; `{result['command']}`",
    )
    print(f"wrote {path}")
    failed = [k for k, a in arms.items() if not a.get("ok") and not a.get("skipped")]
    if failed:
        print(
            f"error: arm(s) {failed} failed: " + "; ".join(arms[k]["error"] for k in failed),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
