"""The segmented store (issue 26.1-2): BM25 scores equal to a fresh single bm25s index
through upserts, deletes, merges and reloads; commits that link unchanged segments; the
format-2 store written by the previous release; lazy reads; ``info --verify``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faiss")
bm25s = pytest.importorskip("bm25s")

from llm2vec_retrieval import cli  # noqa: E402
from llm2vec_retrieval.index import IndexCorruptedError, IndexStore  # noqa: E402
from llm2vec_retrieval.index.lexical import SETTINGS, Tokenizer  # noqa: E402
from llm2vec_retrieval.index.segments import MERGE_FACTOR, merge_plan  # noqa: E402
from llm2vec_retrieval.testing import HYBRID_CORPUS  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "store-format2"
WORDS = (
    "rain virus cloud apple pear fig storm wind sun moon river stone tree leaf bird fish "
    "road city car ship protein cell gene flood the of and running runs ran"
).split()
QUERIES = ["rain storm rain apple", "cells and genes", "running river flood", "moon", "zebra"]


def bm25s_scores(texts: dict[str, str | None], query: str) -> dict[str, float]:
    """Scores > 0 of a fresh single bm25s index of ``texts`` (the benchmark's settings)."""
    tok = Tokenizer()
    ids = list(texts)
    vocab: dict[str, int] = {}
    corpus = [[vocab.setdefault(t, len(vocab)) for t in doc] for doc in tok(list(texts.values()))]
    r = bm25s.BM25(method="lucene", k1=SETTINGS["k1"], b=SETTINGS["b"])
    if not vocab:
        return {}
    r.scores = r.build_index_from_ids(list(range(len(vocab))), corpus, show_progress=False)
    qids = [vocab[t] for t in tok([query])[0] if t in vocab]
    if not qids:
        return {}
    s = r.get_scores_from_ids(qids)
    return {ids[j]: float(s[j]) for j in np.flatnonzero(s > 0).tolist()}


def assert_same_scores(store: IndexStore, texts: dict[str, str | None]) -> None:
    for q in QUERIES:
        got = {h.id: h.score for h in store.search(text=q, mode="lexical", k=10_000)}
        assert got == bm25s_scores(texts, q), q  # equal, not close


def random_text(rng) -> str | None:
    if rng.random() < 0.03:
        return None
    return " ".join(rng.choice(WORDS, rng.integers(0, 15)))


def test_scores_equal_a_fresh_bm25s_index_through_upserts_deletes_merges_and_reloads(tmp_path):
    rng = np.random.default_rng(0)
    store = IndexStore(4)
    texts: dict[str, str | None] = {}
    n_segments, purged = [], False
    for step in range(3 * MERGE_FACTOR):
        ids = list(dict.fromkeys(f"d{i}" for i in rng.integers(0, 120, int(rng.integers(1, 12)))))
        for i in ids:
            texts[i] = random_text(rng)
        store.add(ids, rng.standard_normal((len(ids), 4)), [texts[i] for i in ids])
        gone = list(dict.fromkeys(f"d{i}" for i in rng.integers(0, 120, 4)))
        store.delete(gone)
        for i in gone:
            texts.pop(i, None)
        assert_same_scores(store, texts)  # with documents not yet in a segment
        store.save(tmp_path / "ix")
        assert_same_scores(store, texts)
        if step % 3 == 0:
            store = IndexStore.load(tmp_path / "ix")
            assert_same_scores(store, texts)
        manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text())
        n_segments.append(len(manifest["segments"]))
        purged |= len(store) < sum(s["count"] for s in manifest["segments"]) // 2
        assert sorted(store.ids) == sorted(texts) and len(store) == manifest["count"]
    # merges kept the segment count down (one new segment per save otherwise)
    assert max(n_segments) < MERGE_FACTOR + 2 and n_segments[-1] < len(n_segments)
    again = IndexStore.load(tmp_path / "ix")
    assert_same_scores(again, texts)
    assert [r.text for r in again.get(sorted(texts))] == [texts[i] for i in sorted(texts)]


