"""LlamaIndex vector store on the llm2vec-retrieval FAISS `IndexStore` (`LLM2VecVectorStore`)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.schema import BaseNode, MetadataMode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict

from llm2vec_retrieval.fingerprint import embedder_fingerprint
from llm2vec_retrieval.index import NO_LEXICAL_MESSAGE
from llm2vec_retrieval.index.request import DEFAULT_HYBRID_CANDIDATES
from llm2vec_retrieval.shared import (
    check_dimension,
    load_store,
    read_json_object,
    write_json_object,
)
from llm2vec_retrieval.text import repair_texts, warn_repaired

__all__ = ["LLM2VecVectorStore", "metadata_filters_to_dict"]

if TYPE_CHECKING:
    from llm2vec_retrieval.index import IndexStore


def _index_store_cls() -> type[IndexStore]:
    # Imported on use: the FAISS store module is only needed once vectors arrive.
    from llm2vec_retrieval.index import IndexStore

    return IndexStore


DEFAULT_PERSIST_DIR = "./storage"
DEFAULT_NAMESPACE = "default"
NAMESPACE_SEP = "__"
DEFAULT_PERSIST_FNAME = "vector_store.json"
# Where each node's own id is kept in the store metadata (for node_ids queries/filters).
NODE_ID_KEY = "_node_id"
# The file at `persist_path` names the format and the index folder beside it, nothing
# more: the store's settings live in the index's checksummed manifest, under this key of
# `IndexStore.save(extra=...)`. Version 1 files (before that) held the settings themselves;
# they still load. The format name predates the package split.
_FORMAT = "llama_index_llm2vec.vector_store"
_FORMAT_VERSION = 2
_EXTRA_KEY = "llama_index_vector_stores_llm2vec"

# What a lexical or hybrid query on an index without a BM25 part says.
_NO_LEXICAL = (
    f"{NO_LEXICAL_MESSAGE}; from LlamaIndex: vector_store.store.build_lexical(), then "
    "storage_context.persist(dir) or vector_store.persist(path)"
)
_LEXICAL_MODES = (VectorStoreQueryMode.SPARSE, VectorStoreQueryMode.TEXT_SEARCH)
_VECTOR_MODES = (
    VectorStoreQueryMode.DEFAULT,
    VectorStoreQueryMode.MMR,
    VectorStoreQueryMode.HYBRID,
)

_SIMPLE_OPS = {
    FilterOperator.EQ: "$eq",
    FilterOperator.NE: "$ne",
    FilterOperator.GT: "$gt",
    FilterOperator.GTE: "$gte",
    FilterOperator.LT: "$lt",
    FilterOperator.LTE: "$lte",
    FilterOperator.IN: "$in",
    FilterOperator.NIN: "$nin",
}


def _filter_to_dict(f: MetadataFilter) -> dict[str, Any]:
    op = FilterOperator(f.operator)
    if op in _SIMPLE_OPS:
        return {f.key: {_SIMPLE_OPS[op]: f.value}}
    if op in (FilterOperator.CONTAINS, FilterOperator.TEXT_MATCH):
        # a list value holding the operand, or (TEXT_MATCH) a substring of a string value
        return {f.key: {"$contains": f.value}}
    if op in (FilterOperator.ANY, FilterOperator.ALL):
        values = f.value if isinstance(f.value, list) else [f.value]
        parts = [{f.key: {"$contains": v}} for v in values]
        if not parts:
            return {f.key: {"$in": []}} if op == FilterOperator.ANY else {}  # none / all
        return {"$or" if op == FilterOperator.ANY else "$and": parts}
    if op == FilterOperator.IS_EMPTY:
        return {
            "$or": [
                {f.key: {"$exists": False}},
                {f.key: {"$in": [None, ""]}},
            ]
        }
    raise NotImplementedError(
        f"Filter operator {op.value!r} is not supported by LLM2VecVectorStore "
        f"(supported: {', '.join(o.value for o in _SIMPLE_OPS)}, contains, any, all, "
        "text_match, is_empty)"
    )


def metadata_filters_to_dict(filters: MetadataFilters | None) -> dict[str, Any] | None:
    """Translate LlamaIndex `MetadataFilters` into the IndexStore filter language.

    EQ/NE/GT/GTE/LT/LTE/IN/NIN map to `$eq/$ne/$gt/$gte/$lt/$lte/$in/$nin`,
    CONTAINS/TEXT_MATCH to `$contains`, ANY/ALL to `$or`/`$and` of `$contains`,
    IS_EMPTY to "missing, null or empty string"; conditions AND/OR/NOT to
    `$and/$or/$not` (NOT = none of the filters holds); nested `MetadataFilters` too.
    TEXT_MATCH_INSENSITIVE raises `NotImplementedError`.
    """
    if filters is None or not filters.filters:
        return None
    parts: list[dict[str, Any]] = []
    for f in filters.filters:
        if isinstance(f, MetadataFilters):
            sub = metadata_filters_to_dict(f)
            if sub is not None:
                parts.append(sub)
        else:
            parts.append(_filter_to_dict(f))
    if not parts:
        return None
    condition = FilterCondition(filters.condition or FilterCondition.AND)
    if condition == FilterCondition.AND:
        return parts[0] if len(parts) == 1 else {"$and": parts}
    if condition == FilterCondition.OR:
        return parts[0] if len(parts) == 1 else {"$or": parts}
    if condition == FilterCondition.NOT:
        return {"$not": parts[0] if len(parts) == 1 else {"$or": parts}}
    raise NotImplementedError(f"Filter condition {condition!r} is not supported")


def _and(*parts: dict[str, Any] | None) -> dict[str, Any] | None:
    present = [p for p in parts if p]
    if not present:
        return None
    return present[0] if len(present) == 1 else {"$and": present}


def _check_local_fs(fs: Any) -> None:
    if fs is None:
        return
    protocol = getattr(fs, "protocol", "file")
    protocols = (protocol,) if isinstance(protocol, str) else tuple(protocol)
    if not {"file", "local"} & set(protocols):
        raise NotImplementedError("LLM2VecVectorStore persists to the local filesystem only")


class _State:
    __slots__ = ("store", "lock")

    def __init__(self, store: IndexStore | None) -> None:
        self.store = store
        self.lock = threading.RLock()


class LLM2VecVectorStore(BasePydanticVectorStore):
    """A LlamaIndex vector store on the package's FAISS `IndexStore`.

    Stores each node's vector, text and metadata (including `ref_doc_id`/`doc_id` and
    the serialised node), so it can be the only store of a `VectorStoreIndex`
    (`stores_text=True`). Queries support `MetadataFilters` (EQ, NE, GT, GTE, LT, LTE,
    IN, NIN, CONTAINS, ANY, ALL, TEXT_MATCH, IS_EMPTY; AND/OR/NOT, nested; see
    `metadata_filters_to_dict`), `doc_ids`/`node_ids` restrictions, in every query mode:

    - `DEFAULT`: dense (the vectors), top `similarity_top_k`.
    - `HYBRID`: the vectors and BM25 over the node texts (`query_str`), fused by the
      project's default fusion (`llm2vec_retrieval.index.DEFAULT_FUSION`, weighted
      `alpha * dense + (1 - alpha) * lexical`) with `query.alpha` as the weight
      (LlamaIndex's convention: 1 = vectors only, 0 = BM25 only), else `DEFAULT_ALPHA`;
      `fusion=` (one of `llm2vec_retrieval.index.FUSIONS`) in the query kwargs overrides;
      top `hybrid_top_k` (else `similarity_top_k`).
    - `SPARSE` and `TEXT_SEARCH`: BM25 only (the query is not embedded), top
      `sparse_top_k` (else `similarity_top_k`).
    - `MMR`: `mmr_threshold` is the MMR lambda (default 0.5).

    Indexes saved before hybrid search existed load without their BM25 part: `DEFAULT`
    and `MMR` work, the other modes raise ValueError until `store.build_lexical()`.

    Persistence: `persist(path)` saves the index in `path + ".index"` (its settings inside
    the index's checksummed manifest) and writes at `path` a small JSON file naming that
    folder; `from_persist_dir(dir)` / `from_persist_path(path)` load it back. No pickle.
    An embedder fingerprint (`fingerprint=` or `embed_model=` on construction) is
    recorded and checked on load.

    Example:
        ```python
        from llama_index.core import StorageContext, VectorStoreIndex
        from llama_index.embeddings.llm2vec import LLM2VecEmbedding
        from llama_index.vector_stores.llm2vec import LLM2VecVectorStore

        embed = LLM2VecEmbedding(model_name="path/to/checkpoint")
        store = LLM2VecVectorStore(embed_model=embed)
        ctx = StorageContext.from_defaults(vector_store=store)
        index = VectorStoreIndex.from_documents(docs, storage_context=ctx, embed_model=embed)
        ```
    """

    stores_text: bool = True
    # LlamaIndex embeds the query for every mode but SPARSE and TEXT_SEARCH (BM25 only here).
    is_embedding_query: bool = True
    flat_metadata: bool = False
    index_kind: str = Field(default="flat", description="IndexStore kind (flat, hnsw, ivf...)")
    metric: str = Field(default="cosine", description="IndexStore metric")
    index_params: dict[str, Any] = Field(default_factory=dict)
    fingerprint: dict[str, Any] | None = Field(
        default=None, description="Embedder fingerprint recorded in the index"
    )

    # One shared holder: pydantic copies of this model (model_copy) keep pointing at the
    # same index, also when it is created lazily after the copy.
    _state: Any = PrivateAttr(default=None)

    def __init__(
        self,
        store: IndexStore | None = None,
        *,
        embed_model: Any = None,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("fingerprint") is None and embed_model is not None:
            kwargs["fingerprint"] = embedder_fingerprint(embed_model)
        if store is not None:  # its own settings are the ones in force
            kwargs["index_kind"] = store.kind
            kwargs["metric"] = store.metric
            kwargs["index_params"] = store.params
            if kwargs.get("fingerprint") is None:
                kwargs["fingerprint"] = store.fingerprint
        super().__init__(**kwargs)
        if store is None:
            from llm2vec_retrieval.index import check_index_config

            check_index_config(self.index_kind, self.metric, self.index_params)
        self._state = _State(store)

    @classmethod
    def class_name(cls) -> str:
        return "LLM2VecVectorStore"

    @property
    def client(self) -> IndexStore | None:
        """The underlying `IndexStore` (None until the first add fixes the dimension)."""
        return self._state.store

    @property
    def store(self) -> IndexStore | None:
        return self._state.store

    def __len__(self) -> int:
        return 0 if self._state.store is None else len(self._state.store)

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
            fingerprint=self.fingerprint,
            **self.index_params,
        )

    # -- writes ------------------------------------------------------------------------
    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        """Add (or overwrite, by node id) nodes that carry embeddings."""
        nodes = list(nodes)
        if not nodes:
            return []
        ids, vectors, texts, metas = [], [], [], []
        for node in nodes:
            embedding = node.get_embedding()  # raises if the node was not embedded
            metadata = node_to_metadata_dict(
                node, remove_text=True, flat_metadata=self.flat_metadata
            )
            metadata[NODE_ID_KEY] = node.node_id
            ids.append(node.node_id)
            vectors.append(embedding)
            texts.append(node.get_content(metadata_mode=MetadataMode.NONE))
            metas.append(metadata)
        texts, repaired = repair_texts(texts)  # stored as the embedder saw them
        warn_repaired(repaired, stacklevel=3)
        last = {id_: i for i, id_ in enumerate(ids)}  # a repeated id: the last one wins
        if len(last) != len(ids):
            keep = sorted(last.values())
            ids, vectors = [ids[i] for i in keep], [vectors[i] for i in keep]
            texts, metas = [texts[i] for i in keep], [metas[i] for i in keep]
        matrix = np.asarray(vectors, dtype=np.float32)
        with self._state.lock:
            if self._state.store is None:
                self._state.store = self._new_store()
            check_dimension(self._state.store, matrix)
            self._state.store.add(ids, matrix, texts=texts, metadatas=metas)
        return ids

    async def async_add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        return await asyncio.to_thread(self.add, nodes, **kwargs)

    def _matching_ids(self, where: dict[str, Any] | None, node_ids: list[str] | None) -> list[str]:
        """Ids of stored nodes among `node_ids` (all when None) whose metadata match."""
        if self._state.store is None:
            return []
        if node_ids is None:
            candidates = list(self._state.store.ids)
        else:
            candidates = [
                i for i in dict.fromkeys(str(i) for i in node_ids) if i in self._state.store
            ]
        if where is None or not candidates:
            return candidates
        from llm2vec_retrieval.index.filters import compile_filter

        predicate = compile_filter(where)
        records = self._state.store.get(candidates, include_vectors=False)
        return [r.id for r in records if predicate(r.metadata or {})]

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of the source document `ref_doc_id`."""
        with self._state.lock:
            ids = self._matching_ids({"ref_doc_id": {"$eq": ref_doc_id}}, None)
            if ids:
                self._state.store.delete(ids)

    async def adelete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        await asyncio.to_thread(self.delete, ref_doc_id, **delete_kwargs)

    def delete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        """Delete nodes by id and/or metadata filters (both given = both must hold)."""
        if node_ids is None and filters is None:
            return
        with self._state.lock:
            ids = self._matching_ids(metadata_filters_to_dict(filters), node_ids)
            if ids:
                self._state.store.delete(ids)

    async def adelete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        await asyncio.to_thread(self.delete_nodes, node_ids, filters)

    def clear(self) -> None:
        with self._state.lock:
            if self._state.store is not None and len(self._state.store):
                self._state.store.delete(list(self._state.store.ids))

    async def aclear(self) -> None:
        await asyncio.to_thread(self.clear)

    # -- reads -------------------------------------------------------------------------
    @staticmethod
    def _to_node(metadata: dict[str, Any], text: str | None, embedding: Any = None) -> BaseNode:
        node = metadata_dict_to_node(dict(metadata), text=text)
        if embedding is not None:
            node.embedding = np.asarray(embedding, dtype=np.float32).astype(float).tolist()
        return node

    def get_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
    ) -> list[BaseNode]:
        """Nodes by id and/or metadata filters (with their embeddings)."""
        with self._state.lock:
            if self._state.store is None:
                return []
            ids = self._matching_ids(metadata_filters_to_dict(filters), node_ids)
            records = self._state.store.get(ids) if ids else []
        return [self._to_node(r.metadata or {}, r.text, r.vector) for r in records]

    async def aget_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
    ) -> list[BaseNode]:
        return await asyncio.to_thread(self.get_nodes, node_ids, filters)

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """Top nodes for the query in its mode (see the class doc); larger = closer.

        Scores: cosine similarity (DEFAULT, MMR), BM25 (SPARSE, TEXT_SEARCH) or the fused
        score (HYBRID). Keyword arguments: `mmr_prefetch_k` (MMR), `fusion` (HYBRID).
        """
        mode = VectorStoreQueryMode(query.mode)
        if mode not in _VECTOR_MODES and mode not in _LEXICAL_MODES:
            raise NotImplementedError(
                f"Query mode {mode.value!r} is not supported by LLM2VecVectorStore "
                "(supported: default, hybrid, sparse, text_search, mmr)"
            )
        if mode in _VECTOR_MODES and query.query_embedding is None:
            raise ValueError(
                f"LLM2VecVectorStore.query needs query.query_embedding in {mode.value} mode"
            )
        needs_text = mode == VectorStoreQueryMode.HYBRID or mode in _LEXICAL_MODES
        if needs_text and query.query_str is None:
            raise ValueError(f"LLM2VecVectorStore.query needs query.query_str in {mode.value} mode")
        where = _and(
            metadata_filters_to_dict(query.filters),
            {"ref_doc_id": {"$in": list(query.doc_ids)}} if query.doc_ids else None,
            {NODE_ID_KEY: {"$in": list(query.node_ids)}} if query.node_ids else None,
        )
        k = int(query.similarity_top_k or 1)
        vector = None
        if query.query_embedding is not None and mode in _VECTOR_MODES:
            vector = np.asarray(query.query_embedding, dtype=np.float32).reshape(-1)
        with self._state.lock:
            store = self._state.store
            if store is None or len(store) == 0:
                return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
            if needs_text and not store.has_lexical:
                raise ValueError(_NO_LEXICAL)
            # the store makes the one SearchRequest of each search (and checks it there)
            if mode == VectorStoreQueryMode.MMR:
                lambda_mult = 0.5 if query.mmr_threshold is None else float(query.mmr_threshold)
                fetch_k = int(kwargs.get("mmr_prefetch_k") or max(20, 4 * k))
                hits = store.max_marginal_relevance(
                    vector, k=k, fetch_k=fetch_k, lambda_mult=lambda_mult, filter=where
                )
            elif mode == VectorStoreQueryMode.DEFAULT:
                hits = store.search(vector, k, filter=where)
            elif mode == VectorStoreQueryMode.HYBRID:
                hits = store.search(
                    vector,
                    int(query.hybrid_top_k or k),
                    filter=where,
                    text=query.query_str,
                    mode="hybrid",
                    fusion=kwargs.get("fusion"),  # None: the package default
                    alpha=query.alpha,
                    # LlamaIndex's per-list depths, never below the store's default
                    candidates=max(DEFAULT_HYBRID_CANDIDATES, k, int(query.sparse_top_k or 0)),
                )
            else:  # SPARSE, TEXT_SEARCH
                hits = store.search(
                    k=int(query.sparse_top_k or k),
                    filter=where,
                    text=query.query_str,
                    mode="lexical",
                )
        nodes = [self._to_node(h.metadata or {}, h.text) for h in hits]
        return VectorStoreQueryResult(
            nodes=nodes, similarities=[float(h.score) for h in hits], ids=[h.id for h in hits]
        )

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        return await asyncio.to_thread(self.query, query, **kwargs)

    # -- persistence -------------------------------------------------------------------
    @staticmethod
    def _index_dir(persist_path: str | Path) -> Path:
        path = Path(persist_path)
        return path.with_name(path.name + ".index")

    def persist(self, persist_path: str, fs: Any = None) -> None:
        """Save the index in `persist_path.index/` (atomically; this store's settings inside
        its checksummed manifest), then write at `persist_path` the small JSON file that
        LlamaIndex's storage layout expects, naming that folder."""
        _check_local_fs(fs)
        path = Path(persist_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        index_dir = self._index_dir(path)
        with self._state.lock:
            store = self._state.store
            if store is None:  # nothing added yet: an empty store still records the embedder
                store = self._new_store()
            extra = {**store.extra, _EXTRA_KEY: {"flat_metadata": self.flat_metadata}}
            store.save(index_dir, extra=extra)
        pointer = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "index_dir": index_dir.name,
        }
        write_json_object(path, pointer)

    @classmethod
    def from_persist_path(
        cls,
        persist_path: str,
        fs: Any = None,
        *,
        embed_model: Any = None,
        fingerprint: dict[str, Any] | None = None,
        allow_fingerprint_mismatch: bool = False,
    ) -> LLM2VecVectorStore:
        """Load a store written by `persist(persist_path)`.

        When an expected embedder is given (`embed_model=` with a `fingerprint()`
        method, or `fingerprint=`), it must match the recorded one unless
        `allow_fingerprint_mismatch=True` (else `FingerprintMismatchError`). An `embed_model`
        without a fingerprint (`MockEmbedding`, any other class) cannot show that it makes
        the stored vectors: refused too when the index records a fingerprint
        (`UnverifiedEmbedderError`), unless `allow_fingerprint_mismatch=True`. With neither,
        nothing is checked here: pass the `embed_model` the index will be queried with.
        """
        from llm2vec_retrieval.fingerprint import check_fingerprint
        from llm2vec_retrieval.index.persistence import MANIFEST_FILE

        _check_local_fs(fs)
        path = Path(persist_path)
        if not path.exists():
            raise FileNotFoundError(f"No persisted LLM2VecVectorStore at {path}")
        pointer = read_json_object(path)
        if pointer.get("format") != _FORMAT:
            raise ValueError(f"{path} is not an LLM2VecVectorStore manifest")
        if fingerprint is None and embed_model is not None:
            fingerprint = embedder_fingerprint(embed_model)
        # an embed_model without a fingerprint is refused by an index that records one
        unverified = (
            type(embed_model).__name__ if fingerprint is None and embed_model is not None else None
        )
        index_dir = path.with_name(Path(str(pointer.get("index_dir") or "")).name or "-")
        if (index_dir / MANIFEST_FILE).exists() or pointer.get("format_version", 1) >= 2:
            store = load_store(
                index_dir,
                fingerprint,
                allow_fingerprint_mismatch=allow_fingerprint_mismatch,
                unverified=unverified,
            )
            flat = store.extra.get(_EXTRA_KEY, {}).get(
                "flat_metadata", pointer.get("flat_metadata")
            )
            return cls(store, flat_metadata=bool(flat))
        # version 1, saved before anything was added: the file alone records the settings
        saved = pointer.get("fingerprint")
        check_fingerprint(
            saved,
            fingerprint,
            allow_fingerprint_mismatch=allow_fingerprint_mismatch,
            path=path,
            unverified=unverified,
        )
        return cls(
            None,
            index_kind=pointer.get("index_kind", "flat"),
            metric=pointer.get("metric", "cosine"),
            index_params=pointer.get("index_params") or {},
            fingerprint=saved if saved is not None else fingerprint,
            flat_metadata=bool(pointer.get("flat_metadata", False)),
        )

    @classmethod
    def from_persist_dir(
        cls,
        persist_dir: str = DEFAULT_PERSIST_DIR,
        namespace: str = DEFAULT_NAMESPACE,
        fs: Any = None,
        **kwargs: Any,
    ) -> LLM2VecVectorStore:
        """Load the store that `StorageContext.persist(persist_dir)` wrote."""
        path = Path(persist_dir) / f"{namespace}{NAMESPACE_SEP}{DEFAULT_PERSIST_FNAME}"
        return cls.from_persist_path(str(path), fs=fs, **kwargs)
