"""The lexical (BM25) part of IndexStore and hybrid search: scores, sync, filters, persistence."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

pytest.importorskip("faiss")
bm25s = pytest.importorskip("bm25s")
Stemmer = pytest.importorskip("Stemmer")

from llm2vec_retrieval.index import IndexCorruptedError, IndexStore  # noqa: E402
from llm2vec_retrieval.index import fusion as fusion_mod  # noqa: E402
from llm2vec_retrieval.index.fusion import fuse, resolve_fusion  # noqa: E402
from llm2vec_retrieval.index.persistence import manifest_checksum  # noqa: E402
from llm2vec_retrieval.testing import HYBRID_CORPUS, make_pre_hybrid  # noqa: E402

DIM = 16
TEXTS = HYBRID_CORPUS[:8]
QUERIES = [
    "how does the immune system fight a virus",
    "river flooding after rain",
    "white blood cells",
]


def vectors(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def make_store(texts=TEXTS, **kw):
    s = IndexStore(DIM, **kw)
    s.add(
        [f"d{i}" for i in range(len(texts))],
        vectors(len(texts)),
        texts,
        [{"i": i, "topic": "bio" if i in (0, 2, 4, 5, 7) else "water"} for i in range(len(texts))],
    )
    return s


def bm25s_scores(texts, query):
    """The benchmark's BM25 baseline settings, straight from bm25s."""
    stemmer = Stemmer.Stemmer("english")
    retriever = bm25s.BM25(method="lucene", k1=1.5, b=0.75)
    retriever.index(
        bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False),
        show_progress=False,
    )
    q = bm25s.tokenize(
        [query], stopwords="en", stemmer=stemmer, show_progress=False, return_ids=False
    )[0]
    return retriever.get_scores(q)


@pytest.mark.parametrize("query", QUERIES)
def test_lexical_scores_equal_bm25s(query):
    s = make_store()
    hits = s.search(text=query, mode="lexical", k=len(TEXTS))
    expected = bm25s_scores(TEXTS, query)
    got = {h.id: h.score for h in hits}
    np.testing.assert_allclose(
        [got.get(f"d{i}", 0.0) for i in range(len(TEXTS))], expected, rtol=1e-6
    )
    assert set(got) == {f"d{i}" for i, x in enumerate(expected) if x > 0}
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_lexical_equals_the_benchmark_baseline():
    from benchmarks.quality import BM25Baseline

    s = make_store()
    run = BM25Baseline().search(
        [f"d{i}" for i in range(len(TEXTS))], TEXTS, ["q0", "q1"], QUERIES[:2], top_k=5
    )
    for qid, query in zip(["q0", "q1"], QUERIES[:2], strict=True):
        ours = {h.id: h.score for h in s.search(text=query, mode="lexical", k=5) if h.score > 0}
        assert ours.keys() == run[qid].keys()
        for d, score in run[qid].items():
            assert ours[d] == pytest.approx(score, rel=1e-6)


def test_upsert_delete_and_reload_keep_both_parts_in_sync(tmp_path):
    s = make_store()
    s.add(
        ["d1"],
        vectors(1, seed=5),
        ["Quantum computers factor large numbers."],
        [{"i": 1, "topic": "cs"}],
    )
    s.delete(["d6"])
    s.add(
        ["new"],
        vectors(1, seed=6),
        ["The river burst its banks after rain."],
        [{"i": 99, "topic": "water"}],
    )
    # a store built fresh from the final documents scores exactly the same
    fresh = IndexStore(DIM)
    ids = list(s.ids)
    recs = s.get(ids)
    fresh.add(
        ids, np.stack([r.vector for r in recs]), [r.text for r in recs], [r.metadata for r in recs]
    )
    for q in [*QUERIES, "quantum numbers", "spring floods bridges"]:
        a = [(h.id, round(h.score, 5)) for h in s.search(text=q, mode="lexical", k=len(ids))]
        b = [(h.id, round(h.score, 5)) for h in fresh.search(text=q, mode="lexical", k=len(ids))]
        assert a == b and all(score > 0 for _, score in a)
    top = s.search(text="quantum numbers", mode="lexical", k=1)[0]
    assert top.id == "d1" and top.score > 0
    assert all(
        h.id != "d6" for h in s.search(text="spring floods bridges", mode="lexical", k=len(ids))
    )
    s.save(tmp_path / "ix")
    loaded = IndexStore.load(tmp_path / "ix")
    assert loaded.has_lexical
    for q in QUERIES:
        for mode in ("lexical", "hybrid"):
            qv = vectors(1, seed=9)[0]
            a = [(h.id, round(h.score, 6)) for h in s.search(qv, text=q, mode=mode, k=5)]
            b = [(h.id, round(h.score, 6)) for h in loaded.search(qv, text=q, mode=mode, k=5)]
            assert a == b
    # changes after a reload rebuild the BM25 matrix from the saved tokens
    loaded.delete(["d1"])
    assert loaded.search(text="quantum numbers", mode="lexical", k=1) == []


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
@pytest.mark.parametrize("k", [1, 3, 10])
def test_filters_apply_in_every_mode_with_exactly_k_hits(mode, k):
    s = make_store()
    flt = {"topic": "water"}
    matching = {f"d{i}" for i in (1, 3, 6)}
    for q in QUERIES:
        hits = s.search(vectors(1, seed=3)[0], k=k, filter=flt, text=q, mode=mode)
        # lexical: only the matching documents that share a term with the query
        sharing = {f"d{i}" for i, x in enumerate(bm25s_scores(TEXTS, q)) if x > 0} & matching
        assert len(hits) == min(k, len(sharing if mode == "lexical" else matching))
        assert {h.id for h in hits} <= matching
    assert s.search(vectors(1)[0], k=3, filter={"topic": "none"}, text="rain", mode=mode) == []


