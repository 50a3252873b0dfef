"""LLM2VecVectorStore beyond the standard suite: filters, scores, MMR, persistence."""

from __future__ import annotations

import atexit
import functools
import json
import os
import re
import shutil
import tempfile
import warnings

import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_llm2vec import LLM2VecEmbeddings, LLM2VecVectorStore

from llm2vec_retrieval.index import FingerprintMismatchError, IndexStore

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@functools.cache
def tiny_checkpoint(seed: int = 0) -> str:
    from llm2vec_retrieval.testing import make_tiny_checkpoint

    root = tempfile.mkdtemp(prefix="lc-llm2vec-")
    atexit.register(shutil.rmtree, root, True)
    return str(make_tiny_checkpoint(os.path.join(root, f"tiny{seed}"), "llama", seed=seed))


@pytest.fixture(scope="module")
def emb() -> LLM2VecEmbeddings:
    return LLM2VecEmbeddings(model=tiny_checkpoint(0))


@pytest.fixture()
def fake() -> DeterministicFakeEmbedding:
    return DeterministicFakeEmbedding(size=16)


def _corpus(n: int = 30) -> tuple[list[str], list[dict]]:
    texts = [
        f"document number {i} about {'rivers' if i % 3 == 0 else 'mountains'}" for i in range(n)
    ]
    metas = [
        {"i": i, "topic": "rivers" if i % 3 == 0 else "mountains", "even": i % 2 == 0}
        for i in range(n)
    ]
    return texts, metas


# -- filters -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_filter_returns_exactly_k(emb: LLM2VecEmbeddings, kind: str) -> None:
    texts, metas = _corpus(30)
    store = LLM2VecVectorStore.from_texts(texts, emb, metas, index_kind=kind)
    for flt, n_match in [
        ({"topic": "rivers"}, 10),
        ({"i": {"$gte": 20}}, 10),
        ({"$and": [{"topic": "mountains"}, {"even": True}]}, 10),
        ({"i": {"$in": [1, 2, 3]}}, 3),
        ({"$or": [{"i": 0}, {"i": {"$gt": 27}}]}, 3),
    ]:
        for k in (1, 5, 12):
            docs = store.similarity_search("rivers", k=k, filter=flt)
            assert len(docs) == min(k, n_match), (flt, k)
            keep = [m for m in metas if _matches(m, flt)]
            assert all(d.metadata in keep for d in docs)
    # a callable filter works too
    docs = store.similarity_search("x", k=4, filter=lambda m: m["i"] % 10 == 0)
    assert sorted(d.metadata["i"] for d in docs) == [0, 10, 20]


def _matches(meta: dict, flt: dict) -> bool:
    from llm2vec_retrieval.index import compile_filter

    return compile_filter(flt)(meta)


def test_filter_with_scores_mmr_and_retriever(fake: DeterministicFakeEmbedding) -> None:
    texts, metas = _corpus(20)
    store = LLM2VecVectorStore.from_texts(texts, fake, metas)
    pairs = store.similarity_search_with_score("q", k=3, filter={"topic": "rivers"})
    assert len(pairs) == 3 and all(d.metadata["topic"] == "rivers" for d, _ in pairs)
    mmr = store.max_marginal_relevance_search("q", k=3, fetch_k=10, filter={"even": False})
    assert len(mmr) == 3 and all(not d.metadata["even"] for d in mmr)
    retriever = store.as_retriever(search_kwargs={"k": 2, "filter": {"i": {"$lt": 3}}})
    got = retriever.invoke("q")
    assert len(got) == 2 and all(d.metadata["i"] < 3 for d in got)


def test_bad_filter_raises(fake: DeterministicFakeEmbedding) -> None:
    store = LLM2VecVectorStore.from_texts(["a"], fake)
    with pytest.raises(ValueError):
        store.similarity_search("a", k=1, filter={"i": {"$bogus": 1}})


# -- scores --------------------------------------------------------------------------


