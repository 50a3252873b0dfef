"""Load benchmark of `llm2vec-retrieval serve` on loopback (not a test).

    python -m benchmarks.bench_server                           # embedded default model, 30 s per level
    python -m benchmarks.bench_server --tiny --duration 10      # tiny random model (plumbing only)
    python -m benchmarks.bench_server --model path/to/ckpt --concurrency 1,4,16
    python -m benchmarks.bench_server --url http://127.0.0.1:8000 # an already running server
    python -m benchmarks.bench_server --tiny --concurrency 32 --duration 20 --large-inputs 256 --max-p99-ms 1000
                                                                # small requests while a large one runs

Starts the server as a subprocess on 127.0.0.1 (a free port), waits until it is ready,
sends a few warm-up requests, then for each concurrency level runs that many client
threads for ``--duration`` seconds. Each client keeps one HTTP/1.1 connection and sends
``POST /v1/embeddings`` requests back to back, each with ``--inputs`` texts drawn from a
seeded pool of synthetic sentences of 8 to ``--max-words`` words; every other request is
a query (``input_type: "query"``, with the instruction). Measured per level:

- requests/s and inputs/s: successful requests (inputs) / wall time of the level;
- latency p50 / p90 / p99 / max in ms (client side, request sent to response read);
- errors: non-200 answers and connection failures;
- requests per model batch: from the server's ``/health`` ``batches`` counter (how much
  the micro-batcher grouped concurrent requests).

With ``--large-inputs N`` one more client (``--large-clients``) sends requests of N long
texts (``--large-words`` words, cut by the server to its token limit: the started server
gets ``--truncate``) back to back during every level; the latency percentiles above are
then those of the small requests that ran beside them, and ``large`` holds the large
requests' own numbers. This is the starvation check: the server splits a large request
into token-budget pieces and interleaves the small ones, so their p99 stays near one
batch's time instead of a whole large request's. ``--max-p99-ms`` makes the exit status 1
when the small requests' p99 is above it or any request failed.

Clients and server share the machine's cores: numbers are for this loopback setup only.
Writes ``benchmarks/results/server_<timestamp>.json`` (machine, command, options,
numbers) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import http.client
import json
import os
import platform
import random
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
WORDS = (
    "the a retrieval model encoder vector index query document river vaccine protein cell search "
    "token attention pooling language embedding similarity corpus passage answer question fast "
    "slow large small network training data science history music city water energy system "
    "method result study effect patient market price policy law design code test server"
).split()


def text_pool(n: int, max_words: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, max_words))).capitalize() + "."
        for _ in range(n)
    ]


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


class Client:
    def __init__(self, host: str, port: int, timeout: float = 120, api_key: str | None = None):
        self.host, self.port, self.timeout = host, port, timeout
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.conn: http.client.HTTPConnection | None = None

    def post(self, path: str, body: dict) -> tuple[int, dict | None]:
        data = json.dumps(body).encode()
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request("POST", path, body=data, headers=self.headers)
                resp = self.conn.getresponse()
                payload = resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    self.close()
                return resp.status, json.loads(payload) if payload else None
            except (ConnectionError, http.client.HTTPException, OSError):
                self.close()
                if attempt:
                    raise
        raise RuntimeError("unreachable")

    def get(self, path: str) -> dict:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("GET", path, headers=self.headers)
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def long_texts(n: int, words: int, seed: int) -> list[str]:
    rng = random.Random(seed + 7)
    return [" ".join(rng.choice(WORDS) for _ in range(words)) + "." for _ in range(n)]


def run_level(
    host: str,
    port: int,
    concurrency: int,
    duration: float,
    pool: list[str],
    inputs: int,
    seed: int,
    large_texts: list[str] | None = None,
    large_clients: int = 1,
    api_key: str | None = None,
) -> dict:
    """``concurrency`` small clients (and ``large_clients`` sending ``large_texts``) for ``duration`` s."""
    n_large = large_clients if large_texts else 0
    total = concurrency + n_large
    latencies: list[list[float]] = [[] for _ in range(total)]
    errors = [0] * total
    n_inputs = [0] * total
    tokens = [0] * total
    error_samples: list[str] = []
    start_barrier = threading.Barrier(total + 1)
    stop_at = [0.0]

    def worker(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        client = Client(host, port, api_key=api_key)
        large = i >= concurrency
        want = len(large_texts) if large else inputs
        start_barrier.wait()
        j = 0
        while time.perf_counter() < stop_at[0]:
            if large:
                body = {"input": large_texts}
            else:
                body = {
                    "input": [rng.choice(pool) for _ in range(inputs)],
                    "input_type": "query" if j % 2 else "document",
                }
            j += 1
            t0 = time.perf_counter()
            try:
                status, out = client.post("/v1/embeddings", body)
            except Exception as exc:  # noqa: BLE001 - counted as an error
                errors[i] += 1
                if len(error_samples) < 5:
                    error_samples.append(f"{type(exc).__name__}: {exc}")
                continue
            dt = time.perf_counter() - t0
            if status == 200 and out and len(out.get("data", [])) == want:
                latencies[i].append(dt)
                n_inputs[i] += want
                tokens[i] += int(out.get("usage", {}).get("prompt_tokens", 0))
            else:
                errors[i] += 1
                if len(error_samples) < 5:
                    error_samples.append(f"HTTP {status}: {str(out)[:200]}")
        client.close()

    health0 = Client(host, port, api_key=api_key).get("/health")
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(total)]
    for t in threads:
        t.start()
    t_start = time.perf_counter()
    stop_at[0] = t_start + duration
    start_barrier.wait()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t_start
    health1 = Client(host, port, api_key=api_key).get("/health")
    small = slice(0, concurrency)
    lat = sorted(x for per in latencies[small] for x in per)
    ok = len(lat)
    batches = health1.get("batches", 0) - health0.get("batches", 0)
    out = {
        "concurrency": concurrency,
        "duration_s": round(wall, 3),
        "requests_ok": ok,
        "errors": sum(errors[small]),
        "requests_per_s": round(ok / wall, 3),
        "inputs_per_s": round(sum(n_inputs[small]) / wall, 3),
        "prompt_tokens_per_s": round(sum(tokens[small]) / wall, 1),
        "latency_ms": latency_summary(lat),
        "model_batches": batches,
        "requests_per_batch": round(
            (ok + sum(len(x) for x in latencies[concurrency:])) / batches, 3
        )
        if batches
        else None,
        "error_samples": error_samples,
    }
    if n_large:
        big = sorted(x for per in latencies[concurrency:] for x in per)
        out["large"] = {
            "clients": n_large,
            "inputs_per_request": len(large_texts),
            "requests_ok": len(big),
            "errors": sum(errors[concurrency:]),
            "prompt_tokens_per_s": round(sum(tokens[concurrency:]) / wall, 1),
            "latency_ms": latency_summary(big),
        }
    return out


def latency_summary(lat: list[float]) -> dict:
    ms = lambda v: None if v is None else round(v * 1000, 2)  # noqa: E731
    return {
        "p50": ms(percentile(lat, 50)),
        "p90": ms(percentile(lat, 90)),
        "p99": ms(percentile(lat, 99)),
        "max": ms(lat[-1] if lat else None),
        "mean": ms(sum(lat) / len(lat) if lat else None),
    }


def start_server(
    model: str | None, extra: list[str], timeout: float, threads: int | None = None
) -> tuple[subprocess.Popen, str, int, str]:
    cmd = [
        sys.executable,
        "-m",
        "llm2vec_retrieval",
        *(["--threads", str(threads)] if threads else []),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        *extra,
    ]
    if model:
        cmd += ["--model", model]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=None, text=True, env=env, cwd=ROOT)
    box: dict[str, str] = {}

    def read() -> None:
        box["line"] = proc.stdout.readline()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    line = box.get("line", "")
    if not line.startswith("serving "):
        proc.kill()
        raise SystemExit(f"server did not start (got {line!r}); command: {shlex.join(cmd)}")
    url = line.rsplit(" on ", 1)[1].strip()
    u = urlparse(url)
    return proc, u.hostname, u.port, line.strip()


def machine_info() -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }
    try:
        info["sched_affinity"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    try:
        info["loadavg_at_start"] = os.getloadavg()
    except OSError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads_default"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--model", default=None, help="model for the server (default: the embedded default)"
    )
    ap.add_argument(
        "--tiny", action="store_true", help="serve a tiny random model (measures the plumbing only)"
    )
    ap.add_argument(
        "--url", default=None, help="benchmark a running server instead of starting one"
    )
    ap.add_argument("--duration", type=float, default=30.0, help="seconds per concurrency level")
    ap.add_argument("--concurrency", default="1,16", help="comma-separated client counts")
    ap.add_argument("--inputs", type=int, default=1, help="texts per request")
    ap.add_argument("--max-words", type=int, default=40, help="longest synthetic text, in words")
    ap.add_argument("--pool", type=int, default=200, help="distinct texts in the pool")
    ap.add_argument("--warmup", type=int, default=5, help="warm-up requests before measuring")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--server-arg", action="append", default=[], help="extra argument for `serve` (repeatable)"
    )
    ap.add_argument(
        "--threads", type=int, default=None, help="torch threads of the server (default: torch's)"
    )
    ap.add_argument(
        "--startup-timeout", type=float, default=900.0, help="seconds to wait for the server"
    )
    ap.add_argument(
        "--output",
        default=None,
        help="results JSON (default: benchmarks/results/server_<timestamp>.json)",
    )
    ap.add_argument(
        "--large-inputs",
        type=int,
        default=0,
        help="texts per large request sent beside the small ones (0: no large requests)",
    )
    ap.add_argument(
        "--large-words", type=int, default=300, help="words per large text (cut to the token limit)"
    )
    ap.add_argument("--large-clients", type=int, default=1, help="clients sending large requests")
    ap.add_argument(
        "--api-key", default=None, help="API key of the server (sent as a Bearer token)"
    )
    ap.add_argument(
        "--max-p99-ms",
        type=float,
        default=None,
        help="exit 1 when the small requests' p99 is above this or any request failed",
    )
    args = ap.parse_args(argv)
    if args.large_inputs and not args.url:  # the started server must accept the large requests
        extra = list(args.server_arg)
        if "--truncate" not in extra:
            extra.append("--truncate")
        if "--max-inputs" not in extra:
            extra += ["--max-inputs", str(max(args.large_inputs, 256))]
        if "--max-body-bytes" not in extra:
            extra += ["--max-body-bytes", str(64 << 20)]
        args.server_arg = extra
    if args.api_key and not args.url and "--api-key" not in args.server_arg:
        args.server_arg = [*args.server_arg, "--api-key", args.api_key]
    large_texts = (
        long_texts(args.large_inputs, args.large_words, args.seed) if args.large_inputs else None
    )

    levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
    started = _dt.datetime.now(_dt.timezone.utc)
    proc = None
    tmp = None
    model = args.model
    try:
        if args.url:
            u = urlparse(args.url)
            host, port, banner = u.hostname, u.port, f"external server {args.url}"
        else:
            if args.tiny:
                from llm2vec_retrieval.testing import make_tiny_checkpoint

                tmp = tempfile.TemporaryDirectory(prefix="bench-server-")
                model = str(make_tiny_checkpoint(Path(tmp.name) / "tiny", "llama"))
            t0 = time.perf_counter()
            proc, host, port, banner = start_server(
                model, args.server_arg, args.startup_timeout, args.threads
            )
            print(f"{banner} (ready in {time.perf_counter() - t0:.1f}s)", flush=True)
        health = Client(host, port, api_key=args.api_key).get("/health")
        pool = text_pool(args.pool, args.max_words, args.seed)
        warm = Client(host, port, api_key=args.api_key)
        for i in range(args.warmup):
            warm.post("/v1/embeddings", {"input": pool[i % len(pool)]})
        warm.close()
        results = []
        for c in levels:
            print(f"concurrency {c}: {args.duration:.0f}s ...", flush=True)
            results.append(
                run_level(
                    host,
                    port,
                    c,
                    args.duration,
                    pool,
                    args.inputs,
                    args.seed,
                    large_texts=large_texts,
                    large_clients=args.large_clients,
                    api_key=args.api_key,
                )
            )
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if tmp is not None:
            tmp.cleanup()

    out = {
        "benchmark": "server",
        "started": started.isoformat(timespec="seconds"),
        "command": shlex.join(
            [
                sys.executable,
                "-m",
                "benchmarks.bench_server",
                *(argv if argv is not None else sys.argv[1:]),
            ]
        ),
        "machine": machine_info(),
        "server": {
            "banner": banner,
            "model": health.get("model"),
            "dim": health.get("dim"),
            "max_input_tokens": health.get("max_input_tokens"),
            "tiny": args.tiny,
            "extra_args": args.server_arg,
            "torch_threads": args.threads or "torch default",
        },
        "options": {
            "duration_s": args.duration,
            "concurrency": levels,
            "inputs_per_request": args.inputs,
            "max_words": args.max_words,
            "pool": args.pool,
            "seed": args.seed,
            "request_mix": "alternating document / query (with instruction)",
            "large_inputs": args.large_inputs,
            "large_words": args.large_words,
            "large_clients": args.large_clients if args.large_inputs else 0,
        },
        "results": results,
    }
    failed = []
    if args.max_p99_ms is not None:
        for r in results:
            p99 = r["latency_ms"]["p99"]
            errs = r["errors"] + r.get("large", {}).get("errors", 0)
            if p99 is None or p99 > args.max_p99_ms or errs:
                failed.append(f"concurrency {r['concurrency']}: p99 {p99} ms, {errs} error(s)")
        out["check"] = {"max_p99_ms": args.max_p99_ms, "passed": not failed, "failures": failed}
    path = (
        Path(args.output)
        if args.output
        else ROOT / "benchmarks" / "results" / (f"server_{started.strftime('%Y%m%d-%H%M%S')}.json")
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")

    print(
        f"\nmodel {health.get('model')} (dim {health.get('dim')}), {args.inputs} input(s)/request, "
        f"{args.duration:.0f}s per level, server threads: {args.threads or 'torch default'}\n"
    )
    print(
        "| clients | req/s | inputs/s | p50 ms | p99 ms | errors | req/batch | large: ok, p50 ms, errors |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        lat = r["latency_ms"]
        big = r.get("large")
        big_txt = (
            f"{big['requests_ok']}, {big['latency_ms']['p50']}, {big['errors']}" if big else "-"
        )
        print(
            f"| {r['concurrency']} | {r['requests_per_s']:.2f} | {r['inputs_per_s']:.2f} | {lat['p50']} | "
            f"{lat['p99']} | {r['errors']} | {r['requests_per_batch']} | {big_txt} |"
        )
    print(f"\nwrote {path}")
    if failed:
        print("check failed: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