def test_lexical_returns_only_documents_that_share_a_term():
    """Issue 25: a query sharing no word with the index listed k documents at score 0 as if
    they matched. Now: only documents with a BM25 score above 0, so fewer than k or none."""
    s = make_store()
    assert s.search(text="zebra giraffe", mode="lexical", k=5) == []
    hits = s.search(text="white blood cells antibodies", mode="lexical", k=5)
    expected = {
        f"d{i}" for i, x in enumerate(bm25s_scores(TEXTS, "white blood cells antibodies")) if x > 0
    }
    assert 0 < len(expected) < 5 and {h.id for h in hits} == expected
    assert all(h.score > 0 for h in hits)
    # stopwords alone are no terms: nothing matches
    assert s.search(text="the and of", mode="lexical", k=3) == []
    batch = s.search_batch(texts=["zebra", "river"], mode="lexical", k=8)
    assert batch[0] == [] and batch[1] and all(h.score > 0 for h in batch[1])


@pytest.mark.parametrize("mode", ["lexical", "hybrid"])
def test_blank_query_text_is_refused_with_one_line(mode):
    s = make_store()
    q = vectors(1, seed=3)[0]
    for text, reason in (("", "empty"), (" \n\t", "only whitespace")):
        with pytest.raises(ValueError) as err:
            s.search(q, text=text, mode=mode, k=3)
        assert str(err.value) == f"the query text is {reason}: give the words to search for"
    with pytest.raises(ValueError, match="^query text 1 is empty"):
        s.search_batch(np.stack([q, q]), texts=["rain", ""], mode=mode, k=3)


def test_hybrid_fuses_no_zero_lexical_score():
    """Documents sharing no term with the query take no part in the lexical list of a hybrid
    search: they carry lexical_score None, never 0."""
    s = make_store()
    q = vectors(1, seed=3)[0]
    query = "river flooding"
    sharing = {f"d{i}" for i, x in enumerate(bm25s_scores(TEXTS, query)) if x > 0}
    assert 0 < len(sharing) < len(TEXTS)
    for fusion in ("rrf", "alpha", "zscore"):
        hits = s.search(q, text=query, mode="hybrid", fusion=fusion, k=len(TEXTS))
        assert len(hits) == len(TEXTS)  # the dense list still ranks every document
        assert {h.id for h in hits if h.lexical_score is not None} == sharing, fusion
        assert all(h.lexical_score > 0 for h in hits if h.lexical_score is not None)