def test_scores_and_relevance(emb: LLM2VecEmbeddings) -> None:
    texts, metas = _corpus(12)
    store = LLM2VecVectorStore.from_texts(texts, emb, metas)
    # dense scores (the default text mode is hybrid, whose scores are fused ranks)
    pairs = store.similarity_search_with_score(texts[4], k=12, mode="dense")
    scores = [s for _, s in pairs]
    assert scores == sorted(scores, reverse=True)
    assert all(-1.0 <= s <= 1.0 for s in scores)
    # The score is the cosine similarity between the query and document vectors.
    q = np.array(emb.embed_query(texts[4]))
    d = np.array(emb.embed_documents([pairs[0][0].page_content])[0])
    assert scores[0] == pytest.approx(float(q @ d), abs=1e-4)
    rel = store.similarity_search_with_relevance_scores(texts[4], k=12)
    assert [doc.id for doc, _ in rel] == [doc.id for doc, _ in pairs]
    for (_, r), s in zip(rel, scores, strict=True):
        assert 0.0 <= r <= 1.0
        assert r == pytest.approx((1 + s) / 2, abs=1e-6)
    # threshold retriever
    top = rel[0][1]
    retriever = store.as_retriever(
        search_type="similarity_score_threshold",
        search_kwargs={"score_threshold": top - 1e-6, "k": 5},
    )
    assert [d.id for d in retriever.invoke(texts[4])] == [rel[0][0].id]


def test_relevance_function_per_metric(fake: DeterministicFakeEmbedding) -> None:
    fn = LLM2VecVectorStore(fake)._select_relevance_score_fn()
    assert fn(1.0) == 1.0 and fn(-1.0) == 0.0 and fn(0.0) == 0.5
    l2 = LLM2VecVectorStore(fake, metric="l2")
    fn = l2._select_relevance_score_fn()
    assert fn(0.0) == 1.0 and 0.0 < fn(-4.0) < fn(-1.0) < 1.0
    l2.add_texts(["a", "b", "c"])
    rel = l2.similarity_search_with_relevance_scores("a", k=3)
    assert rel[0][0].page_content == "a" and rel[0][1] == pytest.approx(1.0)
    assert all(0.0 <= r <= 1.0 for _, r in rel)


# -- ids, upsert, delete ---------------------------------------------------------------


def test_ids_upsert_and_delete(fake: DeterministicFakeEmbedding) -> None:
    store = LLM2VecVectorStore(fake)
    ids = store.add_texts(["a", "b", "c"])
    assert len(set(ids)) == 3 and len(store) == 3
    # Partial ids: the missing one gets a uuid
    more = store.add_texts(["d", "e"], ids=["my-d", None])
    assert more[0] == "my-d" and more[1] and len(store) == 5
    # Upsert
    store.add_texts(["D!"], [{"v": 2}], ids=["my-d"])
    assert len(store) == 5
    assert store.get_by_ids(["my-d"]) == [Document(id="my-d", page_content="D!", metadata={"v": 2})]
    # A repeated id within one call keeps the last one
    store.add_texts(["x1", "x2"], ids=["dup", "dup"])
    assert store.get_by_ids(["dup"])[0].page_content == "x2"
    assert store.delete(["my-d", "nope"]) is True
    assert store.get_by_ids(["my-d", "nope"]) == []
    assert store.delete(["nope"]) is True
    assert store.delete() is True and len(store) == 0
    # Metadata is copied, not aliased
    meta = {"tags": ["a"]}
    store.add_texts(["t"], [meta], ids=["t"])
    meta["tags"].append("b")
    got = store.get_by_ids(["t"])[0]
    got.metadata["tags"].append("c")
    assert store.get_by_ids(["t"])[0].metadata == {"tags": ["a"]}


def test_input_errors(fake: DeterministicFakeEmbedding) -> None:
    store = LLM2VecVectorStore(fake)
    with pytest.raises(ValueError, match="metadatas"):
        store.add_texts(["a", "b"], [{}])
    with pytest.raises(ValueError, match="ids"):
        store.add_texts(["a", "b"], ids=["1"])
    with pytest.raises(ValueError, match="JSON"):
        store.add_texts(["a"], [{"obj": object()}])
    with pytest.raises(TypeError):
        LLM2VecVectorStore("not embeddings")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kind"):
        LLM2VecVectorStore(fake, index_kind="annoy")
    with pytest.raises(ValueError, match="metric"):
        LLM2VecVectorStore(fake, metric="manhattan")
    with pytest.raises(ValueError, match="collection_name"):
        LLM2VecVectorStore.from_texts(["a"], fake, collection_name="x")
    other = DeterministicFakeEmbedding(size=8)
    store.add_texts(["a"])
    with pytest.raises(ValueError, match="dimension"):
        LLM2VecVectorStore(other, store=store.store).add_texts(["b"])


