"""Deprecated import name: use `llama_index.embeddings.llm2vec` and
`llama_index.vector_stores.llm2vec`.

Until version 0.1 the LlamaIndex integration was one top-level package of the core
distribution. This module only re-exports the two classes from their packages (the
embedding needs `llama-index-embeddings-llm2vec` installed) and will be removed in a
later release.
"""

from __future__ import annotations

import warnings
from typing import Any

__all__ = ["LLM2VecEmbedding", "LLM2VecVectorStore"]

warnings.warn(
    "llama_index_llm2vec is deprecated: use `from llama_index.embeddings.llm2vec import "
    "LLM2VecEmbedding` and `from llama_index.vector_stores.llm2vec import LLM2VecVectorStore`",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str) -> Any:
    # Imported on use, so the vector store works without the embedding package.
    if name == "LLM2VecEmbedding":
        from llama_index.embeddings.llm2vec import LLM2VecEmbedding

        return LLM2VecEmbedding
    if name == "LLM2VecVectorStore":
        from llama_index.vector_stores.llm2vec import LLM2VecVectorStore

        return LLM2VecVectorStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
