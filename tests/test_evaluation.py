"""Fast tests of the quality harness (llm2vec_retrieval.evaluation, benchmarks.quality).

No model is loaded and nothing is downloaded; tests that read ../shared/data skip when it is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llm2vec_retrieval.evaluation import (
    EmbeddingCache,
    evaluate_beir,
    evaluate_run,
    evaluate_sts,
    exact_search,
    load_beir,
    load_sts,
    per_query_metrics,
    rank_documents,
    subset_corpus,
    subset_queries,
)
from llm2vec_retrieval.evaluation.cache import CACHE_ENV, default_cache_dir, encode_cached
from llm2vec_retrieval.evaluation.data import default_data_dir
from llm2vec_retrieval.evaluation.sts import rankdata, spearman

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = default_data_dir()


# ----------------------------------------------------------------------------- helpers


class ToyEmbedder:
    """Bag-of-words vectors over a fixed vocabulary; counts calls; optional fingerprint."""

    VOCAB = ["cat", "dog", "fish", "bird", "tree", "river", "sun", "moon"]

    def __init__(self, fingerprint=None):
        self._fp = fingerprint
        self.calls = []

    def _vec(self, text):
        words = text.lower().replace(".", " ").split()
        v = np.array([words.count(w) for w in self.VOCAB], dtype=np.float32)
        return v + 1e-3  # never all-zero

    def encode_queries(self, texts, instruction=None):
        self.calls.append(("query", instruction, len(texts)))
        return np.stack([self._vec(t) for t in texts])

    def encode_documents(self, texts, instruction=None):
        self.calls.append(("document", instruction, len(texts)))
        return np.stack([self._vec(t) for t in texts])

    def fingerprint(self):
        return self._fp


def write_beir(folder: Path) -> Path:
    (folder / "qrels").mkdir(parents=True)
    docs = [
        {"_id": "d1", "title": "Cats", "text": "cat cat sun"},
        {"_id": "d2", "title": "", "text": "dog river"},
        {"_id": "d3", "title": "Fish", "text": "fish river moon"},
        {"_id": "d4", "title": "Birds", "text": "bird tree"},
        {"_id": "d5", "title": "Nothing", "text": "moon sun"},
    ]
    queries = [
        {"_id": "q1", "text": "cat"},
        {"_id": "q2", "text": "dog"},
        {"_id": "q3", "text": "unjudged query"},
        {"_id": "q4", "text": "fish river"},
    ]
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    (folder / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries) + "\n")
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t2\nq4\td3\t1\nq4\td2\t0\n"
    )
    return folder


# ----------------------------------------------------------------------------- metrics


def _random_case(seed=0, n_queries=12, n_docs=40):
    """A run and judgments with BEIR's edge cases: q0 has no relevant document (all judged 0),
    q1 an empty run, q2 no run at all, q3 a negative judgment, q4 is run but not judged,
    q5 is judged with nothing ({}); scores on a coarse grid give plenty of ties."""
    rng = np.random.default_rng(seed)
    docs = [f"doc{i:03d}" for i in range(n_docs)]
    qrels, run = {}, {}
    for q in range(n_queries):
        qid = f"q{q}"
        judged = rng.choice(n_docs, size=rng.integers(1, 8), replace=False)
        qrels[qid] = {docs[j]: int(rng.integers(0, 4)) for j in judged}
        if q == 0:
            qrels[qid] = {docs[j]: 0 for j in judged}  # no relevant document: averaged as 0
        if q == 3:
            qrels[qid][docs[int(judged[0])]] = -1
        retrieved = rng.choice(n_docs, size=rng.integers(5, n_docs), replace=False)
        # Scores on a coarse grid: plenty of ties, which both sides must break the same way.
        run[qid] = {docs[j]: float(rng.integers(0, 6)) / 2 for j in retrieved}
    run["q1"] = {}  # an empty run: averaged as 0
    del run["q2"]  # no run: left out of the averages, as pytrec_eval and BEIR leave it
    del qrels["q4"]  # run but not judged: ignored
    qrels["q5"] = {}  # judged with nothing: ignored
    return run, qrels


def _beir_reference(run, qrels, pytrec_eval) -> dict[str, float]:
    """nDCG@10, Recall@100 and MRR@10 as BEIR/MTEB average pytrec_eval's per-query values:
    over the queries pytrec_eval returns; MRR@10 = recip_rank on the run cut to its top 10."""
    ref = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"}).evaluate(run)
    cut = {q: {d: s[d] for d in rank_documents(s, 10)} for q, s in run.items()}
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(cut)
    return {
        "ndcg@10": float(np.mean([v["ndcg_cut_10"] for v in ref.values()])),
        "recall@100": float(np.mean([v["recall_100"] for v in ref.values()])),
        "mrr@10": float(np.mean([rr[q]["recip_rank"] for q in ref])),
        "n_queries": len(ref),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_pytrec_eval(seed):
    pytrec_eval = pytest.importorskip("pytrec_eval")
    run, qrels = _random_case(seed)
    ours = per_query_metrics(run, qrels, ["ndcg@3", "ndcg@10", "recall@5", "recall@20", "mrr@10"])
    ref = pytrec_eval.RelevanceEvaluator(
        qrels, {"ndcg_cut.3", "ndcg_cut.10", "recall.5", "recall.20"}
    ).evaluate(run)
    # MRR@10 = recip_rank on the run cut to its top 10 (cut with the same tie rule).
    cut = {q: {d: s[d] for d in rank_documents(s, 10)} for q, s in run.items()}
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(cut)

    # the queries pytrec_eval evaluates are exactly ours: q0 and q1 in, q2, q4, q5 out
    assert set(ours) == set(ref) and {"q0", "q1"} <= set(ours)
    assert not {"q2", "q4", "q5"} & set(ours)
    for q in ref:
        assert ours[q]["ndcg@3"] == pytest.approx(ref[q]["ndcg_cut_3"], abs=1e-12)
        assert ours[q]["ndcg@10"] == pytest.approx(ref[q]["ndcg_cut_10"], abs=1e-12)
        assert ours[q]["recall@5"] == pytest.approx(ref[q]["recall_5"], abs=1e-12)
        assert ours[q]["recall@20"] == pytest.approx(ref[q]["recall_20"], abs=1e-12)
        assert ours[q]["mrr@10"] == pytest.approx(rr[q]["recip_rank"], abs=1e-12)
    assert (
        ours["q0"]
        == ours["q1"]
        == {
            "ndcg@3": 0.0,
            "ndcg@10": 0.0,
            "recall@5": 0.0,
            "recall@20": 0.0,
            "mrr@10": 0.0,
        }
    )
    mean = evaluate_run(run, qrels)
    want = _beir_reference(run, qrels, pytrec_eval)
    for name in ("ndcg@10", "recall@100", "mrr@10"):
        assert mean[name] == pytest.approx(want[name], abs=1e-12), name
    assert mean["n_queries"] == want["n_queries"] == len(qrels) - 2  # q2 (no run), q5 (no judgment)
    assert mean["n_queries_without_run"] == 1


def test_tie_rule_and_edge_cases():
    # Equal scores: larger doc id first (trec_eval's rule), independent of dict order.
    assert rank_documents({"a": 1.0, "c": 1.0, "b": 1.0, "z": 2.0}) == ["z", "c", "b", "a"]
    assert rank_documents({"b": 1.0, "a": 1.0, "c": 1.0}, k=2) == ["c", "b"]
    qrels = {"q1": {"a": 1}, "q2": {"x": 2, "y": 1}, "q3": {"n": 0}, "q4": {"a": 1}}
    # q2 missing from the run: left out (BEIR); q3 has no relevant document: 0, averaged in;
    # q4's run is empty: 0, averaged in
    run = {"q1": {"a": 0.5, "b": 0.5}, "q3": {"n": 1.0}, "q4": {}}
    res = evaluate_run(run, qrels, ["ndcg@10", "recall@100", "mrr@10"])
    assert res["n_queries"] == 3 and res["n_queries_without_run"] == 1
    assert res["mrr@10"] == pytest.approx(0.5 / 3)  # q1: "b" ranks before "a" -> 1/2
    assert res["recall@100"] == pytest.approx(1 / 3)
    assert evaluate_run({}, qrels)["n_queries"] == 0  # nothing run: nothing averaged
    with pytest.raises(ValueError):
        evaluate_run(run, qrels, ["map@10"])


@pytest.mark.skipif(
    not (SHARED / "scifact" / "corpus.jsonl").exists(), reason="../shared/data absent"
)
def test_scifact_bm25_metrics_equal_pytrec_eval_with_beir_conventions():
    """nDCG@10, Recall@100 and MRR@10 of a real run (the benchmark's BM25 on SciFact test)
    equal pytrec_eval's, averaged as BEIR averages them, to 1e-6; also with a few queries
    dropped from the run and a few runs emptied (BEIR's conventions for both)."""
    pytrec_eval = pytest.importorskip("pytrec_eval")
    pytest.importorskip("bm25s")
    from benchmarks.quality import BM25Baseline

    data = load_beir(SHARED / "scifact", "test")
    run = BM25Baseline().search(
        data.doc_ids, data.documents(), data.query_ids, [data.queries[q] for q in data.query_ids]
    )
    ours = evaluate_run(run, data.qrels)
    want = _beir_reference(run, data.qrels, pytrec_eval)
    assert ours["n_queries"] == want["n_queries"] == 300
    for name in ("ndcg@10", "recall@100", "mrr@10"):
        assert abs(ours[name] - want[name]) < 1e-6, (name, ours[name], want[name])
    assert abs(ours["ndcg@10"] - 0.686) < 5e-4  # the published BM25 number
    partial = {q: docs for i, (q, docs) in enumerate(run.items()) if i % 7}
    for i, q in enumerate(partial):
        if i % 11 == 0:
            partial[q] = {}
    ours = evaluate_run(partial, data.qrels)
    want = _beir_reference(partial, data.qrels, pytrec_eval)
    assert ours["n_queries"] == want["n_queries"] == len(partial)
    assert ours["n_queries_without_run"] == 300 - len(partial)
    for name in ("ndcg@10", "recall@100", "mrr@10"):
        assert abs(ours[name] - want[name]) < 1e-6, name


# --------------------------------------------------------------------------------- STS


def test_rankdata_and_spearman():
    x = np.array([3.0, 1.0, 2.0, 2.0, 5.0])
    assert rankdata(x).tolist() == [4.0, 1.0, 2.5, 2.5, 5.0]
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=50), rng.normal(size=50)  # no ties: closed form
    d = rankdata(a) - rankdata(b)
    assert spearman(a, b) == pytest.approx(1 - 6 * np.sum(d**2) / (50 * (50**2 - 1)), abs=1e-12)
    t = rng.integers(0, 5, 50).astype(float)  # ties: Pearson of average ranks
    assert spearman(t, b) == pytest.approx(np.corrcoef(rankdata(t), rankdata(b))[0, 1], abs=1e-12)


def test_sts_on_toy_embedder(tmp_path):
    from llm2vec_retrieval.evaluation.data import StsData
    from llm2vec_retrieval.instructions import STS_INSTRUCTION

    s1 = ["cat dog", "cat", "fish river", "sun moon", "bird"]
    s2 = ["cat dog", "cat sun", "river", "tree", "bird tree tree"]
    emb = ToyEmbedder()
    cos = [
        float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
        for a, b in zip(emb.encode_queries(s1), emb.encode_queries(s2), strict=True)
    ]
    gold = 5 * np.array(cos) ** 3  # any increasing function of the cosine: Spearman = 100
    emb.calls.clear()
    res = evaluate_sts(emb, StsData("toy", "test", s1, s2, gold))
    assert res["metrics"]["spearman"] == pytest.approx(100.0)
    assert res["n_sentences"] == len(set(s1 + s2))
    # Symmetric task: everything through encode_queries with the STS instruction, once.
    assert emb.calls == [("query", STS_INSTRUCTION, len(set(s1 + s2)))]
    res = evaluate_sts(emb, StsData("toy", "test", s1, s2, -gold))
    assert res["metrics"]["spearman"] == pytest.approx(-100.0)


def test_load_sts_tab_split(tmp_path):
    f = tmp_path / "sts-dev.csv"
    f.write_text(
        'main-news\tf\t2012\t0001\t4.200\tHe said "hi.\tShe said hi.\n'
        "main-forums\tf\t2014\t0002\t0.000\tA b.\tC d.\tsrc1\tsrc2\n"
    )
    data = load_sts(tmp_path, "dev")
    assert data.sentences1 == ['He said "hi.', "A b."]
    assert data.sentences2 == ["She said hi.", "C d."]
    assert data.scores.tolist() == [4.2, 0.0]
    assert len(data.checksum) == 64


# -------------------------------------------------------------------------------- BEIR


def test_load_beir(tmp_path):
    data = load_beir(write_beir(tmp_path / "toy"), "test")
    assert data.doc_ids == ["d1", "d2", "d3", "d4", "d5"]
    assert data.query_ids == ["q1", "q2", "q4"]  # only judged queries, file order
    assert data.qrels["q4"] == {"d3": 1, "d2": 0}
    assert data.documents()[:2] == ["Cats cat cat sun", "dog river"]  # title + " " + text, stripped
    assert set(data.file_checksums) == {"corpus.jsonl", "queries.jsonl", "qrels/test.tsv"}
    same = load_beir(tmp_path / "toy", "test")
    assert same.checksum == data.checksum
    (tmp_path / "toy" / "qrels" / "test.tsv").write_text("q1\td1\t1\n")  # no header: also fine
    changed = load_beir(tmp_path / "toy", "test")
    assert changed.checksum != data.checksum and changed.qrels == {"q1": {"d1": 1}}
    with pytest.raises(FileNotFoundError):
        load_beir(tmp_path / "toy", "dev")


def test_evaluate_beir_toy(tmp_path):
    data = load_beir(write_beir(tmp_path / "toy"), "test")
    emb = ToyEmbedder()
    res = evaluate_beir(
        emb, data, query_instruction="Q:", metrics=("ndcg@10", "recall@100", "mrr@10")
    )
    assert res["metrics"] == {"ndcg@10": 1.0, "recall@100": 1.0, "mrr@10": 1.0}
    assert res["n_docs"] == 5 and res["n_queries"] == 3
    assert ("query", "Q:", 3) in emb.calls and ("document", None, 5) in emb.calls


def test_exact_search_chunks_and_ties():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(7, 6)).astype(np.float32)
    d = rng.normal(size=(50, 6)).astype(np.float32)
    d[10] = d[3] * 2.0  # same direction: tied cosine
    ids = [f"d{i:02d}" for i in range(50)]
    qids = [f"q{i}" for i in range(7)]
    full = exact_search(q, d, qids, ids, top_k=50)
    chunked = exact_search(q, d, qids, ids, top_k=5, query_chunk=3, doc_chunk=8)
    for qid in qids:
        assert list(chunked[qid]) == rank_documents(full[qid], 5)
        ranked = rank_documents(full[qid])
        assert ranked.index("d10") == ranked.index("d03") - 1  # tie: larger id first
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    dn = d / np.linalg.norm(d, axis=1, keepdims=True)
    assert full["q0"]["d00"] == pytest.approx(float(qn[0] @ dn[0]), abs=1e-6)


