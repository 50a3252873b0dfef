"""FAISS index store: vectors + texts + JSON metadata by string id, with upserts,
deletes, metadata pre-filtering, MMR and atomic, checksummed persistence.

faiss is imported lazily: importing this package works without it, and creating or
loading an ``IndexStore`` then raises ``ImportError`` with the install hint.

    from llm2vec_retrieval.index import IndexStore
    store = IndexStore(dim=576, kind="hnsw", metric="cosine", fingerprint=embedder_fp)
    store.add(ids, vectors, texts, metadatas)
    hits = store.search(query_vector, k=10, filter={"lang": "en", "year": {"$gte": 2020}})
    store.save("my_index"); store = IndexStore.load("my_index", fingerprint=embedder_fp)
"""

from .errors import FingerprintMismatchError, IndexCorruptedError
from .filters import compile_filter
from .kinds import DEFAULT_PARAMS, KINDS, METRICS, check_index_config
from .store import IndexStore, Record, SearchHit

__all__ = [
    "check_index_config",
    "DEFAULT_PARAMS",
    "KINDS",
    "METRICS",
    "FingerprintMismatchError",
    "IndexCorruptedError",
    "IndexStore",
    "Record",
    "SearchHit",
    "compile_filter",
]
