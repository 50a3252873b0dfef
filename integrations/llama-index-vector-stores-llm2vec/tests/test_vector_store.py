"""LLM2VecVectorStore: filters, queries, the nodes API, persistence, a VectorStoreIndex end to end
(embedding with LLM2VecEmbedding from llama-index-embeddings-llm2vec)."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from llama_index.core import (  # noqa: E402
    Document,
    Settings,
    StorageContext,
    VectorStoreIndex,
    load_index_from_storage,  # noqa: E402
)
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode  # noqa: E402
from llama_index.core.vector_stores.types import (  # noqa: E402
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)
from llama_index.embeddings.llm2vec import LLM2VecEmbedding  # noqa: E402
from llama_index.vector_stores.llm2vec import (
    LLM2VecVectorStore,  # noqa: E402
    metadata_filters_to_dict,  # noqa: E402
)

from llm2vec_retrieval.index import FingerprintMismatchError  # noqa: E402

TOPICS = ["rivers", "mountains", "cells", "vaccines", "numbers"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> tuple[str, str]:
    from llm2vec_retrieval.testing import make_tiny_checkpoint

    root = tmp_path_factory.mktemp("tiny")
    return (
        str(make_tiny_checkpoint(root / "tiny0", "llama", seed=0)),
        str(make_tiny_checkpoint(root / "tiny1", "llama", seed=1)),
    )


@pytest.fixture(scope="module")
def embed(checkpoints) -> LLM2VecEmbedding:
    return LLM2VecEmbedding(model_name=checkpoints[0], embed_batch_size=4)


def _documents(n: int = 10) -> list[Document]:
    return [
        Document(
            text=f"Document {i} is about {TOPICS[i % 5]}. "
            + "It has a few sentences. " * (i % 3 + 1),
            id_=f"doc-{i}",
            metadata={"topic": TOPICS[i % 5], "year": 2015 + i, "rank": i},
        )
        for i in range(n)
    ]


def _node(id_: str, vec: list[float], ref: str, **meta) -> TextNode:
    node = TextNode(id_=id_, text=f"text of {id_}", metadata=meta, embedding=vec)
    node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=ref)
    return node


# -- filters ---------------------------------------------------------------------------


def test_filter_translation() -> None:
    f = MetadataFilters(
        filters=[
            MetadataFilter(key="a", value=1),
            MetadataFilter(key="b", value="x", operator=FilterOperator.NE),
            MetadataFilters(
                filters=[
                    MetadataFilter(key="c", value=2, operator=FilterOperator.GT),
                    MetadataFilter(key="c", value=[5, 6], operator=FilterOperator.IN),
                ],
                condition=FilterCondition.OR,
            ),
        ]
    )
    assert metadata_filters_to_dict(f) == {
        "$and": [
            {"a": {"$eq": 1}},
            {"b": {"$ne": "x"}},
            {"$or": [{"c": {"$gt": 2}}, {"c": {"$in": [5, 6]}}]},
        ]
    }
    assert metadata_filters_to_dict(None) is None
    assert metadata_filters_to_dict(MetadataFilters(filters=[])) is None
    ops = {
        FilterOperator.GTE: "$gte",
        FilterOperator.LT: "$lt",
        FilterOperator.LTE: "$lte",
        FilterOperator.NIN: "$nin",
    }
    for op, name in ops.items():
        value = [1] if op == FilterOperator.NIN else 1
        assert metadata_filters_to_dict(
            MetadataFilters(filters=[MetadataFilter(key="k", value=value, operator=op)])
        ) == {"k": {name: value}}
    not_ = MetadataFilters(
        filters=[MetadataFilter(key="k", value=1)], condition=FilterCondition.NOT
    )
    assert metadata_filters_to_dict(not_) == {"$not": {"k": {"$eq": 1}}}
    with pytest.raises(NotImplementedError):
        metadata_filters_to_dict(
            MetadataFilters(
                filters=[
                    MetadataFilter(
                        key="k", value="x", operator=FilterOperator.TEXT_MATCH_INSENSITIVE
                    )
                ]
            )
        )


def test_vector_store_query_filters_exact_k() -> None:
    store = LLM2VecVectorStore(index_kind="hnsw")
    rng = np.random.default_rng(0)
    nodes = [
        _node(f"n{i}", rng.normal(size=8).tolist(), f"d{i % 4}", topic=TOPICS[i % 5], year=2000 + i)
        for i in range(40)
    ]
    assert store.add(nodes) == [f"n{i}" for i in range(40)]
    q = rng.normal(size=8).tolist()

    def run(filters=None, k=5, **kw):
        return store.query(
            VectorStoreQuery(query_embedding=q, similarity_top_k=k, filters=filters, **kw)
        )

    res = run()
    assert len(res.nodes) == 5 and res.similarities == sorted(res.similarities, reverse=True)
    assert res.ids == [n.node_id for n in res.nodes]
    assert res.nodes[0].get_content() == f"text of {res.ids[0]}"
    cases = [
        (MetadataFilter(key="topic", value="rivers"), lambda m: m["topic"] == "rivers"),
        (
            MetadataFilter(key="topic", value="rivers", operator=FilterOperator.NE),
            lambda m: m["topic"] != "rivers",
        ),
        (
            MetadataFilter(key="year", value=2030, operator=FilterOperator.GT),
            lambda m: m["year"] > 2030,
        ),
        (
            MetadataFilter(key="year", value=2030, operator=FilterOperator.GTE),
            lambda m: m["year"] >= 2030,
        ),
        (
            MetadataFilter(key="year", value=2003, operator=FilterOperator.LT),
            lambda m: m["year"] < 2003,
        ),
        (
            MetadataFilter(key="year", value=2003, operator=FilterOperator.LTE),
            lambda m: m["year"] <= 2003,
        ),
        (
            MetadataFilter(key="topic", value=["cells", "numbers"], operator=FilterOperator.IN),
            lambda m: m["topic"] in ("cells", "numbers"),
        ),
        (
            MetadataFilter(key="topic", value=["cells", "numbers"], operator=FilterOperator.NIN),
            lambda m: m["topic"] not in ("cells", "numbers"),
        ),
    ]
    all_meta = [n.metadata for n in nodes]
    for flt, pred in cases:
        res = run(MetadataFilters(filters=[flt]), k=6)
        expected = sum(pred(m) for m in all_meta)
        assert len(res.nodes) == min(6, expected), flt
        assert all(pred(n.metadata) for n in res.nodes), flt
    both = MetadataFilters(
        filters=[
            MetadataFilter(key="topic", value="rivers"),
            MetadataFilter(key="year", value=2020, operator=FilterOperator.GTE),
        ],
        condition=FilterCondition.AND,
    )
    res = run(both, k=10)
    assert sorted(n.node_id for n in res.nodes) == sorted(
        f"n{i}" for i in range(20, 40) if i % 5 == 0
    )
    either = MetadataFilters(
        filters=[MetadataFilter(key="year", value=2000), MetadataFilter(key="year", value=2039)],
        condition=FilterCondition.OR,
    )
    assert sorted(run(either, k=10).ids) == ["n0", "n39"]
    # doc_ids / node_ids restrictions
    assert {n.ref_doc_id for n in run(k=40, doc_ids=["d1"]).nodes} == {"d1"}
    assert len(run(k=40, doc_ids=["d1"]).nodes) == 10
    assert sorted(run(k=40, node_ids=["n3", "n7"]).ids) == ["n3", "n7"]
    # MMR mode
    mmr = run(k=4, mode=VectorStoreQueryMode.MMR, mmr_threshold=0.5)
    assert len(mmr.nodes) == 4
    with pytest.raises(NotImplementedError):
        run(mode=VectorStoreQueryMode.SVM)


def test_list_and_text_operators() -> None:
    store = LLM2VecVectorStore()
    store.add(
        [
            _node("a", [1, 0], "d", tags=["x", "y"], title="Rivers of Europe"),
            _node("b", [0, 1], "d", tags=["y"], title="Mountains", note=""),
            _node("c", [1, 1], "d", tags=["z"], title="Cells and genes"),
        ]
    )

    def ids(op, key, value):
        flt = MetadataFilters(filters=[MetadataFilter(key=key, value=value, operator=op)])
        res = store.query(
            VectorStoreQuery(query_embedding=[1.0, 0.5], similarity_top_k=10, filters=flt)
        )
        return sorted(res.ids)

    assert ids(FilterOperator.CONTAINS, "tags", "y") == ["a", "b"]
    assert ids(FilterOperator.ANY, "tags", ["x", "z"]) == ["a", "c"]
    assert ids(FilterOperator.ALL, "tags", ["x", "y"]) == ["a"]
    assert ids(FilterOperator.TEXT_MATCH, "title", "of Eu") == ["a"]
    assert ids(FilterOperator.IS_EMPTY, "note", None) == ["a", "b", "c"]  # missing or ""
    assert ids(FilterOperator.IS_EMPTY, "title", None) == []


def test_vector_store_nodes_api() -> None:
    with pytest.raises(ValueError, match="unknown parameter"):
        LLM2VecVectorStore(index_kind="hnsw", index_params={"nlist": 4})
    store = LLM2VecVectorStore()
    assert store.query(VectorStoreQuery(query_embedding=[1.0, 0.0], similarity_top_k=3)).nodes == []
    store.add(
        [
            _node("a", [1, 0], "d1", k=1),
            _node("b", [0, 1], "d1", k=2),
            _node("c", [1, 1], "d2", k=3),
        ]
    )
    got = store.get_nodes(node_ids=["a", "zzz"])
    assert [n.node_id for n in got] == ["a"] and got[0].metadata == {"k": 1}
    assert got[0].embedding == pytest.approx([1.0, 0.0])
    flt = MetadataFilters(filters=[MetadataFilter(key="k", value=2, operator=FilterOperator.GTE)])
    assert sorted(n.node_id for n in store.get_nodes(filters=flt)) == ["b", "c"]
    store.delete_nodes(node_ids=["a", "c"], filters=flt)  # only c matches both
    assert sorted(n.node_id for n in store.get_nodes()) == ["a", "b"]
    store.delete("d1")
    assert store.get_nodes() == []
    store.add([_node("x", [1, 0], "d3"), _node("x", [0, 1], "d3", v=2)])  # last one wins
    assert [(n.node_id, n.metadata) for n in store.get_nodes()] == [("x", {"v": 2})]
    store.clear()
    assert len(store) == 0


async def test_vector_store_async() -> None:
    store = LLM2VecVectorStore()
    await store.async_add([_node("a", [1, 0], "d1"), _node("b", [0, 1], "d2")])
    res = await store.aquery(VectorStoreQuery(query_embedding=[1.0, 0.1], similarity_top_k=1))
    assert res.ids == ["a"]
    await store.adelete("d1")
    assert [n.node_id for n in await store.aget_nodes()] == ["b"]
    await store.adelete_nodes(node_ids=["b"])
    assert len(store) == 0


# -- end to end --------------------------------------------------------------------------


def test_vector_store_index_end_to_end(embed: LLM2VecEmbedding, checkpoints, tmp_path) -> None:
    Settings.llm = None  # generation is not under test: a MockLLM
    docs = _documents(10)
    vector_store = LLM2VecVectorStore(embed_model=embed)
    storage_context = StorageContext.from_defaults(vector_store=vector_store)
    index = VectorStoreIndex.from_documents(
        docs, storage_context=storage_context, embed_model=embed
    )
    assert len(vector_store) == 10
    assert vector_store.store.fingerprint == embed.fingerprint()

    retriever = index.as_retriever(similarity_top_k=3)
    hits = retriever.retrieve(docs[3].text)
    assert len(hits) == 3
    # Same ranking and scores as brute-force cosine over the stored node vectors.
    stored = vector_store.get_nodes()
    matrix = np.array([n.embedding for n in stored])
    query = np.array(embed.get_query_embedding(docs[3].text))
    scores = matrix @ query
    expected = [stored[i].node_id for i in np.argsort(-scores)[:3]]
    assert [h.node.node_id for h in hits] == expected
    assert [h.score for h in hits] == pytest.approx(sorted(scores, reverse=True)[:3], abs=1e-4)
    by_ref = {d.doc_id: d for d in docs}
    for h in hits:  # text and metadata come back from the store
        src = by_ref[h.node.ref_doc_id]
        assert h.node.get_content() == src.text.strip() and h.node.metadata == src.metadata

    # metadata filters through the retriever
    flt = MetadataFilters(filters=[MetadataFilter(key="topic", value="rivers")])
    filtered = index.as_retriever(similarity_top_k=5, filters=flt).retrieve("anything")
    assert sorted(h.node.ref_doc_id for h in filtered) == ["doc-0", "doc-5"]

    # a query engine works end to end with the mock LLM
    response = index.as_query_engine(similarity_top_k=2).query("What is about cells?")
    assert len(response.source_nodes) == 2

    # delete a ref doc: its nodes are gone from the store and from results
    index.delete_ref_doc("doc-3", delete_from_docstore=True)
    assert len(vector_store) == 9
    hits = index.as_retriever(similarity_top_k=10).retrieve(docs[3].text)
    assert "doc-3" not in {h.node.ref_doc_id for h in hits} and len(hits) == 9

    # persist and reload
    persist_dir = tmp_path / "storage"
    storage_context.persist(persist_dir=str(persist_dir))
    assert (persist_dir / "default__vector_store.json").is_file()
    assert not list(persist_dir.rglob("*.pkl"))
    loaded_store = LLM2VecVectorStore.from_persist_dir(str(persist_dir), embed_model=embed)
    assert len(loaded_store) == 9
    ctx2 = StorageContext.from_defaults(persist_dir=str(persist_dir), vector_store=loaded_store)
    index2 = load_index_from_storage(ctx2, embed_model=embed)
    hits2 = index2.as_retriever(similarity_top_k=3).retrieve(docs[4].text)
    before = index.as_retriever(similarity_top_k=3).retrieve(docs[4].text)
    assert [h.node.node_id for h in hits2] == [h.node.node_id for h in before]
    assert [h.score for h in hits2] == pytest.approx([h.score for h in before], abs=1e-5)
    # it keeps working: insert + delete after reload
    index2.insert(
        Document(text="A new document about rivers.", id_="doc-new", metadata={"topic": "rivers"})
    )
    assert len(loaded_store) == 10
    index2.delete_ref_doc("doc-new")
    assert len(loaded_store) == 9

    # another embedder is refused
    other = LLM2VecEmbedding(model_name=checkpoints[1])
    with pytest.raises(FingerprintMismatchError):
        LLM2VecVectorStore.from_persist_dir(str(persist_dir), embed_model=other)
    with pytest.warns(UserWarning):
        forced = LLM2VecVectorStore.from_persist_dir(
            str(persist_dir), embed_model=other, allow_fingerprint_mismatch=True
        )
    assert len(forced) == 9
    # an embed_model without a fingerprint cannot show what it makes: refused (issue 25)
    from llama_index.core.embeddings import MockEmbedding

    from llm2vec_retrieval.fingerprint import UnverifiedEmbedderError

    mock = MockEmbedding(embed_dim=32)
    with pytest.raises(UnverifiedEmbedderError) as err:
        LLM2VecVectorStore.from_persist_dir(str(persist_dir), embed_model=mock)
    assert "MockEmbedding" in str(err.value) and "\n" not in str(err.value)
    assert embed.fingerprint()["model"] in str(err.value)
    with pytest.warns(UserWarning, match="loading anyway"):
        mocked = LLM2VecVectorStore.from_persist_dir(
            str(persist_dir), embed_model=mock, allow_fingerprint_mismatch=True
        )
    assert len(mocked) == 9


def test_blank_query_text_is_a_one_line_value_error(embed: LLM2VecEmbedding) -> None:
    store = LLM2VecVectorStore(embed_model=embed)
    store.add(
        [
            TextNode(text=t, id_=f"n{i}", embedding=embed.get_text_embedding(t))
            for i, t in enumerate(["rivers flood", "fox"])
        ]
    )
    vector = embed.get_text_embedding("rivers")
    for mode in (VectorStoreQueryMode.SPARSE, VectorStoreQueryMode.HYBRID):
        query = VectorStoreQuery(query_str="  ", query_embedding=vector, mode=mode)
        with pytest.raises(ValueError, match="^the query text is only whitespace"):
            store.query(query)
    sparse = VectorStoreQuery(
        query_str="zebra", mode=VectorStoreQueryMode.SPARSE, similarity_top_k=2
    )
    assert store.query(sparse).ids == []  # no node shares a word: none is made up


async def test_async_index_end_to_end(embed: LLM2VecEmbedding) -> None:
    docs = _documents(6)
    vector_store = LLM2VecVectorStore()
    ctx = StorageContext.from_defaults(vector_store=vector_store)
    index = VectorStoreIndex.from_documents(
        docs, storage_context=ctx, embed_model=embed, use_async=True
    )
    assert len(vector_store) == 6
    hits = await index.as_retriever(similarity_top_k=2).aretrieve(docs[1].text)
    assert len(hits) == 2 and {h.node.ref_doc_id for h in hits} <= {d.doc_id for d in docs}
    await index.adelete_ref_doc("doc-1")
    assert len(vector_store) == 5


def test_persist_empty_and_missing(tmp_path, embed: LLM2VecEmbedding) -> None:
    store = LLM2VecVectorStore(embed_model=embed, metric="ip")
    store.persist(str(tmp_path / "vs.json"))
    loaded = LLM2VecVectorStore.from_persist_path(str(tmp_path / "vs.json"), embed_model=embed)
    assert len(loaded) == 0 and loaded.metric == "ip"
    with pytest.raises(FileNotFoundError):
        LLM2VecVectorStore.from_persist_dir(str(tmp_path / "nothing"))


def test_missing_framework_gives_install_hint() -> None:
    from llm2vec_retrieval.testing import import_error_without

    message = import_error_without("llama_index.vector_stores.llm2vec", "llama_index.core")
    assert "pip install ./integrations/llama-index-vector-stores-llm2vec" in message


# -- issue 14 hardening ------------------------------------------------------------------


def test_lone_surrogates_are_repaired_on_the_way_in(embed: LLM2VecEmbedding) -> None:
    """Issue 14.3: lone surrogates reach the encoder as U+FFFD (one warning per call), and
    the node text is stored repaired."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vec = embed.get_text_embedding("cut \ud83d emoji")
        store = LLM2VecVectorStore(embed_model=embed)
        store.add([_node("n1", vec, "r1")])
        node = TextNode(id_="n2", text="half \udcff", embedding=vec)
        store.add([node])
    repaired = [str(w.message) for w in caught if issubclass(w.category, UnicodeWarning)]
    assert len(repaired) == 2 and all(m.startswith("1 text(s)") for m in repaired)
    np.testing.assert_allclose(vec, embed.get_text_embedding("cut \ufffd emoji"), atol=1e-6)
    assert store.get_nodes(["n2"])[0].get_content() == "half \ufffd"


