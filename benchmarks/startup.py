"""Start-up time of `search` and `serve` with the real default model (issue 16.2).

    python -m benchmarks.startup --index /tmp/fs_idx           # an index built with the default model
    python -m benchmarks.startup                                # builds one of docs/ first (minutes)
    python -m benchmarks.startup --index DIR --no-cold --repeats 3

Each measurement is a fresh process, as a user starts it:

- search: `python -m llm2vec_retrieval search DIR QUERY` until it exits (results printed);
- search --mode lexical (BM25 only, no model loaded), warm only;
- search --server URL: a `serve` started beforehand (not timed) encodes the query, warm only;
- serve: `python -m llm2vec_retrieval serve --index DIR --port 0` until the first
  `POST /v1/embeddings` on 127.0.0.1 answers 200 (also: until it prints "serving").

Cache states (each a private `LLM2VEC_RETRIEVAL_CACHE`, so the user's cache is not touched):

- cold: an empty cache (GGUF dequantized, digests hashed, adapter merged and cached), one run;
- merge_every_load: the dequantized base cached, but no merged-model cache (its folder is
  made unwritable), so the adapter is merged at every load, as before issue 16.2;
- warm: everything cached; median of --repeats runs.

The CPU time (user + system) of each process is recorded too: it is what other processes on
the machine change least. A `phases` child process times the parts of a warm start in one process (imports, encoder
load, index load, first and second query). The load average is recorded before every run;
other processes on the machine slow every number down. For priority over them, start it
from a shell that ran `echo -15 > /proc/$$/autogroup` (the file records the autogroup).
Writes benchmarks/results/startup_<stamp>.json. These runs pass `--no-warm`: they time a
search that loads the model itself.

Warm searches (issue 26.5), a separate run that writes benchmarks/results/warm_search_<stamp>.json:

    python -m benchmarks.startup --warm-search --index DIR      # an index (default model: demo)
    python -m benchmarks.startup --warm-search --tiny           # a tiny random model, seconds

`search --no-warm` (the model loaded here), the first `search` (it starts the warm encoder and
waits for it) and later `search`es (the warm encoder answers), each a fresh process with a
private runtime folder; the helper is stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import http.client
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
QUERY = "how do I resume training"
CLI = [sys.executable, "-m", "llm2vec_retrieval"]

PHASES = r"""
import json, sys, time
t0 = time.perf_counter(); marks = {}
def mark(name):
    global t0
    now = time.perf_counter(); marks[name] = round(now - t0, 3); t0 = now
import torch; mark("import torch")
import transformers, transformers.modeling_utils; from transformers import AutoModel, AutoTokenizer; mark("import transformers")
import bm25s, faiss
from llm2vec_retrieval import LLM2Vec, sources
from llm2vec_retrieval.hardware import resolve_dtype
from llm2vec_retrieval.ingest import Searcher; mark("import the rest (llm2vec_retrieval, faiss, bm25s)")
dtype = resolve_dtype("auto").dtype
base = sources.resolve_model_path(sources.DEFAULT_BASE)
tok = AutoTokenizer.from_pretrained(base); mark("tokenizer (AutoTokenizer, alone)")
enc = LLM2Vec.from_pretrained(dtype=dtype); mark("encoder load (tokenizer, merged weights, probes)")
s = Searcher(sys.argv[1], encoder=enc); mark("index load")
s.search(sys.argv[2], k=5); mark("first query")
s.search(sys.argv[2] + " again", k=5); mark("second query")
print(json.dumps(marks))
"""


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def autogroup() -> str | None:
    try:
        return Path("/proc/self/autogroup").read_text().strip()
    except OSError:
        return None


def child_cpu() -> float:
    """User + system CPU seconds of the finished children so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def env_for(cache: Path) -> dict[str, str]:
    return {
        **os.environ,
        "LLM2VEC_RETRIEVAL_CACHE": str(cache),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }


