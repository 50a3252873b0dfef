"""Dense retrieval evaluation of an embedder on a BEIR split.

Embedder protocol: any object with

- ``encode_queries(texts, instruction=None) -> np.ndarray [n, dim]``,
- ``encode_documents(texts, instruction=None) -> np.ndarray [n, dim]``,
- optionally ``fingerprint() -> dict`` (enables the embedding cache, see :mod:`.cache`).

Retrieval is exact: cosine similarity of every query with every document (both sides
L2-normalised here, whatever the embedder returns), top-k kept while streaming over document
chunks, in numpy. Ties are broken like the metrics do (doc id descending, see :mod:`.metrics`).
Documents are ``title + " " + text`` (:func:`.data.doc_text`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._io import l2_normalize
from .cache import EmbeddingCache, encode_cached
from .data import BeirData
from .metrics import DEFAULT_METRICS, evaluate_run

__all__ = ["normalize", "exact_search", "evaluate_beir", "evaluate_beir_store", "evaluate_run"]


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as float32 (zero rows stay zero)."""
    return l2_normalize(np.asarray(x, dtype=np.float32))


def exact_search(
    query_emb: np.ndarray,
    doc_emb: np.ndarray,
    query_ids: Sequence[str],
    doc_ids: Sequence[str],
    top_k: int = 100,
    query_chunk: int = 256,
    doc_chunk: int = 16384,
) -> dict[str, dict[str, float]]:
    """Exact cosine top-k: ``{query_id: {doc_id: cosine}}`` with at most ``top_k`` docs each.

    Deterministic: among equal scores the document with the larger id (string order) wins,
    which is the order :func:`.metrics.rank_documents` and trec_eval use.
    """
    if len(query_ids) != len(query_emb) or len(doc_ids) != len(doc_emb):
        raise ValueError("ids and embeddings differ in length")
    q = normalize(query_emb)
    d = normalize(doc_emb)
    # Reorder documents by id descending once: then "lower column index wins a tie" is the rule.
    order = sorted(range(len(doc_ids)), key=lambda i: doc_ids[i], reverse=True)
    d = d[order]
    ids = [doc_ids[i] for i in order]
    k = min(top_k, len(ids))
    run: dict[str, dict[str, float]] = {}
    for qs in range(0, len(q), query_chunk):
        qc = q[qs : qs + query_chunk]
        best_s = np.empty((len(qc), 0), dtype=np.float32)
        best_i = np.empty((len(qc), 0), dtype=np.int64)
        for ds in range(0, len(d), doc_chunk):
            s = qc @ d[ds : ds + doc_chunk].T
            idx = np.broadcast_to(np.arange(ds, ds + s.shape[1], dtype=np.int64), s.shape)
            # Previous best (all lower indices, already sorted) come first, so a stable sort
            # keeps the lower index first among ties.
            all_s = np.concatenate([best_s, s], axis=1)
            all_i = np.concatenate([best_i, idx], axis=1)
            top = np.argsort(-all_s, axis=1, kind="stable")[:, :k]
            best_s = np.take_along_axis(all_s, top, axis=1)
            best_i = np.take_along_axis(all_i, top, axis=1)
        for row, qid in enumerate(query_ids[qs : qs + query_chunk]):
            run[qid] = {ids[j]: float(sc) for j, sc in zip(best_i[row], best_s[row], strict=True)}
    return run


