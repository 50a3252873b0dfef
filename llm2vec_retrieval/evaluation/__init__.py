"""Quality evaluation harness: BEIR retrieval and STS on local data, with an embedding cache.

Numpy only at import time (no torch, sentence-transformers or bm25s): baselines and models are
loaded by ``benchmarks/quality.py``. An *embedder* is any object with
``encode_queries(texts, instruction=None)`` and ``encode_documents(texts, instruction=None)``
returning ``[n, dim]`` arrays, and optionally ``fingerprint() -> dict`` (enables caching).
"""

from .beir import evaluate_beir, evaluate_beir_store, exact_search, normalize
from .cache import EmbeddingCache, cache_key, default_cache_dir, encode_cached
from .data import (
    BeirData,
    StsData,
    checksum_texts,
    default_data_dir,
    doc_text,
    load_beir,
    load_sts,
    sha256_file,
    subset_corpus,
    subset_queries,
)
from .metrics import (
    evaluate_run,
    mrr_at_k,
    ndcg_at_k,
    per_query_metrics,
    rank_documents,
    recall_at_k,
)
from .sts import evaluate_sts, spearman

__all__ = [
    "BeirData",
    "EmbeddingCache",
    "StsData",
    "cache_key",
    "checksum_texts",
    "default_cache_dir",
    "default_data_dir",
    "doc_text",
    "encode_cached",
    "evaluate_beir",
    "evaluate_beir_store",
    "evaluate_run",
    "evaluate_sts",
    "exact_search",
    "load_beir",
    "load_sts",
    "mrr_at_k",
    "ndcg_at_k",
    "normalize",
    "per_query_metrics",
    "rank_documents",
    "recall_at_k",
    "sha256_file",
    "spearman",
    "subset_corpus",
    "subset_queries",
]