def test_subset_keeps_relevant_docs():
    from llm2vec_retrieval.evaluation.data import BeirData

    corpus = {f"d{i}": {"title": "", "text": str(i)} for i in range(100)}
    qrels = {"q1": {"d5": 1, "d77": 1}, "q2": {"d42": 2, "d5": 0}, "q3": {"d99": 1}}
    data = BeirData("toy", "test", corpus, {"q1": "a", "q2": "b", "q3": "c"}, qrels, "x")
    sub = subset_corpus(data, 20, seed=3)
    assert len(sub.corpus) == 20 and {"d5", "d77", "d42", "d99"} <= set(sub.corpus)
    assert list(sub.corpus) == [d for d in corpus if d in sub.corpus]  # corpus order kept
    assert sub.subset["n_docs_full"] == 100
    assert subset_corpus(data, 20, seed=3).corpus.keys() == sub.corpus.keys()  # reproducible
    assert subset_corpus(data, 20, seed=4).corpus.keys() != sub.corpus.keys()
    assert set(subset_corpus(data, 2).corpus) == {
        "d5",
        "d77",
        "d42",
        "d99",
    }  # never drops judged docs
    assert subset_corpus(data, None) is data and subset_corpus(data, 1000) is data
    fewer = subset_corpus(subset_queries(data, 1), 10)
    assert list(fewer.queries) == ["q1"] and {"d5", "d77"} <= set(fewer.corpus)


