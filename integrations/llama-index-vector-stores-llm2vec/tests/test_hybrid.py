"""LLM2VecVectorStore query modes beyond DEFAULT: HYBRID, SPARSE and TEXT_SEARCH (BM25 over
the node texts), with filters, the top-k fields, persistence and indexes saved before the
BM25 part existed.

Real FAISS and bm25s on a tiny random LLM2Vec checkpoint (its vectors mean nothing, which
is what the rare-keyword test relies on: it cannot tell part number kw4471 from kw4417)."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from llama_index.core import (  # noqa: E402
    Document,
    StorageContext,
    VectorStoreIndex,
    load_index_from_storage,
)
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode  # noqa: E402
from llama_index.core.vector_stores.types import (  # noqa: E402
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)
from llama_index.embeddings.llm2vec import LLM2VecEmbedding  # noqa: E402
from llama_index.vector_stores.llm2vec import LLM2VecVectorStore  # noqa: E402

from llm2vec_retrieval.index import (
    DEFAULT_ALPHA,
    DEFAULT_FUSION,
    NO_LEXICAL_MESSAGE,  # noqa: E402
)
from llm2vec_retrieval.testing import (  # noqa: E402
    HYBRID_BIO,
    HYBRID_CORPUS,
    HYBRID_LOOKALIKES,
    HYBRID_QUERIES,
    HYBRID_RARE,
    HYBRID_RARE_INDEX,
    make_pre_hybrid,
)

Mode = VectorStoreQueryMode
RARE = HYBRID_RARE
TEXTS = HYBRID_CORPUS
RARE_ID = f"n{HYBRID_RARE_INDEX}"
LOOKALIKES = {f"n{i}" for i in HYBRID_LOOKALIKES}
BIO = HYBRID_BIO
QUERIES = HYBRID_QUERIES
TEXT_MODES = [Mode.HYBRID, Mode.SPARSE, Mode.TEXT_SEARCH]


def _meta(i: int) -> dict:
    return {"i": i, "topic": "bio" if i in BIO else "earth"}


@pytest.fixture(scope="module")
def embed(tmp_path_factory) -> LLM2VecEmbedding:
    from llm2vec_retrieval.testing import make_tiny_checkpoint

    root = tmp_path_factory.mktemp("li-hybrid")
    return LLM2VecEmbedding(model_name=str(make_tiny_checkpoint(root / "tiny", "llama", seed=0)))


@pytest.fixture(scope="module")
def vectors(embed: LLM2VecEmbedding) -> list[list[float]]:
    return embed.get_text_embedding_batch(TEXTS)


@pytest.fixture()
def store(embed: LLM2VecEmbedding, vectors) -> LLM2VecVectorStore:
    vs = LLM2VecVectorStore(embed_model=embed)
    nodes = []
    for i, (text, vec) in enumerate(zip(TEXTS, vectors, strict=True)):
        node = TextNode(id_=f"n{i}", text=text, metadata=_meta(i), embedding=vec)
        node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=f"doc-{i % 4}")
        nodes.append(node)
    vs.add(nodes)
    return vs


def sharing(vs: LLM2VecVectorStore, text: str) -> set[str]:
    """Ids of the nodes that share a word with ``text``: all a BM25-only mode may return."""
    return {h.id for h in vs.store.search(text=text, mode="lexical", k=1000)}


def run(vs: LLM2VecVectorStore, embed: LLM2VecEmbedding, text: str, mode=Mode.DEFAULT, **kw):
    """A query as LlamaIndex's retriever builds it (no embedding for the BM25-only modes)."""
    vec = None if mode in (Mode.SPARSE, Mode.TEXT_SEARCH) else embed.get_query_embedding(text)
    kw.setdefault("similarity_top_k", 5)
    return vs.query(VectorStoreQuery(query_embedding=vec, query_str=text, mode=mode, **kw))


# -- modes ---------------------------------------------------------------------------