def test_deeply_nested_persisted_manifest_is_a_one_line_error(tmp_path) -> None:
    """Issue 14.5: a persisted file nested 100k deep gave a RecursionError traceback."""
    from llm2vec_retrieval.index import IndexCorruptedError

    (tmp_path / "vs.json").write_text("[" * 100_000)
    with pytest.raises(IndexCorruptedError, match=r"vs.json: not valid JSON \(nested too deeply\)"):
        LLM2VecVectorStore.from_persist_path(str(tmp_path / "vs.json"))


def test_persisted_settings_live_in_the_checksummed_manifest(embed, checkpoints, tmp_path) -> None:
    """Issue 13.2: the file at persist_path names the index folder and nothing else; the
    settings (kind, metric, fingerprint, flat_metadata) are inside the index's manifest, so
    an edit cannot silently change what loads. An empty store persists and loads too."""
    import json

    empty = LLM2VecVectorStore(embed_model=embed, index_kind="hnsw", metric="ip")
    empty.persist(str(tmp_path / "e.json"))
    assert set(json.loads((tmp_path / "e.json").read_text())) == {
        "format",
        "format_version",
        "index_dir",
    }
    loaded = LLM2VecVectorStore.from_persist_path(str(tmp_path / "e.json"), embed_model=embed)
    assert len(loaded) == 0 and (loaded.index_kind, loaded.metric) == ("hnsw", "ip")
    other = LLM2VecEmbedding(model_name=checkpoints[1])
    with pytest.raises(FingerprintMismatchError):  # the empty store still records the embedder
        LLM2VecVectorStore.from_persist_path(str(tmp_path / "e.json"), embed_model=other)
    loaded.add([TextNode(text="rivers flood", id_="n1", embedding=embed.get_text_embedding("r"))])
    loaded.persist(str(tmp_path / "e.json"))
    again = LLM2VecVectorStore.from_persist_path(str(tmp_path / "e.json"), embed_model=embed)
    assert len(again) == 1 and again.store.kind == "hnsw"


def test_version_1_files_still_load(embed, tmp_path) -> None:
    """A store persisted empty by an older version: its file alone held the settings."""
    import json

    old = {"format": "llama_index_llm2vec.vector_store", "format_version": 1, "has_store": False}
    old |= {"index_dir": "old.json.index", "index_kind": "flat", "metric": "ip"}
    old |= {"index_params": {}, "fingerprint": embed.fingerprint(), "flat_metadata": True}
    (tmp_path / "old.json").write_text(json.dumps(old))
    loaded = LLM2VecVectorStore.from_persist_path(str(tmp_path / "old.json"), embed_model=embed)
    assert len(loaded) == 0 and loaded.metric == "ip" and loaded.flat_metadata
