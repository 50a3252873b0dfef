"""FAISS index store: vectors + texts + JSON metadata by string id, with upserts,
deletes, metadata pre-filtering, MMR and atomic, checksummed persistence.

faiss is imported lazily: importing this package works without it, and creating or
loading an ``IndexStore`` then raises ``ImportError`` with the install hint.

    from llm2vec_retrieval.index import IndexStore
    store = IndexStore(dim=576, kind="hnsw", metric="cosine", fingerprint=embedder_fp)
    store.add(ids, vectors, texts, metadatas)
    hits = store.search(query_vector, k=10, filter={"lang": "en", "year": {"$gte": 2020}})
    hits = store.search(query_vector, text="query words", mode="hybrid")   # + BM25, fused
    req = SearchRequest("query words", k=5, mode="hybrid", filter={"lang": "en"})  # checked once
    hits = store.search(query_vector, request=req)
    store.save("my_index"); store = IndexStore.load("my_index", fingerprint=embedder_fp)
"""

from ..fingerprint import (
    DimensionMismatchError,
    FingerprintMismatchError,
    UnverifiedEmbedderError,
)
from .errors import IndexCorruptedError
from .filters import compile_filter
from .fusion import DEFAULT_RRF_K, FUSIONS
from .kinds import DEFAULT_PARAMS, KINDS, METRICS, check_index_config
from .request import SearchRequest, SearchRequestError
from .store import (
    DEFAULT_ALPHA,
    DEFAULT_FUSION,
    DEFAULT_TEXT_MODE,
    MODES,
    NO_LEXICAL_MESSAGE,
    IndexStore,
    Record,
    SearchHit,
)

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_FUSION",
    "DEFAULT_RRF_K",
    "DEFAULT_TEXT_MODE",
    "FUSIONS",
    "MODES",
    "NO_LEXICAL_MESSAGE",
    "check_index_config",
    "DEFAULT_PARAMS",
    "KINDS",
    "METRICS",
    "DimensionMismatchError",
    "FingerprintMismatchError",
    "IndexCorruptedError",
    "IndexStore",
    "UnverifiedEmbedderError",
    "Record",
    "SearchHit",
    "SearchRequest",
    "SearchRequestError",
    "compile_filter",
]
