"""LangChain integration for llm2vec-retrieval (distribution `langchain-llm2vec`).

`LLM2VecEmbeddings` wraps an `llm2vec_retrieval.LLM2Vec` encoder as a LangChain
`Embeddings`; `LLM2VecVectorStore` is a LangChain `VectorStore` on the core's
FAISS `IndexStore` (any `Embeddings` works with it).
"""

from __future__ import annotations

try:
    import faiss  # noqa: F401
    import langchain_core  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "langchain_llm2vec needs langchain-core and faiss-cpu; install the package with its "
        "dependencies: pip install ./integrations/langchain-llm2vec"
    ) from exc

from langchain_llm2vec.embeddings import LLM2VecEmbeddings
from langchain_llm2vec.vectorstores import LLM2VecRetriever, LLM2VecVectorStore

__all__ = ["LLM2VecEmbeddings", "LLM2VecRetriever", "LLM2VecVectorStore"]