def test_wraps_an_existing_store(fake: DeterministicFakeEmbedding) -> None:
    raw = IndexStore(16, kind="flat", metric="ip")
    vs = LLM2VecVectorStore(fake, store=raw)
    assert vs.metric == "ip" and vs.store is raw
    vs.add_texts(["a", "b"], ids=["1", "2"])
    assert len(raw) == 2 and vs.similarity_search("a", k=1)[0].id == "1"


# -- MMR -----------------------------------------------------------------------------


def test_mmr_diversifies(fake: DeterministicFakeEmbedding) -> None:
    # Three near-duplicates of the query and one different document.
    class Emb(DeterministicFakeEmbedding):
        def embed_documents(self, texts):
            table = {
                "a1": [1, 0, 0, 0],
                "a2": [0.99, 0.1, 0, 0],
                "a3": [0.98, 0.0, 0.1, 0],
                "b": [0.6, 0, 0, 0.8],
            }
            return [table[t] for t in texts]

        def embed_query(self, text):
            return [1.0, 0.0, 0.0, 0.0]

    store = LLM2VecVectorStore.from_texts(
        ["a1", "a2", "a3", "b"], Emb(size=4), ids=["a1", "a2", "a3", "b"]
    )
    plain = [d.id for d in store.similarity_search("q", k=2)]
    assert plain == ["a1", "a2"]
    mmr = [d.id for d in store.max_marginal_relevance_search("q", k=2, fetch_k=4, lambda_mult=0.3)]
    assert mmr == ["a1", "b"]
    by_vec = store.max_marginal_relevance_search_by_vector(
        [1.0, 0, 0, 0], k=2, fetch_k=4, lambda_mult=0.3
    )
    assert [d.id for d in by_vec] == ["a1", "b"]
    mmr_ret = store.as_retriever(
        search_type="mmr", search_kwargs={"k": 2, "fetch_k": 4, "lambda_mult": 0.3}
    )
    assert [d.id for d in mmr_ret.invoke("q")] == ["a1", "b"]
    # lambda 1 = pure relevance
    assert [d.id for d in store.max_marginal_relevance_search("q", k=2, lambda_mult=1.0)] == [
        "a1",
        "a2",
    ]
    # empty store
    assert LLM2VecVectorStore(fake).max_marginal_relevance_search("q") == []


async def test_async_api(emb: LLM2VecEmbeddings) -> None:
    texts, metas = _corpus(10)
    store = await LLM2VecVectorStore.afrom_texts(texts, emb, metas, ids=[str(i) for i in range(10)])
    assert len(store) == 10
    sync = [d.id for d in store.similarity_search(texts[2], k=3)]
    assert [d.id for d in await store.asimilarity_search(texts[2], k=3)] == sync
    pairs = await store.asimilarity_search_with_score(texts[2], k=3, filter={"topic": "rivers"})
    assert len(pairs) == 3 and all(d.metadata["topic"] == "rivers" for d, _ in pairs)
    rel = await store.asimilarity_search_with_relevance_scores(texts[2], k=2)
    assert all(0 <= r <= 1 for _, r in rel)
    vec = await emb.aembed_query(texts[2])
    dense = [d.id for d in store.similarity_search(texts[2], k=3, mode="dense")]
    assert [d.id for d in await store.asimilarity_search_by_vector(vec, k=3)] == dense
    mmr = await store.amax_marginal_relevance_search(texts[2], k=3, fetch_k=10)
    assert len(mmr) == 3
    assert len(await store.amax_marginal_relevance_search_by_vector(vec, k=2)) == 2
    await store.adelete(["0", "1"])
    assert sorted(d.id for d in await store.aget_by_ids(["0", "1", "2"])) == ["2"]
    docs = await store.as_retriever(search_kwargs={"k": 2}).ainvoke(texts[5])
    assert len(docs) == 2


# -- persistence ---------------------------------------------------------------------


