"""Retrieval metrics (nDCG@k, Recall@k, MRR@k) in plain numpy.

Inputs follow the BEIR / pytrec_eval convention:

- ``run``:   ``{query_id: {doc_id: score}}``, higher score = better;
- ``qrels``: ``{query_id: {doc_id: relevance}}``, integer graded relevance.

Definitions and averaging are those of BEIR and MTEB, which score runs with ``pytrec_eval``
(``trec_eval``); the tests check every value against ``pytrec_eval`` to 1e-12 on synthetic runs
with the edge cases below, and to 1e-6 on a BM25 run over SciFact:

- **nDCG@k**: gain = relevance (linear, not ``2**rel - 1``), discount ``1 / log2(rank + 1)``;
  the ideal DCG ranks all judged documents of the query by relevance and is cut at k.
  Judgments ``<= 0`` give no gain.
- **Recall@k**: relevant documents (relevance > 0) in the top k, divided by all relevant ones.
- **MRR@k**: ``1 / rank`` of the first relevant document in the top k, 0 when none:
  ``pytrec_eval``'s ``recip_rank`` on the run cut to its top k. (BEIR and MTEB compute MRR
  themselves with a Python sort that keeps the run's order on equal scores; with the tie rule
  below the two differ only on tied scores.)

Ties: documents are ranked by score descending, and documents with equal scores by document id
*descending* (plain string comparison). This is the rule ``trec_eval`` applies
(``comp_sim_docno`` sorts by ``strcmp(docno2, docno1)`` on ties), so results match
``pytrec_eval`` exactly, ties included, and do not depend on dict order.

Which queries are averaged (BEIR's ``EvaluateRetrieval.evaluate`` and MTEB average over the
queries ``pytrec_eval`` returns, i.e. those both in ``run`` and judged in ``qrels``):

- a query judged in ``qrels`` and present in ``run`` is averaged, even when none of its
  judgments is relevant (all 0: every metric is 0) and even when its run is empty (0);
- a query of ``qrels`` missing from ``run`` is left out of the averages (not counted as 0), as
  BEIR does; ``evaluate_run`` reports how many there were as ``"n_queries_without_run"``, so
  a partial run cannot pass for a complete one unnoticed;
- a query of ``run`` that ``qrels`` does not judge (absent, or with no judgment at all) is
  ignored.

Metric names in the output are ``"ndcg@10"``, ``"recall@100"``, ``"mrr@10"``, ...
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

Run = Mapping[str, Mapping[str, float]]
Qrels = Mapping[str, Mapping[str, int]]

__all__ = [
    "rank_documents",
    "ndcg_at_k",
    "recall_at_k",
    "mrr_at_k",
    "evaluate_run",
    "per_query_metrics",
]


def rank_documents(doc_scores: Mapping[str, float], k: int | None = None) -> list[str]:
    """Doc ids by score descending, ties by doc id descending (trec_eval's rule); top k only."""
    # Two stable sorts: secondary key first (doc id descending), then primary (score descending).
    ids = sorted(doc_scores, reverse=True)
    ids.sort(key=lambda d: -float(doc_scores[d]))
    return ids if k is None else ids[:k]


def _gains(ranked: list[str], judged: Mapping[str, int]) -> np.ndarray:
    return np.array([max(float(judged.get(d, 0)), 0.0) for d in ranked], dtype=np.float64)


def _discounts(n: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, n + 2, dtype=np.float64))


def ndcg_at_k(ranked: list[str], judged: Mapping[str, int], k: int) -> float:
    """nDCG@k of one ranked list (already sorted, best first) against one query's judgments."""
    ideal = np.sort(np.array([max(float(r), 0.0) for r in judged.values()], dtype=np.float64))[
        ::-1
    ][:k]
    idcg = float(np.sum(ideal * _discounts(len(ideal))))
    if idcg <= 0.0:
        return 0.0
    gains = _gains(ranked[:k], judged)
    return float(np.sum(gains * _discounts(len(gains)))) / idcg


def recall_at_k(ranked: list[str], judged: Mapping[str, int], k: int) -> float:
    relevant = {d for d, r in judged.items() if r > 0}
    if not relevant:
        return 0.0
    return sum(1 for d in ranked[:k] if d in relevant) / len(relevant)


def mrr_at_k(ranked: list[str], judged: Mapping[str, int], k: int) -> float:
    for i, d in enumerate(ranked[:k]):
        if judged.get(d, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


_METRICS = {"ndcg": ndcg_at_k, "recall": recall_at_k, "mrr": mrr_at_k}


def _parse(names: Iterable[str]) -> list[tuple[str, str, int]]:
    parsed = []
    for name in names:
        metric, _, k = name.lower().partition("@")
        if metric not in _METRICS or not k.isdigit() or int(k) < 1:
            raise ValueError(f"Unknown metric {name!r}: use ndcg@K, recall@K or mrr@K")
        parsed.append((name.lower(), metric, int(k)))
    return parsed


DEFAULT_METRICS = ("ndcg@10", "recall@100", "mrr@10")


def per_query_metrics(
    run: Run, qrels: Qrels, metrics: Iterable[str] = DEFAULT_METRICS
) -> dict[str, dict[str, float]]:
    """``{query_id: {metric: value}}`` for every query judged in ``qrels`` (at least one
    judgment) that has a run (possibly empty): the queries BEIR averages."""
    parsed = _parse(metrics)
    max_k = max(k for _, _, k in parsed)
    out: dict[str, dict[str, float]] = {}
    for qid, judged in qrels.items():
        if not judged or qid not in run:
            continue  # not judged, or not run: pytrec_eval returns nothing for it
        ranked = rank_documents(run[qid], max_k)
        out[qid] = {name: _METRICS[metric](ranked, judged, k) for name, metric, k in parsed}
    return out


def evaluate_run(
    run: Run, qrels: Qrels, metrics: Iterable[str] = DEFAULT_METRICS
) -> dict[str, float]:
    """Mean of each metric over the evaluated queries, plus ``"n_queries"`` (how many) and
    ``"n_queries_without_run"`` (judged queries missing from ``run``, left out)."""
    metrics = list(metrics)
    per_query = per_query_metrics(run, qrels, metrics)
    result: dict[str, float] = {}
    for name, _, _ in _parse(metrics):
        values = [m[name] for m in per_query.values()]
        result[name] = float(np.mean(values)) if values else 0.0
    result["n_queries"] = len(per_query)
    result["n_queries_without_run"] = sum(1 for q, j in qrels.items() if j and q not in run)
    return result
