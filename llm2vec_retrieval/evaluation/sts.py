"""STS evaluation of an embedder: Spearman (x100) of cosine similarity against gold scores.

STS is symmetric, so both sentences of a pair go through ``encode_queries`` with the same
instruction (by default the STS instruction of :mod:`llm2vec_retrieval.instructions`), as in
LLM2Vec / MTEB. Each distinct sentence is encoded once.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .._io import l2_normalize
from ..instructions import STS_INSTRUCTION
from .cache import EmbeddingCache, encode_cached
from .data import StsData

__all__ = ["rankdata", "spearman", "pearson", "evaluate_sts"]


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties get the average of their ranks (like ``scipy.stats.rankdata``)."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    # Boundaries of runs of equal values.
    starts = np.r_[0, np.flatnonzero(xs[1:] != xs[:-1]) + 1]
    ends = np.r_[starts[1:], len(xs)]
    avg = (starts + ends + 1) / 2.0  # mean of ranks start+1..end
    ranks_sorted = np.repeat(avg, ends - starts)
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = ranks_sorted
    return ranks


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64) - np.mean(a)
    b = np.asarray(b, dtype=np.float64) - np.mean(b)
    denom = np.sqrt(np.sum(a * a) * np.sum(b * b))
    return float(np.sum(a * b) / denom) if denom > 0 else 0.0


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return pearson(rankdata(a), rankdata(b))


def cosine_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of each row of `a` with the same row of `b`, in float64 (0 for a zero row)."""
    a = l2_normalize(np.asarray(a, dtype=np.float64))
    b = l2_normalize(np.asarray(b, dtype=np.float64))
    return np.sum(a * b, axis=1)


def evaluate_sts(
    embedder: Any,
    data: StsData,
    instruction: str | None = STS_INSTRUCTION,
    cache: EmbeddingCache | None = None,
) -> dict:
    """Spearman and Pearson (both x100) of pairwise cosine vs gold, plus counts and timing."""
    unique = list(dict.fromkeys(data.sentences1 + data.sentences2))
    position = {s: i for i, s in enumerate(unique)}
    t0 = time.perf_counter()
    emb, cached = encode_cached(embedder, unique, "query", instruction, cache)
    t1 = time.perf_counter()
    e1 = emb[[position[s] for s in data.sentences1]]
    e2 = emb[[position[s] for s in data.sentences2]]
    cos = cosine_pairs(e1, e2)
    return {
        "metrics": {
            "spearman": 100.0 * spearman(cos, data.scores),
            "pearson": 100.0 * pearson(cos, data.scores),
        },
        "n_pairs": len(data),
        "n_sentences": len(unique),
        "dim": int(emb.shape[1]),
        "instruction": instruction,
        "timing_s": {"encode": t1 - t0, "total": time.perf_counter() - t0},
        "cached": cached,
    }
