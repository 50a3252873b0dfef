"""LLM2VecVectorStore lexical and hybrid search: modes, fusion, filters, retriever,
relevance scores, persistence and indexes saved before the BM25 part existed.

Real FAISS and bm25s on a tiny random LLM2Vec checkpoint (its vectors mean nothing, which
is what the rare-keyword test relies on: it cannot tell part number kw4471 from kw4417)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from langchain_core.embeddings import Embeddings
from langchain_llm2vec import LLM2VecEmbeddings, LLM2VecVectorStore
from langchain_llm2vec.vectorstores import LLM2VecRetriever

from llm2vec_retrieval.index import (
    DEFAULT_ALPHA,
    DEFAULT_FUSION,
    DEFAULT_TEXT_MODE,
    MODES,
    NO_LEXICAL_MESSAGE,
    compile_filter,
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RARE = HYBRID_RARE
TEXTS = HYBRID_CORPUS
RARE_ID = f"d{HYBRID_RARE_INDEX}"
LOOKALIKES = {f"d{i}" for i in HYBRID_LOOKALIKES}
BIO = HYBRID_BIO
QUERIES = HYBRID_QUERIES


def _meta(i: int) -> dict:
    return {"i": i, "topic": "bio" if i in BIO else "earth", "even": i % 2 == 0}


class CountingEmbeddings(Embeddings):
    """Delegates to another Embeddings and counts the query embeddings asked for."""

    def __init__(self, inner: Embeddings) -> None:
        self.inner = inner
        self.queries = 0

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.inner.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        self.queries += 1
        return self.inner.embed_query(text)

    async def aembed_query(self, text: str) -> list[float]:
        self.queries += 1
        return await self.inner.aembed_query(text)


@pytest.fixture(scope="module")
def emb(tmp_path_factory) -> LLM2VecEmbeddings:
    from llm2vec_retrieval.testing import make_tiny_checkpoint

    root = tmp_path_factory.mktemp("lc-hybrid")
    return LLM2VecEmbeddings(model=str(make_tiny_checkpoint(root / "tiny", "llama", seed=0)))


@pytest.fixture()
def store(emb: LLM2VecEmbeddings) -> LLM2VecVectorStore:
    return LLM2VecVectorStore.from_texts(
        TEXTS, emb, [_meta(i) for i in range(len(TEXTS))], ids=[f"d{i}" for i in range(len(TEXTS))]
    )


def _ids(pairs) -> list[str]:
    return [d.id for d, _ in pairs]


# -- modes ---------------------------------------------------------------------------


def test_default_is_hybrid_and_each_mode_matches_the_index_store(
    store: LLM2VecVectorStore, emb: LLM2VecEmbeddings
) -> None:
    assert store.search_mode is None and store.store.has_lexical
    assert DEFAULT_TEXT_MODE == "hybrid"
    for query in QUERIES:
        qv = np.asarray(emb.embed_query(query), dtype=np.float32)
        default = store.similarity_search_with_score(query, k=5)
        for mode in MODES:
            got = store.similarity_search_with_score(query, k=5, mode=mode)
            raw = store.store.search(qv, 5, text=query, mode=mode)
            assert _ids(got) == [h.id for h in raw], (query, mode)
            np.testing.assert_allclose([s for _, s in got], [h.score for h in raw], rtol=1e-6)
            assert [d.page_content for d, _ in got] == [h.text for h in raw]
            if mode == DEFAULT_TEXT_MODE:
                assert default == got
    # hybrid fuses both lists: its ranking is neither list's
    q = QUERIES[1]
    dense = _ids(store.similarity_search_with_score(q, k=len(TEXTS), mode="dense"))
    lexical = _ids(store.similarity_search_with_score(q, k=len(TEXTS), mode="lexical"))
    hybrid = _ids(store.similarity_search_with_score(q, k=len(TEXTS)))
    # lexical lists only the documents that share a word with the query
    assert sorted(hybrid) == sorted(dense) and set(lexical) < set(dense)
    assert hybrid != dense and hybrid[: len(lexical)] != lexical


def test_rare_keyword_found_lexically_without_embedding_the_query(
    emb: LLM2VecEmbeddings,
) -> None:
    counting = CountingEmbeddings(emb)
    store = LLM2VecVectorStore.from_texts(
        TEXTS,
        counting,
        [_meta(i) for i in range(len(TEXTS))],
        ids=[f"d{i}" for i in range(len(TEXTS))],
    )
    lexical = store.similarity_search_with_score(RARE, k=len(TEXTS), mode="lexical")
    assert counting.queries == 0  # lexical search never embeds the query
    assert [d.id for d, _ in lexical] == [RARE_ID] and lexical[0][1] > 0  # nothing else shares it
    # the tiny random embedder cannot tell the part numbers apart: a look-alike comes first
    dense = _ids(store.similarity_search_with_score(RARE, k=len(TEXTS), mode="dense"))
    assert dense[0] in LOOKALIKES and dense.index(RARE_ID) > 0
    assert counting.queries == 1
    # hybrid fusion puts the lexical hit first (1/(60+1) + its dense share beats any dense-only)
    hybrid = store.similarity_search(RARE, k=3)
    assert hybrid[0].id == RARE_ID and len(hybrid) == 3
    assert counting.queries == 2
    # a constructor-level lexical mode does not embed either
    lex_store = LLM2VecVectorStore(counting, store=store.store, search_mode="lexical")
    assert [d.id for d in lex_store.similarity_search(RARE, k=1)] == [RARE_ID]
    assert counting.queries == 2


@pytest.mark.parametrize("mode", MODES)
def test_filters_in_every_mode_give_exactly_k(store: LLM2VecVectorStore, mode: str) -> None:
    for flt in ({"topic": "earth"}, {"$and": [{"topic": "bio"}, {"even": True}]}, {"i": 10}):
        pred = compile_filter(flt)
        for query in QUERIES:
            # lexical: only the documents that share a word with the query can match
            sharing = {h.id for h in store.store.search(text=query, mode="lexical", k=100)}
            n_match = sum(
                pred(_meta(i)) and (mode != "lexical" or f"d{i}" in sharing)
                for i in range(len(TEXTS))
            )
            for k in (1, 3, 20):
                docs = store.similarity_search(query, k=k, filter=flt, mode=mode)
                assert len(docs) == min(k, n_match), (flt, query, k)
                assert all(pred(d.metadata) for d in docs)
    # the rare document is filtered out before the search, in every mode
    docs = store.similarity_search(RARE, k=5, filter={"topic": "bio"}, mode=mode)
    assert len(docs) == (0 if mode == "lexical" else 5) and RARE_ID not in [d.id for d in docs]
    assert store.similarity_search(RARE, k=3, filter={"topic": "none"}, mode=mode) == []


# numbers kept as text (as a CSV column gives them), one value not a number, one missing
def _text_meta(i: int) -> dict:
    return {} if i == 1 else {"n": "unknown"} if i == 0 else {"n": str(i)}


@pytest.mark.parametrize("mode", MODES)
def test_ordered_filters_read_numbers_stored_as_text(emb: LLM2VecEmbeddings, mode: str) -> None:
    ids = [f"d{i}" for i in range(len(TEXTS))]
    store = LLM2VecVectorStore.from_texts(
        TEXTS, emb, [_text_meta(i) for i in range(len(TEXTS))], ids=ids
    )
    n = len(TEXTS)
    # lexical: only the documents that share a word with the query
    sharing = {h.id for h in store.store.search(text=QUERIES[0], mode="lexical", k=n)}
    for flt, want in [
        ({"n": {"$gte": 5}}, {f"d{i}" for i in range(5, n)}),
        ({"n": {"$gt": 5, "$lte": 7}}, {"d6", "d7"}),
        ({"n": {"$lt": 4}}, {"d2", "d3"}),  # "unknown" and the missing key never match
    ]:
        docs = store.similarity_search(QUERIES[0], k=n, filter=flt, mode=mode)
        assert {d.id for d in docs} == (want & sharing if mode == "lexical" else want), flt
        if mode == "dense":
            mmr = store.max_marginal_relevance_search(QUERIES[0], k=n, fetch_k=n, filter=flt)
            assert {d.id for d in mmr} == want, flt


def test_fusion_and_alpha(store: LLM2VecVectorStore) -> None:
    q, n = QUERIES[0], len(TEXTS)
    dense = store.similarity_search_with_score(q, k=n, mode="dense")
    # alpha=1 is the dense ranking
    only_dense = store.similarity_search_with_score(q, k=n, fusion="alpha", alpha=1.0)
    assert _ids(only_dense) == _ids(dense)
    assert only_dense[0][1] == pytest.approx(1.0) and all(0 <= s <= 1 for _, s in only_dense)
    rrf = store.similarity_search_with_score(q, k=n, fusion="rrf")
    assert all(0 < s <= 2 / 61 + 1e-9 for _, s in rrf)
    default = store.similarity_search_with_score(q, k=n, fusion=DEFAULT_FUSION, alpha=DEFAULT_ALPHA)
    assert default == store.similarity_search_with_score(q, k=n)  # the defaults
    half = store.similarity_search_with_score(q, k=n, fusion="alpha", alpha=0.5)
    assert all(0 <= s <= 1 for _, s in half)
    assert _ids(half) != _ids(rrf) or [s for _, s in half] != [s for _, s in rrf]
    # the weight moves the rare part number: last word with alpha=1, first below it
    assert store.similarity_search(RARE, k=1, alpha=1.0)[0].id in LOOKALIKES
    for alpha in (0.0, 0.5):
        assert store.similarity_search(RARE, k=1, alpha=alpha)[0].id == RARE_ID
    with pytest.raises(ValueError, match="valid fusions: rrf, wrrf, alpha, tmm, zscore"):
        store.similarity_search(q, fusion="max")
    with pytest.raises(ValueError, match=r"alpha must be a number in \[0, 1\]"):
        store.similarity_search(q, alpha=1.5)
    with pytest.raises(ValueError, match="valid modes: dense, lexical, hybrid"):
        store.similarity_search(q, mode="sparse")
    with pytest.raises(ValueError, match="valid modes"):
        LLM2VecVectorStore(store.embedding, search_mode="bm25")


def test_vector_only_methods_stay_dense(store: LLM2VecVectorStore, emb) -> None:
    vec = emb.embed_query(QUERIES[0])
    assert [d.id for d in store.similarity_search_by_vector(vec, k=4)] == _ids(
        store.similarity_search_with_score(QUERIES[0], k=4, mode="dense")
    )
    for call in (
        lambda: store.similarity_search_by_vector(vec, k=2, mode="hybrid"),
        lambda: store.similarity_search_with_score_by_vector(vec, k=2, mode="lexical"),
        lambda: store.max_marginal_relevance_search(QUERIES[0], k=2, mode="hybrid"),
    ):
        with pytest.raises(ValueError, match="vectors only"):
            call()
    assert len(store.max_marginal_relevance_search(QUERIES[0], k=2, mode="dense")) == 2


def test_relevance_scores_are_dense_only(store: LLM2VecVectorStore) -> None:
    q = QUERIES[0]
    dense = store.similarity_search_with_score(q, k=5, mode="dense")
    rel = store.similarity_search_with_relevance_scores(q, k=5)  # default mode is hybrid
    assert _ids(rel) == _ids(dense)
    assert [r for _, r in rel] == pytest.approx([(1 + s) / 2 for _, s in dense])
    for mode in ("hybrid", "lexical"):
        with pytest.raises(ValueError, match="dense search only") as info:
            store.similarity_search_with_relevance_scores(q, k=5, mode=mode)
        assert "\n" not in str(info.value)
    threshold = store.as_retriever(
        search_type="similarity_score_threshold",
        search_kwargs={"score_threshold": rel[1][1] - 1e-6, "k": 5},
    )
    assert [d.id for d in threshold.invoke(q)] == _ids(rel[:2])


# -- retriever -------------------------------------------------------------------------


async def test_retriever_hybrid_and_lexical(store: LLM2VecVectorStore) -> None:
    kwargs = {"k": 4, "alpha": 0.3, "fusion": "alpha", "filter": {"topic": "earth"}}
    hybrid = store.as_retriever(search_type="hybrid", search_kwargs=kwargs)
    assert isinstance(hybrid, LLM2VecRetriever)
    for q in QUERIES:
        expected = store.similarity_search(q, mode="hybrid", **kwargs)
        assert len(expected) == 4 and all(d.metadata["topic"] == "earth" for d in expected)
        assert hybrid.invoke(q) == expected
        assert await hybrid.ainvoke(q) == expected
    lexical = store.as_retriever(search_type="lexical", search_kwargs={"k": 2})
    assert [d.id for d in lexical.invoke(RARE)][0] == RARE_ID
    assert await lexical.ainvoke(RARE) == lexical.invoke(RARE)
    # "similarity" follows the store's default mode, or mode= in search_kwargs
    assert store.as_retriever(search_kwargs={"k": 3}).invoke(RARE) == store.similarity_search(
        RARE, k=3
    )
    dense = store.as_retriever(search_kwargs={"k": 3, "mode": "dense"})
    assert dense.invoke(RARE) == store.similarity_search(RARE, k=3, mode="dense")
    with pytest.raises(ValueError, match="conflicts"):
        store.as_retriever(search_type="hybrid", search_kwargs={"mode": "dense"}).invoke("x")
    with pytest.raises(ValueError, match="not allowed"):
        store.as_retriever(search_type="bm25")


async def test_async_matches_sync(emb: LLM2VecEmbeddings) -> None:
    counting = CountingEmbeddings(emb)
    store = await LLM2VecVectorStore.afrom_texts(
        TEXTS,
        counting,
        [_meta(i) for i in range(len(TEXTS))],
        ids=[f"d{i}" for i in range(len(TEXTS))],
    )
    for mode in MODES:
        sync = store.similarity_search_with_score(QUERIES[1], k=4, filter={"even": True}, mode=mode)
        got = await store.asimilarity_search_with_score(
            QUERIES[1], k=4, filter={"even": True}, mode=mode
        )
        assert got == sync and got and (mode == "lexical" or len(got) == 4)
    before = counting.queries
    docs = await store.asimilarity_search(RARE, k=1, mode="lexical")
    assert [d.id for d in docs] == [RARE_ID] and counting.queries == before
    rel = await store.asimilarity_search_with_relevance_scores(QUERIES[1], k=3)
    assert all(0 <= r <= 1 for _, r in rel)
    with pytest.raises(ValueError, match="dense search only"):
        await store.asimilarity_search_with_relevance_scores(QUERIES[1], k=3, mode="hybrid")


# -- persistence -------------------------------------------------------------------------


def test_save_load_keeps_hybrid_results(store: LLM2VecVectorStore, emb, tmp_path) -> None:
    store.search_mode = "lexical"
    store.save_local(tmp_path / "idx")
    assert list((tmp_path / "idx").glob("*.lex.arr"))  # the BM25 part is saved
    loaded = LLM2VecVectorStore.load_local(tmp_path / "idx", emb)
    assert loaded.store.has_lexical and loaded.search_mode == "lexical"
    for q in QUERIES:
        for kw in ({}, {"fusion": "alpha", "alpha": 0.7}, {"filter": {"topic": "bio"}}):
            for mode in MODES:
                before = store.similarity_search_with_score(q, k=6, mode=mode, **kw)
                assert loaded.similarity_search_with_score(q, k=6, mode=mode, **kw) == before
    assert loaded.similarity_search(RARE, k=1)[0].id == RARE_ID  # the saved lexical mode
    override = LLM2VecVectorStore.load_local(tmp_path / "idx", emb, search_mode="dense")
    assert override.search_mode == "dense"
    # upserts and deletes after loading keep the BM25 part in step
    loaded.add_texts([f"the {RARE} valve leaks"], [_meta(0)], ids=["d0"])
    loaded.delete([RARE_ID])
    top = loaded.similarity_search_with_score(RARE, k=1, mode="lexical")
    assert top[0][0].id == "d0" and top[0][1] > 0


def test_index_saved_before_hybrid_search(store: LLM2VecVectorStore, emb, tmp_path) -> None:
    store.save_local(tmp_path / "old")
    make_pre_hybrid(tmp_path / "old")
    old = LLM2VecVectorStore.load_local(tmp_path / "old", emb)
    assert not old.store.has_lexical and len(old) == len(TEXTS)
    # the default mode falls back to dense, which still works
    for q in QUERIES:
        assert old.similarity_search_with_score(q, k=5) == store.similarity_search_with_score(
            q, k=5, mode="dense"
        )
    for call in (
        lambda: old.similarity_search(RARE, k=2, mode="hybrid"),
        lambda: old.similarity_search(RARE, k=2, mode="lexical"),
        lambda: old.as_retriever(search_type="hybrid").invoke(RARE),
        lambda: LLM2VecVectorStore(emb, store=old.store, search_mode="hybrid").similarity_search(
            RARE
        ),
    ):
        with pytest.raises(ValueError) as info:
            call()
        message = str(info.value)
        assert "\n" not in message and message.startswith(NO_LEXICAL_MESSAGE)
        assert "vector_store.store.build_lexical()" in message and "save_local" in message
    # the fix the message names: build the BM25 part, save, load
    old.store.build_lexical()
    old.save_local(tmp_path / "old")
    fixed = LLM2VecVectorStore.load_local(tmp_path / "old", emb)
    assert fixed.store.has_lexical
    for q in QUERIES:
        assert fixed.similarity_search_with_score(q, k=5) == store.similarity_search_with_score(
            q, k=5
        )


def test_empty_store_in_every_mode(emb: LLM2VecEmbeddings) -> None:
    empty = LLM2VecVectorStore(emb)
    for mode in MODES:
        assert empty.similarity_search("anything", k=3, mode=mode) == []
    assert empty.as_retriever(search_type="lexical").invoke("anything") == []
