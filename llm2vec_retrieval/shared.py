"""Helpers shared by the framework integrations (LangChain, LlamaIndex).

Kept in the core so each adapter stays thin; nothing here imports a framework.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from pathlib import Path
from typing import Any

from llm2vec_retrieval.hardware import resolve_dtype

logger = logging.getLogger(__name__)

# An `LLM2Vec` owns its lock (`encoder.lock`); other encoder objects (test doubles, custom
# encoders) get one here, created on first use and shared by every wrapper around them.
_LOCKS: weakref.WeakKeyDictionary[Any, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def encoder_lock(encoder: Any) -> threading.RLock:
    """The lock that serialises calls into `encoder`: its own `lock` (`LLM2Vec.lock`), else
    one re-entrant lock per encoder object (the integrations' async methods run the encoder
    in worker threads)."""
    own = getattr(encoder, "lock", None)
    if own is not None:
        return own
    with _LOCKS_GUARD:
        try:
            lock = _LOCKS.get(encoder)
        except TypeError:  # not weak-referenceable: fall back to a per-call-site lock
            return threading.RLock()
        if lock is None:
            lock = threading.RLock()
            _LOCKS[encoder] = lock
        return lock


def split_dtype(dtype: Any, model_kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """(dtype choice, other keyword arguments) for `models.load_encoder`, from an integration's
    `dtype=` field and its `model_kwargs`. A dtype in `model_kwargs` (`dtype` or
    `torch_dtype`, as before the field existed) is used when the field is "auto"; both set
    to different values is a ValueError."""
    kwargs = dict(model_kwargs)
    given = [kwargs.pop(k) for k in ("dtype", "torch_dtype") if k in kwargs]
    if not given:
        return dtype, kwargs
    if len(given) == 2:
        raise ValueError("model_kwargs holds both dtype and torch_dtype; keep one")
    if dtype not in (None, "auto") and resolve_dtype(dtype).name != resolve_dtype(given[0]).name:
        raise ValueError(
            f"dtype={dtype!r} and model_kwargs dtype {given[0]!r} differ; set the dtype once"
        )
    return given[0], kwargs


def check_dimension(store: Any, vectors: Any) -> None:
    """ValueError naming both dimensions when the rows of `vectors` (n, dim) do not fit
    `store`; a store made without a dimension (``IndexStore(None)``) takes the first add's."""
    dim = int(vectors.shape[1])
    if store.dim not in (None, dim):
        raise ValueError(
            f"Embedding dimension {dim} does not match the index dimension {store.dim}"
        )


def load_store(
    folder: str | os.PathLike,
    fingerprint: dict[str, Any] | None,
    *,
    allow_fingerprint_mismatch: bool,
    unverified: str | None,
) -> Any:
    """The `IndexStore` saved in `folder`, checked against the embedder in use: its
    ``fingerprint`` (`IndexStore.load`), or, for an embedder without one (``unverified``
    names it), refused when the store records one unless ``allow_fingerprint_mismatch``
    (`fingerprint.check_fingerprint`)."""
    from llm2vec_retrieval.fingerprint import check_fingerprint
    from llm2vec_retrieval.index import IndexStore

    store = IndexStore.load(
        folder, fingerprint=fingerprint, allow_fingerprint_mismatch=allow_fingerprint_mismatch
    )
    check_fingerprint(
        store.fingerprint,
        None,
        allow_fingerprint_mismatch=allow_fingerprint_mismatch,
        path=folder,
        unverified=unverified,
        stacklevel=4,
    )
    return store


def read_json_object(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON object saved by an integration beside its index (sidecar, manifest), or
    `IndexCorruptedError` naming the file in one line (also for JSON nested too deeply)."""
    from llm2vec_retrieval._io import JSONReadError, read_json
    from llm2vec_retrieval.index.errors import IndexCorruptedError

    path = Path(path)
    try:
        return read_json(path, want_object=True)
    except JSONReadError as exc:
        why = (
            "not a JSON object"
            if exc.reason == "not a JSON object"
            else f"not valid JSON ({exc.reason})"
        )
        raise IndexCorruptedError(f"{path}: {why}", file=str(path)) from None


def write_json_object(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """Write a JSON object beside an index atomically (write, fsync, rename): a crash
    leaves the old file or the new one, never half of one."""
    from llm2vec_retrieval._io import atomic_write_json

    atomic_write_json(Path(path), data)
