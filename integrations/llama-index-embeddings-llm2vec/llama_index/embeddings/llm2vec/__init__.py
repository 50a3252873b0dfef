"""LlamaIndex embedding for llm2vec-retrieval (distribution `llama-index-embeddings-llm2vec`).

`LLM2VecEmbedding` wraps an `llm2vec_retrieval.LLM2Vec` encoder as a LlamaIndex
`BaseEmbedding`. The vector store is the sibling package `llama-index-vector-stores-llm2vec`.
"""

from __future__ import annotations

try:
    import llama_index.core  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "llama_index.embeddings.llm2vec needs llama-index-core; install the package with its "
        "dependencies: pip install ./integrations/llama-index-embeddings-llm2vec"
    ) from exc

from llama_index.embeddings.llm2vec.base import LLM2VecEmbedding

__all__ = ["LLM2VecEmbedding"]
