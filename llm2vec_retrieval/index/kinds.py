"""FAISS index backends, one per kind, behind one small interface.

Every backend stores vectors under internal int64 ids (assigned by the store, never
reused) and returns scores where larger is closer (``l2`` scores are negated squared
distances). Kinds:

``flat``      exact search (``IndexIDMap2`` over ``IndexFlatIP``/``IndexFlatL2``).
``hnsw``      ``IndexHNSWFlat`` graph (params ``M``, ``ef_construction``, ``ef_search``).
              HNSW cannot remove vectors: deletions are tombstones excluded from every
              search by an id selector; the graph is rebuilt from the live vectors
              when tombstones outnumber live vectors (and at least 64 exist).
``ivf_flat``  ``IndexIVFFlat``; ``ivf_sq8`` ``IndexIVFScalarQuantizer`` (8 bit);
``ivf_pq``    ``IndexIVFPQ`` (``pq_m`` sub-quantizers of ``pq_nbits`` bits).
              Training rule (all IVF kinds): until trained, vectors wait in a float
              buffer and searches are exact over it. The ``add`` that brings the count
              to ``train_threshold`` or more trains k-means on all stored vectors and
              indexes them. ``train_threshold`` defaults to 1000 (``39 * nlist`` when
              ``nlist`` is given; for ``ivf_pq`` at least ``2 ** pq_nbits``).
              ``nlist`` defaults to ``round(4 * sqrt(n))`` at training time, capped at
              ``n // 39`` (FAISS wants >= 39 points per centroid), at least 1. With the
              automatic ``nlist`` the store retrains when the count reaches
              ``retrain_growth`` (8) times the count at the last training (0 disables).
              Deleting vectors never untrains. ``nprobe`` (16) lists are scanned.
              PQ codebooks train on at most 64 points per code, 10 iterations.
              ``ivf_sq8``/``ivf_pq`` keep the float vectors beside (``keep_vectors=True``,
              default): results are fetched ``rescore_factor`` times over (2 / 4) and
              rescored exactly, so scores are exact; with ``keep_vectors=False`` the
              scores are FAISS' approximations and less memory is used.
``binary``    sign bits of each dimension in ``IndexBinaryFlat`` (Hamming); fetches
              ``k * rescore_factor`` (10) candidates and rescores them exactly with the
              float vectors kept beside.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from ._faiss import get_faiss
from .floatstore import FloatStore

KINDS = ("flat", "hnsw", "ivf_flat", "ivf_sq8", "ivf_pq", "binary")
METRICS = ("cosine", "ip", "l2")

_IVF_COMMON: dict[str, Any] = {
    "nlist": None,
    "nprobe": 16,
    "train_threshold": None,
    "retrain_growth": 8.0,
}
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "flat": {},
    "hnsw": {"M": 32, "ef_construction": 200, "ef_search": 128},
    "ivf_flat": dict(_IVF_COMMON),
    "ivf_sq8": {**_IVF_COMMON, "keep_vectors": True, "rescore_factor": 2},
    "ivf_pq": {
        **_IVF_COMMON,
        "pq_m": None,
        "pq_nbits": 8,
        "keep_vectors": True,
        "rescore_factor": 4,
    },
    "binary": {"rescore_factor": 10},
}

# An HNSW graph is rebuilt when tombstones exceed max(this, live count).
HNSW_MIN_TOMBSTONES_FOR_REBUILD = 64
_EXACT_CHUNK = 32768
PQ_TRAIN_POINTS_PER_CODE = 64
PQ_TRAIN_ITERATIONS = 10  # rows of stored vectors scored at once in exact search


def _pos_int(kind: str, name: str, v: Any, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < minimum:
        raise InvalidInputError(
            f"{kind}: parameter {name} must be an integer >= {minimum}, got {v!r}"
        )
    return int(v)


def default_pq_m(dim: int) -> int:
    """Sub-quantizer count: 8-dim sub-vectors when dim allows, else the largest divisor <= dim/4."""
    if dim % 8 == 0:
        return dim // 8
    for m in range(max(1, dim // 4), 0, -1):
        if dim % m == 0:
            return m
    return 1


def check_index_config(kind: str, metric: str, params: dict[str, Any]) -> None:
    """Fail early (before any vector exists) on an unknown kind, metric or parameter."""
    if kind not in DEFAULT_PARAMS:
        raise InvalidInputError(f"unknown index kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    if metric not in METRICS:
        raise InvalidInputError(f"unknown metric {metric!r}; valid metrics: {', '.join(METRICS)}")
    unknown = sorted(set(params) - set(DEFAULT_PARAMS[kind]))
    if unknown:
        valid = ", ".join(DEFAULT_PARAMS[kind]) or "none"
        raise InvalidInputError(
            f"unknown parameter(s) {', '.join(unknown)} for kind {kind!r}; valid: {valid}"
        )


def resolve_params(kind: str, dim: int | None, params: dict[str, Any]) -> dict[str, Any]:
    """Defaults merged with ``params``, validated. Raises ValueError for unknown kinds/params.

    ``dim`` None (a store whose first vectors are still to come): what depends on the
    dimension (ivf_pq's ``pq_m``) is left as given, and checked once it is known."""
    if kind not in DEFAULT_PARAMS:
        raise InvalidInputError(f"unknown index kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    defaults = DEFAULT_PARAMS[kind]
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        valid = ", ".join(defaults) or "none"
        raise InvalidInputError(
            f"unknown parameter(s) {', '.join(unknown)} for kind {kind!r}; valid: {valid}"
        )
    p = {**defaults, **params}
    if kind == "hnsw":
        p["M"] = _pos_int(kind, "M", p["M"], 2)
        p["ef_construction"] = _pos_int(kind, "ef_construction", p["ef_construction"])
        p["ef_search"] = _pos_int(kind, "ef_search", p["ef_search"])
    if kind.startswith("ivf_"):
        if p["nlist"] is not None:
            p["nlist"] = _pos_int(kind, "nlist", p["nlist"])
        p["nprobe"] = _pos_int(kind, "nprobe", p["nprobe"])
        if p["train_threshold"] is not None:
            p["train_threshold"] = _pos_int(kind, "train_threshold", p["train_threshold"])
        g = p["retrain_growth"]
        if g is None:
            g = 0.0
        if isinstance(g, bool) or not isinstance(g, (int, float)) or not (g == 0 or g > 1):
            raise InvalidInputError(
                f"{kind}: retrain_growth must be 0 (off) or a number > 1, got {g!r}"
            )
        p["retrain_growth"] = float(g)
    if kind in ("ivf_sq8", "ivf_pq"):
        if not isinstance(p["keep_vectors"], bool):
            raise InvalidInputError(
                f"{kind}: keep_vectors must be a bool, got {p['keep_vectors']!r}"
            )
    if "rescore_factor" in p:
        p["rescore_factor"] = _pos_int(kind, "rescore_factor", p["rescore_factor"])
    if kind == "ivf_pq":
        p["pq_nbits"] = _pos_int(kind, "pq_nbits", p["pq_nbits"])
        if p["pq_nbits"] > 16:
            raise InvalidInputError(f"ivf_pq: pq_nbits must be <= 16, got {p['pq_nbits']}")
        if dim is None:
            if p["pq_m"] is not None:
                p["pq_m"] = _pos_int(kind, "pq_m", p["pq_m"])
            return p
        if p["pq_m"] is None:
            p["pq_m"] = default_pq_m(dim)
        p["pq_m"] = _pos_int(kind, "pq_m", p["pq_m"])
        if dim % p["pq_m"]:
            raise InvalidInputError(f"ivf_pq: pq_m={p['pq_m']} must divide dim={dim}")
    return p


def faiss_metric(metric: str) -> int:
    faiss = get_faiss()
    return faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT


def bitmap_selector(iids: np.ndarray) -> tuple[Any, np.ndarray]:
    """An IDSelectorBitmap over iids; keep the returned array alive while the selector is used."""
    faiss = get_faiss()
    n = int(iids.max()) + 1 if len(iids) else 1
    bits = np.zeros(n, dtype=bool)
    bits[iids] = True
    bm = np.packbits(bits, bitorder="little")
    return faiss.IDSelectorBitmap(len(bm), faiss.swig_ptr(bm)), bm


def exact_scores(metric: str, q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Scores (larger is closer) of queries q (nq, d) against v (n, d) -> (nq, n)."""
    ip = q @ v.T
    if metric != "l2":
        return ip
    d2 = (q * q).sum(1)[:, None] + (v * v).sum(1)[None, :] - 2.0 * ip
    return -np.maximum(d2, 0.0)


def topk_merge(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best k columns of each row (descending), padding with -1 ids when fewer exist."""
    nq, n = scores.shape
    if n > k:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        scores = np.take_along_axis(scores, part, 1)
        ids = np.take_along_axis(ids, part, 1)
    order = np.argsort(-scores, axis=1, kind="stable")
    scores = np.take_along_axis(scores, order, 1)
    ids = np.take_along_axis(ids, order, 1)
    if scores.shape[1] < k:
        pad = k - scores.shape[1]
        scores = np.concatenate([scores, np.full((nq, pad), -np.inf, np.float32)], 1)
        ids = np.concatenate([ids, np.full((nq, pad), -1, np.int64)], 1)
    return scores.astype(np.float32, copy=False), ids


class Backend:
    """Base: a FAISS index (or none yet) plus, where needed, a FloatStore."""

    kind = ""
    binary = False
    approximate = True  # flat overrides: its selector search is already exact

    def __init__(self, dim: int, metric: str, params: dict[str, Any]):
        self.dim = dim
        self.metric = metric
        self.params = params
        self.faiss = get_faiss()
        self.fs = FloatStore(dim)
        self.index: Any = None

    # -- what subclasses implement -------------------------------------------------
    def add(self, iids: np.ndarray, x: np.ndarray) -> None:
        raise NotImplementedError

    def remove(self, iids: np.ndarray) -> None:
        raise NotImplementedError

    def search(
        self, q: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, iids) per query over ``allowed`` iids (None: all). May return
        fewer than k valid ids (iid -1) for approximate kinds; the store then falls
        back to ``exact_search``."""
        raise NotImplementedError

    def index_ids(self) -> np.ndarray:
        """Internal ids held in the FAISS index (tombstoned ones included)."""
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        return {}

    def restore(self, index: Any, state: dict[str, Any]) -> None:
        self.index = index

    def validate(self, live: np.ndarray) -> str | None:
        """After load: a message if the index does not agree with the live ids, else None."""
        if self.index is not None:
            d = self.index.d
            expected_d = 8 * math.ceil(self.dim / 8) if self.binary else self.dim
            if d != expected_d:
                return f"index dimension {d} != {expected_d}"
            if not self.binary and self.index.metric_type != faiss_metric(self.metric):
                return "index metric differs from the manifest"
        return None

    # -- shared -------------------------------------------------------------------
    @property
    def keeps_vectors(self) -> bool:
        """Whether the float store holds every live vector (so it is saved)."""
        return len(self.fs) > 0

    def vectors(self, iids: np.ndarray) -> np.ndarray:
        """Stored vectors for iids (exact unless a lossy index is the only copy)."""
        iids = np.asarray(iids, dtype=np.int64)
        if len(iids) == 0:
            return np.empty((0, self.dim), np.float32)
        if len(self.fs):
            return self.fs.get(iids)
        return self.index.reconstruct_batch(iids)

    def exact_search(
        self, q: np.ndarray, k: int, iids: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k over the given iids (chunked so memory stays bounded)."""
        nq = len(q)
        best_s = np.full((nq, 0), -np.inf, np.float32)
        best_i = np.full((nq, 0), -1, np.int64)
        for start in range(0, len(iids), _EXACT_CHUNK):
            chunk = iids[start : start + _EXACT_CHUNK]
            s = exact_scores(self.metric, q, self.vectors(chunk))
            ids = np.broadcast_to(chunk, s.shape)
            best_s, best_i = topk_merge(
                np.concatenate([best_s, s], 1), np.concatenate([best_i, ids], 1), k
            )
        if best_s.shape[1] < k:
            best_s, best_i = topk_merge(best_s, best_i, k)
        return best_s, best_i

    def rescore(self, q: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores for candidate iids (nq, kk; -1 = none) from the float store; top k."""
        nq, kk = cand.shape
        out_s = np.full((nq, k), -np.inf, np.float32)
        out_i = np.full((nq, k), -1, np.int64)
        block = max(1, 4096 // max(kk, 1))
        for b in range(0, nq, block):
            c = cand[b : b + block]
            valid = c >= 0
            rows = np.zeros(c.shape, np.int64)
            if valid.any():
                rows[valid] = self.fs.rows(c[valid])
            v = self.fs._data[rows]  # (nb, kk, d)
            qb = q[b : b + block]
            ip = np.einsum("qd,qkd->qk", qb, v)
            if self.metric == "l2":
                s = -np.maximum((qb * qb).sum(1)[:, None] + (v * v).sum(2) - 2 * ip, 0)
            else:
                s = ip
            s = np.where(valid, s, -np.inf).astype(np.float32)
            s, i = topk_merge(s, np.where(valid, c, -1), k)
            out_s[b : b + block], out_i[b : b + block] = s, i
        return out_s, out_i

    def _scores(self, d: np.ndarray) -> np.ndarray:
        return -d if self.metric == "l2" else d

    def write(self, path: str) -> bool:
        """Write the FAISS index to path; False when there is none yet."""
        if self.index is None:
            return False
        if self.binary:
            self.faiss.write_index_binary(self.index, path)
        else:
            self.faiss.write_index(self.index, path)
        return True

    def read(self, data: np.ndarray) -> Any:
        if self.binary:
            return self.faiss.deserialize_index_binary(data)
        return self.faiss.deserialize_index(data)


class FlatBackend(Backend):
    kind = "flat"
    approximate = False

    def __init__(self, dim: int, metric: str, params: dict[str, Any]):
        super().__init__(dim, metric, params)
        self.index = self.faiss.index_factory(dim, "IDMap2,Flat", faiss_metric(metric))

    def add(self, iids: np.ndarray, x: np.ndarray) -> None:
        self.index.add_with_ids(x, iids)

    def remove(self, iids: np.ndarray) -> None:
        if len(iids):
            self.index.remove_ids(self.faiss.IDSelectorBatch(iids))

    def search(
        self, q: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        params = None
        if allowed is not None:
            sel, _keep = bitmap_selector(allowed)
            params = self.faiss.SearchParameters(sel=sel)
        d, i = self.index.search(q, k, params=params)
        return self._scores(d), i

    def index_ids(self) -> np.ndarray:
        return self.faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def validate(self, live: np.ndarray) -> str | None:
        msg = super().validate(live)
        if msg:
            return msg
        ids = self.index_ids()
        if len(ids) != len(live) or not np.array_equal(np.sort(ids), np.sort(live)):
            return (
                f"index holds {len(ids)} vectors whose ids differ from the docstore's {len(live)}"
            )
        return None


class HNSWBackend(Backend):
    kind = "hnsw"

    def __init__(self, dim: int, metric: str, params: dict[str, Any]):
        super().__init__(dim, metric, params)
        self.tombstones: set[int] = set()
        self._live_sel_cache: tuple[Any, np.ndarray] | None = None
        self.index = self._new_index()

    def _new_index(self):
        index = self.faiss.index_factory(
            self.dim, f"IDMap2,HNSW{self.params['M']},Flat", faiss_metric(self.metric)
        )
        self.faiss.downcast_index(index.index).hnsw.efConstruction = self.params["ef_construction"]
        return index

    def add(self, iids: np.ndarray, x: np.ndarray) -> None:
        self.index.add_with_ids(x, iids)
        self._live_sel_cache = None

    def remove(self, iids: np.ndarray) -> None:
        self.tombstones.update(np.asarray(iids, np.int64).tolist())
        self._live_sel_cache = None
        live = self.index.ntotal - len(self.tombstones)
        if len(self.tombstones) > max(HNSW_MIN_TOMBSTONES_FOR_REBUILD, live):
            self.rebuild()

    def live_ids(self) -> np.ndarray:
        ids = self.index_ids()
        if self.tombstones:
            ids = ids[~np.isin(ids, np.fromiter(self.tombstones, np.int64, len(self.tombstones)))]
        return ids

    def rebuild(self) -> None:
        """Rebuild the graph from the live vectors, dropping tombstones."""
        live = self.live_ids()
        x = self.index.reconstruct_batch(live) if len(live) else None
        self.index = self._new_index()
        if x is not None:
            self.index.add_with_ids(x, live)
        self.tombstones.clear()
        self._live_sel_cache = None

    def search(
        self, q: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        sel = None
        ef = max(self.params["ef_search"], k)
        if allowed is not None:
            sel, _keep = bitmap_selector(allowed)
            # a filter hides most neighbours: widen the beam with the selectivity (<= 8x)
            live = max(1, self.index.ntotal - len(self.tombstones))
            ef = int(ef * min(8.0, max(1.0, live / max(1, len(allowed)))))
        elif self.tombstones:
            if self._live_sel_cache is None:
                self._live_sel_cache = bitmap_selector(self.live_ids())
            sel = self._live_sel_cache[0]
        params = self.faiss.SearchParametersHNSW(efSearch=ef, sel=sel)
        d, i = self.index.search(q, k, params=params)
        return self._scores(d), i

    def index_ids(self) -> np.ndarray:
        return self.faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def restore(self, index: Any, state: dict[str, Any]) -> None:
        self.index = index
        self.faiss.downcast_index(index.index).hnsw.efConstruction = self.params["ef_construction"]

    def validate(self, live: np.ndarray) -> str | None:
        msg = super().validate(live)
        if msg:
            return msg
        ids = self.index_ids()
        if len(np.unique(ids)) != len(ids):
            return "index holds duplicate ids"
        missing = ~np.isin(live, ids)
        if missing.any():
            return f"{int(missing.sum())} docstore ids are missing from the index"
        self.tombstones = set(ids[~np.isin(ids, live)].tolist())
        self._live_sel_cache = None
        return None


class IVFBackend(Backend):
    """ivf_flat / ivf_sq8 / ivf_pq; untrained until enough vectors exist (see module doc)."""

    def __init__(self, kind: str, dim: int, metric: str, params: dict[str, Any]):
        super().__init__(dim, metric, params)
        self.kind = kind
        self.keep = bool(params.get("keep_vectors", False))
        self.nlist: int | None = None
        self.n_at_train = 0

    @property
    def trained(self) -> bool:
        return self.index is not None

    @property
    def train_threshold(self) -> int:
        p = self.params
        t = p["train_threshold"]
        if t is None:
            t = 39 * p["nlist"] if p["nlist"] is not None else 1000
        if p["nlist"] is not None:
            t = max(t, p["nlist"])
        if self.kind == "ivf_pq":
            t = max(t, 2 ** p["pq_nbits"])
        return t

    def auto_nlist(self, n: int) -> int:
        return max(1, min(int(round(4 * math.sqrt(n))), n // 39))

    def _code(self) -> str:
        if self.kind == "ivf_flat":
            return "Flat"
        if self.kind == "ivf_sq8":
            return "SQ8"
        return f"PQ{self.params['pq_m']}x{self.params['pq_nbits']}"

    @property
    def ntotal(self) -> int:
        return self.index.ntotal if self.trained else len(self.fs)

    def add(self, iids: np.ndarray, x: np.ndarray) -> None:
        if not self.trained or self.keep:
            self.fs.add(iids, x)
        if self.trained:
            self.index.add_with_ids(x, iids)
            g = self.params["retrain_growth"]
            if self.params["nlist"] is None and g and self.index.ntotal >= g * self.n_at_train:
                self.train()
        elif len(self.fs) >= self.train_threshold:
            self.train()

    def train(self) -> None:
        """(Re)train on every stored vector and re-index them."""
        if self.trained and not self.keep:
            iids = self.index_ids()
            x = self.index.reconstruct_batch(iids)
        else:
            iids, x = self.fs.all()
            iids, x = iids.copy(), np.ascontiguousarray(x)
        n = len(iids)
        if n == 0:
            return
        nlist = self.params["nlist"] or self.auto_nlist(n)
        nlist = min(nlist, n)
        # index_factory returns the concrete class (IndexIVFFlat, ...); never rebind a
        # downcast_index() proxy: it does not own the C++ object.
        index = self.faiss.index_factory(
            self.dim, f"IVF{nlist},{self._code()}", faiss_metric(self.metric)
        )
        index.cp.min_points_per_centroid = 1  # we choose nlist; silence FAISS' size warning
        if self.kind == "ivf_pq":
            # Training runs inside add(): keep it bounded. Codebooks are trained on at most
            # 64 points per code (16k for 8 bits) with 10 k-means iterations (FAISS: 256
            # and 25), ~10x cheaper; rescoring with kept vectors hides the small loss.
            index.pq.cp.min_points_per_centroid = 1
            index.pq.cp.max_points_per_centroid = PQ_TRAIN_POINTS_PER_CODE
            index.pq.cp.niter = PQ_TRAIN_ITERATIONS
            index.do_polysemous_training = False  # index_factory turns it on; slow and unused here
        index.train(x)
        index.set_direct_map_type(self.faiss.DirectMap.Hashtable)
        index.add_with_ids(x, iids)
        self.index, self.nlist, self.n_at_train = index, nlist, n
        if not self.keep:
            self.fs.clear()

    def remove(self, iids: np.ndarray) -> None:
        if len(iids) == 0:
            return
        self.fs.remove(iids)
        if self.trained:
            self.index.remove_ids(
                self.faiss.IDSelectorArray(np.ascontiguousarray(iids, dtype=np.int64))
            )

    def search(
        self, q: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        if not self.trained:
            iids = allowed if allowed is not None else self.fs.all()[0].copy()
            return self.exact_search(q, k, iids)
        kk = k * self.params.get("rescore_factor", 1) if self.keep else k
        sel = None
        if allowed is not None:
            sel, _keep = bitmap_selector(allowed)
        params = self.faiss.SearchParametersIVF(
            nprobe=min(self.params["nprobe"], self.nlist), sel=sel
        )
        d, i = self.index.search(q, kk, params=params)
        if self.keep:
            return self.rescore(q, i, k)
        return self._scores(d), i

    def index_ids(self) -> np.ndarray:
        if not self.trained:
            return self.fs.all()[0].copy()
        invl = self.index.invlists
        parts = [np.empty(0, np.int64)]
        for lst in range(self.index.nlist):
            size = invl.list_size(lst)
            if size:
                parts.append(self.faiss.rev_swig_ptr(invl.get_ids(lst), size).astype(np.int64))
        return np.concatenate(parts)

    def state(self) -> dict[str, Any]:
        return {"trained": self.trained, "nlist": self.nlist, "n_at_train": self.n_at_train}

    def restore(self, index: Any, state: dict[str, Any]) -> None:
        self.nlist = state.get("nlist")
        self.n_at_train = int(state.get("n_at_train", 0))
        if index is not None:
            if not isinstance(index, self.faiss.IndexIVF):
                raise InvalidInputError(f"expected an IVF index, got {type(index).__name__}")
            if index.direct_map.type != self.faiss.DirectMap.Hashtable:
                index.set_direct_map_type(self.faiss.DirectMap.Hashtable)
        self.index = index

    def validate(self, live: np.ndarray) -> str | None:
        msg = super().validate(live)
        if msg:
            return msg
        if self.trained:
            if self.index.nlist != self.nlist:
                return f"index has {self.index.nlist} lists, manifest says {self.nlist}"
            ids = self.index_ids()
            if len(ids) != len(live) or not np.array_equal(np.sort(ids), np.sort(live)):
                return f"index holds {len(ids)} vectors whose ids differ from the docstore's {len(live)}"
        return None


class BinaryBackend(Backend):
    kind = "binary"
    binary = True

    def __init__(self, dim: int, metric: str, params: dict[str, Any]):
        super().__init__(dim, metric, params)
        self.nbits = 8 * math.ceil(dim / 8)
        self.index = self.faiss.IndexBinaryIDMap2(self.faiss.IndexBinaryFlat(self.nbits))

    def codes(self, x: np.ndarray) -> np.ndarray:
        return np.packbits(x > 0, axis=1)  # zero-padded to a multiple of 8 bits

    def add(self, iids: np.ndarray, x: np.ndarray) -> None:
        self.fs.add(iids, x)
        self.index.add_with_ids(self.codes(x), iids)

    def remove(self, iids: np.ndarray) -> None:
        if len(iids):
            self.fs.remove(iids)
            self.index.remove_ids(self.faiss.IDSelectorBatch(iids))

    def search(
        self, q: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        params = None
        if allowed is not None:
            sel, _keep = bitmap_selector(allowed)
            params = self.faiss.SearchParameters(sel=sel)
        kk = k * self.params["rescore_factor"]
        _, i = self.index.search(self.codes(q), kk, params=params)
        return self.rescore(q, i, k)

    def index_ids(self) -> np.ndarray:
        return self.faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def restore(self, index: Any, state: dict[str, Any]) -> None:
        self.index = index

    def validate(self, live: np.ndarray) -> str | None:
        msg = super().validate(live)
        if msg:
            return msg
        ids = self.index_ids()
        if len(ids) != len(live) or not np.array_equal(np.sort(ids), np.sort(live)):
            return f"index holds {len(ids)} codes whose ids differ from the docstore's {len(live)}"
        return None


def make_backend(kind: str, dim: int, metric: str, params: dict[str, Any]) -> Backend:
    factories: dict[str, Callable[[], Backend]] = {
        "flat": lambda: FlatBackend(dim, metric, params),
        "hnsw": lambda: HNSWBackend(dim, metric, params),
        "ivf_flat": lambda: IVFBackend("ivf_flat", dim, metric, params),
        "ivf_sq8": lambda: IVFBackend("ivf_sq8", dim, metric, params),
        "ivf_pq": lambda: IVFBackend("ivf_pq", dim, metric, params),
        "binary": lambda: BinaryBackend(dim, metric, params),
    }
    return factories[kind]()