def evaluate_beir(
    embedder: Any,
    data: BeirData,
    query_instruction: str | None = None,
    doc_instruction: str | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    top_k: int | None = None,
    cache: EmbeddingCache | None = None,
) -> dict:
    """Encode, retrieve and score one BEIR split. Returns metrics, counts and timings.

    ``top_k`` defaults to the largest cut-off among ``metrics`` (100 for Recall@100).
    """
    if top_k is None:
        top_k = max(int(m.partition("@")[2]) for m in metrics)
    query_ids, doc_ids = data.query_ids, data.doc_ids
    t0 = time.perf_counter()
    doc_emb, doc_cached = encode_cached(
        embedder, data.documents(), "document", doc_instruction, cache
    )
    t1 = time.perf_counter()
    query_emb, query_cached = encode_cached(
        embedder, [data.queries[q] for q in query_ids], "query", query_instruction, cache
    )
    t2 = time.perf_counter()
    run = exact_search(query_emb, doc_emb, query_ids, doc_ids, top_k=top_k)
    t3 = time.perf_counter()
    scores = evaluate_run(run, data.qrels, metrics)
    return {
        "metrics": {m: scores[m] for m in metrics},
        "n_queries": len(query_ids),
        "n_queries_evaluated": scores["n_queries"],
        "n_docs": len(doc_ids),
        "dim": int(doc_emb.shape[1]),
        "query_instruction": query_instruction,
        "doc_instruction": doc_instruction,
        "timing_s": {
            "encode_documents": t1 - t0,
            "encode_queries": t2 - t1,
            "search": t3 - t2,
            "total": time.perf_counter() - t0,
        },
        "cached": {"documents": doc_cached, "queries": query_cached},
        "run": run,
    }


def evaluate_beir_store(
    embedder: Any,
    data: BeirData,
    searches: dict[str, dict[str, Any]],
    query_instruction: str | None = None,
    doc_instruction: str | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    top_k: int | None = None,
    cache: EmbeddingCache | None = None,
) -> dict[str, dict]:
    """Retrieval through the product's own path: the documents in an ``IndexStore`` (flat,
    cosine, with its BM25 part), searched once per entry of ``searches``
    (``{name: IndexStore.search keywords}``, e.g. ``{"hybrid": {"mode": "hybrid"}}``).

    Query vectors carry ``query_instruction``; BM25 sees the bare query text. ``embedder``
    may be None when every search is lexical. Lexical hits scoring 0 share no term with the
    query and are left out of the run, as Lucene (and the BM25 baseline) do.
    Returns ``{name: {"metrics", "search", "timing_s"}}``.
    """
    from ..index import IndexStore

    if top_k is None:
        top_k = max(int(m.partition("@")[2]) for m in metrics)
    query_ids, doc_ids = data.query_ids, data.doc_ids
    query_texts = [data.queries[q] for q in query_ids]
    dense = any(kw.get("mode", "dense") != "lexical" for kw in searches.values())
    t0 = time.perf_counter()
    if dense:
        doc_emb, _ = encode_cached(embedder, data.documents(), "document", doc_instruction, cache)
        query_emb, _ = encode_cached(embedder, query_texts, "query", query_instruction, cache)
    else:
        doc_emb, query_emb = np.ones((len(doc_ids), 1), np.float32), None
    t1 = time.perf_counter()
    store = IndexStore(int(doc_emb.shape[1]), kind="flat", metric="cosine")
    store.add(doc_ids, doc_emb, data.documents())
    t2 = time.perf_counter()
    out: dict[str, Any] = {"_timing_s": {"encode": t1 - t0, "build_store": t2 - t1}}
    for name, kw in searches.items():
        t = time.perf_counter()
        lexical_only = kw.get("mode", "dense") == "lexical"
        rows = store.search_batch(
            None if lexical_only else query_emb,
            k=min(top_k, len(doc_ids)),
            texts=query_texts,
            **kw,
        )
        run = {
            qid: {h.id: h.score for h in hits if not (lexical_only and h.score <= 0)}
            for qid, hits in zip(query_ids, rows, strict=True)
        }
        scores = evaluate_run(run, data.qrels, metrics)
        out[name] = {
            "metrics": {m: scores[m] for m in metrics},
            "n_queries_evaluated": scores["n_queries"],
            "search": dict(kw),
            "timing_s": {"search": time.perf_counter() - t},
        }
    return out