def test_save_load_round_trip(emb: LLM2VecEmbeddings, tmp_path) -> None:
    texts, metas = _corpus(15)
    docs = [
        Document(page_content=t, metadata=m, id=f"doc-{i}")
        for i, (t, m) in enumerate(zip(texts, metas, strict=True))
    ]
    store = LLM2VecVectorStore.from_documents(docs, emb, index_kind="hnsw", M=8)
    before = store.similarity_search_with_score(texts[3], k=5, filter={"even": False})
    store.save_local(tmp_path / "idx")
    assert not list((tmp_path / "idx").glob("*.pkl"))
    # no sidecar: the wrapper's settings are in the store's checksummed manifest
    assert not (tmp_path / "idx" / "langchain_llm2vec.json").exists()
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["kind"] == "hnsw" and manifest["fingerprint"] == emb.fingerprint()
    assert manifest["extra"]["langchain_llm2vec"]["search_mode"] is None

    loaded = LLM2VecVectorStore.load_local(
        tmp_path / "idx", LLM2VecEmbeddings(model=tiny_checkpoint(0))
    )
    assert len(loaded) == 15 and loaded.index_kind == "hnsw"
    assert loaded.store.fingerprint == emb.fingerprint()
    after = loaded.similarity_search_with_score(texts[3], k=5, filter={"even": False})
    assert [(d, pytest.approx(s, abs=1e-5)) for d, s in before] == after
    assert loaded.get_by_ids(["doc-7"]) == [docs[7]]
    # keeps working after load: upsert + save again over the same folder
    loaded.add_documents([Document(page_content="new", metadata={"i": 99}, id="doc-7")])
    loaded.save_local(tmp_path / "idx")
    again = LLM2VecVectorStore.load_local(tmp_path / "idx", emb)
    assert again.get_by_ids(["doc-7"])[0].page_content == "new" and len(again) == 15


def test_load_refuses_another_embedder(emb: LLM2VecEmbeddings, tmp_path) -> None:
    LLM2VecVectorStore.from_texts(["a", "b"], emb).save_local(tmp_path / "idx")
    other = LLM2VecEmbeddings(model=tiny_checkpoint(1))  # another model
    with pytest.raises(FingerprintMismatchError):
        LLM2VecVectorStore.load_local(tmp_path / "idx", other)
    # a different document instruction changes the vectors too
    with pytest.raises(FingerprintMismatchError):
        LLM2VecVectorStore.load_local(
            tmp_path / "idx",
            LLM2VecEmbeddings(encoder=emb.encoder, document_instruction="Passage:"),
        )
    with pytest.warns(UserWarning):
        forced = LLM2VecVectorStore.load_local(
            tmp_path / "idx", other, allow_fingerprint_mismatch=True
        )
    assert len(forced) == 2


def test_load_refuses_embeddings_without_a_fingerprint(emb: LLM2VecEmbeddings, tmp_path) -> None:
    """Issue 25: `load_local(dir, FakeEmbeddings(size=...))` loaded with no check, so the
    store was searched with another model. Embeddings that cannot show what they make are
    refused by a store that records its embedder, unless the caller opts out."""
    from llm2vec_retrieval.fingerprint import UnverifiedEmbedderError

    LLM2VecVectorStore.from_texts(["rivers flood", "fox"], emb).save_local(tmp_path / "idx")
    fake = DeterministicFakeEmbedding(size=32)  # the stored dimension: only the model differs
    with pytest.raises(UnverifiedEmbedderError) as err:
        LLM2VecVectorStore.load_local(tmp_path / "idx", fake)
    message = str(err.value)
    assert "\n" not in message and isinstance(err.value, FingerprintMismatchError)
    assert emb.fingerprint()["model"] in message and "DeterministicFakeEmbedding" in message
    assert "allow_fingerprint_mismatch=True" in message
    with pytest.warns(UserWarning, match="loading anyway"):
        forced = LLM2VecVectorStore.load_local(
            tmp_path / "idx", fake, allow_fingerprint_mismatch=True
        )
    assert len(forced.similarity_search("rivers", k=1)) == 1
    # another dimension is refused even then, by the first search
    small = LLM2VecVectorStore.load_local(
        tmp_path / "idx", DeterministicFakeEmbedding(size=8), allow_fingerprint_mismatch=True
    )
    with pytest.raises(ValueError, match=r"shape \(n, 32\)"):
        small.similarity_search("rivers", k=1, mode="dense")
    # a store saved without a fingerprint (made with such embeddings) has nothing to compare
    LLM2VecVectorStore.from_texts(["a", "b"], fake).save_local(tmp_path / "plain")
    assert len(LLM2VecVectorStore.load_local(tmp_path / "plain", fake)) == 2


