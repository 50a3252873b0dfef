"""LlamaIndex integration for llm2vec-retrieval.

`LLM2VecEmbedding` wraps an `llm2vec_retrieval.LLM2Vec` encoder as a LlamaIndex
`BaseEmbedding`; `LLM2VecVectorStore` is a LlamaIndex vector store on the package's
FAISS `IndexStore`.
"""

from __future__ import annotations

try:
    import faiss  # noqa: F401
    import llama_index.core  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "llama_index_llm2vec needs llama-index-core and faiss-cpu; install them with "
        "pip install 'llm2vec-retrieval[llamaindex]'"
    ) from exc

from llama_index_llm2vec.embedding import LLM2VecEmbedding
from llama_index_llm2vec.vector_store import LLM2VecVectorStore

__all__ = ["LLM2VecEmbedding", "LLM2VecVectorStore"]
