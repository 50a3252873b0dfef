"""Fusing a dense and a lexical ranking into one (hybrid search).

Two rules, both per query over the union of the two candidate lists:

``rrf``    reciprocal rank fusion (Cormack, Clarke and Buettcher, SIGIR 2009):
           ``sum over lists of 1 / (rrf_k + rank)``, rank from 1, ``rrf_k`` 60 by default
           (the paper's constant, also Elasticsearch's and OpenSearch's default). Uses ranks
           only, so the two score scales never need to agree.
``alpha``  normalized-score weighting (what Weaviate calls relative score fusion and
           LlamaIndex's HYBRID mode does with ``alpha``): each list's scores min-max
           scaled to [0, 1] over its candidates, then
           ``alpha * dense + (1 - alpha) * lexical``; a document missing from a list gets 0
           for it. ``alpha`` = 1 is dense only, 0 lexical only.

Inputs are (score, iid) rows as the store produces them: best first, iid -1 for padding.
"""

from __future__ import annotations

import numpy as np

FUSIONS = ("rrf", "alpha")
DEFAULT_RRF_K = 60


def _minmax(s: np.ndarray) -> np.ndarray:
    lo, hi = float(s.min()), float(s.max())
    if hi > lo:
        return (s - lo) / (hi - lo)
    return np.ones_like(s)  # one candidate, or all equal: each is the list's best


def fuse(
    dense: tuple[np.ndarray, np.ndarray],
    lexical: tuple[np.ndarray, np.ndarray],
    k: int,
    fusion: str = "rrf",
    alpha: float = 0.5,
    rrf_k: float = DEFAULT_RRF_K,
) -> list[list[tuple[int, float, float | None, float | None]]]:
    """Per query, up to k ``(iid, fused score, dense score, lexical score)``, best first
    (None where the document was not in that list). Ties keep the dense order, then the
    lexical order."""
    if fusion not in FUSIONS:
        raise ValueError(f"unknown fusion {fusion!r}; valid fusions: {', '.join(FUSIONS)}")
    out = []
    for (ds, di), (ls, li) in zip(
        zip(*dense, strict=True), zip(*lexical, strict=True), strict=True
    ):
        dk, lk = di >= 0, li >= 0
        ds, di, ls, li = ds[dk], di[dk], ls[lk], li[lk]
        if fusion == "rrf":
            dpart = 1.0 / (rrf_k + np.arange(1, len(di) + 1))
            lpart = 1.0 / (rrf_k + np.arange(1, len(li) + 1))
        else:
            dpart = alpha * _minmax(ds) if len(ds) else ds
            lpart = (1.0 - alpha) * _minmax(ls) if len(ls) else ls
        fused: dict[int, list] = {}
        for pos, (iid, part, raw) in enumerate(
            zip(di.tolist(), dpart.tolist(), ds.tolist(), strict=True)
        ):
            fused[iid] = [part, raw, None, pos]
        for pos, (iid, part, raw) in enumerate(
            zip(li.tolist(), lpart.tolist(), ls.tolist(), strict=True)
        ):
            entry = fused.setdefault(iid, [0.0, None, None, len(di) + pos])
            entry[0] += part
            entry[2] = raw
        ranked = sorted(fused.items(), key=lambda kv: (-kv[1][0], kv[1][3]))[:k]
        out.append([(iid, float(v[0]), v[1], v[2]) for iid, v in ranked])
    return out
