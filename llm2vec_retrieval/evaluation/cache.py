"""On-disk cache of embeddings for the benchmark harness.

An entry is one ``.npy`` file (saved and loaded with ``allow_pickle=False``) named by the sha256
of a JSON key made of:

- the embedder's ``fingerprint()`` (model, weights, pooling, dtype, ... whatever the embedder
  says determines its output), serialised with sorted keys;
- the data checksum: sha256 of the exact, ordered list of texts encoded (so a corpus subset or a
  different file never hits another entry's vectors);
- the side (``"query"`` or ``"document"``) and the instruction (``None`` allowed).

Embedders without a ``fingerprint()`` method (`fingerprint.embedder_fingerprint` is None) are never cached: nothing would tell two of them
apart. A small ``.json`` file next to each ``.npy`` records the key for inspection.

Default folder: ``benchmarks/.cache/`` in the project checkout, overridden by the environment
variable ``LLM2VEC_BENCH_CACHE``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_open, atomic_write_json
from ..fingerprint import embedder_fingerprint
from .data import checksum_texts

__all__ = ["EmbeddingCache", "cache_key", "default_cache_dir", "encode_cached"]

CACHE_ENV = "LLM2VEC_BENCH_CACHE"
SIDES = ("query", "document")


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    project_root = Path(__file__).resolve().parents[2]
    if not (project_root / "pyproject.toml").exists():  # installed, not a checkout
        project_root = Path.cwd()
    return project_root / "benchmarks" / ".cache"


def _key_payload(fingerprint: dict, data_checksum: str, side: str, instruction: str | None) -> dict:
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    return {
        "fingerprint": fingerprint,
        "data_checksum": data_checksum,
        "side": side,
        "instruction": instruction,
    }


def cache_key(fingerprint: dict, data_checksum: str, side: str, instruction: str | None) -> str:
    payload = _key_payload(fingerprint, data_checksum, side, instruction)
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """A folder of ``<key>.npy`` embedding matrices."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()
        self.hits = 0
        self.misses = 0

    def path(self, key: str) -> Path:
        return self.root / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        p = self.path(key)
        if not p.exists():
            self.misses += 1
            return None
        try:
            arr = np.load(p, allow_pickle=False)
        except (OSError, ValueError):  # truncated or corrupt file: treat as a miss
            self.misses += 1
            return None
        self.hits += 1
        return arr

    def put(self, key: str, array: np.ndarray, meta: dict | None = None) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        p = self.path(key)
        array = np.ascontiguousarray(array)
        if array.dtype == object:
            raise TypeError("refusing to cache an object array")
        with atomic_open(p) as f:  # readers never see a partial file
            np.save(f, array, allow_pickle=False)
        if meta is not None:
            atomic_write_json(p.with_suffix(".json"), meta, indent=1, sort_keys=True, default=str)
        return p


def encode_cached(
    embedder: Any,
    texts: Sequence[str],
    side: str,
    instruction: str | None = None,
    cache: EmbeddingCache | None = None,
) -> tuple[np.ndarray, bool]:
    """Encode ``texts`` with ``embedder.encode_queries`` / ``encode_documents``, through the cache.

    Returns ``(embeddings as float32 [n, dim], whether it came from the cache)``.
    """
    texts = list(texts)
    fingerprint = embedder_fingerprint(embedder) if cache is not None else None
    key = meta = None
    if cache is not None and fingerprint is not None:
        data_checksum = checksum_texts(texts)
        key = cache_key(fingerprint, data_checksum, side, instruction)
        meta = _key_payload(fingerprint, data_checksum, side, instruction)
        hit = cache.get(key)
        if hit is not None and hit.shape[0] == len(texts):
            return hit, True
    if side == "query":
        emb = embedder.encode_queries(texts, instruction=instruction)
    elif side == "document":
        emb = embedder.encode_documents(texts, instruction=instruction)
    else:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    emb = _to_numpy(emb)
    if emb.ndim != 2 or emb.shape[0] != len(texts):
        raise ValueError(f"embedder returned shape {emb.shape} for {len(texts)} texts")
    if cache is not None and key is not None and meta is not None:
        meta.update({"n_texts": len(texts), "shape": list(emb.shape)})
        cache.put(key, emb, meta)
    return emb, False


def _to_numpy(emb: Any) -> np.ndarray:
    if hasattr(emb, "detach"):  # torch tensor, without importing torch
        emb = emb.detach().float().cpu().numpy()
    return np.asarray(emb, dtype=np.float32)
