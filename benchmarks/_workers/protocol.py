"""JSON-lines worker protocol shared by the benchmark workers (standard library + torch only).

A worker is started as a script (`python benchmarks/_workers/encode_worker.py --impl ...`),
possibly by another virtual environment's interpreter (the official llm2vec venv), so this
module imports nothing from the project.

Protocol: the worker loads its model, then writes one JSON line
`{"event": "ready", ...}` to its protocol channel (the original stdout; fd 1 itself is
redirected to stderr so that library prints cannot corrupt the channel). Then it reads one
JSON request per line from stdin (`{"op": NAME, ...}`) and answers each with one JSON line
`{"ok": true, ...}` or `{"ok": false, "error": ..., "traceback": ...}`. `{"op": "exit"}`
ends it.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import resource
import sys
import time
import traceback

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_mb() -> float | None:
    """Current resident set size of this process, MiB (Linux /proc; psutil elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE / 2**20
    except OSError:
        try:
            import psutil

            return psutil.Process().memory_info().rss / 2**20
        except Exception:
            return None


def maxrss_mb() -> float:
    """Peak resident set size of this process so far (getrusage ru_maxrss), MiB."""
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (
        value / 2**20 if sys.platform == "darwin" else value / 1024
    )  # bytes on macOS, KiB on Linux


def encode_array(array) -> dict:
    """A float32 numpy array as base64 (compact enough for a few thousand vectors)."""
    import numpy as np

    a = np.ascontiguousarray(np.asarray(array, dtype=np.float32))
    return {"shape": list(a.shape), "b64": base64.b64encode(a.tobytes()).decode("ascii")}


def set_threads(n: int | None) -> None:
    """Same thread settings in every worker: intra-op = n, inter-op = 1."""
    import torch

    if n:
        torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set (parallel work has started)
        pass


def base_args(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--impl", required=True)
    p.add_argument("--model", default=None, help="checkpoint folder")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--max-batch-tokens",
        type=int,
        default=None,
        help="our encoder's token budget (default: its config)",
    )
    p.add_argument("--project-root", default=None, help="put this folder first on sys.path")
    return p


def versions(*dists: str) -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "executable": sys.executable}
    for dist in dists:
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    return out


def serve(load, handlers: dict) -> int:
    """Run the worker: `load()` -> info dict, then answer requests with `handlers[op](request)`."""
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything printed by libraries goes to stderr
    sys.stdout = sys.stderr

    def send(obj: dict) -> None:
        channel.write(json.dumps(obj) + "\n")
        channel.flush()

    t0 = time.perf_counter()
    try:
        info = load() or {}
    except BaseException as e:  # noqa: BLE001 - report every load failure to the parent
        send(
            {
                "event": "ready",
                "ok": False,
                "error": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc(),
            }
        )
        return 1
    load_s = time.perf_counter() - t0
    send(
        {
            "event": "ready",
            "ok": True,
            "pid": os.getpid(),
            "load_s": load_s,
            "rss_mb": rss_mb(),
            "maxrss_mb": maxrss_mb(),
            "info": info,
        }
    )
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            request = json.loads(line)
            op = request.get("op")
            if op == "exit":
                send({"ok": True, "bye": True})
                return 0
            if op == "ping":
                send({"ok": True, "rss_mb": rss_mb(), "maxrss_mb": maxrss_mb()})
                continue
            if op not in handlers:
                raise ValueError(f"unknown op {op!r}; valid: {', '.join(sorted(handlers))}")
            before = {"rss_before_mb": rss_mb(), "maxrss_before_mb": maxrss_mb()}
            reply = handlers[op](request) or {}
            reply.update(before)
            reply.update({"ok": True, "rss_after_mb": rss_mb(), "maxrss_after_mb": maxrss_mb()})
            send(reply)
        except BaseException as e:  # noqa: BLE001
            send(
                {
                    "ok": False,
                    "error": f"{type(e).__name__}: {e}",
                    "traceback": traceback.format_exc(),
                }
            )
    return 0


def timed(fn, *args, **kwargs):
    """(result, seconds) of one call, perf_counter."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0
