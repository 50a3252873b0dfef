"""`load_encoder`: the one way the project (CLI, server, integrations, index, shards) gets an
`LLM2Vec`, and `encoder_dtype`, the block in which loads without a dtype of their own take one.

Never downloads: a model is the embedded default, an embedded name, a local checkpoint
folder or a local ``.gguf`` file. (Training loads its untrained base with
`llm2vec_retrieval.training.modeling.load_training_base`: another job, other defaults.)
"""

from __future__ import annotations

import contextvars
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .errors import MissingInputError
from .hardware import DtypeChoice, load_device, resolve_dtype

logger = logging.getLogger(__name__)

__all__ = ["encoder_dtype", "load_encoder"]


@dataclass
class _DtypeScope:
    choice: DtypeChoice
    on_encode: Callable[[DtypeChoice], None] | None
    said: bool = False
    hooks: list[Any] = field(default_factory=list)

    def watch(self, encoder: Any, choice: DtypeChoice) -> None:
        """Call ``on_encode(choice)`` before ``encoder``'s first forward pass in this scope."""
        if self.on_encode is None or self.said:
            return

        def first_forward(*_: Any) -> None:
            if not self.said:
                self.said = True
                self.unwatch()
                self.on_encode(choice)

        try:
            self.hooks.append(encoder.model.register_forward_pre_hook(first_forward))
        except AttributeError:  # not a torch-backed encoder: say it now
            first_forward()

    def unwatch(self) -> None:
        for hook in self.hooks:
            hook.remove()
        self.hooks.clear()


_DTYPE_SCOPE: contextvars.ContextVar[_DtypeScope | None] = contextvars.ContextVar(
    "llm2vec_retrieval_encoder_dtype", default=None
)
# load_encoder(cache=True): at most one model per process (the CLI and server load one)
_CACHED: dict[tuple, Any] = {}


@contextmanager
def encoder_dtype(
    dtype: Any = "auto", on_encode: Callable[[DtypeChoice], None] | None = None
) -> Iterator[DtypeChoice]:
    """Inside the block, `load_encoder` calls that give no dtype of their own (as the
    `Indexer`'s) encode in ``dtype``: "auto" (by hardware, see `hardware.resolve_dtype`),
    "float32", "bfloat16", "float16" or a torch dtype. ValueError for another value, before
    anything loads. ``on_encode(choice)`` runs once, before the first forward pass of an
    encoder loaded in the block (the CLI says which dtype runs and why; a command that stops
    on an error first, or embeds nothing, says nothing)."""
    scope = _DtypeScope(resolve_dtype(dtype), on_encode)
    token = _DTYPE_SCOPE.set(scope)
    try:
        yield scope.choice
    finally:
        _DTYPE_SCOPE.reset(token)
        scope.unwatch()


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
    dtype. None: the enclosing `encoder_dtype` block's, else ``torch_dtype``/``dtype`` in
    `kwargs`, else "auto" (`hardware.DEFAULT_DTYPE`, as everywhere). "auto" is resolved here,
    never handed to transformers (where it means "the checkpoint's dtype"), for the device in
    `kwargs` (``device_map``; default: CPU). Which dtype runs and why is logged at INFO level.

    ``cache``: keep the encoder and hand the same object to later calls with the same model,
    adapter, dtype and options (one model per process: a different one replaces it).
    Other keyword arguments go to `LLM2Vec.from_pretrained`.
    """
    from . import loading

    scope = _DTYPE_SCOPE.get()
    given = [kwargs.pop("torch_dtype")] if "torch_dtype" in kwargs else []
    if dtype is not None and given:
        raise ValueError("pass the dtype once: dtype= or torch_dtype=, not both")
    if dtype is not None or (scope is None and not given):
        choice = resolve_dtype(dtype, load_device(kwargs))
    elif scope is not None and not given:
        choice = scope.choice
    else:
        choice = resolve_dtype(given[0], load_device(kwargs))
    if "peft_model_name_or_path" in kwargs:  # from_pretrained's name for the adapter
        if adapter is not None:
            raise ValueError("pass the adapter once: adapter= or peft_model_name_or_path=")
        adapter = kwargs.pop("peft_model_name_or_path")
    model = _local(model, loading)
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
    if scope is not None:
        scope.watch(encoder, choice)
    return encoder


def _local(model: str | os.PathLike | None, loading: Any) -> str | None:
    """`model` as a local path or embedded name; `MissingInputError` for anything else."""
    if model is None:
        return None
    name = os.path.expanduser(os.fspath(model))
    if loading.embedded_name(name) is None and not os.path.exists(name):
        known = ", ".join([*loading.SHIPPED_ADAPTERS, *loading.EMBEDDED_MODELS])
        raise MissingInputError(
            f"LLM2Vec model {str(model)!r} not found: pass a local checkpoint folder, a local "
            f".gguf file or an embedded model name ({known}). Models are never downloaded."
        )
    return name