def test_hybrid_fusions():
    s = make_store()
    q = vectors(1, seed=3)[0]
    dense = [h.id for h in s.search(q, k=len(TEXTS))]
    lexical = [h.id for h in s.search(text=QUERIES[1], mode="lexical", k=len(TEXTS)) if h.score > 0]
    rrf = s.search(q, text=QUERIES[1], mode="hybrid", fusion="rrf", k=len(TEXTS))
    expected = {d: 1 / (60 + r) for r, d in enumerate(dense, 1)}
    for r, d in enumerate(lexical, 1):
        expected[d] += 1 / (60 + r)
    assert [h.id for h in rrf] == sorted(expected, key=lambda d: (-expected[d], dense.index(d)))
    np.testing.assert_allclose([h.score for h in rrf], sorted(expected.values(), reverse=True))
    assert all(h.dense_score is not None for h in rrf)
    assert {h.id for h in rrf if h.lexical_score is not None} == set(lexical)
    only_dense = s.search(
        q, text=QUERIES[1], mode="hybrid", fusion="alpha", alpha=1.0, k=len(TEXTS)
    )
    assert [h.id for h in only_dense] == dense
    # min-max scaling gives each list's last candidate 0, the score of an absent document
    only_lexical = s.search(
        q, text=QUERIES[1], mode="hybrid", fusion="alpha", alpha=0.0, k=len(lexical) - 1
    )
    assert [h.id for h in only_lexical] == lexical[:-1]


@pytest.mark.parametrize("fusion", ["alpha", "tmm", "zscore"])
def test_score_fusions_score_each_candidate_on_both_sides(fusion):
    """Two candidates per side, and the lexical side's best matches are not both among the
    dense ones: a score fusion still gives every candidate its real cosine (from the stored
    vectors) and its real BM25 score (None only when it shares no term with the query)."""
    s = make_store()
    query = QUERIES[1]
    q = vectors(1, seed=3)[0]
    q = q / np.linalg.norm(q)
    dense = [h.id for h in s.search(q, k=2)]
    lexical = s.search(text=query, mode="lexical", k=len(TEXTS))
    bm25 = {h.id: h.score for h in lexical if h.score > 0}
    assert {h.id for h in lexical[:2]} - set(dense)  # the case this test is about
    stored = s.vectors([f"d{i}" for i in range(len(TEXTS))])
    cosine = {f"d{i}": float(v @ q / np.linalg.norm(v)) for i, v in enumerate(stored)}
    for alpha, expected in ((0.0, [h.id for h in lexical[:2]]), (1.0, dense)):
        hits = s.search(q, text=query, mode="hybrid", fusion=fusion, alpha=alpha, k=2, candidates=2)
        assert [h.id for h in hits] == expected
        for h in hits:
            assert h.dense_score == pytest.approx(cosine[h.id], abs=1e-5)
            assert h.lexical_score == (
                pytest.approx(bm25[h.id], rel=1e-5) if h.id in bm25 else None
            )
    # rank fusions keep each side's own list: a lexical-only hit has no dense score
    rrf = s.search(q, text=query, mode="hybrid", fusion="rrf", k=len(TEXTS))
    assert all(h.dense_score is not None for h in rrf)  # the dense list holds every document
    rrf = s.search(q, text=query, mode="hybrid", fusion="wrrf", alpha=0.0, k=2, candidates=2)
    assert [h.id for h in rrf] == [h.id for h in lexical[:2]]
    assert any(h.dense_score is None for h in rrf)


def test_lexical_scores_of_given_documents_come_from_the_same_pass():
    s = make_store()
    s.delete(["d3"])
    lex = s._lexical
    iids = np.arange(-1, len(TEXTS) + 2)
    _, _, (got,) = lex.top_k_and_scores([QUERIES[1]], 3, also=[iids])
    every = lex.scores(lex.query_ids([QUERIES[1]])[0])
    by_iid = dict(zip(lex._state()["iids"].tolist(), every.tolist(), strict=True))
    assert got.tolist() == pytest.approx([by_iid.get(i, 0.0) for i in iids.tolist()])
    assert got[iids == 3] == 0  # deleted
    assert (got > 0).any()


def test_fuse_alpha_by_hand():
    dense = (np.array([[0.9, 0.5, 0.1]], np.float32), np.array([[1, 2, 3]]))
    lexical = (np.array([[8.0, 4.0, -np.inf]], np.float32), np.array([[3, 4, -1]]))
    rows = fuse(dense, lexical, k=4, fusion="alpha", alpha=0.25)
    got = {iid: score for iid, score, _, _ in rows[0]}
    # dense min-max: 1 -> 1, 2 -> 0.5, 3 -> 0; lexical min-max: 3 -> 1, 4 -> 0
    assert got == pytest.approx({1: 0.25, 2: 0.125, 3: 0.75, 4: 0.0})
    assert [r[0] for r in rows[0]] == [3, 1, 2, 4]


