"""Helpers shared by the framework integrations (LangChain, LlamaIndex).

Kept in the core so each adapter stays thin; nothing here imports a framework.
"""

from __future__ import annotations

import json
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


def load_encoder(model_name_or_path: str | None = None, *, dtype: Any = None, **kwargs: Any) -> Any:
    """Load an `LLM2Vec` encoder without ever downloading.

    `None` loads the package's embedded default model (its pip package must be
    installed: `ModelNotInstalledError` names it otherwise). A string must be a local
    checkpoint folder, a local `.gguf` file or an embedded model name; anything else
    raises `FileNotFoundError` instead of reaching for a model hub.

    `dtype` is the compute dtype: "auto" (bfloat16 where the device runs it natively,
    else float32; see `llm2vec_retrieval.hardware`), "float32", "bfloat16", "float16" or
    a torch dtype; None leaves it to `kwargs` (`torch_dtype=`), else float32. "auto" is
    resolved here, never handed to transformers (where it means "the checkpoint's
    dtype"). The device it is resolved for is `device_map` in `kwargs` (default: CPU).
    Which dtype runs and why is logged at INFO level.
    """
    from llm2vec_retrieval import LLM2Vec, loading

    if dtype is not None:
        if "torch_dtype" in kwargs:
            raise ValueError("pass the dtype once: dtype= or torch_dtype=, not both")
        choice = resolve_dtype(dtype, _device_of(kwargs))
        logger.info("%s: %s", model_name_or_path or "default model", choice.describe("dtype="))
        kwargs["dtype"] = choice.dtype
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


def _device_of(kwargs: dict[str, Any]) -> Any:
    """The device a load with these `from_pretrained` keyword arguments puts the model on."""
    device = kwargs.get("device_map", kwargs.get("device"))
    if isinstance(device, dict):  # a per-module map: its first placement
        device = next(iter(device.values()), None)
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return device if device is not None else "cpu"


def split_dtype(dtype: Any, model_kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """(dtype choice, other keyword arguments) for `load_encoder`, from an integration's
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


def write_json_object(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """Write a JSON object beside an index atomically (write, fsync, rename): a crash
    leaves the old file or the new one, never half of one."""
    from llm2vec_retrieval._io import atomic_write_json

    atomic_write_json(Path(path), data)
