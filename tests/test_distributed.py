"""Corpus encoding on Ray (llm2vec_retrieval.distributed, `encode-corpus`): one local Ray
cluster of 2 CPUs for the module, a tiny model, 2 workers. Shards hold the chunks and vectors
`index` stores; a run killed with SIGKILL resumes without duplicates; shards of another model
are refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("faiss")

from llm2vec_retrieval import cli  # noqa: E402
from llm2vec_retrieval.index import FingerprintMismatchError, IndexStore  # noqa: E402
from llm2vec_retrieval.ingest import IndexFolder  # noqa: E402
from llm2vec_retrieval.shards import open_shards  # noqa: E402
from llm2vec_retrieval.testing import make_small_corpus  # noqa: E402

# a local Ray cluster and runs SIGKILLed midway: make test runs them, make test-fast skips them
pytestmark = pytest.mark.integration

CHUNKING = ["--chunk-tokens", "24", "--overlap", "4", "--dtype", "float32"]


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster shared by the module's tests (its address, for drivers)."""
    ctx = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ctx.address_info["address"]
    ray.shutdown()


@pytest.fixture(scope="module")
def indexed(tiny_checkpoint, tmp_path_factory):
    """A small corpus and its `index` (float32) to compare shards with."""
    tiny = tiny_checkpoint("llama")
    root = tmp_path_factory.mktemp("dist")
    corpus = make_small_corpus(root)
    args = ["index", str(corpus), "--index", str(root / "idx"), "--model", tiny]
    assert cli.main([*args, "--root", str(root), *CHUNKING]) == 0
    store = IndexStore.load(IndexFolder(root / "idx").store_path)
    recs = store.get(store.ids)
    return tiny, root, corpus, recs


def encode_args(tiny, root, corpus, out, address, *extra):
    sources = corpus if isinstance(corpus, list) else [corpus]
    return [
        "encode-corpus",
        *map(str, sources),
        "--output",
        str(out),
        "--model",
        tiny,
        "--root",
        str(root),
        "--workers",
        "2",
        "--ray-address",
        address,
        "--shard-mb",
        "0.000001",  # one file per shard: 4 shards
        *CHUNKING,
        *extra,
    ]


def rows_of(out):
    got = list(open_shards(out).iter_batches())
    rows = [(i, t, m) for b in got for i, t, m in zip(b.ids, b.texts, b.metadatas, strict=True)]
    return rows, np.concatenate([b.vectors for b in got])


def make_parquet(folder):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir()
    table = pa.table({"doc": ["d1", "d2"], "text": ["Vaccines train the immune system.", ""]})
    pq.write_table(table, folder / "t.parquet")
    return folder / "t.parquet"


@pytest.fixture(scope="module")
def resumed(cluster, indexed, tmp_path_factory):
    """encode-corpus of the corpus and a parquet table, SIGKILLed right after it recorded
    its first shard, then run again. Returns (args, out, shards recorded when killed)."""
    tiny, root, corpus, _ = indexed
    table = make_parquet(root / "docs")
    out = tmp_path_factory.mktemp("enc") / "out"
    args = encode_args(tiny, root, [corpus, table], out, cluster, "--id-column", "doc")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # tests/hooked_cli.py: the driver pauses 60 s after recording each shard
    hooked = [sys.executable, str(Path(__file__).parent / "hooked_cli.py"), "shard-commit", "60"]
    proc = subprocess.Popen(
        [*hooked, *args],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    line = ""
    try:
        deadline = time.monotonic() + 300
        for line in proc.stderr:
            if line.startswith("llm2vec-shard-commit:") or time.monotonic() > deadline:
                break
        time.sleep(1)  # the other worker goes on with (and may write) its shard meanwhile
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert line.startswith("llm2vec-shard-commit:"), "the killed run recorded no shard"
    killed = dict(open_shards(out).manifest["shards"])
    assert cli.main(args) == 0
    return args, out, killed


def test_killed_run_resumes_with_every_chunk_once(resumed, indexed):
    _, out, killed = resumed
    assert len(killed) == 1  # the run was killed after recording exactly one shard
    shards = open_shards(out)
    assert killed.items() <= shards.manifest["shards"].items()  # kept, not redone
    rows, _ = rows_of(out)
    ids = [r[0] for r in rows]
    want = {r.id for r in indexed[3]} | {"d1#0"}
    assert len(ids) == len(set(ids)) == len(want) and set(ids) == want
    # no temporary file left, no shard file that the manifest does not list
    assert sorted(p.name for p in (out / "shards").iterdir()) == sorted(
        f"{n}.parquet" for n in shards.manifest["shards"]
    )


def test_shards_hold_what_index_stores(resumed, indexed, tmp_path, capsys):
    _, root, _, recs = indexed
    _, out, _ = resumed
    rows, vectors = rows_of(out)
    # same ids, texts, metadata and order as index (the parquet table comes last)
    assert rows[:-1] == [(r.id, r.text, r.metadata) for r in recs]
    expected = np.stack([r.vector for r in recs])
    # float32; batches hold other texts than index's, so padding moves the last bits
    assert vectors.dtype == np.float32 and np.abs(vectors[:-1] - expected).max() < 1e-5
    files = open_shards(out).manifest["files"]
    for src, e in IndexFolder(root / "idx").read_files().items():
        assert {k: files[src][k] for k in ("sha256", "bytes", "chunks", "tokens")} == {
            k: e[k] for k in ("sha256", "bytes", "chunks", "tokens")
        }
    # shards -> index: searchable, with the top hits of the index built by `index`
    assert cli.main(["index-from-shards", str(out), "--index", str(tmp_path / "built")]) == 0
    assert "5 files, 76 chunks" in capsys.readouterr().out
    hits = {}
    for idx in (root / "idx", tmp_path / "built"):
        assert cli.main(["search", str(idx), "rivers flood", "--json", "--mode", "dense"]) == 0
        hits[idx] = [h["id"] for h in json.loads(capsys.readouterr().out)["results"]]
    assert hits[root / "idx"] and hits[root / "idx"] == hits[tmp_path / "built"]


def test_parquet_rows_and_a_rerun_with_nothing_to_do(resumed, capsys):
    args, out, _ = resumed
    rows, _ = rows_of(out)
    cid, text, meta = rows[-1]  # d2 has no text: no chunk
    assert cid == "d1#0" and text == "Vaccines train the immune system."
    assert meta["doc_id"] == "d1" and meta["source"] == "docs/t.parquet" and meta["row"] == 0
    assert cli.main(args) == 0
    assert "encoded 0 file(s) into 0 shard(s)" in capsys.readouterr().out
    assert cli.main([*args, "--json"]) == 0  # the shape docs/cli.md gives
    data = json.loads(capsys.readouterr().out)
    assert data["shards_dir"] == str(out) and data["files"] == data["shards"] == 0
    assert data["shards_before"] == len(open_shards(out).manifest["shards"]) > 0
    assert set(data) == {
        "shards_dir",
        "files",
        "shards",
        "shards_before",
        "chunks",
        "tokens",
        "seconds",
        "skipped",
        "notes",
        "devices",
    }


def test_shards_of_another_model_are_refused(resumed, indexed, tiny_checkpoint, capsys):
    from llm2vec_retrieval import LLM2Vec

    args, out, _ = resumed
    other = tiny_checkpoint("qwen2")
    args = [*args, "--model", other]  # the last --model wins
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "holds shards made with another" in err and "new --output folder" in err
    with pytest.raises(FingerprintMismatchError):
        open_shards(out, fingerprint=LLM2Vec.from_pretrained(other).fingerprint())