def test_modes_map_to_the_index_store(store: LLM2VecVectorStore, embed) -> None:
    assert store.is_embedding_query and store.stores_text
    for q in QUERIES:
        qv = np.asarray(embed.get_query_embedding(q), dtype=np.float32)
        expected = {
            (Mode.DEFAULT, None): store.store.search(qv, 5),
            (Mode.HYBRID, None): store.store.search(
                qv, 5, text=q, mode="hybrid", fusion=DEFAULT_FUSION, alpha=DEFAULT_ALPHA
            ),
            (Mode.HYBRID, 0.3): store.store.search(
                qv, 5, text=q, mode="hybrid", fusion=DEFAULT_FUSION, alpha=0.3
            ),
            (Mode.SPARSE, None): store.store.search(k=5, text=q, mode="lexical"),
            (Mode.TEXT_SEARCH, None): store.store.search(k=5, text=q, mode="lexical"),
        }
        for (mode, alpha), hits in expected.items():
            res = run(store, embed, q, mode, alpha=alpha)
            assert res.ids == [h.id for h in hits], (q, mode, alpha)
            assert res.similarities == pytest.approx([h.score for h in hits], rel=1e-6)
            assert res.similarities == sorted(res.similarities, reverse=True)
            assert [n.get_content() for n in res.nodes] == [h.text for h in hits]
            assert [n.node_id for n in res.nodes] == res.ids
    # hybrid is neither list alone
    q = QUERIES[1]
    modes = (Mode.DEFAULT, Mode.HYBRID, Mode.SPARSE)
    full = {m: run(store, embed, q, m, similarity_top_k=len(TEXTS)).ids for m in modes}
    assert sorted(full[Mode.HYBRID]) == sorted(full[Mode.DEFAULT])
    assert set(full[Mode.SPARSE]) == sharing(store, q) < set(full[Mode.DEFAULT])
    assert full[Mode.HYBRID] not in (full[Mode.DEFAULT], full[Mode.SPARSE])


@pytest.mark.parametrize("mode", [Mode.DEFAULT, Mode.MMR, *TEXT_MODES])
def test_ordered_filters_read_numbers_stored_as_text(embed, vectors, mode) -> None:
    """GT/GTE/LT/LTE on a metadata value kept as text (as a CSV column gives it) compare
    numbers as numbers; a value that is not a number and a missing key never match."""
    vs = LLM2VecVectorStore(embed_model=embed)
    metas = [
        {} if i == 1 else {"n": "unknown"} if i == 0 else {"n": str(i)} for i in range(len(TEXTS))
    ]
    vs.add(
        [
            TextNode(id_=f"n{i}", text=t, metadata=m, embedding=v)
            for i, (t, m, v) in enumerate(zip(TEXTS, metas, vectors, strict=True))
        ]
    )
    n = len(TEXTS)
    GTE, GT, LT, LTE = FilterOperator.GTE, FilterOperator.GT, FilterOperator.LT, FilterOperator.LTE
    for filters, want in [
        ([MetadataFilter(key="n", value=5, operator=GTE)], {f"n{i}" for i in range(5, n)}),
        (
            [
                MetadataFilter(key="n", value=5, operator=GT),
                MetadataFilter(key="n", value=7, operator=LTE),
            ],
            {"n6", "n7"},
        ),
        ([MetadataFilter(key="n", value=4, operator=LT)], {"n2", "n3"}),
    ]:
        res = run(
            vs,
            embed,
            QUERIES[0],
            mode,
            similarity_top_k=n,
            filters=MetadataFilters(filters=filters),
        )
        if mode in (Mode.SPARSE, Mode.TEXT_SEARCH):  # only nodes sharing a word with the query
            want = want & sharing(vs, QUERIES[0])
        assert set(res.ids) == want, filters


