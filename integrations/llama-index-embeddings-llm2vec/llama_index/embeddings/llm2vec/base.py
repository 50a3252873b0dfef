"""LlamaIndex `BaseEmbedding` backed by an `llm2vec_retrieval.LLM2Vec` encoder."""

from __future__ import annotations

import asyncio
import os
import threading
import warnings
from typing import Any

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from pydantic import ConfigDict, Field, PrivateAttr, field_validator, model_validator

__all__ = ["LLM2VecEmbedding"]

from llm2vec_retrieval.fingerprint import encoder_fingerprint
from llm2vec_retrieval.hardware import resolve_dtype as _resolve_dtype
from llm2vec_retrieval.models import load_encoder as _load_encoder
from llm2vec_retrieval.shared import encoder_lock as _encoder_lock
from llm2vec_retrieval.shared import split_dtype as _split_dtype
from llm2vec_retrieval.sources import DEFAULT_MODEL
from llm2vec_retrieval.text import check_query as _check_query

# The name this class used for the default model before it took the core's name (issue 25).
_OLD_DEFAULT_NAME = "llm2vec-default"


class LLM2VecEmbedding(BaseEmbedding):
    """LlamaIndex embedding model from an LLM2Vec encoder.

    Build it from a local checkpoint (`model_name="path/to/ckpt"`), an embedded model name,
    nothing (`llm2vec_retrieval.DEFAULT_MODEL`, the default everywhere) or a loaded encoder
    (`encoder=...`).
    Queries use `query_instruction` (default: the encoder's configured one), texts
    (nodes) use `text_instruction` (default: the encoder's document default, usually
    none). `embed_batch_size` is also the encoder's batch size. `dtype` is the compute
    dtype when this class loads the model: "auto" (the default: bfloat16 where the CPU or
    GPU runs it natively, else float32; the log says which and why), "float32",
    "bfloat16" or "float16"; vectors are float32 either way.

    Example:
        ```python
        from llama_index.core import Settings
        from llama_index.embeddings.llm2vec import LLM2VecEmbedding

        Settings.embed_model = LLM2VecEmbedding(model_name="path/to/checkpoint")
        ```
    """

    model_name: str = Field(
        default=DEFAULT_MODEL,
        description="Local checkpoint folder, .gguf file or embedded model name "
        f"(default: {DEFAULT_MODEL}, llm2vec_retrieval.DEFAULT_MODEL).",
    )
    encoder: Any = Field(default=None, exclude=True, repr=False)
    query_instruction: str | None = Field(
        default=None, description="Query instruction; None = the encoder's configured one."
    )
    text_instruction: str | None = Field(
        default=None, description="Instruction for texts/documents; None = encoder default."
    )
    normalize: bool = Field(default=True, description="L2-normalise the vectors.")
    show_progress: bool = Field(default=False, description="Show the encoder's progress bar.")
    dtype: str = Field(
        default="auto",
        description="Compute dtype: auto (by hardware), float32, bfloat16 or float16. "
        "Not used with encoder=.",
    )
    model_kwargs: dict[str, Any] = Field(default_factory=dict, exclude=True)

    model_config = ConfigDict(
        protected_namespaces=("pydantic_model_",), arbitrary_types_allowed=True
    )

    _lock: threading.Lock | None = PrivateAttr(default=None)

    def __init__(self, model_name: str | os.PathLike | None = None, **kwargs: Any) -> None:
        if model_name is not None:
            kwargs["model_name"] = os.fspath(model_name)
        super().__init__(**kwargs)

    @field_validator("model_name", mode="before")
    @classmethod
    def _path_to_str(cls, value: Any) -> Any:
        if value == _OLD_DEFAULT_NAME:
            warnings.warn(
                f"model_name={_OLD_DEFAULT_NAME!r} is deprecated: the default model is "
                f"{DEFAULT_MODEL!r} (llm2vec_retrieval.DEFAULT_MODEL), as everywhere else; "
                "leave model_name out or use that name",
                FutureWarning,
                stacklevel=2,
            )
            return DEFAULT_MODEL
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("dtype", mode="before")
    @classmethod
    def _dtype_name(cls, value: Any) -> str:
        return _resolve_dtype(value).asked  # ValueError listing the choices for a bad one

    @model_validator(mode="after")
    def _load(self) -> LLM2VecEmbedding:
        if self.encoder is None:
            name = self.model_name or None
            dtype, kwargs = _split_dtype(self.dtype, self.model_kwargs)
            self.encoder = _load_encoder(name, dtype=dtype, **kwargs)
        config = getattr(self.encoder, "config", None)
        if self.query_instruction is None:
            self.query_instruction = getattr(config, "query_instruction", "") or ""
        if self.text_instruction is None:
            self.text_instruction = getattr(config, "document_instruction", "") or ""
        self._lock = _encoder_lock(self.encoder)
        return self

    @classmethod
    def class_name(cls) -> str:
        return "LLM2VecEmbedding"

    @property
    def embedding_dim(self) -> int:
        return int(self.encoder.embedding_dim)

    def fingerprint(self) -> dict[str, Any]:
        """JSON description of this embedder (the encoder's fingerprint with the
        instructions and normalisation this wrapper uses), recorded in saved indexes."""
        return encoder_fingerprint(
            self.encoder,
            query_instruction=self.query_instruction,
            document_instruction=self.text_instruction,
            normalize=bool(self.normalize),
        )

    # -- encoding ----------------------------------------------------------------------
    @staticmethod
    def _to_lists(vectors: Any) -> list[Embedding]:
        arr = np.asarray(vectors, dtype=np.float32)
        if arr.ndim == 1:
            arr = arr[None, :]
        return arr.astype(np.float64).tolist()

    def _encode_queries(self, queries: list[str]) -> list[Embedding]:
        if not queries:
            return []
        for i, query in enumerate(queries):  # a search for nothing has no right answer
            _check_query(query, "the query" if len(queries) == 1 else f"query {i}")
        assert self._lock is not None
        with self._lock:
            vectors = self.encoder.encode_queries(
                list(queries),
                self.query_instruction,
                batch_size=self.embed_batch_size,
                show_progress_bar=self.show_progress,
                normalize=self.normalize,
            )
        return self._to_lists(vectors)

    def _encode_texts(self, texts: list[str]) -> list[Embedding]:
        if not texts:
            return []
        assert self._lock is not None
        with self._lock:
            vectors = self.encoder.encode_documents(
                list(texts),
                self.text_instruction,
                batch_size=self.embed_batch_size,
                show_progress_bar=self.show_progress,
                normalize=self.normalize,
            )
        return self._to_lists(vectors)

    # -- BaseEmbedding API -------------------------------------------------------------
    def _get_query_embedding(self, query: str) -> Embedding:
        return self._encode_queries([query])[0]

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._encode_texts([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._encode_texts(texts)

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return (await asyncio.to_thread(self._encode_queries, [query]))[0]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return (await asyncio.to_thread(self._encode_texts, [text]))[0]

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._encode_texts, list(texts))
