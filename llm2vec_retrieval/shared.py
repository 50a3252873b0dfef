"""Helpers shared by the framework integrations (LangChain, LlamaIndex).

Kept in the core so each adapter stays thin; nothing here imports a framework.
"""

from __future__ import annotations

import json
import os
import threading
import weakref
from pathlib import Path
from typing import Any

# One lock per encoder object: tokenizers (the Rust "fast" ones) and the model are not
# meant to be driven by several threads at once, and the async methods run the encoder
# in worker threads. Shared between every wrapper around the same encoder.
_LOCKS: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def encoder_lock(encoder: Any) -> threading.Lock:
    """The lock that serialises calls into `encoder` (created on first use)."""
    with _LOCKS_GUARD:
        try:
            lock = _LOCKS.get(encoder)
        except TypeError:  # not weak-referenceable: fall back to a per-call-site lock
            return threading.Lock()
        if lock is None:
            lock = threading.Lock()
            _LOCKS[encoder] = lock
        return lock


def load_encoder(model_name_or_path: str | None = None, **kwargs: Any) -> Any:
    """Load an `LLM2Vec` encoder without ever downloading.

    `None` loads the package's embedded default model (its pip package must be
    installed: `ModelNotInstalledError` names it otherwise). A string must be a local
    checkpoint folder, a local `.gguf` file or an embedded model name; anything else
    raises `FileNotFoundError` instead of reaching for a model hub.
    """
    from llm2vec_retrieval import LLM2Vec, loading

    if model_name_or_path is not None:
        name = os.path.expanduser(os.fspath(model_name_or_path))
        if loading.embedded_name(name) is None and not os.path.exists(name):
            raise FileNotFoundError(
                f"LLM2Vec model {str(model_name_or_path)!r} not found: pass a local checkpoint "
                "folder, a local .gguf file or an embedded model name "
                f"({', '.join([*loading.SHIPPED_ADAPTERS, *loading.EMBEDDED_MODELS])}). Models are never downloaded."
            )
        return LLM2Vec.from_pretrained(name, **kwargs)
    return LLM2Vec.from_pretrained(**kwargs)


def read_json_object(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON object saved by an integration beside its index (sidecar, manifest), or
    `IndexCorruptedError` naming the file in one line (also for JSON nested too deeply)."""
    from llm2vec_retrieval.index.errors import IndexCorruptedError

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else type(exc).__name__
        raise IndexCorruptedError(f"{path}: not valid JSON ({why})", file=str(path)) from None
    if not isinstance(data, dict):
        raise IndexCorruptedError(f"{path}: not a JSON object", file=str(path))
    return data
