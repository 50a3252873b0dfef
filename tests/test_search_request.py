"""One search request (issue 24.2): checked once where it is made, the filter compiled once,
the query vector normalized once, one result type with one dictionary shape."""

from __future__ import annotations

import numpy as np
import pytest

from llm2vec_retrieval.index import request as request_module
from llm2vec_retrieval.index.request import SearchHit, SearchRequest, SearchRequestError


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"k": 0}, "k"),
        ({"k": True}, "k"),
        ({"mode": "semantic"}, "mode"),
        ({"fusion": "max"}, "fusion"),
        ({"alpha": 1.5}, "alpha"),
        ({"alpha": "0.5"}, "alpha"),
        ({"rrf_k": -1}, "rrf_k"),
        ({"candidates": 0}, "candidates"),
        ({"filter": {"n": {"$bad": 1}}}, "filter"),
        ({"query": "  "}, "query"),
        ({"query": 3}, "query"),
    ],
)
def test_a_bad_request_names_its_field(kwargs, field):
    with pytest.raises(SearchRequestError) as info:
        SearchRequest(**kwargs)
    assert info.value.field == field and "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_resolve_fills_what_the_index_decides_without_checking_again(monkeypatch):
    compiled = []
    real = request_module.compile_filter
    monkeypatch.setattr(request_module, "compile_filter", lambda f: compiled.append(f) or real(f))
    req = SearchRequest("rivers", k=3, filter={"year": {"$gte": 2020}}, alpha=0.3)
    assert compiled == [{"year": {"$gte": 2020}}] and not req.resolved
    done = req.resolve("hybrid", {"fusion": "rrf", "alpha": 0.5})
    # an alpha given alone asks for a weighted fusion; the index's rrf is not weighted
    assert (done.mode, done.fusion, done.alpha) == ("hybrid", "alpha", 0.3)
    assert done.predicate is req.predicate and len(compiled) == 1
    assert done.predicate({"year": 2021}) and not done.predicate({"year": 2019})
    assert done.resolve("dense") is done  # nothing left to fill
    assert done.fused() == {"fusion": "alpha", "alpha": 0.3}
    assert SearchRequest(mode="dense").resolve("hybrid").fused() == {}


def test_the_store_compiles_the_filter_once_and_numbers_hits(monkeypatch):
    pytest.importorskip("faiss")
    from llm2vec_retrieval.index import IndexStore, filters

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((20, 8)).astype(np.float32)
    store = IndexStore(dim=8, metric="cosine")
    store.add(
        [f"d{i}" for i in range(20)],
        vectors,
        [f"rivers flood {i}" if i % 2 else f"fox {i}" for i in range(20)],
        [{"source": "a.txt", "chunk": i, "start": i, "end": i + 1, "n": i} for i in range(20)],
    )
    calls = []
    real = filters.compile_filter
    monkeypatch.setattr(request_module, "compile_filter", lambda f: calls.append(1) or real(f))
    req = SearchRequest("rivers", k=4, mode="hybrid", filter={"n": {"$gte": 5}})
    hits = store.search(vectors[7] * 3.0, request=req)  # unnormalized: the store normalizes
    assert len(calls) == 1 and [h.rank for h in hits] == [1, 2, 3, 4]
    assert all(h.metadata["n"] >= 5 for h in hits)
    by_args = store.search(vectors[7] * 3.0, 4, {"n": {"$gte": 5}}, text="rivers", mode="hybrid")
    assert [(h.id, h.score) for h in by_args] == [(h.id, h.score) for h in hits]
    with pytest.raises(ValueError, match="request.query"):
        store.search(vectors[0], text="rivers", request=req)


def test_one_dictionary_shape():
    hit = SearchHit(
        "a.txt#2",
        0.5,
        "text",
        {"source": "a.txt", "chunk": 2, "start": 10, "end": 20, "line": 3},
        0.4,
        None,
        rank=1,
    )
    assert hit.source == "a.txt" and hit.chunk == 2
    assert hit.to_dict() == {
        "rank": 1,
        "id": "a.txt#2",
        "score": 0.5,
        "source": "a.txt",
        "chunk": 2,
        "start": 10,
        "end": 20,
        "text": "text",
        "metadata": {"line": 3},  # the location is said once, at the top level
        "dense_score": 0.4,
        "lexical_score": None,
    }


def test_searcher_encodes_a_raw_query_vector_for_a_cosine_store(tiny_llama, tmp_path):
    """The encoder leaves the query vector raw; the cosine store normalizes it, once; the
    hits equal those of a query vector normalized beforehand."""
    pytest.importorskip("faiss")
    from llm2vec_retrieval import cli
    from llm2vec_retrieval.ingest import Searcher
    from llm2vec_retrieval.testing import make_small_corpus

    corpus = make_small_corpus(tmp_path)
    idx = tmp_path / "idx"
    assert cli.main(["index", str(corpus), "--index", str(idx), "--model", tiny_llama]) == 0
    s = Searcher(idx, dtype="float32")
    raw = s.encode_query("rivers flood")
    assert abs(float(np.linalg.norm(raw)) - 1.0) > 1e-3  # not normalized by the encoder
    req = s.prepare(SearchRequest("rivers flood", k=3, mode="dense"))
    unit = raw / np.linalg.norm(raw)
    assert [h.id for h in s.search_vector(raw, req)] == [h.id for h in s.search_vector(unit, req)]
    assert [h.id for h in s.search(req)] == [h.id for h in s.search_vector(raw, req)]
