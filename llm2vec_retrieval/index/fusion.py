"""Fusing a dense and a lexical ranking into one (hybrid search).

Per query, over the union of the two candidate lists (each best first). Two families, as
analysed by Bruch, Gai and Ingber ("An Analysis of Fusion Functions for Hybrid Retrieval",
ACM TOIS 2023):

Rank-based
``rrf``     reciprocal rank fusion (Cormack, Clarke and Buettcher, SIGIR 2009):
            ``1 / (rrf_k + rank_dense) + 1 / (rrf_k + rank_lexical)``, rank from 1, ``rrf_k``
            60 by default (the paper's constant, also Elasticsearch's and OpenSearch's).
            Ranks only, so the two score scales never need to agree; ignores ``alpha``.
``wrrf``    weighted RRF: ``alpha / (rrf_k + rank_dense) + (1 - alpha) / (rrf_k +
            rank_lexical)``; ``alpha`` 0.5 ranks as ``rrf`` does.

Convex combination of normalized scores, ``alpha * dense + (1 - alpha) * lexical``
(``alpha`` 1 is dense only, 0 lexical only), with each list normalized over its own
candidates by:
``alpha``   min-max to [0, 1] (what Weaviate calls relative score fusion and LlamaIndex's
            HYBRID mode does with ``alpha``);
``tmm``     theoretical min-max: ``(s - floor) / (max - floor)`` with the score function's
            lowest possible value as the floor (BM25: 0; cosine: -1; other metrics have
            none, and their observed minimum stands in), the normalization Bruch et al.
            recommend, as it keeps how far the best candidate is from a non-match;
``zscore``  ``(s - mean) / std`` over the list's candidates (distribution-based; a list of
            one candidate, or of equal scores, normalizes to 0).

The store hands the score fusions (``alpha``, ``tmm``, ``zscore``) both scores of every
candidate: a document found by one side only is scored by the other too (its cosine from the
stored vector, its BM25 score from the same scoring pass), so a strong lexical match that the
dense side did not retrieve competes with its real dense score instead of the dense floor.
A document still missing from one list (the lexical list holds only documents sharing a term
with the query, and `fuse` may be called with lists that were not completed) takes 0 for that
list under ``alpha`` and ``tmm`` (the normalized minimum, or floor), the lowest candidate's z
under ``zscore``, and nothing under RRF, whose lists are each side's own ranking. Ties keep
the dense order, then the lexical order.

Inputs are (score, iid) rows as the store produces them: best first, iid -1 for padding.
Not here: which candidates enter (the store takes the ``candidates`` best of each list,
lexical ones only with a BM25 score above 0, and completes their scores) and the choice of the default, which
``python -m benchmarks.fusion_select`` makes on out-of-domain sets (docs/hybrid.md).
"""

from __future__ import annotations

import numpy as np

FUSIONS = ("rrf", "wrrf", "alpha", "tmm", "zscore")
#: Fusions whose result depends on ``alpha``.
WEIGHTED_FUSIONS = ("wrrf", "alpha", "tmm", "zscore")
#: Fusions that combine scores: the store gives them both scores of every candidate.
SCORE_FUSIONS = ("alpha", "tmm", "zscore")
DEFAULT_RRF_K = 60
#: What hybrid search fuses with unless told otherwise (the Searcher, CLI, server, LangChain
#: and LlamaIndex). Chosen on out-of-domain sets by ``python -m benchmarks.fusion_select``
#: (the worst case over the sets, not the mean; docs/hybrid.md).
DEFAULT_FUSION = "tmm"
DEFAULT_ALPHA = 0.9
#: The lowest score BM25 can give (no shared term).
LEXICAL_FLOOR = 0.0


def normalize(scores: np.ndarray, fusion: str, floor: float | None = None) -> np.ndarray:
    """One list's scores (best first) as the convex ``fusion`` sees them (see the module doc)."""
    s = np.asarray(scores, dtype=np.float64)
    if not len(s):
        return s
    if fusion == "zscore":
        std = float(s.std())
        return (s - s.mean()) / std if std > 0 else np.zeros_like(s)
    lo = float(s.min()) if fusion == "alpha" or floor is None else min(float(floor), float(s.min()))
    hi = float(s.max())
    if hi > lo:
        return (s - lo) / (hi - lo)
    return np.ones_like(s)  # one candidate, or all equal: each is the list's best


def _parts(
    scores: np.ndarray, fusion: str, weight: float, rrf_k: float, floor: float | None
) -> tuple[np.ndarray, float]:
    """(each candidate's share of the fused score, the share of a missing document)."""
    if fusion in ("rrf", "wrrf"):
        return weight / (rrf_k + np.arange(1, len(scores) + 1)), 0.0
    norm = normalize(scores, fusion, floor)
    missing = float(norm.min()) if fusion == "zscore" and len(norm) else 0.0
    return weight * norm, weight * missing