def test_a_commit_writes_the_new_segment_and_links_the_others(tmp_path):
    rng = np.random.default_rng(1)
    store = IndexStore(4)
    store.add([f"d{i}" for i in range(500)], rng.standard_normal((500, 4)), ["apple pie"] * 500)
    store.save(tmp_path / "ix")
    before = {p.name: p.stat().st_ino for p in (tmp_path / "ix").iterdir()}
    store.add(["new"], rng.standard_normal((1, 4)), ["pear tart"])
    store.delete(["d7"])
    store.save(tmp_path / "ix")
    after = {p.name: p.stat().st_ino for p in (tmp_path / "ix").iterdir()}
    kept = [n for n in before if n.endswith(".arr") or n.startswith("vocab-")]
    assert kept and all(after[n] == before[n] for n in kept)  # the same files, linked
    new = sorted(set(after) - set(before))
    assert sorted(n.split(".", 1)[1] for n in new) == [
        "arr",
        "docs.arr",
        "json",
        "lex.arr",
        "vec.arr",
    ]
    assert "index.faiss" not in after  # a flat store's vectors are in its segments
    assert "deleted.arr" in new and any(n.startswith("vocab-") for n in new)
    t = IndexStore.load(tmp_path / "ix")
    assert len(t) == 500 and "d7" not in t and t.get(["new"])[0].text == "pear tart"
    assert [h.id for h in t.search(text="tart", mode="lexical")] == ["new"]


def test_merge_plan():
    f = MERGE_FACTOR
    assert merge_plan([100] + [1] * (f - 1), [100] + [1] * (f - 1)) == []
    # the last f small segments merge; the result completes no run of its size class
    assert merge_plan([1000] + [1] * f, [1000] + [1] * f) == [(1, f + 1)]
    # a cascade: f - 1 segments of size f, then f ones of size 1 -> one of size f * f
    live = [f] * (f - 1) + [1] * f
    assert merge_plan(live, live) == [(f - 1, 2 * f - 1), (0, f)]
    # a segment with most of its documents deleted is rewritten alone
    assert merge_plan([10, 400], [100, 400]) == [(0, 1)]


def test_the_format_2_store_of_the_previous_release_loads_and_converts(tmp_path):
    """tests/fixtures/store-format2 was written by main's code before segments (by
    tests/fixtures/make_store_format2.py): a binary store with an upsert and a delete."""
    shutil.copytree(FIXTURE, tmp_path / "ix")
    old = IndexStore.load(tmp_path / "ix")
    texts = dict(HYBRID_CORPUS and {f"d{i}": t for i, t in enumerate(HYBRID_CORPUS)})
    texts["d3"] = "rain and river floods, upserted"
    del texts["d5"]
    assert old.ids == [i for i in (f"d{j}" for j in range(len(HYBRID_CORPUS))) if i != "d5"]
    assert old.get(["d3"])[0].metadata == {"i": 3, "v": 2} and old.fingerprint["model"] == "fixture"
    assert_same_scores(old, texts)
    q = old.vectors(["d9"])[0]
    dense = [h.id for h in old.search(q, k=3)]
    assert dense[0] == "d9"
    old.add(["extra"], np.ones((1, 8)), ["an extra storm"])
    texts["extra"] = "an extra storm"
    old.save(tmp_path / "ix")  # the next commit writes format 3
    names = {p.name for p in (tmp_path / "ix").iterdir()}
    assert not names & {"docstore.jsonl", "lexical.npz", "lexical_vocab.json"}
    assert json.loads((tmp_path / "ix" / "manifest.json").read_text())["format_version"] == 4
    new = IndexStore.load(tmp_path / "ix")
    assert new.ids == [*old.ids] and new.ids[-1] == "extra"
    assert_same_scores(new, texts)
    assert [h.id for h in new.search(q, k=3)] == dense