def test_rare_keyword_only_bm25_finds(store: LLM2VecVectorStore, embed) -> None:
    # SPARSE/TEXT_SEARCH need no query embedding at all
    for mode in (Mode.SPARSE, Mode.TEXT_SEARCH):
        res = store.query(VectorStoreQuery(query_str=RARE, mode=mode, similarity_top_k=len(TEXTS)))
        assert res.ids == [RARE_ID] and res.similarities[0] > 0  # no other node has the word
        assert res.nodes[0].get_content() == TEXTS[10]
    # the tiny random embedder cannot tell the part numbers apart: a look-alike comes first
    dense = run(store, embed, RARE, Mode.DEFAULT, similarity_top_k=len(TEXTS)).ids
    assert dense[0] in LOOKALIKES and dense.index(RARE_ID) > 0
    assert run(store, embed, RARE, Mode.HYBRID, similarity_top_k=1).ids == [RARE_ID]
    # alpha: 1 = vectors only (LlamaIndex's convention), 0 = BM25 only
    assert run(store, embed, RARE, Mode.HYBRID, alpha=1.0, similarity_top_k=1).ids[0] in LOOKALIKES
    assert run(store, embed, RARE, Mode.HYBRID, alpha=0.0, similarity_top_k=1).ids == [RARE_ID]
    alpha_one = run(store, embed, QUERIES[0], Mode.HYBRID, alpha=1.0, similarity_top_k=8)
    assert alpha_one.ids == run(store, embed, QUERIES[0], similarity_top_k=8).ids
    assert alpha_one.similarities[0] == pytest.approx(1.0)
    # fusion= in the query kwargs overrides the choice made from alpha
    forced = store.query(
        VectorStoreQuery(
            query_embedding=embed.get_query_embedding(RARE),
            query_str=RARE,
            mode=Mode.HYBRID,
            alpha=1.0,
            similarity_top_k=5,
        ),
        fusion="rrf",
    )
    assert forced.ids == run(store, embed, RARE, Mode.HYBRID).ids


@pytest.mark.parametrize("mode", [Mode.DEFAULT, *TEXT_MODES, Mode.MMR])
def test_filters_apply_in_every_mode(store: LLM2VecVectorStore, embed, mode) -> None:
    cases = [
        (
            MetadataFilters(filters=[MetadataFilter(key="topic", value="earth")]),
            lambda i: i not in BIO,
        ),
        (
            MetadataFilters(
                filters=[
                    MetadataFilter(key="topic", value="bio"),
                    MetadataFilter(key="i", value=5, operator=FilterOperator.GT),
                ]
            ),
            lambda i: i in BIO and i > 5,
        ),
    ]
    bm25_only = mode in (Mode.SPARSE, Mode.TEXT_SEARCH)
    for filters, pred in cases:
        for q in QUERIES:
            # BM25-only modes: only the matching nodes that share a word with the query
            n_match = sum(
                pred(i) and (not bm25_only or f"n{i}" in sharing(store, q))
                for i in range(len(TEXTS))
            )
            for k in (1, 3, 20):
                res = run(store, embed, q, mode, filters=filters, similarity_top_k=k)
                assert len(res.ids) == min(k, n_match), (q, k)
                assert all(pred(n.metadata["i"]) for n in res.nodes)
    # the rare node is filtered out before the search
    bio = MetadataFilters(filters=[MetadataFilter(key="topic", value="bio")])
    res = run(store, embed, RARE, mode, filters=bio, similarity_top_k=4)
    assert len(res.ids) == (0 if bm25_only else 4) and RARE_ID not in res.ids
    # doc_ids and node_ids restrict too (only the rare node has the rare word)
    res = run(store, embed, RARE, mode, doc_ids=["doc-2"], similarity_top_k=20)
    doc2 = sorted(f"n{i}" for i in range(len(TEXTS)) if i % 4 == 2)
    assert sorted(res.ids) == ([RARE_ID] if bm25_only else doc2) and RARE_ID in doc2
    res = run(store, embed, RARE, mode, node_ids=["n1", "n10"], similarity_top_k=20)
    assert sorted(res.ids) == ([RARE_ID] if bm25_only else ["n1", "n10"])


