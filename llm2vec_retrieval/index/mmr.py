"""Maximal marginal relevance (Carbonell & Goldstein, 1998) over candidate vectors."""

from __future__ import annotations

import numpy as np

from .._io import l2_normalize


def mmr_select(
    query: np.ndarray, candidates: np.ndarray, k: int, lambda_mult: float = 0.5
) -> list[int]:
    """Indices (into ``candidates``) of up to k picks, in the order picked.

    Each step takes the candidate maximising
    ``lambda_mult * cos(query, c) - (1 - lambda_mult) * max_{s picked} cos(c, s)``;
    the first pick is the most relevant one. ``lambda_mult=1`` is plain relevance order,
    ``0`` is maximal diversity.
    """
    m = len(candidates)
    if m == 0 or k <= 0:
        return []
    c = l2_normalize(np.asarray(candidates, dtype=np.float32))
    q = l2_normalize(np.asarray(query, dtype=np.float32).reshape(-1))
    rel = c @ q
    sim = c @ c.T
    first = int(np.argmax(rel))
    selected = [first]
    max_sim = sim[first].copy()
    taken = np.zeros(m, dtype=bool)
    taken[first] = True
    while len(selected) < min(k, m):
        score = lambda_mult * rel - (1.0 - lambda_mult) * max_sim
        score[taken] = -np.inf
        j = int(np.argmax(score))
        selected.append(j)
        taken[j] = True
        np.maximum(max_sim, sim[j], out=max_sim)
    return selected