def test_format_1_is_refused_with_one_line(tmp_path):
    from llm2vec_retrieval.index.persistence import manifest_checksum

    shutil.copytree(FIXTURE, tmp_path / "ix")
    mp = tmp_path / "ix" / "manifest.json"
    m = json.loads(mp.read_text())
    m["format_version"] = 1
    m["manifest_sha256"] = manifest_checksum(m)
    mp.write_text(json.dumps(m))
    with pytest.raises(IndexCorruptedError, match="unsupported format_version 1 .*--rebuild"):
        IndexStore.load(tmp_path / "ix")


def test_a_lexical_search_reads_only_its_hits(tmp_path, monkeypatch):
    """Opening parses no document: a search parses the records of its hits only."""
    from llm2vec_retrieval.index import docstore

    rng = np.random.default_rng(2)
    n = 2000
    store = IndexStore(4)
    store.add([f"d{i}" for i in range(n)], rng.standard_normal((n, 4)), ["plain text"] * n)
    store.add(["x"], rng.standard_normal((1, 4)), ["a rare zebra"], [{"tag": "z"}])
    store.save(tmp_path / "ix")
    calls: list[str] = []
    for name in ("_record", "_ids_of", "_metadata"):  # what parses records, ids, metadata
        real = getattr(docstore.DocStore, name)
        monkeypatch.setattr(
            docstore.DocStore,
            name,
            lambda self, *a, _real=real, _name=name: calls.append(_name) or _real(self, *a),
        )
    t = IndexStore.load(tmp_path / "ix")
    hits = t.search(text="zebra", mode="lexical", k=5)
    assert [(h.id, h.metadata) for h in hits] == [("x", {"tag": "z"})]
    assert calls == ["_record"]  # the one hit's record; no id list, no other metadata
    assert len(t) == n + 1  # known from the manifest, no id read


def test_info_verify_checks_every_checksum(tmp_path, tiny_llama, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("Rivers flood after heavy rain.")
    idx = tmp_path / "idx"
    model = ["--model", tiny_llama, "--root", str(tmp_path), "--no-progress"]
    assert cli.main(["index", str(corpus), "--index", str(idx), *model]) == 0
    capsys.readouterr()
    assert cli.main(["info", "--index", str(idx), "--verify", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verified"]["files"] >= 4 and out["verified"]["bytes"] > 0
    (seg,) = (idx / "store").glob("*.docs.arr")
    data = bytearray(seg.read_bytes())
    data[-1] ^= 0x5A  # inside the data: a search would not notice until it reads it
    seg.write_bytes(bytes(data))
    assert cli.main(["info", "--index", str(idx)]) == 0
    capsys.readouterr()
    assert cli.main(["info", "--index", str(idx), "--verify"]) == 2  # a user error
    err = capsys.readouterr().err.strip()
    assert seg.name in err and "checksum mismatch" in err and "\n" not in err


def test_reading_every_record_and_every_metadata(tmp_path):
    """`get` of most of a segment parses it at once; `metadata()` reads no text."""
    rng = np.random.default_rng(3)
    store = IndexStore(4)
    n = 600
    texts = [f"text {i} \ud800 é" for i in range(n)]
    metas = [{"source": f"f{i // 7}", "n": [i, {"deep": i % 3}]} for i in range(n)]
    store.add([f"d{i}" for i in range(n)], rng.standard_normal((n, 4)), texts, metas)
    store.save(tmp_path / "ix")
    store.delete(["d0", "d9"])
    store.add(["d5", "new"], rng.standard_normal((2, 4)), ["five", "new"], [{"v": 5}, None])
    expected = {f"d{i}": (texts[i], metas[i]) for i in range(n) if i not in (0, 9)}
    expected |= {"d5": ("five", {"v": 5}), "new": ("new", {})}
    store.save(tmp_path / "ix")  # the marks and the new segment
    for s in (store, IndexStore.load(tmp_path / "ix")):
        got = s.get(s.ids, include_vectors=False)
        assert {r.id: (r.text, r.metadata) for r in got} == expected
        assert s.ids[:3] == ["d1", "d2", "d3"] and s.ids[-1] == "new"
        md = s.metadata()
        assert md == {i: m for i, (_, m) in expected.items()}
        md["d1"]["source"] = "changed"  # a copy
        assert s.metadata()["d1"]["source"] == "f0"