# ------------------------------------------------------------------------------- cache


def test_cache_hit_miss_by_fingerprint(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "envcache"))
    assert default_cache_dir() == tmp_path / "envcache"
    cache = EmbeddingCache()
    texts = ["cat dog", "fish"]
    a = ToyEmbedder({"model": "toy", "v": 1})
    e1, hit1 = encode_cached(a, texts, "document", None, cache)
    e2, hit2 = encode_cached(a, texts, "document", None, cache)
    assert (hit1, hit2) == (False, True) and len(a.calls) == 1
    np.testing.assert_array_equal(e1, e2)
    files = list((tmp_path / "envcache").glob("*.npy"))
    assert len(files) == 1
    np.load(files[0], allow_pickle=False)
    assert json.loads(files[0].with_suffix(".json").read_text())["side"] == "document"
    # Anything in the key changing is a miss: fingerprint, side, instruction, texts.
    b = ToyEmbedder({"model": "toy", "v": 2})
    assert encode_cached(b, texts, "document", None, cache)[1] is False
    assert encode_cached(a, texts, "query", None, cache)[1] is False
    assert encode_cached(a, texts, "query", "Q:", cache)[1] is False
    assert encode_cached(a, texts[:1], "query", "Q:", cache)[1] is False
    assert encode_cached(a, texts, "query", "Q:", cache)[1] is True
    # Same fingerprint, different object: hit (the key is the fingerprint, not the instance).
    c = ToyEmbedder({"v": 1, "model": "toy"})
    assert encode_cached(c, texts, "document", None, cache)[1] is True and c.calls == []
    # No fingerprint: never cached.
    n = ToyEmbedder(None)
    encode_cached(n, texts, "document", None, cache)
    encode_cached(n, texts, "document", None, cache)
    assert len(n.calls) == 2