@pytest.mark.parametrize("query", ["", "  ", "\n\t"])
def test_empty_query_is_a_one_line_value_error(emb: LLM2VecEmbeddings, query: str) -> None:
    store = LLM2VecVectorStore.from_texts(["rivers flood", "fox"], emb)
    reason = "empty" if not query else "only whitespace"
    calls = [
        lambda: emb.embed_query(query),
        lambda: store.similarity_search(query),
        lambda: store.similarity_search(query, mode="lexical"),
        lambda: store.similarity_search_with_score(query, mode="dense"),
        lambda: store.max_marginal_relevance_search(query),
        lambda: store.as_retriever().invoke(query),
    ]
    for call in calls:
        with pytest.raises(ValueError) as err:
            call()
        assert str(err.value) == f"the query is {reason}: give the words to search for"
    with pytest.raises(ValueError, match="^query 1 is"):
        emb.embed_queries(["rivers", query])
    assert len(emb.embed_documents([query, "x"])) == 2  # an empty document is still a document


def test_save_load_empty_store(emb: LLM2VecEmbeddings, tmp_path) -> None:
    LLM2VecVectorStore(emb, metric="ip").save_local(tmp_path / "empty")
    loaded = LLM2VecVectorStore.load_local(tmp_path / "empty", emb)
    assert len(loaded) == 0 and loaded.metric == "ip" and loaded.similarity_search("x") == []
    loaded.add_texts(["x"])
    assert loaded.store.metric == "ip"
    with pytest.raises(FingerprintMismatchError):
        LLM2VecVectorStore.load_local(
            tmp_path / "empty", LLM2VecEmbeddings(model=tiny_checkpoint(1))
        )


def test_missing_framework_gives_install_hint() -> None:
    from llm2vec_retrieval.testing import import_error_without

    message = import_error_without("langchain_llm2vec", "langchain_core")
    assert "pip install ./integrations/langchain-llm2vec" in message


# -- issue 14 hardening -----------------------------------------------------------------
class _CountingEmbeddings(LLM2VecEmbeddings):
    """The real embeddings, counting how many texts were embedded."""

    embedded: int = 0

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.embedded += len(texts)
        return super().embed_documents(texts)


def test_metadata_is_checked_before_anything_is_embedded(emb: LLM2VecEmbeddings) -> None:
    """Issue 14.15: a bad metadata was reported after every text was embedded, naming a
    generated uuid. Now it fails first, naming the position (and the caller's id)."""
    counting = _CountingEmbeddings(encoder=emb.encoder)
    store = LLM2VecVectorStore(counting)
    texts = ["a", "b", "c"]
    bad = [{"ok": 1}, {"ok": 2}, {"when": object()}]
    with pytest.raises(ValueError, match=r"^metadatas\[2\] is not JSON-serializable") as info:
        store.add_texts(texts, bad)
    assert not re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-", str(info.value))  # no generated uuid
    with pytest.raises(ValueError, match=r"^metadatas\[2\] \(id 'user-c'\) is not JSON"):
        store.add_texts(texts, bad, ids=["user-a", None, "user-c"])
    with pytest.raises(
        ValueError, match=r"metadatas\[1\] \(id 'y'\) is not JSON.*Out of range float"
    ):
        store.add_documents(
            [Document("a", id="x"), Document("b", id="y", metadata={"score": float("nan")})]
        )
    with pytest.raises(ValueError, match=r"metadatas\[0\] must be a dict, got list"):
        store.add_texts(["a"], [["not", "a", "dict"]])
    assert counting.embedded == 0 and len(store) == 0


async def test_async_add_checks_metadata_first(emb: LLM2VecEmbeddings) -> None:
    counting = _CountingEmbeddings(encoder=emb.encoder)
    store = LLM2VecVectorStore(counting)
    with pytest.raises(ValueError, match=r"^metadatas\[0\] \(id 'k'\) is not JSON"):
        await store.aadd_texts(["a"], [{"x": {1, 2}}], ids=["k"])
    assert counting.embedded == 0


