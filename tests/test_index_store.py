"""IndexStore behaviour on real FAISS indexes (small seeded data, every kind)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faiss")

from llm2vec_retrieval.index import IndexStore, Record, SearchHit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DIM = 32
N = 400
# Small thresholds so every IVF kind is trained on the test data.
KIND_PARAMS = {
    "flat": {},
    "hnsw": {"M": 16, "ef_construction": 64, "ef_search": 64},
    "ivf_flat": {"train_threshold": 200, "nprobe": 4},
    "ivf_sq8": {"train_threshold": 200, "nprobe": 4},
    "ivf_pq": {"train_threshold": 256, "nprobe": 4, "pq_nbits": 6},
    "binary": {},
}
KINDS = list(KIND_PARAMS)


@pytest.fixture(autouse=True, scope="module")
def _one_omp_thread():
    """Tiny k-means runs far faster on one thread (OpenMP spin-waits on busy cores)."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def clustered(n=N, dim=DIM, n_clusters=10, noise=0.35, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_clusters, dim))
    labels = rng.integers(0, n_clusters, n)
    x = centers[labels] + noise * rng.standard_normal((n, dim))
    return x.astype(np.float32), labels


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def make_store(kind, metric="cosine", n=N, seed=0, **extra):
    x, labels = clustered(n, seed=seed)
    ids = [f"d{i}" for i in range(n)]
    metas = [
        {"i": i, "cluster": int(c), "rare": i % 20 == 0, "tags": ["even" if i % 2 == 0 else "odd"]}
        for i, c in enumerate(labels)
    ]
    store = IndexStore(DIM, kind=kind, metric=metric, **{**KIND_PARAMS[kind], **extra})
    store.add(ids, x, texts=[f"text {i}" for i in range(n)], metadatas=metas)
    return store, x, ids, metas


def brute_force(x, q, k, metric="cosine", subset=None):
    idx = np.arange(len(x)) if subset is None else np.asarray(subset)
    v = x[idx]
    if metric == "cosine":
        s = unit(q) @ unit(v).T
    elif metric == "ip":
        s = q @ v.T
    else:
        s = -((q[:, None, :] - v[None, :, :]) ** 2).sum(-1)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return idx[order], np.take_along_axis(s, order, 1)


def recall(results, truth):
    k = truth.shape[1]
    return float(
        np.mean(
            [
                len({h.id for h in r} & {f"d{j}" for j in t}) / k
                for r, t in zip(results, truth, strict=True)
            ]
        )
    )


# -- construction -----------------------------------------------------------------
def test_unknown_kind_lists_valid_kinds():
    with pytest.raises(ValueError, match="flat, hnsw, ivf_flat, ivf_sq8, ivf_pq, binary"):
        IndexStore(8, kind="annoy")


def test_bad_metric_and_params():
    with pytest.raises(ValueError, match="cosine"):
        IndexStore(8, metric="dot")
    with pytest.raises(ValueError, match="unknown parameter.*efsearch"):
        IndexStore(8, kind="hnsw", efsearch=3)
    with pytest.raises(ValueError, match="must divide"):
        IndexStore(30, kind="ivf_pq", pq_m=7)
    with pytest.raises(ValueError, match="dim"):
        IndexStore(0)


def test_properties():
    s = IndexStore(DIM, kind="hnsw", metric="ip", fingerprint={"model": "m"}, ef_search=50)
    assert (s.dim, s.kind, s.metric, s.fingerprint, len(s), s.ids) == (
        DIM,
        "hnsw",
        "ip",
        {"model": "m"},
        0,
        [],
    )
    assert s.params["ef_search"] == 50 and s.params["M"] == 32
    assert s.search(np.ones(DIM), k=3) == []
    assert s.search_batch(np.ones((2, DIM)), k=3) == [[], []]


