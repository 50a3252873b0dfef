"""LangChain `VectorStore` on the llm2vec-retrieval FAISS `IndexStore`."""

from __future__ import annotations

import json
import math
import threading
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.runnables.config import run_in_executor
from langchain_core.vectorstores import VectorStore, VectorStoreRetriever

from llm2vec_retrieval.fingerprint import embedder_fingerprint
from llm2vec_retrieval.index import (
    DEFAULT_TEXT_MODE,
    NO_LEXICAL_MESSAGE,
    SearchRequest,
)
from llm2vec_retrieval.shared import check_dimension, load_store
from llm2vec_retrieval.text import check_query, repair_texts, warn_repaired

__all__ = ["LLM2VecRetriever", "LLM2VecVectorStore", "embeddings_fingerprint"]

if TYPE_CHECKING:
    from llm2vec_retrieval.index import IndexStore


def _index_store_cls() -> type[IndexStore]:
    # Imported on use: the FAISS store module is only needed once vectors arrive.
    from llm2vec_retrieval.index import IndexStore

    return IndexStore


# `save_local` keeps the wrapper's own settings in the store's checksummed manifest, under
# this key of `IndexStore.save(extra=...)`.
_EXTRA_KEY = "langchain_llm2vec"
_FORMAT_VERSION = 2


def embeddings_fingerprint(embedding: Embeddings) -> dict[str, Any] | None:
    """The embedder fingerprint recorded in saved indexes, or None when unknown.

    Embeddings that describe themselves (`LLM2VecEmbeddings.fingerprint()`) get one;
    any other `Embeddings` is not checked (`llm2vec_retrieval.fingerprint.embedder_fingerprint`).
    """
    return embedder_fingerprint(embedding)


# What a search on an index without a BM25 part says, with the LangChain way to add it.
_NO_LEXICAL = (
    f"{NO_LEXICAL_MESSAGE}; from LangChain: vector_store.store.build_lexical(), then "
    "vector_store.save_local(folder)"
)
_RELEVANCE_DENSE_ONLY = (
    "relevance scores in [0, 1] exist for dense search only (hybrid and lexical scores are "
    "rank- or BM25-based, not similarities): drop mode= or pass mode='dense' here; for "
    "hybrid or lexical results use similarity_search_with_score or "
    "as_retriever(search_type='hybrid')"
)


def _check_mode(mode: str) -> str:
    return SearchRequest(mode=mode).mode  # the one check of a mode's name


def _dense_only(kwargs: dict[str, Any], what: str) -> None:
    """Refuse mode='lexical'/'hybrid' on the vector-only methods (they have no query text)."""
    mode = kwargs.get("mode")
    if mode not in (None, "dense"):
        raise ValueError(
            f"{what} searches the vectors only (mode='dense'); for mode={mode!r} call "
            "similarity_search[_with_score] with the query text"
        )


def _as_matrix(vectors: Sequence[Sequence[float]]) -> np.ndarray:
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"Expected a 2-D array of embeddings, got shape {arr.shape}")
    return arr


