"""`load_encoder`: the one way to get an `LLM2Vec` encoder.

Every caller in the project goes through it: the CLI, the server, the integrations, the
indexer and searcher (`ingest.folder.encoder_from_spec`, a model named by an index's
manifest), shards and training (`training.modeling.load_training_base`, float32 and the
init adapters merged). `LLM2Vec.from_pretrained` is what it calls: the official library's
constructor, kept for drop-in use, which reads whatever transformers reads.

Never downloads: a model is the embedded default, an embedded name, a local checkpoint
folder or a local ``.gguf`` file (see `sources`). The dtype is an argument: nothing reaches
a load from around it.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from .errors import MissingInputError
from .hardware import load_device, resolve_dtype
from .sources import EMBEDDED_MODELS, SHIPPED_ADAPTERS, embedded_name

logger = logging.getLogger(__name__)

__all__ = ["load_encoder"]

# load_encoder(cache=True): at most one model per process (the CLI and server load one)
_CACHED: dict[tuple, Any] = {}


def load_encoder(
    model: str | os.PathLike | None = None,
    adapter: str | os.PathLike | None = None,
    *,
    dtype: Any = None,
    cache: bool = False,
    **kwargs: Any,
) -> Any:
    """Load an `LLM2Vec` encoder without ever downloading.

    ``model``: None for the package's embedded default model (its pip package must be
    installed: `ModelNotInstalledError` names it otherwise); else a local checkpoint
    folder, a local ``.gguf`` file or an embedded model name (`MissingInputError` for
    anything else, instead of reaching for a model hub). ``adapter``: a PEFT (LoRA) adapter
    folder to apply on top.

    ``dtype``: the compute dtype: "auto" (bfloat16 where the device runs it natively, else
    float32; see `llm2vec_retrieval.hardware`), "float32", "bfloat16", "float16" or a torch
    dtype. None: ``torch_dtype`` in `kwargs`, else "auto" (`hardware.DEFAULT_DTYPE`, as
    everywhere). "auto" is resolved here, never handed to transformers (where it means "the
    checkpoint's dtype"), for the device in `kwargs` (``device_map``; default: CPU). Which
    dtype runs and why is logged at INFO level.

    ``cache``: keep the encoder and hand the same object to later calls with the same model,
    adapter, dtype and options (one model per process: a different one replaces it).
    Other keyword arguments go to `LLM2Vec.from_pretrained`.
    """
    if "torch_dtype" in kwargs:
        if dtype is not None:
            raise ValueError("pass the dtype once: dtype= or torch_dtype=, not both")
        dtype = kwargs.pop("torch_dtype")
    choice = resolve_dtype(dtype, load_device(kwargs))
    if "peft_model_name_or_path" in kwargs:  # from_pretrained's name for the adapter
        if adapter is not None:
            raise ValueError("pass the adapter once: adapter= or peft_model_name_or_path=")
        adapter = kwargs.pop("peft_model_name_or_path")
    model = _local(model)
    adapter = None if adapter is None else os.path.expanduser(os.fspath(adapter))
    if adapter is not None and not os.path.isdir(adapter):
        raise MissingInputError(f"adapter folder {adapter!r} does not exist")
    key = (model, adapter, choice.name, tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
    encoder = _CACHED.get(key) if cache else None
    if encoder is None:
        from .encoder import LLM2Vec

        logger.info("loading %s: %s", model or "the default model", choice.describe("dtype="))
        encoder = LLM2Vec.from_pretrained(model, adapter, dtype=choice.dtype, **kwargs)
        if cache:
            _CACHED.clear()  # keep at most one model in memory
            _CACHED[key] = encoder
    return encoder


def _local(model: str | os.PathLike | None) -> str | None:
    """`model` as a local path or embedded name; `MissingInputError` for anything else."""
    if model is None:
        return None
    name = os.path.expanduser(os.fspath(model))
    if embedded_name(name) is None and not os.path.exists(name):
        known = ", ".join([*SHIPPED_ADAPTERS, *EMBEDDED_MODELS])
        raise MissingInputError(
            f"LLM2Vec model {str(model)!r} not found: pass a local checkpoint folder, a local "
            f".gguf file or an embedded model name ({known}). Models are never downloaded."
        )
    return name