def test_import_without_faiss_is_lazy():
    code = (
        "import sys; sys.modules['faiss'] = None\n"
        "import llm2vec_retrieval, llm2vec_retrieval.index as ix\n"
        "assert 'faiss' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "try:\n    ix.IndexStore(4)\nexcept ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, out.stderr
    assert "faiss is not installed: pip install 'llm2vec-retrieval[faiss]'" in out.stdout


# -- add / upsert / delete / get -----------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_upsert_replaces_vector_text_metadata(kind):
    store, x, ids, _ = make_store(kind)
    new = -x[5]
    assert store.add(["d5"], new[None], texts=["replaced"], metadatas=[{"v": 2}]) == ["d5"]
    assert len(store) == N and store.ids == ids  # position kept
    (rec,) = store.get(["d5"])
    assert rec.text == "replaced" and rec.metadata == {"v": 2}
    np.testing.assert_allclose(rec.vector, unit(new), atol=2e-2 if kind == "ivf_pq" else 1e-5)
    hit = store.search(new, k=1)[0]
    assert hit.id == "d5" and hit.score == pytest.approx(1.0, abs=1e-4)
    # re-adding without text/metadata clears them
    store.add(["d5"], new[None])
    assert store.get(["d5"])[0].text is None and store.get(["d5"])[0].metadata == {}


@pytest.mark.parametrize("kind", KINDS)
def test_delete_and_missing_is_noop(kind):
    store, x, ids, _ = make_store(kind)
    assert store.delete(["d1", "d2", "nope", "d1"]) == 2
    assert store.delete(["nope"]) == 0
    assert store.delete([]) == 0
    assert len(store) == N - 2 and "d1" not in store and "d3" in store
    for q in (x[1], x[2]):
        assert all(h.id not in ("d1", "d2") for h in store.search(q, k=20))
    assert len(store.search(x[0], k=N)) == N - 2


def test_hnsw_tombstones_rebuild():
    store, x, ids, _ = make_store("hnsw")
    store.delete(ids[:300])  # tombstones outnumber live vectors -> graph rebuilt
    b = store._backend
    assert b.index.ntotal == 100 and not b.tombstones
    hits = store.search(x[350], k=5)
    assert hits[0].id == "d350" and len(hits) == 5
    store.delete(ids[300:310])
    assert len(b.tombstones) == 10
    assert all(int(h.id[1:]) >= 310 for h in store.search(x[305], k=90))
    assert len(store.search(x[305], k=200)) == 90


def test_get_order_and_missing_skipped():
    store, x, ids, metas = make_store("flat")
    recs = store.get(["d9", "missing", "d3", "d7"])
    assert [r.id for r in recs] == ["d9", "d3", "d7"]
    assert isinstance(recs[0], Record) and recs[0].text == "text 9" and recs[0].metadata == metas[9]
    np.testing.assert_allclose(recs[1].vector, unit(x[3]), atol=1e-6)
    assert store.get(["d3"], include_vectors=False)[0].vector is None
    recs[0].metadata["i"] = -1  # copies: mutating results never changes the store
    assert store.get(["d9"])[0].metadata["i"] == 9
    np.testing.assert_allclose(store.vectors(["d3", "d9"]), unit(x[[3, 9]]), atol=1e-6)
    with pytest.raises(KeyError):
        store.vectors(["d3", "missing"])


def test_add_validation():
    s = IndexStore(4)
    with pytest.raises(ValueError, match="shape"):
        s.add(["a"], np.ones((1, 5)))
    with pytest.raises(ValueError, match="NaN"):
        s.add(["a", "b"], np.array([[1, 2, 3, 4], [1, np.nan, 3, 4]]))
    with pytest.raises(ValueError, match="'b'.*JSON"):
        s.add(["a", "b"], np.ones((2, 4)), metadatas=[{"x": 1}, {"x": object()}])
    with pytest.raises(ValueError, match="'a'.*JSON"):
        s.add(["a"], np.ones((1, 4)), metadatas=[{"x": float("nan")}])
    with pytest.raises(ValueError, match="duplicate"):
        s.add(["a", "a"], np.ones((2, 4)))
    with pytest.raises(ValueError, match="2 ids but 1 vectors"):
        s.add(["a", "b"], np.ones((1, 4)))
    with pytest.raises(ValueError, match="texts"):
        s.add(["a"], np.ones((1, 4)), texts=["x", "y"])
    with pytest.raises(ValueError, match="strings"):
        s.add([1], np.ones((1, 4)))
    assert len(s) == 0  # nothing half-added
    assert s.add([], np.empty((0, 4))) == []
    s.add(["a"], np.ones(4))  # one 1-D vector for one id
    assert s.ids == ["a"]
    with pytest.raises(ValueError, match="NaN"):
        s.search(np.full(4, np.nan))
    with pytest.raises(ValueError, match="k must be"):
        s.search(np.ones(4), k=0)


# -- search correctness ---------------------------------------------------------------
@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_flat_matches_brute_force(metric):
    store, x, ids, _ = make_store("flat", metric=metric)
    q = clustered(20, seed=7)[0]
    res = store.search_batch(q, k=10)
    true_i, true_s = brute_force(x, q, 10, metric)
    for r, ti, ts in zip(res, true_i, true_s, strict=True):
        assert [h.id for h in r] == [f"d{j}" for j in ti]
        np.testing.assert_allclose([h.score for h in r], ts, rtol=1e-4, atol=1e-3)
        assert all(a.score >= b.score for a, b in zip(r, r[1:], strict=False))


def test_single_and_batch_query_shapes():
    store, x, _, _ = make_store("flat")
    single = store.search(x[0], k=3)
    assert isinstance(single, list) and isinstance(single[0], SearchHit)
    batch = store.search_batch(x[:2], k=3)
    assert len(batch) == 2 and [h.id for h in batch[0]] == [h.id for h in single]
    assert len(store.search(x[0], k=10_000)) == N


@pytest.mark.parametrize("kind", KINDS)
def test_cosine_scores_in_range_and_exact(kind):
    store, x, _, _ = make_store(kind)
    q = clustered(10, seed=3)[0]
    for r, qi in zip(store.search_batch(q, k=15), q, strict=True):
        for h in r:
            assert -1.0 <= h.score <= 1.0
            # every kind scores exactly (flat/hnsw/ivf_flat) or rescores with kept floats
            true = float(unit(qi) @ unit(x[int(h.id[1:])]))
            assert h.score == pytest.approx(true, abs=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_recall_on_clustered_data(kind):
    store, x, _, _ = make_store(kind)
    assert store.is_trained
    q = clustered(50, seed=11)[0]
    truth, _ = brute_force(x, q, 10)
    assert recall(store.search_batch(q, k=10), truth) >= (
        0.8 if kind in ("ivf_pq", "binary") else 0.9
    )


def test_ivf_untrained_is_exact_then_trains():
    x, _ = clustered(300)
    s = IndexStore(DIM, kind="ivf_flat", train_threshold=250)
    s.add([f"d{i}" for i in range(200)], x[:200])
    assert not s.is_trained
    truth, _ = brute_force(x[:200], x[:5], 10)
    assert recall(s.search_batch(x[:5], k=10), truth) == 1.0
    s.add([f"d{i}" for i in range(200, 300)], x[200:])
    assert s.is_trained and s._backend.nlist == max(1, min(round(4 * 300**0.5), 300 // 39))
    s.delete([f"d{i}" for i in range(250)])  # deleting never untrains
    assert s.is_trained and len(s.search(x[0], k=100)) == 50


def test_ivf_auto_nlist_retrains_when_grown():
    x, _ = clustered(1200)
    s = IndexStore(DIM, kind="ivf_sq8", train_threshold=100, retrain_growth=4)
    s.add([f"d{i}" for i in range(100)], x[:100])
    assert s._backend.nlist == 2 and s._backend.n_at_train == 100
    s.add([f"d{i}" for i in range(100, 1200)], x[100:])
    assert s._backend.n_at_train == 1200 and s._backend.nlist == 30


def test_ivf_pq_without_kept_vectors():
    store, x, _, _ = make_store("ivf_pq", keep_vectors=False)
    assert len(store._backend.fs) == 0
    q = clustered(20, seed=5)[0]
    truth, _ = brute_force(x, q, 10)
    res = store.search_batch(q, k=10)
    assert recall(res, truth) >= 0.5
    assert all(-1 <= h.score <= 1 for r in res for h in r)
    assert store.vectors(["d1"]).shape == (1, DIM)


# -- filters ----------------------------------------------------------------------------
@pytest.mark.parametrize("exact_filter_max", [8192, 0], ids=["small-subset-exact", "selector-path"])
@pytest.mark.parametrize("kind", KINDS)
def test_selective_filter_gives_exactly_k(kind, exact_filter_max):
    store, x, _, metas = make_store(kind)
    store.exact_filter_max = exact_filter_max  # 0: always through the FAISS IDSelector
    matching = [i for i, m in enumerate(metas) if m["rare"]]  # 5% of docs
    assert len(matching) == N // 20
    q = clustered(10, seed=9)[0]
    for flt in ({"rare": True}, lambda m: m["rare"]):
        res = store.search_batch(q, k=10, filter=flt)
        truth, _ = brute_force(x, q, 10, subset=matching)
        for r in res:
            assert len(r) == 10
            assert all(h.metadata["rare"] for h in r)
        assert recall(res, truth) >= (0.8 if exact_filter_max == 0 else 1.0)
    # asking for more than match: all of them
    assert len(store.search(q[0], k=50, filter={"rare": True})) == len(matching)
    assert store.search(q[0], k=5, filter={"cluster": 999}) == []


@pytest.mark.parametrize("kind", KINDS)
def test_broad_filter_gives_exactly_k(kind):
    store, x, _, _ = make_store(kind)
    q = clustered(10, seed=2)[0]
    for r in store.search_batch(q, k=25, filter={"tags": {"$contains": "even"}, "i": {"$lt": 300}}):
        assert len(r) == 25 and all(h.metadata["i"] % 2 == 0 and h.metadata["i"] < 300 for h in r)


def test_filter_after_deletes_and_flat_exactness():
    store, x, ids, metas = make_store("flat")
    store.delete([f"d{i}" for i in range(0, N, 40)])
    matching = [i for i, m in enumerate(metas) if m["rare"] and i % 40]
    res = store.search(x[0], k=N, filter={"rare": True})
    truth, _ = brute_force(x, x[:1], len(matching), subset=matching)
    assert [h.id for h in res] == [f"d{j}" for j in truth[0]]


def test_bad_filter_is_value_error():
    store, x, _, _ = make_store("flat", n=20)
    for bad in (
        {"i": {"$gtx": 3}},
        {"$nand": []},
        {"$or": []},
        {"i": {"$in": 3}},
        {"i": {"$gt": [1]}},
        42,
    ):
        with pytest.raises(ValueError, match="invalid filter"):
            store.search(x[0], k=3, filter=bad)


# -- MMR ----------------------------------------------------------------------------
def test_mmr_picks_diverse_results():
    rng = np.random.default_rng(0)
    base = unit(rng.standard_normal(DIM))
    other = unit(rng.standard_normal(DIM))
    # ten near-duplicates of `base`, and a few vectors between base and other directions
    dups = unit(base + 0.01 * rng.standard_normal((10, DIM)))
    diverse = unit(
        np.stack(
            [base + 0.8 * unit(rng.standard_normal(DIM)) for _ in range(5)] + [0.6 * base + other]
        )
    )
    x = np.concatenate([dups, diverse]).astype(np.float32)
    ids = [f"dup{i}" for i in range(10)] + [f"div{i}" for i in range(6)]
    s = IndexStore(DIM)
    s.add(ids, x, metadatas=[{"n": i} for i in range(16)])
    plain = s.search(base, k=4)
    assert all(h.id.startswith("dup") for h in plain)
    mmr = s.max_marginal_relevance(base, k=4, fetch_k=16, lambda_mult=0.5)
    assert len(mmr) == 4 and mmr[0].id.startswith("dup")
    assert sum(h.id.startswith("dup") for h in mmr) == 1
    assert len({h.id for h in mmr}) == 4
    relevance_only = s.max_marginal_relevance(base, k=4, fetch_k=16, lambda_mult=1.0)
    assert [h.id for h in relevance_only] == [h.id for h in plain]
    assert s.max_marginal_relevance(base, k=3, filter={"n": {"$gte": 10}})[0].id.startswith("div")
    with pytest.raises(ValueError):
        s.max_marginal_relevance(base, lambda_mult=2)


# -- threads ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf_sq8"])
def test_concurrent_searches_and_writes(kind):
    store, x, _, _ = make_store(kind)
    q = clustered(8, seed=4)[0]
    expected = [[h.id for h in r] for r in store.search_batch(q, k=5)]
    errors: list[BaseException] = []

    def reader():
        try:
            for _ in range(15):
                got = [[h.id for h in r] for r in store.search_batch(q, k=5)]
                assert got == expected
                assert len(store.search(q[0], k=5, filter={"rare": True})) == 5
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    def writer():
        try:
            rng = np.random.default_rng(1)
            for j in range(15):
                # far-away vectors: they never enter the expected top-5
                store.add([f"w{j}"], -np.abs(rng.standard_normal((1, DIM))))
                store.delete([f"w{j}"])
        except BaseException as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(4)] + [
        threading.Thread(target=writer)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert len(store) == N
