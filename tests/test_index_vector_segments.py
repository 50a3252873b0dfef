"""A flat store's vectors in segments (issue 26, format 4): a commit writes the new vectors
only and builds no FAISS index; the index built from the segments answers as a store that
never left memory, through upserts, deletes, merges and reloads; format-3 stores convert
at their next save; damaged vector segments are reported when first read, naming the file."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faiss")

from llm2vec_retrieval.index import IndexCorruptedError, IndexStore  # noqa: E402
from llm2vec_retrieval.index.persistence import manifest_checksum, verify_store  # noqa: E402
from llm2vec_retrieval.index.segments import MERGE_FACTOR, read_arrays, write_arrays  # noqa: E402
from llm2vec_retrieval.testing import HYBRID_CORPUS  # noqa: E402

FORMAT3 = Path(__file__).parent / "fixtures" / "store-format3"
DIM = 6


def files(d: Path) -> dict[str, int]:
    return {p.name: p.stat().st_ino for p in d.iterdir()}


def assert_same_store(a: IndexStore, b: IndexStore, queries: np.ndarray) -> None:
    assert sorted(a.ids) == sorted(b.ids)
    ids = sorted(a.ids)
    assert np.array_equal(a.vectors(ids), b.vectors(ids))  # exactly the stored floats
    for q in queries:
        ha, hb = a.search(q, k=7), b.search(q, k=7)
        assert [h.id for h in ha] == [h.id for h in hb]
        np.testing.assert_allclose([h.score for h in ha], [h.score for h in hb], atol=1e-6)


def test_a_commit_writes_only_the_new_vectors_and_builds_no_index(tmp_path):
    rng = np.random.default_rng(0)
    ix = tmp_path / "ix"
    s = IndexStore(DIM)
    s.add([f"d{i}" for i in range(300)], rng.standard_normal((300, DIM)), ["old text"] * 300)
    s.save(ix)
    before = files(ix)
    t = IndexStore.load(ix)
    new = rng.standard_normal((2, DIM)).astype(np.float32)
    t.add(["n0", "n1"], new, ["new text", "newer text"])
    t.add(["d4"], new[:1], ["upserted"])
    t.delete(["d9"])
    assert t._backend_obj is None  # adds, an upsert and a delete read no vector
    t.save(ix)
    assert t._backend_obj is None  # nor did the save: no FAISS index was built or written
    after = files(ix)
    assert "index.faiss" not in after and "vectors.npy" not in after
    (old_vec,) = [n for n in before if n.endswith(".vec.arr")]
    assert after[old_vec] == before[old_vec]  # the first segment's vectors, linked
    added = sorted(set(after) - set(before))
    assert [n.split(".", 1)[1] for n in added if n.startswith("seg-")] == [
        "docs.arr",
        "lex.arr",
        "vec.arr",
    ]
    (new_vec,) = [n for n in added if n.endswith(".vec.arr")]
    arrays = read_arrays(ix / new_vec)
    assert arrays["vectors"].shape == (3, DIM) and len(arrays["iids"]) == 3
    u = IndexStore.load(ix)
    assert len(u) == 301 and "d9" not in u
    hits = u.search(new[0], k=2)
    assert {h.id for h in hits} == {"n0", "d4"} and hits[0].score == pytest.approx(1.0)
    assert u.get(["d4"])[0].text == "upserted"
    np.testing.assert_allclose(u.vectors(["n1"])[0], new[1] / np.linalg.norm(new[1]), rtol=1e-6)
    assert verify_store(ix)["files"] == len(after) - 1  # every file but the manifest


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_vector_segments_answer_as_a_store_that_never_left_memory(tmp_path, metric):
    """Random upserts and deletes, a save after each step (segments merge), reloads, and
    searches both before and after the FAISS index was built from the segments."""
    rng = np.random.default_rng(3)
    ix = tmp_path / "ix"
    ref = IndexStore(DIM, metric=metric)  # never saved
    store = IndexStore(DIM, metric=metric)
    queries = rng.standard_normal((5, DIM)).astype(np.float32)
    n_segments = []
    for step in range(3 * MERGE_FACTOR):
        ids = list(dict.fromkeys(f"d{i}" for i in rng.integers(0, 150, int(rng.integers(1, 15)))))
        x = rng.standard_normal((len(ids), DIM))
        for s in (ref, store):
            s.add(ids, x, [f"text {i}" for i in ids])
        gone = list(dict.fromkeys(f"d{i}" for i in rng.integers(0, 150, 5)))
        assert ref.delete(gone) == store.delete(gone)
        if step % 4 == 1:
            assert_same_store(ref, store, queries)  # builds the index between commits
        store.save(ix)
        n_segments.append(len(json.loads((ix / "manifest.json").read_text())["segments"]))
        if step % 3 == 0:
            store = IndexStore.load(ix)
    assert max(n_segments) < MERGE_FACTOR + 2  # merged, vectors with their documents
    vec_files = sorted(p.name.split(".")[0] for p in ix.glob("*.vec.arr"))
    assert vec_files == sorted(p.name.split(".")[0] for p in ix.glob("*.docs.arr"))
    assert_same_store(ref, IndexStore.load(ix), queries)
    assert_same_store(ref, store, queries)


def test_the_format_3_store_of_the_previous_release_loads_and_converts(tmp_path):
    """tests/fixtures/store-format3 was written by main's code before vector segments (by
    tests/fixtures/make_store_format3.py): a flat store whose vectors are in index.faiss,
    two segments, an upsert and a delete."""
    ix = tmp_path / "ix"
    shutil.copytree(FORMAT3, ix)
    old = IndexStore.load(ix)
    ids = [f"d{i}" for i in range(len(HYBRID_CORPUS)) if i != 5]
    assert sorted(old.ids) == sorted(ids) and old.get(["d3"])[0].metadata == {"i": 3, "v": 2}
    vectors = old.vectors(ids)
    extra = np.linspace(-1, 1, 8).astype(np.float32)
    old.add(["extra"], extra, ["an extra storm"])
    dense = {i: [h.id for h in old.search(v, k=4)] for i, v in zip(ids, vectors, strict=True)}
    lexical = [h.id for h in old.search(text="river flood", mode="lexical", k=5)]
    old.save(ix)  # the next commit writes format 4: vectors out of index.faiss
    manifest = json.loads((ix / "manifest.json").read_text())
    assert manifest["format_version"] == 4 and "index.faiss" not in manifest["files"]
    assert not (ix / "index.faiss").exists()
    assert len(list(ix.glob("*.vec.arr"))) == len(manifest["segments"]) == 3
    verify_store(ix)
    new = IndexStore.load(ix)
    assert sorted(new.ids) == sorted([*ids, "extra"])
    assert np.array_equal(new.vectors(ids), vectors)
    for i, v in zip(ids, vectors, strict=True):
        assert [h.id for h in new.search(v, k=4)] == dense[i]
    assert new.search(extra, k=1)[0].id == "extra"
    assert [h.id for h in new.search(text="river flood", mode="lexical", k=5)] == lexical


def test_a_format_3_store_converts_at_a_save_that_adds_nothing(tmp_path):
    ix = tmp_path / "ix"
    shutil.copytree(FORMAT3, ix)
    old = IndexStore.load(ix)
    ids = sorted(old.ids)
    vectors = old.vectors(ids)
    old.delete(["d0"])
    old.save(ix)
    assert not (ix / "index.faiss").exists() and len(list(ix.glob("*.vec.arr"))) == 2
    new = IndexStore.load(ix)
    assert np.array_equal(new.vectors(ids[1:]), vectors[1:]) and "d0" not in new


def test_a_damaged_vector_segment_is_reported_when_the_index_is_built(tmp_path):
    """A vector segment whose vectors do not fit (here: another dimension, the manifest's
    checksums updated so that only the structure is wrong): a lexical search and a commit
    never read it; the first dense search names the file."""
    rng = np.random.default_rng(5)
    ix = tmp_path / "ix"
    s = IndexStore(DIM)
    s.add([f"d{i}" for i in range(50)], rng.standard_normal((50, DIM)), ["a zebra"] * 50)
    s.save(ix)
    (vec,) = ix.glob("*.vec.arr")
    iids = read_arrays(vec)["iids"].copy()  # a copy: the file is rewritten below
    vec.unlink()
    with open(vec, "wb") as f:
        write_arrays(f, {"iids": iids, "vectors": np.ones((50, DIM + 1), np.float32)})
    mp = ix / "manifest.json"
    m = json.loads(mp.read_text())
    m["files"][vec.name] = {
        "sha256": hashlib.sha256(vec.read_bytes()).hexdigest(),
        "bytes": vec.stat().st_size,
    }
    m["manifest_sha256"] = manifest_checksum(m)
    mp.write_text(json.dumps(m))
    t = IndexStore.load(ix)
    assert len(t.search(text="zebra", mode="lexical", k=3)) == 3
    t.add(["x"], rng.standard_normal((1, DIM)), ["a new one"])
    t.save(ix)
    with pytest.raises(IndexCorruptedError) as info:
        IndexStore.load(ix).search(np.ones(DIM), k=1)
    assert vec.name in str(info.value) and info.value.file.endswith(vec.name)
