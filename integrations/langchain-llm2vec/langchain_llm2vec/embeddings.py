"""LangChain `Embeddings` backed by an `llm2vec_retrieval.LLM2Vec` encoder."""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

import numpy as np
from langchain_core.embeddings import Embeddings
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from llm2vec_retrieval.fingerprint import encoder_fingerprint
from llm2vec_retrieval.hardware import resolve_dtype
from llm2vec_retrieval.models import load_encoder
from llm2vec_retrieval.shared import encoder_lock, split_dtype
from llm2vec_retrieval.text import check_query

__all__ = ["LLM2VecEmbeddings", "encoder_lock", "load_encoder"]


class LLM2VecEmbeddings(BaseModel, Embeddings):
    """LangChain embeddings from an LLM2Vec encoder (a decoder LLM turned text encoder).

    Build it from a local checkpoint folder (`model_name="path/to/ckpt"`, alias
    `model=`), from nothing (the package's embedded default model), or from an encoder
    you already loaded (`encoder=LLM2Vec.from_pretrained(...)`).

    Queries are encoded with `query_instruction` (default: the encoder's configured
    query instruction); documents with `document_instruction` (default: the encoder's
    document default, usually none). Vectors are L2-normalised when `normalize=True`
    (the default).

    `dtype` is the compute dtype when this class loads the model: "auto" (the default:
    bfloat16 where the CPU or GPU runs it natively, else float32; the log says which and
    why), "float32", "bfloat16" or "float16". Vectors are float32 either way, and an index
    built in one dtype can be searched in another.

    Example:
        ```python
        from langchain_llm2vec import LLM2VecEmbeddings

        emb = LLM2VecEmbeddings(model="path/to/checkpoint")
        vectors = emb.embed_documents(["first text", "second text"])
        query = emb.embed_query("what is in the first text?")
        ```
    """

    model_name: str | None = Field(default=None, alias="model")
    """Local checkpoint folder or locally resolvable name; None = embedded default."""
    encoder: Any = Field(default=None, exclude=True, repr=False)
    """An already loaded `LLM2Vec` encoder (takes precedence over `model_name`)."""
    query_instruction: str | None = None
    """Instruction for queries; None = the encoder's configured query instruction."""
    document_instruction: str | None = None
    """Instruction for documents; None = the encoder's default (usually none)."""
    batch_size: int = 32
    show_progress: bool = False
    normalize: bool = True
    dtype: str = "auto"
    """Compute dtype: "auto" (by hardware), "float32", "bfloat16" or "float16" (a torch
    dtype works too). Not used with `encoder=`."""
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Extra keyword arguments for `LLM2Vec.from_pretrained` (e.g. `device_map`)."""

    model_config = ConfigDict(
        extra="forbid",
        arbitrary_types_allowed=True,
        populate_by_name=True,
        protected_namespaces=(),
    )

    _lock: threading.Lock | None = PrivateAttr(default=None)

    @field_validator("model_name", mode="before")
    @classmethod
    def _path_to_str(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("dtype", mode="before")
    @classmethod
    def _dtype_name(cls, value: Any) -> str:
        return resolve_dtype(value).asked  # ValueError listing the choices for a bad one

    @model_validator(mode="after")
    def _load(self) -> LLM2VecEmbeddings:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.encoder is None:
            dtype, kwargs = split_dtype(self.dtype, self.model_kwargs)
            self.encoder = load_encoder(self.model_name, dtype=dtype, **kwargs)
        config = getattr(self.encoder, "config", None)
        if self.query_instruction is None:
            self.query_instruction = getattr(config, "query_instruction", "") or ""
        if self.document_instruction is None:
            self.document_instruction = getattr(config, "document_instruction", "") or ""
        self._lock = encoder_lock(self.encoder)
        return self

    # -- helpers ---------------------------------------------------------------------
    @property
    def embedding_dim(self) -> int:
        return int(self.encoder.embedding_dim)

    def fingerprint(self) -> dict[str, Any]:
        """JSON description of this embedder, recorded in saved indexes.

        The encoder's own fingerprint (model digest, pooling, lengths, ...) with the
        instructions and normalisation this wrapper actually uses.
        """
        return encoder_fingerprint(
            self.encoder,
            query_instruction=self.query_instruction,
            document_instruction=self.document_instruction,
            normalize=bool(self.normalize),
        )

    @staticmethod
    def _to_lists(vectors: Any) -> list[list[float]]:
        arr = np.asarray(vectors, dtype=np.float32)
        if arr.ndim == 1:
            arr = arr[None, :]
        return arr.astype(np.float64).tolist()

    # -- Embeddings API ----------------------------------------------------------------
    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents (with `document_instruction`, usually none)."""
        texts = list(texts)
        if not texts:
            return []
        assert self._lock is not None
        with self._lock:
            vectors = self.encoder.encode_documents(
                texts,
                self.document_instruction,
                batch_size=self.batch_size,
                show_progress_bar=self.show_progress,
                normalize=self.normalize,
            )
        return self._to_lists(vectors)

    def embed_query(self, text: str) -> list[float]:
        """Embed one query (with `query_instruction`)."""
        return self.embed_queries([text])[0]

    def embed_queries(self, texts: list[str]) -> list[list[float]]:
        """Embed several queries at once (with `query_instruction`); ValueError for an empty
        or whitespace-only one (a search for nothing has no right answer)."""
        texts = list(texts)
        if not texts:
            return []
        for i, text in enumerate(texts):
            check_query(text, "the query" if len(texts) == 1 else f"query {i}")
        assert self._lock is not None
        with self._lock:
            vectors = self.encoder.encode_queries(
                texts,
                self.query_instruction,
                batch_size=self.batch_size,
                show_progress_bar=self.show_progress,
                normalize=self.normalize,
            )
        return self._to_lists(vectors)

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        # The encoder is synchronous: run it in a worker thread so the loop stays free.
        return await asyncio.to_thread(self.embed_documents, list(texts))

    async def aembed_query(self, text: str) -> list[float]:
        return await asyncio.to_thread(self.embed_query, text)
