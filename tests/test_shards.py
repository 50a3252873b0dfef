"""The shard format (llm2vec_retrieval.shards): writing, reading, guards, and shards -> our
index folder (the same chunks, vectors and search results as `llm2vec-retrieval index`)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("pyarrow")
pytest.importorskip("faiss")

from llm2vec_retrieval import cli  # noqa: E402
from llm2vec_retrieval.index import FingerprintMismatchError, IndexStore  # noqa: E402
from llm2vec_retrieval.ingest import IndexFolder  # noqa: E402
from llm2vec_retrieval.shards import (  # noqa: E402
    ShardCorruptedError,
    ShardError,
    ShardWriter,
    build_index_from_shards,
    ivf_build_params,
    open_shards,
    shard_name,
)
from llm2vec_retrieval.testing import make_small_corpus  # noqa: E402


def index_cli(tiny, corpus, idx, root, *extra):
    args = ["index", str(corpus), "--index", str(idx), "--model", tiny, "--root", str(root)]
    assert (
        cli.main([*args, "--dtype", "float32", "--chunk-tokens", "24", "--overlap", "4", *extra])
        == 0
    )


def store_rows(idx):
    store = IndexStore.load(IndexFolder(idx).store_path)
    recs = store.get(store.ids)
    return store, [(r.id, r.text, r.metadata) for r in recs], np.stack([r.vector for r in recs])


def shards_from_index(idx, out, per_shard=2):
    """Shards holding exactly what an index folder stores (what encode-corpus must write)."""
    folder = IndexFolder(idx)
    manifest = folder.read_manifest()
    files = folder.read_files()
    store, rows, vectors = store_rows(idx)
    header = {
        "embedder": manifest["embedder"],
        "fingerprint": store.fingerprint,
        "dimension": store.dim,
        "chunking": manifest["chunking"],
        "query_instruction": manifest["query_instruction"],
        "source_root": manifest["root"],
    }
    order = list(dict.fromkeys(m["source"] for _, _, m in rows))
    with ShardWriter(out, header) as w:
        for pos in range(0, len(order), per_shard):
            group = order[pos : pos + per_shard]
            take = [i for i, (_, _, m) in enumerate(rows) if m["source"] in group]
            w.write(
                shard_name(group),
                {
                    s: {k: files[s][k] for k in ("sha256", "chunks", "bytes", "tokens")}
                    for s in group
                },
                [rows[i][0] for i in take],
                [rows[i][1] for i in take],
                [rows[i][2] for i in take],
                vectors[take],
                position=pos,
            )
    return header


@pytest.fixture(scope="module")
def indexed(tiny_checkpoint, tmp_path_factory):
    tiny = tiny_checkpoint("llama")
    root = tmp_path_factory.mktemp("shards")
    corpus = make_small_corpus(root)
    index_cli(tiny, corpus, root / "idx", root)
    return tiny, root, corpus


def search_json(capsys, idx, query, mode):
    assert cli.main(["search", str(idx), query, "--json", "--mode", mode, "-k", "5"]) == 0
    return json.loads(capsys.readouterr().out)["results"]


def same_results(a, b) -> bool:
    """Equal search results, scores to 5 decimals."""

    def key(r):
        return json.dumps(r, sort_keys=True, default=str)

    def rounded(results):
        return [
            key({k: round(v, 5) if isinstance(v, float) else v for k, v in r.items()})
            for r in results
        ]

    return len(a) > 0 and rounded(a) == rounded(b)


def test_shards_round_trip_to_the_same_index(indexed, tmp_path, capsys):
    tiny, root, corpus = indexed
    out = tmp_path / "out"
    header = shards_from_index(root / "idx", out)
    shards = open_shards(out, fingerprint=header["fingerprint"])
    _, rows, vectors = store_rows(root / "idx")
    assert shards.count == len(rows) and shards.dimension == vectors.shape[1]
    got = [b for b in shards.iter_batches(batch_rows=3)]
    assert max(len(b) for b in got) <= 3
    assert [
        (i, t, m) for b in got for i, t, m in zip(b.ids, b.texts, b.metadatas, strict=True)
    ] == rows
    read = np.concatenate([b.vectors for b in got])
    assert read.dtype == np.float32 and np.array_equal(read, vectors)

    built = tmp_path / "built"
    build_index_from_shards(out, built, kind="flat", show_progress_bar=False)
    _, rows2, vectors2 = store_rows(built)
    # the store normalizes what it is given: stored (normalized) vectors move by an ulp
    assert rows2 == rows and np.allclose(vectors2, vectors, rtol=0, atol=1e-6)
    for mode in ("dense", "lexical", "hybrid"):
        assert same_results(
            search_json(capsys, built, "rivers flood", mode),
            search_json(capsys, root / "idx", "rivers flood", mode),
        )
    # files.json as `index` writes it: a later `index` run finds every file unchanged
    assert set(IndexFolder(built).read_files()) == set(IndexFolder(root / "idx").read_files())
    index_cli(tiny, corpus, built, root)
    assert "indexed 0 file(s)" in capsys.readouterr().out


def test_guards_fingerprint_corruption_and_reuse(indexed, tmp_path):
    _, root, _ = indexed
    out = tmp_path / "out"
    header = shards_from_index(root / "idx", out)
    other = {**header["fingerprint"], "model": "another-model"}
    with pytest.raises(FingerprintMismatchError):
        open_shards(out, fingerprint=other)
    with pytest.warns(UserWarning, match="loading anyway"):
        assert open_shards(out, fingerprint=other, allow_fingerprint_mismatch=True).count > 0
    # a writer with another embedder may not add to this folder
    with pytest.raises(ShardError, match="another fingerprint"):
        with ShardWriter(out, {**header, "fingerprint": other}):
            pass
    with pytest.raises(ShardError, match="is not a shard folder"):
        open_shards(tmp_path)
    # one flipped byte in a shard: refused with a one-line error naming the file
    shards = open_shards(out)
    name = shards.shard_names[0]
    path = out / "shards" / f"{name}.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ShardCorruptedError, match=f"{name}.parquet is corrupted") as exc:
        list(shards.iter_batches())
    assert "\n" not in str(exc.value)
    with pytest.raises(ShardError, match="not empty"):
        build_index_from_shards(out, root / "idx")


def test_ivf_from_shards_trains_once_on_a_sample(tmp_path):
    """2000 random vectors: the IVF store is trained (nlist for 2000, sample of 39 per list)
    and finds each vector itself."""
    rng = np.random.default_rng(0)
    n, d = 2000, 16
    x = rng.standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    header = {
        "embedder": {"model": "m", "model_path": None, "adapter": None, "adapter_path": None},
        "fingerprint": {"model": "m", "dim": d},
        "dimension": d,
        "chunking": {"chunk_tokens": 64, "overlap": 8},
        "query_instruction": None,
        "source_root": str(tmp_path),
    }
    with ShardWriter(tmp_path / "out", header) as w:
        for s in range(4):
            src = f"f{s}.txt"
            ids = [f"{src}#{i}" for i in range(500)]
            metas = [{"source": src, "chunk": i} for i in range(500)]
            w.write(
                shard_name([src]),
                {src: {"sha256": "0" * 64, "chunks": 500, "bytes": 1, "tokens": 1}},
                ids,
                [f"text {s} {i}" for i in range(500)],
                metas,
                x[s * 500 : (s + 1) * 500],
                position=s,
            )
    params = ivf_build_params("ivf_flat", n)
    assert params["nlist"] == 51 and params["train_threshold"] == 39 * 51
    assert params["retrain_growth"] == 0
    assert ivf_build_params("ivf_flat", 999) == {} and ivf_build_params("flat", n) == {}
    build_index_from_shards(
        tmp_path / "out", tmp_path / "ivf", kind="ivf_flat", show_progress_bar=False
    )
    store = IndexStore.load(IndexFolder(tmp_path / "ivf").store_path)
    assert store.is_trained and len(store) == n and store.params["nlist"] == 51
    hits = store.search(x[1234], k=1)
    assert hits[0].id == "f2.txt#234"


def test_encode_corpus_without_ray_names_the_extra(monkeypatch, tmp_path, capsys):
    """Without Ray, encode-corpus stops with the pip command, before loading any model."""
    monkeypatch.setitem(__import__("sys").modules, "ray", None)
    (tmp_path / "a.txt").write_text("some text")
    assert cli.main(["encode-corpus", str(tmp_path / "a.txt"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "error: encode-corpus needs Ray: pip install 'llm2vec-retrieval[ray]'" in err
    assert not (tmp_path / "o").exists()
