"""IndexStore: a FAISS index plus a docstore (ids, texts, metadata) and a BM25 index of
the texts, with upserts, deletes, pre-filtered dense, lexical and hybrid search, MMR and
atomic persistence."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .._io import l2_normalize
from ..text import check_query
from ._faiss import get_faiss
from .docstore import DocStore, json_copy
from .filters import compile_filter
from .fusion import (
    DEFAULT_ALPHA,
    DEFAULT_FUSION,
    DEFAULT_RRF_K,
    SCORE_FUSIONS,
    best_first,
    fuse,
)
from .kinds import (
    KINDS,
    METRICS,
    Backend,
    IVFBackend,
    exact_scores,
    make_backend,
    resolve_params,
)
from .lexical import LexicalIndex
from .mmr import mmr_select
from .persistence import load_store, save_store
from .request import (
    DEFAULT_HYBRID_CANDIDATES,
    DEFAULT_TEXT_MODE,
    MODES,
    SearchHit,
    SearchRequest,
    SearchRequestError,
    number,
)
from .segments import merge_plan, new_name
from .snapshot import StoreSnapshot
from .vectors import VectorSegments

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_FUSION",
    "DEFAULT_HYBRID_CANDIDATES",
    "DEFAULT_TEXT_MODE",
    "MODES",
    "NO_LEXICAL_MESSAGE",
    "IndexStore",
    "Record",
    "SearchHit",
]

NO_LEXICAL_MESSAGE = (
    "this index has no lexical (BM25) part: it was saved before hybrid search existed or made "
    "with lexical=False. Add it from the stored texts with store.build_lexical() and save "
    "(command line: run `llm2vec-retrieval index` on the folder again; nothing is re-embedded)"
)


@dataclass
class Record:
    """A stored document: ``vector`` as stored (L2-normalized for cosine), or None."""

    id: str
    text: str | None
    metadata: dict[str, Any] = field(default_factory=dict)
    vector: np.ndarray | None = None


def _check_json(what: str, value: Any) -> Any:
    """A JSON round-trip copy of value, or ValueError naming ``what``."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} is not JSON-serializable: {exc}") from None