def time_search(
    index: Path,
    cache: Path,
    query: str,
    extra: tuple[str, ...] = ("--no-warm",),
    env: dict[str, str] | None = None,
) -> dict:
    cmd = [*CLI, "search", "--index", str(index), query, "-k", "5", *extra]
    before = loadavg()
    cpu0 = child_cpu()
    t0 = time.perf_counter()
    run = subprocess.run(
        cmd, env={**env_for(cache), **(env or {})}, capture_output=True, text=True, cwd=ROOT
    )
    wall = time.perf_counter() - t0
    if run.returncode != 0 or "[1]" not in run.stdout:
        raise SystemExit(
            f"search failed ({run.returncode}): {shlex.join(cmd)}\n{run.stderr[-2000:]}"
        )
    return {
        "seconds": round(wall, 3),
        "cpu_s": round(child_cpu() - cpu0, 3),
        "loadavg_before": before,
        "stderr": run.stderr.strip().splitlines()[:3],
    }


def warm_search(args: argparse.Namespace, out: dict, tmp: Path) -> dict:
    """Cold and warm `search` wall times with the warm encoder, beside `--no-warm`."""
    import re
    import signal

    from llm2vec_retrieval.cachedir import cache_dir

    cache = cache_dir()  # the user's: the model's own caches are warm, as after one search
    index = args.index
    if args.tiny:
        from llm2vec_retrieval.testing import make_small_corpus, make_tiny_checkpoint

        model = make_tiny_checkpoint(tmp / "model")
        corpus = make_small_corpus(tmp)
        index = tmp / "index"
        cmd = [*CLI, "index", str(corpus), "--index", str(index), "--model", str(model)]
        subprocess.run(cmd + ["--no-progress"], env=env_for(cache), check=True, cwd=ROOT)
        out["model"] = "tiny random llama (llm2vec_retrieval.testing)"
    elif index is None:
        raise SystemExit("--warm-search needs --index DIR (e.g. the demo index) or --tiny")
    out["index"] = str(index)
    run_dir = Path(tempfile.mkdtemp(prefix="l2v-bench-")).resolve()
    env = {"XDG_RUNTIME_DIR": str(run_dir), "LLM2VEC_RETRIEVAL_WARM": "1"}
    results: dict = {}
    time_search(index, cache, args.query)  # untimed: fills the OS file cache
    runs = [time_search(index, cache, args.query) for _ in range(args.repeats)]
    print(f"search --no-warm: {[r['seconds'] for r in runs]}", flush=True)
    results["search_no_warm"] = summary(runs)
    first = time_search(index, cache, args.query, (), env)
    print(f"first search (starts the warm encoder): {first['seconds']} s", flush=True)
    results["search_first_starts_helper"] = first
    pid = re.search(r"warm encoder \(pid (\d+)", " ".join(first["stderr"]))
    try:
        runs = [time_search(index, cache, args.query, (), env) for _ in range(args.repeats)]
        print(f"search, warm encoder running: {[r['seconds'] for r in runs]}", flush=True)
        if not all("in the warm encoder" in " ".join(r["stderr"]) for r in runs):
            raise SystemExit("a search did not use the warm encoder: " + repr(runs[-1]["stderr"]))
        results["search_warm"] = summary(runs)
    finally:
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid.group(1)), signal.SIGTERM)
        shutil.rmtree(run_dir, ignore_errors=True)
    return results


def _post(host: str, port: int, body: dict, timeout: float = 120) -> int:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(
            "POST", "/v1/embeddings", json.dumps(body), {"Content-Type": "application/json"}
        )
        resp = conn.getresponse()
        data = json.loads(resp.read() or b"null")
        if resp.status == 200 and not (isinstance(data, dict) and data.get("data")):
            return -1
        return resp.status
    finally:
        conn.close()