def test_top_k_fields(store: LLM2VecVectorStore, embed) -> None:
    q = QUERIES[0]
    # HYBRID returns hybrid_top_k when set (similarity_top_k is then LlamaIndex's dense depth)
    res = run(store, embed, q, Mode.HYBRID, similarity_top_k=2, hybrid_top_k=6)
    assert len(res.ids) == 6
    assert res.ids[:2] == run(store, embed, q, Mode.HYBRID, similarity_top_k=2).ids
    assert len(run(store, embed, q, Mode.HYBRID, similarity_top_k=4).ids) == 4
    # SPARSE/TEXT_SEARCH return sparse_top_k when set
    n = len(sharing(store, q))  # BM25-only modes return no node without a word of q
    assert n >= 3
    for mode in (Mode.SPARSE, Mode.TEXT_SEARCH):
        assert len(run(store, embed, q, mode, similarity_top_k=2, sparse_top_k=7).ids) == min(7, n)
        assert len(run(store, embed, q, mode, similarity_top_k=3).ids) == 3
    # a deep sparse_top_k in HYBRID only widens the candidates: same top results here
    wide = run(store, embed, q, Mode.HYBRID, similarity_top_k=4, sparse_top_k=500)
    assert wide.ids == run(store, embed, q, Mode.HYBRID, similarity_top_k=4).ids


def test_bad_queries(store: LLM2VecVectorStore, embed) -> None:
    vec = embed.get_query_embedding("x")
    with pytest.raises(ValueError, match="query_str in sparse mode"):
        store.query(VectorStoreQuery(query_embedding=vec, mode=Mode.SPARSE))
    with pytest.raises(ValueError, match="query_str in hybrid mode"):
        store.query(VectorStoreQuery(query_embedding=vec, mode=Mode.HYBRID))
    with pytest.raises(ValueError, match="query_embedding in hybrid mode"):
        store.query(VectorStoreQuery(query_str="x", mode=Mode.HYBRID))
    with pytest.raises(ValueError, match=r"alpha must be a number in \[0, 1\]"):
        run(store, embed, "x", Mode.HYBRID, alpha=2.0)
    with pytest.raises(NotImplementedError, match="semantic_hybrid"):
        run(store, embed, "x", Mode.SEMANTIC_HYBRID)
    empty = LLM2VecVectorStore()
    for mode in TEXT_MODES:
        assert run(empty, embed, "x", mode).ids == []


async def test_async_query_matches(store: LLM2VecVectorStore, embed) -> None:
    for mode in TEXT_MODES:
        query = VectorStoreQuery(
            query_embedding=embed.get_query_embedding(QUERIES[1]),
            query_str=QUERIES[1],
            mode=mode,
            similarity_top_k=4,
        )
        got, want = await store.aquery(query), store.query(query)
        assert got.ids == want.ids and got.similarities == want.similarities


# -- through a VectorStoreIndex, persisted ---------------------------------------------


def _index(embed: LLM2VecEmbedding):
    vs = LLM2VecVectorStore(embed_model=embed)
    ctx = StorageContext.from_defaults(vector_store=vs)
    docs = [Document(text=t, id_=f"doc-{i}", metadata=_meta(i)) for i, t in enumerate(TEXTS)]
    return vs, ctx, VectorStoreIndex.from_documents(docs, storage_context=ctx, embed_model=embed)


def _retrieve(index, mode, q, **kw):
    hits = index.as_retriever(vector_store_query_mode=mode, **kw).retrieve(q)
    return [(h.node.ref_doc_id, h.score) for h in hits]