class IndexStore:
    """Vectors in a FAISS index, with texts and JSON metadata, addressed by string ids.

    Args:
        dim: vector dimension, or None to take it from the first vectors added (an
            empty store saves and loads without one).
        kind: ``flat`` (exact), ``hnsw``, ``ivf_flat``, ``ivf_sq8``, ``ivf_pq`` or
            ``binary``; see :mod:`llm2vec_retrieval.index.kinds` for each kind's params
            and the IVF training rule.
        metric: ``cosine`` (inner product of L2-normalized vectors: the store normalizes
            on add and on search), ``ip`` (raw inner product) or ``l2``.
        fingerprint: the embedder fingerprint (any JSON-serializable dict), saved with
            the index and compared on load.
        lexical: keep a BM25 index of the texts beside the vectors (default), for
            ``search(mode="lexical"|"hybrid")``; see :mod:`.lexical`.
        **params: kind parameters (``M``, ``ef_construction``, ``ef_search`` for hnsw;
            ``nlist``, ``nprobe``, ``train_threshold``, ``retrain_growth``, ``pq_m``,
            ``pq_nbits``, ``keep_vectors``, ``rescore_factor`` for IVF kinds;
            ``rescore_factor`` for binary). Unknown names raise ValueError.

    Scores (``SearchHit.score``): larger is always closer. ``cosine``: cosine
    similarity in [-1, 1]; ``ip``: the raw inner product; ``l2``: the negated squared
    Euclidean distance (``-||q - v||^2``, so 0 is an exact match).

    All public methods take one re-entrant lock: the store is safe to share between
    threads (operations run one at a time).
    """

    #: With a filter matching at most this many documents, approximate kinds search
    #: the matching vectors exactly instead of running a filtered ANN search (cheaper
    #: and exact at that size). Set on the class or an instance; 0 disables.
    exact_filter_max: int = 8192

    def __init__(
        self,
        dim: int | None,
        kind: str = "flat",
        metric: str = "cosine",
        fingerprint: dict[str, Any] | None = None,
        lexical: bool = True,
        **params: Any,
    ):
        get_faiss()  # clear ImportError when faiss is missing
        if dim is not None and (
            isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1
        ):
            raise ValueError(f"dim must be a positive integer or None, got {dim!r}")
        if kind not in KINDS:
            raise ValueError(f"unknown index kind {kind!r}; valid kinds: {', '.join(KINDS)}")
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; valid metrics: {', '.join(METRICS)}")
        if fingerprint is not None:
            if not isinstance(fingerprint, Mapping):
                raise ValueError(
                    f"fingerprint must be a dict or None, got {type(fingerprint).__name__}"
                )
            fingerprint = _check_json("fingerprint", dict(fingerprint))
        self._dim: int | None = None if dim is None else int(dim)
        self._kind = kind
        self._metric = metric
        self._fingerprint: dict[str, Any] | None = fingerprint
        self._given_params = dict(params)  # resolved again when the first add fixes dim
        self._params = resolve_params(kind, self._dim, params)
        self._backend_obj: Backend | None = None
        self._open_backend: Callable[[], Backend] | None = None  # a loaded store's, until used
        #: a flat store's vectors in segments (the FAISS index is built from them)
        self._vecs: VectorSegments | None = None
        if self._dim is not None:
            self._backend = make_backend(kind, self._dim, metric, self._params)
            if kind == "flat":
                self._vecs = VectorSegments(self._dim)
        self._extra: dict[str, Any] = {}
        self._version: str | None = None
        self._docs = DocStore()
        self._next_iid = 0
        self._live_cache: np.ndarray | None = None
        self._lexical: LexicalIndex | None = LexicalIndex() if lexical else None
        self._lock = threading.RLock()

    # -- properties ---------------------------------------------------------------
    @property
    def _backend(self) -> Backend | None:
        """The FAISS side; a loaded store reads it from disk on first use (a lexical search
        never does)."""
        if self._open_backend is not None:
            with self._lock:
                if self._open_backend is not None:
                    self._backend_obj = self._open_backend()
                    self._open_backend = None
        return self._backend_obj

    @_backend.setter
    def _backend(self, backend: Backend | None) -> None:
        self._backend_obj = backend

    @property
    def _deferred(self) -> bool:
        """True while the FAISS side is not built and the vector segments hold every vector:
        adds and deletes then change the segments only (a commit reads no index)."""
        return self._open_backend is not None and self._vecs is not None and self._vecs.complete

    def _backend_from_segments(self) -> Backend:
        """A flat store's FAISS index, built from its vector segments (live vectors only)."""
        assert self._dim is not None and self._vecs is not None
        backend = make_backend(self._kind, self._dim, self._metric, self._params)
        sealed, pending = self._docs.parts()
        self._vecs.fill(backend.add, sealed, pending)
        return backend

    def _fetch_vectors(self, iids: np.ndarray) -> np.ndarray:
        """Vectors the segments do not hold, from the FAISS side (a store from an older
        save, or vectors added after the index was built)."""
        return np.asarray(self._dense().vectors(iids), np.float32)

    def _dense(self) -> Backend:
        """The FAISS side of a store that has a dimension (so has vectors or may get them):
        one is made with the dimension (``__init__``, `_fix_dim`, `from_snapshot`), or opened
        on first use. For callers that only get here once the store has a document or a
        vector; caller holds the lock."""
        backend = self._backend
        assert backend is not None, "the store has documents or vectors but no FAISS side"
        return backend

    @property
    def dim(self) -> int | None:
        """The vector dimension; None until the first add when the store was made without."""
        return self._dim

    @property
    def kind(self) -> str:
        return self._kind

    @property
    def metric(self) -> str:
        return self._metric

    @property
    def fingerprint(self) -> dict[str, Any] | None:
        return None if self._fingerprint is None else json_copy(self._fingerprint)

    @property
    def params(self) -> dict[str, Any]:
        """The kind parameters in force (defaults filled in)."""
        return dict(self._params)

    @property
    def ids(self) -> list[str]:
        """Ids in insertion order (an upsert keeps the id's first position)."""
        with self._lock:
            return self._docs.ids()

    @property
    def has_lexical(self) -> bool:
        """True when the store keeps a BM25 index of its texts (lexical and hybrid search)."""
        return self._lexical is not None

    @property
    def is_trained(self) -> bool:
        """False only for an IVF store that has not reached its training threshold."""
        if not self._kind.startswith("ivf_"):
            return True
        b = self._backend
        return b.trained if isinstance(b, IVFBackend) else False

    @property
    def extra(self) -> dict[str, Any]:
        """The caller's metadata saved with the store (``save(path, extra=...)``), as last
        saved or loaded; {} when none."""
        return json_copy(self._extra)

    @property
    def version(self) -> str | None:
        """The saved version this store was loaded from or last saved as (its manifest's
        checksum), None when neither; it does not change with edits until the next save.
        A caller that records it beside its own state after a save can tell, at the next
        load, that the store holds what it saved then."""
        return self._version

    def __len__(self) -> int:
        return len(self._docs)

    def __contains__(self, id: object) -> bool:
        with self._lock:
            return id in self._docs

    def __repr__(self) -> str:
        return f"IndexStore(dim={self._dim}, kind={self._kind!r}, metric={self._metric!r}, count={len(self)})"

    # -- input checks -------------------------------------------------------------
    def _as_matrix(self, x: Any, what: str) -> np.ndarray:
        a = np.asarray(x, dtype=np.float32)
        if a.ndim == 1:
            a = a.reshape(1, -1)
        if a.ndim != 2 or (a.shape[1] != self._dim if self._dim else a.shape[1] < 1):
            raise ValueError(f"{what} must have shape (n, {self._dim or 'dim'}), got {np.shape(x)}")
        if not np.isfinite(a).all():
            bad = int(np.nonzero(~np.isfinite(a).all(axis=1))[0][0])
            raise ValueError(f"{what} row {bad} contains NaN or infinite values")
        if self._metric == "cosine":
            return np.ascontiguousarray(l2_normalize(a))  # zero vectors stay zero
        return np.array(a, dtype=np.float32, order="C", copy=True)

    # -- mutation -----------------------------------------------------------------
    def add(
        self,
        ids: Sequence[str],
        vectors: Any,
        texts: Sequence[str | None] | None = None,
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> list[str]:
        """Insert or replace (upsert) documents; returns the ids.

        Re-adding an existing id replaces its vector, text and metadata (``None`` text /
        metadata included). Everything is validated before anything changes: ids must
        be unique non-empty strings, ``vectors`` of shape (n, dim) without NaN/inf,
        ``texts``/``metadatas`` of length n, metadata JSON-serializable dicts
        (ValueError names the id).
        """
        ids = list(ids)
        n = len(ids)
        for i in ids:
            if not isinstance(i, str) or not i:
                raise ValueError(f"ids must be non-empty strings, got {i!r}")
        if len(set(ids)) != n:
            seen: set[str] = set()
            dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
            raise ValueError(f"duplicate id {dup!r} in one add() call")
        if n == 0:
            if vectors is not None and np.size(vectors):
                raise ValueError("vectors given without ids")
            return []
        x = self._as_matrix(vectors, "vectors")
        if len(x) != n:
            raise ValueError(f"got {n} ids but {len(x)} vectors")
        if texts is None:
            texts = [None] * n
        else:
            texts = list(texts)
            if len(texts) != n:
                raise ValueError(f"got {n} ids but {len(texts)} texts")
            for i, t in zip(ids, texts, strict=True):
                if t is not None and not isinstance(t, str):
                    raise ValueError(
                        f"text for id {i!r} must be a str or None, got {type(t).__name__}"
                    )
        metas: list[dict[str, Any]] = []
        if metadatas is None:
            metas = [{} for _ in range(n)]
        else:
            metadatas = list(metadatas)
            if len(metadatas) != n:
                raise ValueError(f"got {n} ids but {len(metadatas)} metadatas")
            for i, m in zip(ids, metadatas, strict=True):
                if m is None:
                    metas.append({})
                    continue
                if not isinstance(m, Mapping):
                    raise ValueError(
                        f"metadata for id {i!r} must be a dict, got {type(m).__name__}"
                    )
                for key in m:
                    if not isinstance(key, str):
                        raise ValueError(f"metadata for id {i!r} has a non-string key {key!r}")
                metas.append(_check_json(f"metadata for id {i!r}", dict(m)))
        tokens = self._lexical.tokenize(texts) if self._lexical is not None else None
        with self._lock:
            self._fix_dim(x.shape[1])
            new_iids = np.arange(self._next_iid, self._next_iid + n, dtype=np.int64)
            self._docs.id_map  # noqa: B018 (read the ids before anything changes)
            deferred = self._deferred
            if deferred:
                assert self._vecs is not None
                self._vecs.add(new_iids, x)
            else:
                self._dense().add(new_iids, x)
            if self._lexical is not None:
                if tokens is None:  # another thread built the BM25 index since the tokenizing
                    tokens = self._lexical.tokenize(texts)
                self._lexical.add(new_iids.tolist(), tokens)
            self._next_iid += n
            self._live_cache = None
            old = [
                o
                for i, iid, t, m in zip(ids, new_iids.tolist(), texts, metas, strict=True)
                if (o := self._docs.put(i, iid, t, m)) is not None
            ]
            if old:
                if not deferred:  # else the docstore's marks say they are gone
                    self._dense().remove(np.asarray(old, dtype=np.int64))
                if self._lexical is not None:
                    self._lexical.remove(old)
        return ids

    def _fix_dim(self, dim: int) -> None:
        """The first vectors of a store made without a dimension fix it; caller holds the lock."""
        if self._dim is not None:  # its FAISS side exists, or is built on first use
            if dim != self._dim:  # another thread's first add fixed another one meanwhile
                raise ValueError(f"vectors must have shape (n, {self._dim}), got (n, {dim})")
            return
        params = resolve_params(self._kind, dim, self._given_params)
        self._backend = make_backend(self._kind, dim, self._metric, params)
        self._dim, self._params = dim, params
        if self._kind == "flat":
            self._vecs = VectorSegments(dim)

    def delete(self, ids: Iterable[str]) -> int:
        """Remove documents; returns how many existed. Missing ids are ignored."""
        with self._lock:
            found = list(dict.fromkeys(i for i in ids if i in self._docs))
            if not found:
                return 0
            iids = np.asarray([self._docs.pop(i) for i in found], dtype=np.int64)
            if not self._deferred:  # else the docstore's marks say they are gone
                self._dense().remove(iids)
            if self._lexical is not None:
                self._lexical.remove(iids.tolist())
            self._live_cache = None
            return len(found)

    def build_lexical(self) -> None:
        """(Re)build the BM25 index from the stored texts, e.g. for a store saved before
        hybrid search existed. Vectors are untouched; save the store to keep it."""
        with self._lock:
            lexical = LexicalIndex()
            sealed, pending = self._docs.parts()
            for seg, iids in zip(self._docs.segments, sealed, strict=True):
                texts = [text for _, text, _ in self._docs.records(iids.tolist())]
                lexical.add(iids.tolist(), lexical.tokenize(texts))
                lexical.seal(seg.name)  # one lexical segment per docstore segment
            texts = [text for _, text, _ in self._docs.records(pending.tolist())]
            lexical.add(pending.tolist(), lexical.tokenize(texts))
            self._lexical = lexical

    def drop_lexical(self) -> None:
        """Remove the BM25 index (dense search only from now on); save to keep it so."""
        with self._lock:
            self._lexical = None

    def train(self) -> None:
        """IVF kinds: (re)train now on all stored vectors, below the threshold too."""
        with self._lock:
            if isinstance(self._backend, IVFBackend):  # None before the first add
                self._backend.train()

    # -- reading ------------------------------------------------------------------
    def get(self, ids: Iterable[str], include_vectors: bool = True) -> list[Record]:
        """Records for the ids that exist, in the order asked (missing ids skipped)."""
        with self._lock:
            idmap = self._docs.id_map
            found = [(i, idmap[i]) for i in ids if i in idmap]
            iids = np.asarray([iid for _, iid in found], dtype=np.int64)
            vecs = None
            if include_vectors and found:
                vecs = self._dense().vectors(iids)
            return [
                Record(i, text, meta, None if vecs is None else vecs[j].copy())
                for j, (i, text, meta) in enumerate(self._docs.records(iids.tolist()))
            ]

    def metadata(self) -> dict[str, dict[str, Any]]:
        """Every document's metadata by id, without the texts: what a caller that scans
        the whole store (e.g. which chunks each source file has) needs, read faster than
        ``get(ids)`` (one JSON parse per segment instead of one per document)."""
        with self._lock:
            return dict(self._docs.metadata_items())

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        """Stored vectors (n, dim) for ids, in order; KeyError for a missing id.

        Exact for every kind except ``ivf_sq8``/``ivf_pq`` with ``keep_vectors=False``
        (then decoded from the codes)."""
        with self._lock:
            missing = [i for i in ids if i not in self._docs]
            if missing:
                raise KeyError(f"unknown id(s): {', '.join(map(repr, missing[:5]))}")
            if self._backend is None:  # no vector yet, so ids is empty
                return np.empty((0, 0), np.float32)
            return self._backend.vectors(
                np.asarray([self._docs.iid(i) for i in ids], dtype=np.int64)
            )

    def _live_iids(self) -> np.ndarray:
        if self._live_cache is None:
            self._live_cache = self._docs.live_iids()
        return self._live_cache

    def _allowed(self, pred: Callable[[Mapping[str, Any]], bool] | None) -> np.ndarray | None:
        """iids matching the filter, or None when every document may be returned."""
        if pred is None or not len(self._docs):
            return None
        allowed = self._docs.matching(pred)
        return None if len(allowed) == len(self._docs) else allowed

    def _search_iids(
        self, q: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, iids) (nq, min(k, n_matching)); caller holds the lock."""
        nq = len(q)
        n = len(self._docs) if allowed is None else len(allowed)
        kk = min(k, n)
        if kk == 0:
            return np.empty((nq, 0), np.float32), np.empty((nq, 0), np.int64)
        backend = self._dense()
        if allowed is not None and backend.approximate and len(allowed) <= self.exact_filter_max:
            # few matches: exact search over them is cheaper than a filtered ANN search
            s, i = backend.exact_search(q, kk, allowed)
        else:
            s, i = backend.search(q, kk, allowed)
        s, i = np.asarray(s, np.float32)[:, :kk], np.asarray(i, np.int64)[:, :kk]
        short = (i >= 0).sum(axis=1) < kk
        if short.any():  # approximate search fell short: exact over the matching subset
            pool = allowed if allowed is not None else self._live_iids()
            s2, i2 = backend.exact_search(q[short], kk, pool)
            s, i = s.copy(), i.copy()
            s[short], i[short] = s2, i2
        if self._metric == "cosine":
            s = np.clip(s, -1.0, 1.0)
        return s, i

    def _hits(self, s_row: np.ndarray, i_row: np.ndarray) -> list[SearchHit]:
        ok = i_row >= 0
        recs = self._docs.records(i_row[ok].tolist())
        return [
            SearchHit(id_, float(score), text, meta)
            for score, (id_, text, meta) in zip(s_row[ok].tolist(), recs, strict=True)
        ]

    def _lexical_iids(
        self, texts: list[str], k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, iids) of the documents sharing a term with each text (BM25 score > 0),
        best first, -1 padded; caller holds the lock."""
        if self._lexical is None:
            raise ValueError(NO_LEXICAL_MESSAGE)
        if allowed is not None and len(allowed) == 0:
            return np.empty((len(texts), 0), np.float32), np.empty((len(texts), 0), np.int64)
        # a document that shares no term with the query scores 0 whatever it says: it is not
        # a match, and listing it would present an arbitrary document as one
        return self._lexical.top_k(texts, k, allowed, positive_only=True)

    def _scored_candidates(
        self, q: np.ndarray, texts: list[str], depth: int, allowed: np.ndarray | None
    ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """The dense and lexical lists of a score fusion, each over the candidates of both:
        the ``depth`` best of each side, the lexical-only ones scored by their stored vectors
        and the dense-only ones by BM25 (kept in the lexical list when they share a term
        with the query). Caller holds the lock."""
        ds, di = self._search_iids(q, depth, allowed)
        if self._lexical is None:
            raise ValueError(NO_LEXICAL_MESSAGE)
        if allowed is not None and len(allowed) == 0:
            return (ds, di), self._lexical_iids(texts, depth, allowed)
        found = [row[row >= 0] for row in di]
        ls, li, lex_of_dense = self._lexical.top_k_and_scores(
            texts, depth, allowed, positive_only=True, also=found
        )
        dense_rows, lexical_rows = [], []
        for r, d_ids in enumerate(found):
            d_s = ds[r][di[r] >= 0]
            l_ids, l_s = li[r][li[r] >= 0], ls[r][li[r] >= 0]
            new = l_ids[~np.isin(l_ids, d_ids)]
            new_s = np.empty(0, np.float32)
            if len(new):
                new_s = exact_scores(self._metric, q[r : r + 1], self._dense().vectors(new))[0]
                if self._metric == "cosine":
                    new_s = np.clip(new_s, -1.0, 1.0)
            dense_rows.append((np.concatenate([d_ids, new]), np.concatenate([d_s, new_s])))
            add = (lex_of_dense[r] > 0) & ~np.isin(d_ids, l_ids)
            lexical_rows.append(
                (np.concatenate([l_ids, d_ids[add]]), np.concatenate([l_s, lex_of_dense[r][add]]))
            )
        return best_first(dense_rows), best_first(lexical_rows)

    def search(
        self,
        query: Any = None,
        k: int = 10,
        filter: Any = None,
        *,
        text: str | None = None,
        mode: str = "dense",
        fusion: str = DEFAULT_FUSION,
        alpha: float = DEFAULT_ALPHA,
        rrf_k: float = DEFAULT_RRF_K,
        candidates: int = DEFAULT_HYBRID_CANDIDATES,
        request: SearchRequest | None = None,
    ) -> list[SearchHit]:
        """The nearest documents to one query, best first (`search_batch`: several).

        ``mode``: ``dense`` (the vectors; needs ``query``, a vector (dim,)), ``lexical``
        (BM25 over the texts; needs ``text``, a str) or ``hybrid`` (both, fused; needs both).
        ``filter``: None, a dict in the filter language of
        :mod:`llm2vec_retrieval.index.filters`, or ``callable(metadata) -> bool``.
        ``request``: a `SearchRequest` made (and checked) by the caller, in place of ``k``,
        ``filter``, ``text`` (its ``query``), ``mode`` (None: dense), ``fusion``, ``alpha``,
        ``rrf_k`` and ``candidates``, which are then left out.

        Filtering happens before the search in every mode (matching ids are passed to FAISS
        as an id selector, and BM25 scores only the matching documents), so a dense or
        hybrid result holds exactly ``min(k, number matching)`` hits; when an approximate
        kind returns fewer, the query is answered by exact search over the matching
        documents. When at most ``exact_filter_max`` documents match, approximate kinds
        search those exactly right away. A lexical result holds only documents that share a
        term with the query (stemmed, stopwords left out), so it can be shorter than k or
        empty. Lexical and hybrid searches refuse an empty or whitespace-only ``text``
        (ValueError).

        Scores: larger is closer. Dense: see the class doc. Lexical: the BM25 score (above
        0: every hit shares a term with the query). Hybrid: the
        ``candidates`` best of each list (at least k; lexical ones with a score above 0) are
        fused by ``fusion`` (see :mod:`.fusion`): ``rrf`` / ``wrrf`` (reciprocal rank,
        constant ``rrf_k``; ``wrrf`` weights the dense list by ``alpha``) or ``alpha`` /
        ``tmm`` / ``zscore`` (``alpha * dense + (1 - alpha) * lexical`` over min-max,
        theoretical-min-max or z-score normalized scores); hits carry ``dense_score`` and
        ``lexical_score`` too. Hits are numbered (``rank``) from 1.
        """
        if query is not None and np.ndim(query) != 1:
            raise ValueError(
                f"query must be one vector (dim,), got shape {np.shape(query)}; "
                "for several queries use search_batch"
            )
        if request is None:
            if text is not None and not isinstance(text, str):
                raise ValueError(
                    "text must be a str (one query); for several queries use search_batch"
                )
            try:  # a blank text is refused here, once
                request = SearchRequest(text, k, mode, filter, fusion, alpha, rrf_k, candidates)
            except SearchRequestError as exc:
                if exc.field != "query":
                    raise
                raise SearchRequestError(  # in this method's words: the argument is `text`
                    "query", f"the query text is {exc.reason}: give the words to search for"
                ) from None
        elif text is not None:
            raise ValueError("give the query text in the request (request.query), not as text=")
        queries = None if query is None else np.asarray(query)[None, :]
        texts = None if request.query is None else [request.query]
        return self._search(queries, texts, request)[0]

    def search_batch(
        self,
        queries: Any = None,
        k: int = 10,
        filter: Any = None,
        *,
        texts: Sequence[str] | None = None,
        mode: str = "dense",
        fusion: str = DEFAULT_FUSION,
        alpha: float = DEFAULT_ALPHA,
        rrf_k: float = DEFAULT_RRF_K,
        candidates: int = DEFAULT_HYBRID_CANDIDATES,
        request: SearchRequest | None = None,
    ) -> list[list[SearchHit]]:
        """`search` for several queries at once: ``queries`` a matrix (nq, dim), ``texts``
        a list of nq str (as the mode needs them); one hit list per query, in order.
        ``request``: as in `search` (its ``query`` unused: the texts are ``texts``)."""
        if request is None:
            request = SearchRequest(None, k, mode, filter, fusion, alpha, rrf_k, candidates)
        if texts is not None:
            if isinstance(texts, str):
                raise ValueError("texts must be a list of str (one per query), not a str")
            texts = list(texts)
            if not all(isinstance(t, str) for t in texts):
                raise ValueError("texts must be a list of str")
            for r, t in enumerate(texts):
                check_query(t, "the query text" if len(texts) == 1 else f"query text {r}")
        return self._search(queries, texts, request)

    def _search(
        self, queries: Any, texts: list[str] | None, request: SearchRequest
    ) -> list[list[SearchHit]]:
        """Hits for checked texts and a checked request, numbered from 1."""
        req = request.resolve("dense")
        mode = req.mode
        q = None
        if mode != "lexical":
            if queries is None:
                raise ValueError(f"{mode} search needs a query vector (one per query)")
            if np.ndim(queries) != 2:
                raise ValueError(
                    f"queries must be a matrix (nq, dim), got shape {np.shape(queries)}"
                )
            q = self._as_matrix(queries, "query")  # the one normalization of a query vector
        if mode != "dense":
            if texts is None:
                raise ValueError(f"{mode} search needs the query text (one per query)")
            if q is not None and len(texts) != len(q):
                raise ValueError(f"got {len(q)} query vectors but {len(texts)} query texts")
            if self._lexical is None:
                raise ValueError(NO_LEXICAL_MESSAGE)
        return [number(hits) for hits in self._search_hits(q, texts, req)]

    def _search_hits(
        self, q: np.ndarray | None, texts: list[str] | None, req: SearchRequest
    ) -> list[list[SearchHit]]:
        """The hit lists of a resolved request (unnumbered); `_search` has checked that the
        mode has what it needs: ``q`` unless lexical, ``texts`` unless dense."""
        mode, k, fusion, alpha = req.mode, req.k, req.fusion, req.alpha
        rrf_k, candidates, pred = req.rrf_k, req.candidates, req.predicate
        assert fusion is not None and alpha is not None, "the request is not resolved"
        with self._lock:
            allowed = self._allowed(pred)
            if mode == "dense":
                assert q is not None, "a dense search without query vectors"
                s, i = self._search_iids(q, int(k), allowed)
                return [self._hits(s[r], i[r]) for r in range(len(q))]
            if mode == "lexical":
                assert texts is not None, "a lexical search without query texts"
                s, i = self._lexical_iids(texts, int(k), allowed)
                return [self._hits(s[r], i[r]) for r in range(len(texts))]
            assert q is not None and texts is not None, "a hybrid search without vectors or texts"
            depth = max(int(k), int(candidates))
            if fusion in SCORE_FUSIONS:
                dense, lexical = self._scored_candidates(q, texts, depth, allowed)
            else:
                dense = self._search_iids(q, depth, allowed)
                lexical = self._lexical_iids(texts, depth, allowed)
            return [
                [
                    SearchHit(id_, float(score), text, meta, d, lx)
                    for (_, score, d, lx), (id_, text, meta) in zip(
                        row, self._docs.records([r[0] for r in row]), strict=True
                    )
                ]
                for row in fuse(
                    dense,
                    lexical,
                    int(k),
                    fusion,
                    float(alpha),
                    float(rrf_k),
                    dense_floor=-1.0 if self._metric == "cosine" else None,
                )
            ]

    def max_marginal_relevance(
        self,
        query: Any,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Any = None,
    ) -> list[SearchHit]:
        """Up to k hits chosen by maximal marginal relevance among the ``fetch_k`` nearest
        (``filter`` applies); ``lambda_mult`` in [0, 1]: 1 = relevance only, 0 = diversity
        only. Hits keep their search scores and come in the order picked."""
        for name, v in (("k", k), ("fetch_k", fetch_k)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not 0.0 <= float(lambda_mult) <= 1.0:
            raise ValueError(f"lambda_mult must be in [0, 1], got {lambda_mult!r}")
        if np.ndim(query) != 1:
            raise ValueError(f"query must be one vector (dim,), got shape {np.shape(query)}")
        q = self._as_matrix(query, "query")
        pred = compile_filter(filter)
        with self._lock:
            s, i = self._search_iids(q, max(int(fetch_k), int(k)), self._allowed(pred))
            valid = i[0] >= 0
            s_row, cand = s[0][valid], i[0][valid]
            if len(cand) == 0:
                return []
            picked = mmr_select(q[0], self._dense().vectors(cand), int(k), float(lambda_mult))
            return self._hits(s_row[picked], cand[picked])

    # -- persistence --------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], extra: Mapping[str, Any] | None = None) -> None:
        """Save into directory ``path`` atomically (see :mod:`.persistence`).

        ``extra``: the caller's metadata (a JSON-serializable dict, e.g. an integration's
        settings), saved inside the checksummed manifest and returned by `extra` after
        `load`; None keeps what the store last saved or loaded."""
        saved_extra: dict[str, Any] | None = None
        if extra is not None:
            if not isinstance(extra, Mapping):
                raise ValueError(f"extra must be a dict or None, got {type(extra).__name__}")
            saved_extra = _check_json("extra", dict(extra))
        with self._lock:
            self._commit_segments()
            with self.snapshot() as snap:
                if saved_extra is not None:
                    snap = replace(snap, extra=saved_extra)
                self._version = save_store(snap, path)
                self._extra = snap.extra

    def _commit_segments(self) -> None:
        """Seal the documents added since the last save into a new segment, then merge
        segments as `segments.merge_plan` says; caller holds the lock."""
        docs, lexical, vecs = self._docs, self._lexical, self._vecs
        fetch = self._fetch_vectors
        if docs.has_pending:
            name = new_name(self._next_iid)
            docs.seal(name)
            if lexical is not None:
                lexical.seal(name)
            if vecs is not None:
                vecs.seal(name, docs.segments[-1].iids, fetch)
        elif vecs is not None:
            vecs.discard_pending()  # vectors of documents deleted before any save
        for start, end in merge_plan(*docs.counts()):
            name = new_name(self._next_iid)
            kept = docs.merge(start, end, name)
            if lexical is not None:
                lexical.merge(start, end, name if kept else None)
            if vecs is not None:
                iids = docs.segments[start].iids if kept else np.empty(0, np.int64)
                vecs.merge(start, end, name if kept else None, iids, fetch)
        if vecs is not None and not vecs.complete:  # from an older save: written once
            live, _ = docs.parts()
            vecs.fill_missing([s.name for s in docs.segments], live, fetch)
            if self._open_backend is not None:  # never read: build it from the segments
                self._open_backend = self._backend_from_segments
        self._live_cache = None

    @contextmanager
    def snapshot(self) -> Iterator[StoreSnapshot]:
        """The store's whole state (see `StoreSnapshot`), holding the store's lock for the
        block: nothing changes it meanwhile. Its objects are the live ones: read only."""
        with self._lock:
            yield StoreSnapshot(
                dim=self._dim,
                kind=self._kind,
                metric=self._metric,
                params=dict(self._params),
                fingerprint=self._fingerprint,
                next_iid=self._next_iid,
                docs=self._docs,
                # a flat store's vectors are in segments: its FAISS index is not saved
                backend=self._backend_obj if self._vecs is not None else self._backend,
                lexical=self._lexical,
                extra=self._extra,
                vectors=self._vecs,
            )

    @classmethod
    def from_snapshot(cls, snap: StoreSnapshot) -> IndexStore:
        """A store holding ``snap``'s state (what `load` builds from verified files); its
        backend, documents and lexical index are taken over, not copied."""
        # made without a dimension, so no empty FAISS index is built only to be replaced
        store = cls(None, snap.kind, snap.metric, snap.fingerprint, lexical=False, **snap.params)
        if snap.dim is not None:
            store._dim = snap.dim
            store._params = resolve_params(snap.kind, snap.dim, snap.params)
            store._vecs = snap.vectors
            if snap.open_backend is not None:
                store._open_backend = snap.open_backend
            elif snap.vectors is not None and snap.backend is None and snap.vectors.complete:
                store._open_backend = store._backend_from_segments
            else:
                store._backend = snap.backend or make_backend(
                    snap.kind, snap.dim, snap.metric, store._params
                )
            if store._vecs is None and snap.kind == "flat":  # saved before vector segments
                store._vecs = VectorSegments.legacy(snap.dim, len(snap.docs.segments))
        store._docs = snap.docs
        store._next_iid = snap.next_iid
        store._lexical = snap.lexical
        store._extra = dict(snap.extra)
        store._version = snap.version
        return store

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        fingerprint: dict[str, Any] | None = None,
        allow_fingerprint_mismatch: bool = False,
    ) -> IndexStore:
        """Open a saved store (lazily: the documents and BM25 postings are memory-mapped,
        the FAISS index is read on first use; see :mod:`.persistence`). Missing, truncated,
        corrupted or inconsistent files raise ``IndexCorruptedError`` naming the file, at
        load or when the damaged part is first read (checksums are verified before FAISS
        reads anything; ``persistence.verify_store`` checks every file).
        If ``fingerprint`` and the saved one are both given and differ:
        ``FingerprintMismatchError`` (unless ``allow_fingerprint_mismatch``: then a
        warning, and the store keeps the saved fingerprint)."""
        return cls.from_snapshot(load_store(path, fingerprint, allow_fingerprint_mismatch))