def best_first(rows: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Per-query (iids, scores) of any lengths as (scores, iids) arrays, each row sorted
    best first (ties in the given order), padded with -inf / -1: a list `fuse` reads."""
    width = max((len(i) for i, _ in rows), default=0)
    out_s = np.full((len(rows), width), -np.inf, np.float32)
    out_i = np.full((len(rows), width), -1, np.int64)
    for r, (iids, scores) in enumerate(rows):
        order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
        out_s[r, : len(order)] = np.asarray(scores, np.float32)[order]
        out_i[r, : len(order)] = np.asarray(iids, np.int64)[order]
    return out_s, out_i


def fuse(
    dense: tuple[np.ndarray, np.ndarray],
    lexical: tuple[np.ndarray, np.ndarray],
    k: int,
    fusion: str = "rrf",
    alpha: float = 0.5,
    rrf_k: float = DEFAULT_RRF_K,
    dense_floor: float | None = None,
) -> list[list[tuple[int, float, float | None, float | None]]]:
    """Per query, up to k ``(iid, fused score, dense score, lexical score)``, best first
    (None where the document was not in that list). ``dense_floor``: the lowest score the
    dense metric can give (cosine: -1), used by ``tmm``; None: the observed minimum."""
    if fusion not in FUSIONS:
        raise ValueError(f"unknown fusion {fusion!r}; valid fusions: {', '.join(FUSIONS)}")
    wd, wl = (1.0, 1.0) if fusion == "rrf" else (alpha, 1.0 - alpha)
    out = []
    for (ds, di), (ls, li) in zip(
        zip(*dense, strict=True), zip(*lexical, strict=True), strict=True
    ):
        dk, lk = di >= 0, li >= 0
        ds, di, ls, li = ds[dk], di[dk], ls[lk], li[lk]
        dpart, dmiss = _parts(ds, fusion, wd, rrf_k, dense_floor)
        lpart, lmiss = _parts(ls, fusion, wl, rrf_k, LEXICAL_FLOOR)
        # iid -> [dense share, lexical share, dense score, lexical score, order]
        fused: dict[int, list] = {}
        for pos, (iid, part, raw) in enumerate(
            zip(di.tolist(), dpart.tolist(), ds.tolist(), strict=True)
        ):
            fused[iid] = [part, lmiss, raw, None, pos]
        for pos, (iid, part, raw) in enumerate(
            zip(li.tolist(), lpart.tolist(), ls.tolist(), strict=True)
        ):
            entry = fused.setdefault(iid, [dmiss, 0.0, None, None, len(di) + pos])
            entry[1] = part
            entry[3] = raw
        ranked = sorted(fused.items(), key=lambda kv: (-(kv[1][0] + kv[1][1]), kv[1][4]))[:k]
        out.append([(iid, float(v[0] + v[1]), v[2], v[3]) for iid, v in ranked])
    return out


def resolve_fusion(
    fusion: str | None, alpha: float | None, default: dict | None = None
) -> tuple[str, float]:
    """The (fusion, alpha) a hybrid search runs with when the caller may leave either out:
    ``default`` (``{"fusion", "alpha"}``, e.g. what an index records; None: `DEFAULT_FUSION`,
    `DEFAULT_ALPHA`), except that an ``alpha`` given alone asks for a weighted fusion (the
    default one if it is weighted, else ``alpha``)."""
    default = default or default_hybrid()
    if fusion is None:
        weighted = default["fusion"] in WEIGHTED_FUSIONS
        fusion = default["fusion"] if alpha is None or weighted else "alpha"
    return fusion, float(default["alpha"]) if alpha is None else alpha


def default_hybrid() -> dict:
    """``{"fusion", "alpha"}`` of the package default, as an index manifest records it."""
    return {"fusion": DEFAULT_FUSION, "alpha": DEFAULT_ALPHA}


def recorded_hybrid(manifest: dict) -> dict | None:
    """The fusion an index manifest records (``"hybrid"``), None when it records none or
    one this version does not know (its searches then use the package default)."""
    rec = manifest.get("hybrid")
    if (
        isinstance(rec, dict)
        and rec.get("fusion") in FUSIONS
        and isinstance(rec.get("alpha"), (int, float))
        and not isinstance(rec.get("alpha"), bool)
        and 0.0 <= rec["alpha"] <= 1.0
    ):
        return {"fusion": rec["fusion"], "alpha": float(rec["alpha"])}
    return None