class LLM2VecVectorStore(VectorStore):
    """A LangChain vector store on a FAISS `IndexStore` (flat, HNSW, IVF, ...).

    Works with any LangChain `Embeddings`; with `LLM2VecEmbeddings` the embedder's
    fingerprint is recorded in the index so that `load_local` refuses a different
    embedder. Documents keep their ids, text and metadata in the index (no pickle).

    Text searches (`similarity_search[_with_score]`, their async versions, the retriever)
    run in one of three modes: `dense` (the vectors), `lexical` (BM25 over the stored
    texts; the query is not embedded) or `hybrid` (both, fused). The default is
    `search_mode`, or when that is None `llm2vec_retrieval.index.DEFAULT_TEXT_MODE`
    (hybrid) on a store that keeps a BM25 part and `dense` on one that does not (an index
    saved before hybrid search existed); `mode=`, `fusion=` (one of `llm2vec_retrieval.index.FUSIONS`) and
    `alpha=` override it per call. The `*_by_vector` and MMR methods are dense only.

    Scores from `similarity_search_with_score` are larger-is-closer and depend on the
    mode: dense, the store's similarity (cosine in [-1, 1] for the default metric);
    lexical, the BM25 score (>= 0); hybrid, the fused score (rrf: the sum of
    1 / (rrf_k + rank) over both lists; alpha: `alpha * dense + (1 - alpha) * lexical` of
    min-max normalized scores, in [0, 1]).
    `similarity_search_with_relevance_scores` (and the `similarity_score_threshold`
    retriever) always searches dense, whatever `search_mode` says, and maps the similarity
    to [0, 1]; asking it for `mode="hybrid"`/`"lexical"` raises ValueError, since those
    scores have no absolute scale.

    Metadata filters are dicts in the store's filter language: plain equality
    (`{"source": "a.md"}`) and the operators `$eq $ne $gt $gte $lt $lte $in $nin
    $exists $and $or $not` (e.g. `{"year": {"$gte": 2020}}`), or a callable
    `metadata -> bool`.

    The async methods (`aadd_texts`, `asimilarity_search`, ...) are LangChain's own: each
    runs its sync version in a worker thread (the store's lock makes that safe), so the
    event loop stays free; the sync methods' keyword arguments (`mode=`, `filter=`, ...)
    work there too.

    Example:
        ```python
        from langchain_llm2vec import LLM2VecEmbeddings, LLM2VecVectorStore

        store = LLM2VecVectorStore.from_texts(["a", "b"], LLM2VecEmbeddings(model=path))
        store.similarity_search("a", k=1)                  # hybrid: vectors + BM25
        store.similarity_search("a", k=1, mode="dense")    # or "lexical"
        store.as_retriever(search_type="hybrid", search_kwargs={"k": 4, "alpha": 0.7})
        store.save_local("my_index")
        store = LLM2VecVectorStore.load_local("my_index", LLM2VecEmbeddings(model=path))
        ```
    """

    def __init__(
        self,
        embedding: Embeddings,
        *,
        index_kind: str = "flat",
        metric: str = "cosine",
        store: IndexStore | None = None,
        search_mode: str | None = None,
        **index_params: Any,
    ) -> None:
        if not isinstance(embedding, Embeddings):
            raise TypeError(
                f"embedding must be a langchain_core Embeddings, got {type(embedding).__name__}"
            )
        self.embedding = embedding
        self.index_kind = index_kind
        self.metric = metric
        self.index_params = dict(index_params)
        #: The text search mode (None: hybrid when the store has a BM25 part, else dense).
        self.search_mode = None if search_mode is None else _check_mode(search_mode)
        self._store: IndexStore | None = store
        if store is not None:  # its own settings are the ones in force
            self.index_kind = store.kind
            self.metric = store.metric
            self.index_params = store.params
        else:
            from llm2vec_retrieval.index import check_index_config

            check_index_config(index_kind, metric, self.index_params)
        # FAISS indexes are not safe for concurrent writes/reads, and the async API
        # runs store calls in worker threads.
        self._lock = threading.RLock()

    # -- properties ------------------------------------------------------------------
    @property
    def embeddings(self) -> Embeddings:
        return self.embedding

    @property
    def store(self) -> IndexStore | None:
        """The underlying `IndexStore` (None until the first add fixes the dimension)."""
        return self._store

    def __len__(self) -> int:
        return 0 if self._store is None else len(self._store)

    def __bool__(self) -> bool:
        # An empty store is still a store: frameworks test `if vector_store:` to mean
        # "was one given" (LlamaIndex's StorageContext.from_defaults does).
        return True

    def _new_store(self) -> IndexStore:
        """An empty store with this wrapper's settings; the first add fixes its dimension."""
        return _index_store_cls()(
            None,
            kind=self.index_kind,
            metric=self.metric,
            fingerprint=embeddings_fingerprint(self.embedding),
            **self.index_params,
        )

    # -- writes ------------------------------------------------------------------------
    @staticmethod
    def _prepare(
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None,
        ids: list[str | None] | None,
    ) -> tuple[list[str], list[dict[str, Any]], list[str]]:
        texts = list(texts)
        if metadatas is not None and len(metadatas) != len(texts):
            raise ValueError(
                f"Got {len(metadatas)} metadatas for {len(texts)} texts; they must match."
            )
        if ids is not None and len(ids) != len(texts):
            raise ValueError(f"Got {len(ids)} ids for {len(texts)} texts; they must match.")
        given = ids or [None] * len(texts)
        # Checked before anything is embedded; errors name the position (and the caller's id).
        metas = []
        for i, m in enumerate(metadatas or [None] * len(texts)):
            where = f"metadatas[{i}]" + (
                f" (id {given[i]!r})" if given[i] not in (None, "") else ""
            )
            if m is not None and not isinstance(m, Mapping):
                raise ValueError(f"{where} must be a dict, got {type(m).__name__}")
            try:
                json.dumps(dict(m or {}), allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{where} is not JSON-serializable: {exc}") from None
            metas.append(dict(m) if m else {})
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise ValueError(f"texts[{i}] must be a str, got {type(t).__name__}")
        texts, repaired = repair_texts(texts)  # what is stored is what is embedded
        warn_repaired(repaired, stacklevel=4)
        ids_ = [str(i) if i not in (None, "") else str(uuid.uuid4()) for i in given]
        return texts, metas, ids_

    def _write(
        self, ids: list[str], vectors: np.ndarray, texts: list[str], metas: list[dict[str, Any]]
    ) -> None:
        if not ids:
            return
        # Within one call a repeated id keeps its last occurrence (upsert semantics).
        last = {id_: i for i, id_ in enumerate(ids)}
        if len(last) != len(ids):
            keep = sorted(last.values())
            ids = [ids[i] for i in keep]
            texts = [texts[i] for i in keep]
            metas = [metas[i] for i in keep]
            vectors = vectors[keep]
        with self._lock:
            if self._store is None:
                self._store = self._new_store()
            check_dimension(self._store, vectors)
            self._store.add(ids, vectors, texts=texts, metadatas=metas)

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str | None] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Embed and add (or overwrite, by id) texts; returns their ids.

        Missing ids (None) get a fresh uuid4.
        """
        texts_, metas, ids_ = self._prepare(texts, metadatas, ids)
        if not texts_:
            return []
        vectors = _as_matrix(self.embedding.embed_documents(texts_))
        self._write(ids_, vectors, texts_, metas)
        return ids_

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete by id (unknown ids are ignored). `ids=None` deletes everything."""
        with self._lock:
            if self._store is None:
                return True
            if ids is None:
                ids = list(self._store.ids)
            if ids:
                self._store.delete([str(i) for i in ids])
        return True

    # -- reads -------------------------------------------------------------------------
    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        with self._lock:
            if self._store is None or not ids:
                return []
            wanted = list(dict.fromkeys(str(i) for i in ids))
            records = self._store.get(wanted)
        return [
            Document(id=r.id, page_content=r.text or "", metadata=dict(r.metadata or {}))
            for r in records
            if r is not None
        ]

    @staticmethod
    def _hit_to_doc(hit: Any) -> Document:
        return Document(id=hit.id, page_content=hit.text or "", metadata=dict(hit.metadata or {}))

    # -- search modes ------------------------------------------------------------------
    def _default_mode(self) -> str:
        """The mode of a text search that names none: `search_mode`, else the default."""
        if self.search_mode is not None:
            return self.search_mode
        store = self._store
        return DEFAULT_TEXT_MODE if store is None or store.has_lexical else "dense"

    def _searchable(self, mode: str) -> bool:
        """False for an empty store; ValueError for lexical/hybrid without a BM25 part."""
        store = self._store
        if store is None or len(store) == 0:
            return False
        if mode != "dense" and not store.has_lexical:
            raise ValueError(_NO_LEXICAL)
        return True

    # -- similarity search -------------------------------------------------------------
    def similarity_search_with_score_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        filter: dict[str, Any] | Callable[[dict[str, Any]], bool] | None = None,
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        """Nearest documents to a vector, with the store's similarity score (dense only)."""
        _dense_only(kwargs, "similarity_search_with_score_by_vector")
        if k <= 0:
            return []
        query = np.asarray(embedding, dtype=np.float32).reshape(-1)
        with self._lock:
            if self._store is None or len(self._store) == 0:
                return []
            hits = self._store.search(query, k, filter=filter)
        return [(self._hit_to_doc(h), float(h.score)) for h in hits]

    def similarity_search_with_score(
        self,
        query: str,
        k: int = 4,
        filter: dict[str, Any] | Callable[[dict[str, Any]], bool] | None = None,
        *,
        mode: str | None = None,
        fusion: str | None = None,
        alpha: float | None = None,
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        """Best documents for a query with their scores (larger is closer).

        `mode`: "dense", "lexical" or "hybrid" (default: `search_mode`, see the class doc).
        Hybrid only: `fusion` (`llm2vec_retrieval.index.FUSIONS`; default: the package's,
        a weighted one when only `alpha` is given) and `alpha` in [0, 1] (weight of the
        dense part). All of it is checked as one `SearchRequest`.
        """
        # query, mode, fusion, alpha and filter checked once, here (k <= 0 finds nothing)
        request = SearchRequest(query, max(k, 1), mode, filter, fusion, alpha)
        request = request.resolve(self._default_mode())
        if k <= 0 or not self._searchable(request.mode):
            return []
        vector = None
        if request.mode != "lexical":
            vector = np.asarray(self.embedding.embed_query(query), dtype=np.float32).reshape(-1)
        with self._lock:
            if not self._searchable(request.mode):
                return []
            hits = self._store.search(vector, request=request)
        return [(self._hit_to_doc(h), float(h.score)) for h in hits]

    def similarity_search(
        self,
        query: str,
        k: int = 4,
        filter: dict[str, Any] | Callable[[dict[str, Any]], bool] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """Best documents for a query; takes `mode=`, `fusion=`, `alpha=` (see
        `similarity_search_with_score`)."""
        return [doc for doc, _ in self.similarity_search_with_score(query, k, filter, **kwargs)]

    def similarity_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        filter: dict[str, Any] | Callable[[dict[str, Any]], bool] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        pairs = self.similarity_search_with_score_by_vector(embedding, k, filter, **kwargs)
        return [doc for doc, _ in pairs]

    # -- relevance scores --------------------------------------------------------------
    def _similarity_search_with_relevance_scores(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Dense search whatever `search_mode` says: only similarities map to [0, 1]."""
        if kwargs.pop("mode", None) not in (None, "dense"):
            raise ValueError(_RELEVANCE_DENSE_ONLY)
        relevance = self._select_relevance_score_fn()
        pairs = self.similarity_search_with_score(query, k, mode="dense", **kwargs)
        return [(doc, relevance(score)) for doc, score in pairs]

    async def _asimilarity_search_with_relevance_scores(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        # The base class would search in the default (hybrid) mode: stay dense.
        return await run_in_executor(
            None, self._similarity_search_with_relevance_scores, query, k, **kwargs
        )

    @staticmethod
    def _cosine_similarity_relevance(score: float) -> float:
        """Cosine similarity in [-1, 1] -> relevance in [0, 1] (1 = same direction)."""
        return min(1.0, max(0.0, (1.0 + score) / 2.0))

    @staticmethod
    def _l2_relevance(score: float) -> float:
        """Store score for metric="l2" is minus the (squared) distance: map to (0, 1]."""
        return 1.0 / (1.0 + math.sqrt(max(0.0, -score)))

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        metric = (self.metric or "cosine").lower()
        if metric in ("l2", "euclidean"):
            return self._l2_relevance
        # cosine, and inner product on (normally unit-norm) embeddings
        return self._cosine_similarity_relevance

    # -- maximal marginal relevance ----------------------------------------------------
    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict[str, Any] | Callable[[dict[str, Any]], bool] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        _dense_only(kwargs, "max_marginal_relevance_search_by_vector")
        if k <= 0:
            return []
        query = np.asarray(embedding, dtype=np.float32).reshape(-1)
        with self._lock:
            if self._store is None or len(self._store) == 0:
                return []
            hits = self._store.max_marginal_relevance(
                query, k=k, fetch_k=max(fetch_k, k), lambda_mult=lambda_mult, filter=filter
            )
        return [self._hit_to_doc(h) for h in hits]

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict[str, Any] | Callable[[dict[str, Any]], bool] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        _dense_only(kwargs, "max_marginal_relevance_search")
        check_query(query)
        if self._store is None or len(self._store) == 0:
            return []
        vector = self.embedding.embed_query(query)
        return self.max_marginal_relevance_search_by_vector(
            vector, k, fetch_k, lambda_mult, filter, **kwargs
        )

    # -- retriever ---------------------------------------------------------------------
    def as_retriever(self, **kwargs: Any) -> LLM2VecRetriever:
        """A `VectorStoreRetriever` that also takes `search_type="hybrid"` and
        `"lexical"` (with `search_kwargs` such as `k`, `filter`, `fusion`, `alpha`).

        `"similarity"` uses the store's default mode (`search_mode`), or `mode=` in
        `search_kwargs`; `"similarity_score_threshold"` and `"mmr"` are dense.
        """
        tags = kwargs.pop("tags", None) or [*self._get_retriever_tags()]
        return LLM2VecRetriever(vectorstore=self, tags=tags, **kwargs)

    # -- constructors ------------------------------------------------------------------
    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        index_kind: str = "flat",
        metric: str = "cosine",
        store: IndexStore | None = None,
        search_mode: str | None = None,
        **index_params: Any,
    ) -> LLM2VecVectorStore:
        vs = cls(
            embedding,
            index_kind=index_kind,
            metric=metric,
            store=store,
            search_mode=search_mode,
            **index_params,
        )
        vs.add_texts(texts, metadatas, ids=ids)
        return vs

    # -- persistence ---------------------------------------------------------------------
    def save_local(self, folder_path: str | Path) -> None:
        """Save the index, ids, texts and metadata to a folder (JSON + FAISS, no pickle),
        atomically; the wrapper's settings go inside the store's checksummed manifest.

        Metadata values must be JSON-serialisable.
        """
        folder = Path(folder_path)
        with self._lock:
            # nothing added yet: an empty store still records the embedder
            store = self._store if self._store is not None else self._new_store()
            extra = {
                **store.extra,
                _EXTRA_KEY: {"format_version": _FORMAT_VERSION, "search_mode": self.search_mode},
            }
            store.save(folder, extra=extra)

    @classmethod
    def load_local(
        cls,
        folder_path: str | Path,
        embeddings: Embeddings,
        *,
        allow_fingerprint_mismatch: bool = False,
        **kwargs: Any,
    ) -> LLM2VecVectorStore:
        """Load a folder written by `save_local` (or any saved `IndexStore`).

        When `embeddings` describes itself (`LLM2VecEmbeddings`), its fingerprint must
        match the one recorded at save time, else `FingerprintMismatchError` is raised
        (pass `allow_fingerprint_mismatch=True` to load anyway). Embeddings without a
        fingerprint (`FakeEmbeddings`, any other class) cannot show that they make the
        stored vectors: when the folder records a fingerprint they are refused too
        (`UnverifiedEmbedderError`, a `FingerprintMismatchError`) unless
        `allow_fingerprint_mismatch=True`; then a query of another dimension than the stored
        vectors is still refused, by the first search (ValueError). The saved `search_mode`
        comes back unless `search_mode=` is given. An index saved before hybrid search
        existed loads too, without its BM25 part: its default mode is then dense, and
        lexical/hybrid searches raise ValueError until
        `vector_store.store.build_lexical()` (then `save_local` to keep it).
        """
        fingerprint = embeddings_fingerprint(embeddings)
        # embeddings without a fingerprint are refused by a store that records one
        store = load_store(
            Path(folder_path),
            fingerprint,
            allow_fingerprint_mismatch=allow_fingerprint_mismatch,
            unverified=type(embeddings).__name__ if fingerprint is None else None,
        )
        settings = store.extra.get(_EXTRA_KEY) or {}
        search_mode = kwargs.pop("search_mode", settings.get("search_mode"))
        return cls(embeddings, store=store, search_mode=search_mode, **kwargs)


class LLM2VecRetriever(VectorStoreRetriever):
    """`VectorStoreRetriever` for `LLM2VecVectorStore`, with two more search types.

    `search_type="hybrid"` or `"lexical"` runs `similarity_search(query, mode=search_type,
    **search_kwargs)` (`k`, `filter`, and for hybrid `fusion`, `alpha`); the LangChain
    types (`similarity`, `similarity_score_threshold`, `mmr`) behave as usual.
    """

    allowed_search_types: ClassVar[Collection[str]] = (
        *VectorStoreRetriever.allowed_search_types,
        "hybrid",
        "lexical",
    )

    def _mode_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs_ = self.search_kwargs | kwargs
        mode = kwargs_.pop("mode", self.search_type)
        if mode != self.search_type:
            raise ValueError(
                f"search_type={self.search_type!r} conflicts with mode={mode!r} in "
                "search_kwargs; drop one of them"
            )
        return kwargs_

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        if self.search_type in ("hybrid", "lexical"):
            return self.vectorstore.similarity_search(
                query, mode=self.search_type, **self._mode_kwargs(kwargs)
            )
        return super()._get_relevant_documents(query, run_manager=run_manager, **kwargs)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        if self.search_type in ("hybrid", "lexical"):
            return await self.vectorstore.asimilarity_search(
                query, mode=self.search_type, **self._mode_kwargs(kwargs)
            )
        return await super()._aget_relevant_documents(query, run_manager=run_manager, **kwargs)