# ------------------------------------------------------------------- CLI / import hygiene


def test_evaluation_import_is_light():
    # No module of the evaluation package imports a heavy optional dependency at module level
    # (static check: a subprocess import would spend seconds importing torch via the parent package).
    import ast

    import llm2vec_retrieval.evaluation as ev

    heavy = {"sentence_transformers", "bm25s", "Stemmer", "pytrec_eval", "scipy", "faiss"}
    for path in Path(ev.__file__).parent.glob("*.py"):
        for node in ast.parse(path.read_text()).body:  # module level only
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            assert not {n.split(".")[0] for n in names} & heavy, (path.name, names)


def test_quality_cli_bm25_on_toy_data(tmp_path, capsys):
    pytest.importorskip("bm25s")
    pytest.importorskip("Stemmer")
    from benchmarks import quality

    with pytest.raises(SystemExit):
        quality.parse_args(["--help"])
    write_beir(tmp_path / "data" / "scifact")
    out = tmp_path / "res.json"
    rc = quality.main(
        [
            "--models",
            "bm25",
            "--tasks",
            "scifact",
            "--data-dir",
            str(tmp_path / "data"),
            "--max-docs",
            "4",
            "--output",
            str(out),
            "--no-cache",
        ]
    )
    assert rc == 0
    report = json.loads(out.read_text())
    r = report["results"]["bm25"]["scifact"]
    assert r["subset"] is True and report["subset"] is True
    assert r["metrics"]["mrr@10"] == pytest.approx(1.0)
    assert {"cpu_count", "python", "torch", "transformers"} <= set(report["machine"])
    assert "benchmarks.quality" in report["command"]
    assert "SUBSET" in capsys.readouterr().out


