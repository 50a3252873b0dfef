"""LlamaIndex vector store for llm2vec-retrieval (distribution
`llama-index-vector-stores-llm2vec`).

`LLM2VecVectorStore` is a LlamaIndex vector store on the core's FAISS `IndexStore`, with
dense, BM25 and hybrid queries. The embedding is the sibling package
`llama-index-embeddings-llm2vec`.
"""

from __future__ import annotations

try:
    import faiss  # noqa: F401
    import llama_index.core  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "llama_index.vector_stores.llm2vec needs llama-index-core and faiss-cpu; install the "
        "package with its dependencies: pip install ./integrations/llama-index-vector-stores-llm2vec"
    ) from exc

from llama_index.vector_stores.llm2vec.base import LLM2VecVectorStore, metadata_filters_to_dict

__all__ = ["LLM2VecVectorStore", "metadata_filters_to_dict"]