def test_index_retriever_and_persist_round_trip(embed: LLM2VecEmbedding, tmp_path) -> None:
    vs, ctx, index = _index(embed)
    earth = MetadataFilters(filters=[MetadataFilter(key="topic", value="earth")])
    got = _retrieve(index, "sparse", RARE, similarity_top_k=1)
    assert [d for d, _ in got] == ["doc-10"]
    got = _retrieve(index, "hybrid", RARE, similarity_top_k=3, alpha=0.5, filters=earth)
    assert got[0][0] == "doc-10" and len(got) == 3
    assert all(int(d.split("-")[1]) not in BIO for d, _ in got)
    # vector_store_kwargs reach query(): fusion="rrf" overrides the alpha fusion
    rrf = _retrieve(
        index, "hybrid", QUERIES[0], similarity_top_k=4, vector_store_kwargs={"fusion": "rrf"}
    )
    assert _retrieve(index, "hybrid", QUERIES[0], similarity_top_k=4, alpha=1.0) != rrf
    forced = _retrieve(
        index,
        "hybrid",
        QUERIES[0],
        similarity_top_k=4,
        alpha=1.0,
        vector_store_kwargs={"fusion": "rrf"},
    )
    assert forced == rrf
    ctx.persist(persist_dir=str(tmp_path / "storage"))
    assert list((tmp_path / "storage" / "default__vector_store.json.index").glob("*.lex.arr"))
    loaded = LLM2VecVectorStore.from_persist_dir(str(tmp_path / "storage"), embed_model=embed)
    assert loaded.store.has_lexical
    ctx2 = StorageContext.from_defaults(persist_dir=str(tmp_path / "storage"), vector_store=loaded)
    index2 = load_index_from_storage(ctx2, embed_model=embed)
    for q in QUERIES:
        for mode, kw in [
            ("hybrid", {}),
            ("hybrid", {"alpha": 0.7}),
            ("hybrid", {"filters": earth}),
            ("sparse", {}),
            ("text_search", {"filters": earth}),
            ("default", {}),
        ]:
            before = _retrieve(index, mode, q, similarity_top_k=5, **kw)
            assert _retrieve(index2, mode, q, similarity_top_k=5, **kw) == before, (q, mode, kw)
            # BM25 alone returns only the documents sharing a word with q
            assert len(before) == 5 or mode in ("sparse", "text_search")


def test_index_saved_before_hybrid_search(embed: LLM2VecEmbedding, tmp_path) -> None:
    vs, ctx, index = _index(embed)
    ctx.persist(persist_dir=str(tmp_path / "storage"))
    make_pre_hybrid(tmp_path / "storage" / "default__vector_store.json.index")
    old = LLM2VecVectorStore.from_persist_dir(str(tmp_path / "storage"), embed_model=embed)
    assert not old.store.has_lexical and len(old) == len(TEXTS)
    ctx2 = StorageContext.from_defaults(persist_dir=str(tmp_path / "storage"), vector_store=old)
    index2 = load_index_from_storage(ctx2, embed_model=embed)
    for mode in ("default", "mmr"):  # the vectors still work
        assert len(_retrieve(index2, mode, QUERIES[0], similarity_top_k=3)) == 3
    assert _retrieve(index2, "default", QUERIES[0]) == _retrieve(index, "default", QUERIES[0])
    for mode in ("hybrid", "sparse", "text_search"):
        with pytest.raises(ValueError) as info:
            _retrieve(index2, mode, RARE)
        message = str(info.value)
        assert "\n" not in message and message.startswith(NO_LEXICAL_MESSAGE)
        assert "vector_store.store.build_lexical()" in message
    # the fix the message names
    old.store.build_lexical()
    ctx2.persist(persist_dir=str(tmp_path / "storage"))
    fixed = LLM2VecVectorStore.from_persist_dir(str(tmp_path / "storage"), embed_model=embed)
    assert fixed.store.has_lexical
    ctx3 = StorageContext.from_defaults(persist_dir=str(tmp_path / "storage"), vector_store=fixed)
    index3 = load_index_from_storage(ctx3, embed_model=embed)
    for q in QUERIES:
        assert _retrieve(index3, "hybrid", q, similarity_top_k=5) == _retrieve(
            index, "hybrid", q, similarity_top_k=5
        )