def test_fuse_zscore_by_hand():
    dense = (np.array([[0.9, 0.5, 0.1]], np.float32), np.array([[1, 2, 3]]))
    lexical = (np.array([[8.0, 4.0, -np.inf]], np.float32), np.array([[3, 4, -1]]))
    rows = fuse(dense, lexical, k=4, fusion="zscore", alpha=0.25)
    got = {iid: score for iid, score, _, _ in rows[0]}
    zd = (np.array([0.9, 0.5, 0.1]) - 0.5) / np.std([0.9, 0.5, 0.1])  # 1.2247, 0, -1.2247
    zl = np.array([1.0, -1.0])  # two candidates: +-1
    # a document missing from a list takes that list's lowest z
    assert got == pytest.approx(
        {
            1: 0.25 * zd[0] + 0.75 * zl[1],
            2: 0.25 * zd[1] + 0.75 * zl[1],
            3: 0.25 * zd[2] + 0.75 * zl[0],
            4: 0.25 * zd[2] + 0.75 * zl[1],
        },
        rel=1e-6,
    )
    assert [r[0] for r in rows[0]] == [3, 1, 2, 4]


def test_fuse_theoretical_min_max_by_hand():
    dense = (np.array([[0.8, 0.6, 0.0]], np.float32), np.array([[1, 2, 3]]))
    lexical = (np.array([[6.0, 3.0]], np.float32), np.array([[3, 4]]))
    rows = fuse(dense, lexical, k=4, fusion="tmm", alpha=0.5, dense_floor=-1.0)
    got = {iid: score for iid, score, _, _ in rows[0]}
    # dense (s + 1) / (0.8 + 1): 1, 0.8889, 0.5556; lexical (s - 0) / 6: 1, 0.5; missing: 0
    assert got == pytest.approx(
        {1: 0.5, 2: 0.5 * 1.6 / 1.8, 3: 0.5 * 1.0 / 1.8 + 0.5, 4: 0.25}, rel=1e-6
    )
    # without a floor the observed minimum stands in (min-max on that list)
    no_floor = {i: v for i, v, _, _ in fuse(dense, lexical, 4, "tmm", 0.5)[0]}
    assert no_floor[3] == pytest.approx(0.5 * 0.0 + 0.5 * 1.0)
    # a lone lexical candidate keeps its distance from the BM25 floor: it is the list's best
    lone = fuse(dense, (np.array([[2.0]]), np.array([[2]])), 3, "tmm", 0.5, dense_floor=-1.0)
    assert {i: v for i, v, _, _ in lone[0]}[2] == pytest.approx(0.5 * 1.6 / 1.8 + 0.5)


def test_weighted_rrf():
    dense = (np.array([[0.9, 0.5, 0.1]], np.float32), np.array([[1, 2, 3]]))
    lexical = (np.array([[8.0, 4.0]], np.float32), np.array([[3, 4]]))
    rows = fuse(dense, lexical, k=4, fusion="wrrf", alpha=0.8, rrf_k=60)
    got = {iid: score for iid, score, _, _ in rows[0]}
    assert got == pytest.approx(
        {1: 0.8 / 61, 2: 0.8 / 62, 3: 0.8 / 63 + 0.2 / 61, 4: 0.2 / 62}, rel=1e-9
    )
    # alpha 0.5 ranks exactly as plain RRF
    half = [r[0] for r in fuse(dense, lexical, 4, "wrrf", 0.5)[0]]
    assert half == [r[0] for r in fuse(dense, lexical, 4, "rrf")[0]]


@pytest.mark.parametrize("fusion", fusion_mod.WEIGHTED_FUSIONS)
def test_weighted_fusions_at_the_ends_are_one_list(fusion):
    s = make_store()
    q = vectors(1, seed=3)[0]
    dense = [h.id for h in s.search(q, k=len(TEXTS))]
    lexical = [h.id for h in s.search(text=QUERIES[1], mode="lexical", k=len(TEXTS)) if h.score > 0]
    only_dense = s.search(q, text=QUERIES[1], mode="hybrid", fusion=fusion, alpha=1.0, k=3)
    assert [h.id for h in only_dense] == dense[:3]
    only_lexical = s.search(q, text=QUERIES[1], mode="hybrid", fusion=fusion, alpha=0.0, k=2)
    assert [h.id for h in only_lexical] == lexical[:2]


