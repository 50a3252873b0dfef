"""Timed passes shared by both arms (no project imports: it also runs in the official venv)."""

from __future__ import annotations

import statistics
import time


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