def test_add_texts_repairs_lone_surrogates(emb: LLM2VecEmbeddings) -> None:
    """Issue 14.3: add_texts raised the tokenizer's TypeError on a lone surrogate. The text
    is repaired (U+FFFD) once, with one warning, and stored as it was embedded."""
    import warnings

    store = LLM2VecVectorStore(emb)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ids = store.add_texts(["cut \ud83d emoji", "fine text"], ids=["s", "f"])
    repaired = [w for w in caught if issubclass(w.category, UnicodeWarning)]
    assert [str(w.message)[:40] for w in repaired] == ["1 text(s) contained lone surrogates (inv"]
    assert ids == ["s", "f"]
    assert store.get_by_ids(["s"])[0].page_content == "cut \ufffd emoji"
    np.testing.assert_allclose(
        store.store.vectors(["s"])[0], emb.embed_documents(["cut \ufffd emoji"])[0], atol=1e-6
    )


def test_an_edited_sidecar_file_cannot_empty_the_store(emb: LLM2VecEmbeddings, tmp_path) -> None:
    """Issue 13.2: a sidecar edited to "has_store": false made load_local return an empty
    store, and the next save_local deleted the saved documents. The store's own manifest
    decides: a file of that name is never read."""
    store = LLM2VecVectorStore.from_texts(["a", "b", "c"], emb, search_mode="dense")
    store.save_local(tmp_path / "ix")
    legacy = {"format_version": 1, "has_store": False, "search_mode": "lexical"}
    (tmp_path / "ix" / "langchain_llm2vec.json").write_text(json.dumps(legacy))
    loaded = LLM2VecVectorStore.load_local(tmp_path / "ix", emb)
    assert len(loaded) == 3 and loaded.search_mode == "dense"  # the manifest's, not the file's
    loaded.save_local(tmp_path / "ix")  # keeps every document
    assert len(LLM2VecVectorStore.load_local(tmp_path / "ix", emb)) == 3


def test_a_store_saved_without_settings_loads_with_the_defaults(
    emb: LLM2VecEmbeddings, tmp_path
) -> None:
    """Issue 14.5: a file nested 100k deep beside the store gave a RecursionError traceback;
    a store saved by `IndexStore.save` (no settings of the wrapper) loads with the defaults,
    whatever lies beside it."""
    store = LLM2VecVectorStore.from_texts(["a", "b"], emb)
    store.store.save(tmp_path / "ix")  # no settings in the manifest
    (tmp_path / "ix" / "langchain_llm2vec.json").write_text("[" * 100_000)
    loaded = LLM2VecVectorStore.load_local(tmp_path / "ix", emb)
    assert len(loaded) == 2 and loaded.search_mode is None


@pytest.mark.parametrize(
    "stray",
    [
        '{"format_version": 1, "has_store": false, "search_mode": "lexical"}',
        "[" * 100_000,
        "not json",
        "[1, 2]",
        "",
        None,  # a folder of that name
    ],
)
def test_stray_sidecar_file_beside_a_save_is_ignored(
    emb: LLM2VecEmbeddings, tmp_path, stray
) -> None:
    """Issue 23.9: a langchain_llm2vec.json left beside a save (restored from a backup,
    copied along) made load_local fail; the manifest holds the settings, so the file is
    not read, and not touched."""
    store = LLM2VecVectorStore.from_texts(["a", "b", "c"], emb, ids=["a", "b", "c"])
    store.search_mode = "dense"
    store.save_local(tmp_path / "ix")
    legacy = tmp_path / "ix" / "langchain_llm2vec.json"
    if stray is None:
        legacy.mkdir()
    else:
        legacy.write_text(stray)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not read: nothing to warn about
        loaded = LLM2VecVectorStore.load_local(tmp_path / "ix", emb)
    assert len(loaded) == 3 and loaded.search_mode == "dense"  # the manifest's settings
    assert [d.id for d in loaded.similarity_search("a", k=3)] != []
    loaded.save_local(tmp_path / "ix")
    assert legacy.exists()  # not ours: left alone