def test_resolve_fusion(monkeypatch):
    assert resolve_fusion(None, None) == (fusion_mod.DEFAULT_FUSION, fusion_mod.DEFAULT_ALPHA)
    assert resolve_fusion("rrf", None) == ("rrf", fusion_mod.DEFAULT_ALPHA)
    assert resolve_fusion("tmm", 0.2) == ("tmm", 0.2)
    # an alpha alone asks for a weighted fusion: the default one when it is weighted
    monkeypatch.setattr(fusion_mod, "DEFAULT_FUSION", "zscore")
    assert resolve_fusion(None, 0.3) == ("zscore", 0.3)
    monkeypatch.setattr(fusion_mod, "DEFAULT_FUSION", "rrf")
    assert resolve_fusion(None, 0.3) == ("alpha", 0.3)
    assert resolve_fusion(None, None)[0] == "rrf"


def test_bad_arguments_name_the_valid_choices():
    s = make_store()
    q = vectors(1)[0]
    with pytest.raises(ValueError, match="valid modes: dense, lexical, hybrid"):
        s.search(q, mode="sparse")
    with pytest.raises(ValueError, match="valid fusions: rrf, wrrf, alpha, tmm, zscore"):
        s.search(q, text="x", mode="hybrid", fusion="max")
    with pytest.raises(ValueError, match=r"alpha must be a number in \[0, 1\]"):
        s.search(q, text="x", mode="hybrid", alpha=2)
    with pytest.raises(ValueError, match="needs the query text"):
        s.search(q, mode="hybrid")
    with pytest.raises(ValueError, match="needs a query vector"):
        s.search(text="x", mode="hybrid")
    with pytest.raises(ValueError, match="2 query vectors but 1 query texts"):
        s.search_batch(vectors(2), texts=["x"], mode="hybrid")
    batched = s.search_batch(vectors(2), texts=["rain", "virus"], mode="hybrid", k=2)
    assert len(batched) == 2 and all(len(r) == 2 for r in batched)
    assert len(s.search_batch(texts=["rain", "virus"], mode="lexical", k=2)) == 2
    # one call, one shape: search takes one query, search_batch several
    with pytest.raises(ValueError, match="for several queries use search_batch"):
        s.search(vectors(2), k=2)
    with pytest.raises(ValueError, match="for several queries use search_batch"):
        s.search(text=["rain", "virus"], mode="lexical")


def test_index_without_lexical_part_loads_and_says_how_to_add_it(tmp_path):
    s = make_store()
    s.save(tmp_path / "ix")
    make_pre_hybrid(tmp_path / "ix")  # as saved before the lexical part existed
    old = IndexStore.load(tmp_path / "ix")
    assert not old.has_lexical
    assert [h.id for h in old.search(vectors(1)[0], k=3)] == [
        h.id for h in s.search(vectors(1)[0], k=3)
    ]
    for mode in ("lexical", "hybrid"):
        with pytest.raises(ValueError, match=r"no lexical \(BM25\) part.*build_lexical\(\)"):
            old.search(vectors(1)[0], text="rain", mode=mode)
    old.build_lexical()
    old.save(tmp_path / "ix")
    again = IndexStore.load(tmp_path / "ix")
    assert [h.id for h in again.search(text="rain", mode="lexical", k=3)] == [
        h.id for h in s.search(text="rain", mode="lexical", k=3)
    ]
    assert IndexStore(DIM, lexical=False).has_lexical is False


def test_inconsistent_lexical_arrays_are_refused(tmp_path):
    from llm2vec_retrieval.index.lexical import make_segment
    from llm2vec_retrieval.index.segments import write_arrays

    s = make_store()
    s.save(tmp_path / "ix")
    # a well-formed, correctly checksummed segment whose documents are not the docstore's
    m = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    (name,) = [n for n in m["files"] if n.endswith(".lex.arr")]
    seg = make_segment("x", np.arange(3), [np.zeros(2, np.int32)] * 3, 1)
    with open(tmp_path / "ix" / name, "wb") as f:
        write_arrays(f, seg.arrays)
    blob = (tmp_path / "ix" / name).read_bytes()
    m["files"][name] = {"sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
    m["manifest_sha256"] = manifest_checksum(m)
    (tmp_path / "ix" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(
        IndexCorruptedError, match=r"lex\.arr: its documents are not the docstore's"
    ) as info:
        IndexStore.load(tmp_path / "ix")
    assert "\n" not in str(info.value)


def test_texts_that_stemmers_cannot_take():
    s = IndexStore(DIM)
    s.add(["a", "b", "c"], vectors(3), ["truncated emoji \ud83d here", None, ""])
    hits = s.search(text="emoji", mode="lexical", k=3)
    assert [h.id for h in hits] == ["a"] and hits[0].score > 0  # b and c have no terms