# ------------------------------------------------------------------- real data (optional)


@pytest.mark.skipif(
    not (SHARED / "scifact" / "corpus.jsonl").exists(), reason="../shared/data absent"
)
def test_real_data_shapes():
    sf = load_beir(SHARED / "scifact", "test")
    assert (len(sf.corpus), len(sf.queries), sum(len(j) for j in sf.qrels.values())) == (
        5183,
        300,
        339,
    )
    sts = load_sts(SHARED / "stsb", "test")
    assert len(sts) == 1379 and sts.scores.min() >= 0 and sts.scores.max() <= 5


def test_beir_from_pairs_builds_queries_corpus_and_judgments():
    from llm2vec_retrieval.evaluation.data import beir_from_pairs

    rows = [("q a", "doc 1", "doc 2"), ("q b", "doc 2", None), ("q a", "doc 3", None)]
    data = beir_from_pairs("toy", rows)
    assert data.queries == {"q0": "q a", "q1": "q b"}
    assert [d["text"] for d in data.corpus.values()] == ["doc 1", "doc 2", "doc 3"]
    assert data.qrels == {"q0": {"d0": 1, "d2": 1}, "q1": {"d1": 1}}  # negatives: distractors
    assert data.checksum != beir_from_pairs("toy", rows[:2]).checksum