@contextlib.contextmanager
def running_serve(index: Path, cache: Path, query: str, timeout: float = 600):
    """A `serve` process on the index, yielded once its first `/v1/embeddings` answered 200:
    (its URL, timings from the start: to the first answer and to the "serving" line)."""
    cmd = [*CLI, "serve", "--index", str(index), "--host", "127.0.0.1", "--port", "0"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        env=env_for(cache),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    box: dict[str, object] = {}

    def read() -> None:
        box["line"] = proc.stdout.readline()
        box["at"] = time.perf_counter()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        reader.join(timeout)
        line = str(box.get("line", ""))
        if not line.startswith("serving "):
            raise SystemExit(f"server did not start (got {line!r}): {shlex.join(cmd)}")
        url = urlparse(line.rsplit(" on ", 1)[1].strip())
        status = None
        while time.perf_counter() - t0 < timeout:
            try:
                status = _post(url.hostname, url.port, {"input": [query], "input_type": "query"})
            except OSError:  # not listening yet
                status = None
            if status == 200:
                break
            time.sleep(0.01)
        answered = time.perf_counter()
        if status != 200:
            raise SystemExit(
                f"no 200 from /v1/embeddings (last status {status}): {shlex.join(cmd)}"
            )
        yield (
            f"http://{url.hostname}:{url.port}",
            {
                "seconds": round(answered - t0, 3),
                "seconds_to_serving_line": round(float(box["at"]) - t0, 3),
            },
        )
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def time_serve(index: Path, cache: Path, query: str, timeout: float = 600) -> dict:
    before = loadavg()
    cpu0 = child_cpu()
    with running_serve(index, cache, query, timeout) as (_, timings):
        pass
    return {
        **timings,
        "cpu_s": round(child_cpu() - cpu0, 3),  # to its exit, a moment after the answer
        "loadavg_before": before,
    }


def phases(index: Path, cache: Path, query: str) -> dict:
    run = subprocess.run(
        [sys.executable, "-c", PHASES, str(index), query],
        env=env_for(cache),
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if run.returncode != 0:
        raise SystemExit(f"phases failed:\n{run.stderr[-2000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def summary(runs: list[dict]) -> dict:
    secs = [r["seconds"] for r in runs]
    out = {
        "runs": runs,
        "median_s": round(statistics.median(secs), 3),
        "min_s": min(secs),
        "max_s": max(secs),
        "median_cpu_s": round(statistics.median(r["cpu_s"] for r in runs), 3),
    }
    if runs and "seconds_to_serving_line" in runs[0]:
        out["median_to_serving_line_s"] = round(
            statistics.median(r["seconds_to_serving_line"] for r in runs), 3
        )
    return out


def fresh_cache(parent: Path, name: str, models_from: Path | None, merged: bool) -> Path:
    """A cache root: the dequantized models (linked) and digests of `models_from`; the
    merged-model folder kept (`merged`) or replaced by a file so none can be written."""
    cache = parent / name
    cache.mkdir()
    if models_from is not None:
        os.symlink((models_from / "models").resolve(), cache / "models")
        if (models_from / "digests.json").is_file():
            shutil.copy(models_from / "digests.json", cache / "digests.json")
    if not merged:
        (cache / "merged").write_text("merged-model cache disabled by benchmarks/startup.py\n")
    return cache


def build_index(parent: Path, cache: Path) -> Path:
    index = parent / "index"
    src = parent / "docs"
    shutil.copytree(ROOT / "docs", src)
    cmd = [*CLI, "index", str(src), "--index", str(index), "--no-progress"]
    subprocess.run(cmd, env=env_for(cache), check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return index


def main(argv=None) -> int:
    from benchmarks.speed import result_header
    from llm2vec_retrieval.cachedir import cache_dir

    p = argparse.ArgumentParser(
        prog="python -m benchmarks.startup", description=__doc__.split("\n")[0]
    )
    p.add_argument(
        "--index",
        type=Path,
        default=None,
        help="index built with the default model (default: build one of docs/)",
    )
    p.add_argument("--query", default=QUERY)
    p.add_argument("--repeats", type=int, default=5, help="warm runs per command (median reported)")
    p.add_argument(
        "--merge-repeats", type=int, default=3, help="runs per command with the merge at every load"
    )
    p.add_argument(
        "--no-cold",
        action="store_true",
        help="skip the cold runs (they dequantize the GGUF base twice)",
    )
    p.add_argument(
        "--warm-search",
        action="store_true",
        help="only the warm-encoder runs (writes warm_search_<stamp>.json)",
    )
    p.add_argument("--tiny", action="store_true", help="--warm-search on a tiny random model")
    p.add_argument("--output", type=Path, default=None)
    args = p.parse_args(argv)

    started = _dt.datetime.now()
    name = "warm_search" if args.warm_search else "startup"
    out: dict = {
        **result_header("startup", argv, started),
        "autogroup": autogroup(),
        "query": args.query,
        "dtype": "auto (the CLI default)",
    }
    if args.warm_search:
        out["loadavg_at_start"] = loadavg()
        with tempfile.TemporaryDirectory(prefix="warm-bench-") as tmp:
            out["results"] = warm_search(args, out, Path(tmp))
        return write(out, args, started, name)
    with tempfile.TemporaryDirectory(prefix="startup-bench-") as tmp:
        tmp = Path(tmp)
        user_cache = cache_dir()
        results: dict = {}
        if not args.no_cold:
            print("cold search (empty cache: dequantize, hash, merge) ...", flush=True)
            cold = fresh_cache(tmp, "cold-search", None, merged=True)
            if args.index is None:
                args.index = build_index(tmp, cold)  # dequantizes into `cold` first
                shutil.rmtree(cold)
                cold = fresh_cache(tmp, "cold-search", None, merged=True)
            results["search_cold"] = time_search(args.index, cold, args.query)
            print("cold serve ...", flush=True)
            results["serve_cold"] = time_serve(
                args.index, fresh_cache(tmp, "cold-serve", None, merged=True), args.query
            )
            models_from = cold
        else:
            models_from = user_cache
            if args.index is None:
                args.index = build_index(tmp, user_cache)
        out["index"] = str(args.index)
        nomerge = fresh_cache(tmp, "merge-every-load", models_from, merged=False)
        warm = fresh_cache(tmp, "warm", models_from, merged=True)
        for cache in (nomerge, warm):  # untimed: hashes the digests, fills the merged-model cache
            time_search(args.index, cache, args.query)
        for name, cache, n in (
            ("merge_every_load", nomerge, args.merge_repeats),
            ("warm", warm, args.repeats),
        ):
            if n < 1:
                continue
            for cmd, timer in (("search", time_search), ("serve", time_serve)):
                runs = []
                for i in range(n):
                    runs.append(timer(args.index, cache, args.query))
                    print(f"{cmd} {name} run {i + 1}/{n}: {runs[-1]['seconds']:.2f} s", flush=True)
                results[f"{cmd}_{name}"] = summary(runs)
        runs = [
            time_search(args.index, warm, args.query, ("--mode", "lexical"))
            for _ in range(args.repeats)
        ]
        print(f"search --mode lexical warm: {[r['seconds'] for r in runs]}", flush=True)
        results["search_lexical_warm"] = summary(runs)  # loads no model: the cache state is moot
        with running_serve(args.index, warm, args.query) as (url, _):
            runs = [
                time_search(args.index, warm, args.query, ("--server", url, "--no-warm"))
                for _ in range(args.repeats)
            ]
        print(f"search --server (a running serve) warm: {[r['seconds'] for r in runs]}", flush=True)
        results["search_server_warm"] = summary(runs)
        out["phases_warm"] = phases(args.index, warm, args.query)
        out["results"] = results
    return write(out, args, started, name)


def write(out: dict, args: argparse.Namespace, started: _dt.datetime, name: str) -> int:
    out["finished"] = _dt.datetime.now().isoformat(timespec="seconds")
    out["loadavg_at_end"] = loadavg()
    path = args.output or RESULTS / f"{name}_{started.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(
        json.dumps({k: v for k, v in out.items() if k in ("results", "phases_warm")}, indent=2)[
            :4000
        ]
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
