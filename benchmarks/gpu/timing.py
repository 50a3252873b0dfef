"""Timed passes shared by both arms (no project imports: it also runs in the official venv)."""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path


def read_spec(argv: list[str] | None) -> dict | None:
    """An arm's spec (the JSON file its first argument names), with torch's threads set from
    it; None (after a one-line error) when it asks for CUDA and torch sees none."""
    import torch

    args = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(args[0]).read_text())
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    if spec["device"].startswith("cuda") and not torch.cuda.is_available():
        print(f"error: no CUDA device visible to torch {torch.__version__}", file=sys.stderr)
        return None
    return spec


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, repeats: int) -> dict:
    """Seconds of `repeats` calls of fn() after one untimed warm-up call (best and median)."""
    fn(warmup=True)
    sync(device)
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(warmup=False)
        sync(device)
        runs.append(time.perf_counter() - t)
    return {
        "s_best": round(min(runs), 4),
        "s_median": round(statistics.median(runs), 4),
        "runs": runs,
    }


def peak_memory_gb(device: str) -> float | None:
    import torch

    if not device.startswith("cuda"):
        return None
    return round(torch.cuda.max_memory_allocated() / 2**30, 2)
