"""Shards -> PostgreSQL + pgvector, Qdrant (local mode) and LanceDB (llm2vec_retrieval.vectordb),
read back by each database's LangChain and LlamaIndex vector-store classes with our
embeddings: the same top-k ids and scores as our FAISS store built from the same shards.

PostgreSQL is a real server started here (initdb in a temporary folder, a unix socket, no
TCP); `make test` installs PostgreSQL and pgvector first (tests/setup/install_pgvector.sh).
As root (CI) a missing server fails these tests; otherwise, where installing it needs root,
they skip and say why (`require_postgres`).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from llm2vec_retrieval.errors import UserError
from llm2vec_retrieval.index import FingerprintMismatchError, IndexStore
from llm2vec_retrieval.ingest import IndexFolder
from llm2vec_retrieval.shards import ShardWriter, build_index_from_shards
from llm2vec_retrieval.vectordb import load_shards, parse_target, point_id

TEXTS = [
    "Vaccines train the immune system to recognise a virus.",
    "Rivers flood after heavy rain in the spring.",
    "GPUs encode text much faster than CPUs do.",
    "The quick brown fox jumps over the lazy dog.",
    "Mountains rise slowly as tectonic plates collide.",
    "Antibodies bind to the surface proteins of a pathogen.",
    "A lighthouse guides ships along a rocky coast.",
    "Sourdough bread needs a starter and a long proof.",
    "Transformers attend to every token in the sequence.",
    "Glaciers carve valleys over thousands of years.",
    "Coffee beans are roasted before they are ground.",
    "Contrastive training pulls paraphrases together.",
    "The violin has four strings tuned in fifths.",
    "Solar panels turn sunlight into electricity.",
]
QUERIES = ["how do vaccines work?", "floods and rain", "fast text encoding on GPUs", "bread baking"]
K = 5
COLLECTION = "docs_test"


# ------------------------------------------------------------------ shards
def make_shards(out: Path, texts, ids, metadatas, vectors, fingerprint, per_shard=5) -> Path:
    """A shard folder as encode-corpus writes it: one source file per chunk here."""
    header = {
        "embedder": {"model_path": "tiny"},
        "fingerprint": fingerprint,
        "dimension": int(vectors.shape[1]),
        "chunking": {"chunk_tokens": 64, "overlap": 0},
        "query_instruction": "",
        "source_root": str(out.parent),
    }
    with ShardWriter(out, header) as w:
        for pos in range(0, len(ids), per_shard):
            take = range(pos, min(pos + per_shard, len(ids)))
            files = {
                metadatas[i]["source"]: {"sha256": "0" * 64, "chunks": 1, "bytes": 1, "tokens": 1}
                for i in take
            }
            w.write(
                f"part-{pos:05d}",
                files,
                [ids[i] for i in take],
                [texts[i] for i in take],
                [metadatas[i] for i in take],
                vectors[list(take)],
                position=pos,
            )
    return out


def corpus_metadata(i: int) -> dict:
    m = {"source": f"doc{i:02d}.txt", "chunk": 0}
    if i % 3 == 0:  # heterogeneous keys and types, as a jsonl corpus gives
        m["year"] = 2020 + i
    if i % 4 == 1:
        m["lang"] = "en"
    return m


@pytest.fixture(scope="module")
def encoder(tiny_llama):
    from llm2vec_retrieval import LLM2Vec

    return LLM2Vec.from_pretrained(tiny_llama, torch_dtype="float32")


@pytest.fixture(scope="module")
def lc_embeddings(encoder):
    from langchain_llm2vec import LLM2VecEmbeddings

    return LLM2VecEmbeddings(encoder=encoder)


@pytest.fixture(scope="module")
def li_embeddings(encoder):
    from llama_index.embeddings.llm2vec import LLM2VecEmbedding

    return LLM2VecEmbedding(encoder=encoder)


@pytest.fixture(scope="module")
def shards(encoder, tmp_path_factory):
    root = tmp_path_factory.mktemp("vdb")
    vectors = np.asarray(encoder.encode_documents(TEXTS), dtype=np.float32)
    ids = [f"doc{i:02d}.txt#0" for i in range(len(TEXTS))]
    metas = [corpus_metadata(i) for i in range(len(TEXTS))]
    return make_shards(root / "shards", TEXTS, ids, metas, vectors, encoder.fingerprint())


@pytest.fixture(scope="module")
def expected(shards, lc_embeddings, tmp_path_factory):
    """Top-k (id, score) per query from our FAISS store built from the same shards."""
    idx = tmp_path_factory.mktemp("faiss") / "index"
    build_index_from_shards(shards, idx, show_progress_bar=False)
    store = IndexStore.load(IndexFolder(idx).store_path)
    out = {}
    for q in QUERIES:
        hits = store.search(np.asarray(lc_embeddings.embed_query(q), dtype=np.float32), k=K)
        out[q] = [(h.id, float(h.score)) for h in hits]
    return out


def assert_same(expected, got, scores=True):
    """``got``: [(id, score or None)] best first; ids equal, scores within 1e-4."""
    assert [i for i, _ in got] == [i for i, _ in expected]
    if scores:
        np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], atol=1e-4)


def other_fingerprint_shards(shards: Path, out: Path) -> Path:
    """The same rows under another embedder's fingerprint."""
    from llm2vec_retrieval.shards import open_shards

    s = open_shards(shards)
    rows = list(s.iter_batches(1000))
    ids = [i for b in rows for i in b.ids]
    texts = [t for b in rows for t in b.texts]
    metas = [m for b in rows for m in b.metadatas]
    vectors = np.concatenate([b.vectors for b in rows])
    fp = {**s.fingerprint, "model_digest": "another-model"}
    return make_shards(out, texts, ids, metas, vectors, fp)


# ------------------------------------------------------------------ PostgreSQL server
def require_postgres() -> None:
    """PostgreSQL with pgvector installed, else: as root (CI, where make test installs it)
    the test fails; as another user, who cannot install it, it skips with the reason."""
    from llm2vec_retrieval.vectordb import localpg

    try:
        localpg.server_bindir()
    except UserError as exc:
        if getattr(os, "geteuid", lambda: -1)() == 0:
            pytest.fail(str(exc))
        pytest.skip(f"{exc} (installing it needs root: `sudo make pgvector`)")


@pytest.fixture(scope="module")
def pg_url():
    """A throwaway PostgreSQL server on a unix socket; its URL (database ``postgres``)."""
    from llm2vec_retrieval.vectordb.localpg import temporary_postgres

    require_postgres()
    with temporary_postgres() as url:
        yield url


@pytest.mark.parametrize("uid", [0, 1000])
def test_missing_postgres_fails_as_root_and_skips_otherwise(uid, monkeypatch):
    from llm2vec_retrieval.vectordb import localpg

    def missing():
        raise UserError(f"PostgreSQL is not installed: {localpg.INSTALL_HINT}")

    monkeypatch.setattr(localpg, "server_bindir", missing)
    monkeypatch.setattr(os, "geteuid", lambda: uid, raising=False)
    outcome = pytest.fail.Exception if uid == 0 else pytest.skip.Exception
    with pytest.raises(outcome, match="PostgreSQL is not installed") as info:
        require_postgres()
    assert ("needs root" in str(info.value)) == (uid != 0)


def test_install_script_without_root_lets_make_test_go_on(tmp_path):
    """Not root and nothing installed: a note and exit 0 (the tests above skip), or 1 with
    PGVECTOR_STRICT=1. `id -u` answers 1000 through a stand-in on PATH."""
    script = Path(__file__).parent / "setup" / "install_pgvector.sh"
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "id").write_text("#!/bin/sh\necho 1000\n")
    (tmp_path / "bin" / "id").chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    env["POSTGRESQL_LIB"] = str(tmp_path / "none")  # no server there
    for strict, rc in (("0", 0), ("1", 1)):
        proc = subprocess.run(
            ["bash", str(script)],
            env={**env, "PGVECTOR_STRICT": strict},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == rc, proc.stderr
        assert "installing it needs root" in proc.stderr and "will skip" in proc.stderr


def pg_rows(url: str, collection: str = COLLECTION):
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute(
            f"SELECT node_id, text, metadata_::text, embedding::text FROM data_{collection} ORDER BY node_id"
        ).fetchall()
    return [(r[0], r[1], json.loads(r[2]), r[3]) for r in rows]


# ------------------------------------------------------------------ PostgreSQL
@pytest.mark.integration  # a PostgreSQL server; make test runs it, make test-fast skips it
def test_postgres_langchain_and_llamaindex_match_faiss(
    pg_url, shards, expected, lc_embeddings, li_embeddings
):
    from langchain_postgres import PGEngine, PGVectorStore
    from llama_index.core import VectorStoreIndex
    from llama_index.vector_stores.postgres import PGVectorStore as LlamaPGVectorStore

    result = load_shards(
        shards, pg_url, collection=COLLECTION, batch_rows=4, show_progress_bar=False
    )
    assert (result.rows, result.count) == (len(TEXTS), len(TEXTS))

    sa_url = pg_url.replace("postgresql://", "postgresql+psycopg://")
    engine = PGEngine.from_connection_string(sa_url)
    lc = PGVectorStore.create_sync(
        engine,
        table_name=f"data_{COLLECTION}",
        embedding_service=lc_embeddings,
        id_column="node_id",
        content_column="text",
        embedding_column="embedding",
        metadata_json_column="metadata_",
    )
    li = LlamaPGVectorStore.from_params(
        connection_string=sa_url,
        async_connection_string=sa_url,
        table_name=COLLECTION,
        embed_dim=int(result_dim(shards)),
    )
    retriever = VectorStoreIndex.from_vector_store(li, embed_model=li_embeddings).as_retriever(
        similarity_top_k=K
    )
    by_id = dict(zip([f"doc{i:02d}.txt#0" for i in range(len(TEXTS))], TEXTS, strict=True))
    for q in QUERIES:
        docs = lc.similarity_search_with_score(q, k=K)  # cosine distance
        assert_same(expected[q], [(d.id, 1.0 - s) for d, s in docs])
        assert all(d.page_content == by_id[d.id] for d, _ in docs)
        assert all(d.metadata["source"] == d.id.split("#")[0] for d, _ in docs)
        nodes = retriever.retrieve(q)
        assert_same(expected[q], [(n.node.node_id, n.score) for n in nodes])
        assert all(n.node.get_content() == by_id[n.node.node_id] for n in nodes)


def result_dim(shards: Path) -> int:
    return json.loads((shards / "shards.json").read_text())["dimension"]


@pytest.mark.integration  # a PostgreSQL server; make test runs it, make test-fast skips it
def test_postgres_idempotent_and_guarded(pg_url, shards, tmp_path):
    col = "docs_again"
    load_shards(shards, pg_url, collection=col, show_progress_bar=False)
    first = pg_rows(pg_url, col)
    again = load_shards(shards, pg_url, collection=col, batch_rows=3, show_progress_bar=False)
    assert again.count == len(TEXTS)
    assert pg_rows(pg_url, col) == first
    assert first[0][2] == corpus_metadata(0)  # metadata kept as given

    other = other_fingerprint_shards(shards, tmp_path / "other")
    with pytest.raises(FingerprintMismatchError) as err:
        load_shards(other, pg_url, collection=col, show_progress_bar=False)
    assert "model_digest" in err.value.differing_keys
    assert pg_rows(pg_url, col) == first  # nothing written
    # --recreate replaces the collection with the other model's rows
    assert (
        load_shards(other, pg_url, collection=col, recreate=True, show_progress_bar=False).count
        == 14
    )


# ------------------------------------------------------------------ Qdrant
def test_qdrant_langchain_and_llamaindex_match_faiss(
    shards, expected, lc_embeddings, li_embeddings, tmp_path
):
    from langchain_qdrant import QdrantVectorStore
    from llama_index.core import VectorStoreIndex
    from llama_index.vector_stores.qdrant import QdrantVectorStore as LlamaQdrantVectorStore
    from qdrant_client import QdrantClient

    path = tmp_path / "qdrant"
    result = load_shards(shards, f"qdrant://{path}", collection=COLLECTION, batch_rows=4)
    assert (result.rows, result.count) == (len(TEXTS), len(TEXTS))

    client = QdrantClient(path=str(path))
    try:
        lc = QdrantVectorStore(client=client, collection_name=COLLECTION, embedding=lc_embeddings)
        li = LlamaQdrantVectorStore(client=client, collection_name=COLLECTION)
        retriever = VectorStoreIndex.from_vector_store(li, embed_model=li_embeddings).as_retriever(
            similarity_top_k=K
        )
        for q in QUERIES:
            docs = lc.similarity_search_with_score(q, k=K)  # cosine similarity
            assert_same(expected[q], [(d.metadata["chunk_id"], s) for d, s in docs])
            assert all(d.metadata["_id"] == point_id(d.metadata["chunk_id"]) for d, _ in docs)
            nodes = retriever.retrieve(q)
            assert_same(expected[q], [(n.node.node_id, n.score) for n in nodes])
            assert all(n.node.ref_doc_id == n.node.node_id.split("#")[0] for n in nodes)
        meta = client.get_collection(COLLECTION).config.metadata["llm2vec_retrieval"]
        assert meta["dimension"] == result_dim(shards)
    finally:
        client.close()


def test_qdrant_idempotent_and_guarded(shards, tmp_path):
    from qdrant_client import QdrantClient

    target = f"qdrant://{tmp_path / 'q'}"
    load_shards(shards, target, collection=COLLECTION, show_progress_bar=False)
    assert load_shards(shards, target, collection=COLLECTION, show_progress_bar=False).count == len(
        TEXTS
    )
    other = other_fingerprint_shards(shards, tmp_path / "other")
    with pytest.raises(FingerprintMismatchError):
        load_shards(other, target, collection=COLLECTION, show_progress_bar=False)
    client = QdrantClient(path=str(tmp_path / "q"))
    try:
        points, _ = client.scroll(COLLECTION, limit=100, with_payload=True)
        assert sorted(p.payload["metadata"]["chunk_id"] for p in points) == sorted(
            f"doc{i:02d}.txt#0" for i in range(len(TEXTS))
        )
    finally:
        client.close()


# ------------------------------------------------------------------ LanceDB
def test_lancedb_langchain_and_llamaindex_match_faiss(
    shards, expected, lc_embeddings, li_embeddings, tmp_path
):
    from langchain_community.vectorstores import LanceDB
    from llama_index.core import VectorStoreIndex
    from llama_index.vector_stores.lancedb import LanceDBVectorStore

    path = str(tmp_path / "lance")
    result = load_shards(shards, f"lancedb://{path}", collection=COLLECTION, batch_rows=4)
    assert (result.rows, result.count) == (len(TEXTS), len(TEXTS))

    lc = LanceDB(uri=path, table_name=COLLECTION, embedding=lc_embeddings)
    li = LanceDBVectorStore(uri=path, table_name=COLLECTION)
    retriever = VectorStoreIndex.from_vector_store(li, embed_model=li_embeddings).as_retriever(
        similarity_top_k=K
    )
    for q in QUERIES:
        docs = lc.similarity_search_with_score(q, k=K)  # squared L2 of unit vectors: 2 - 2 cos
        assert_same(expected[q], [(d.metadata["chunk_id"], 1.0 - s / 2) for d, s in docs])
        year = {d.metadata["chunk_id"]: d.metadata["year"] for d, _ in docs}
        assert all(
            y == corpus_metadata(int(c[3:5])).get("year") for c, y in year.items()
        )  # null where a row had no such key
        nodes = retriever.retrieve(q)  # LlamaIndex scores exp(-distance)
        assert_same(expected[q], [(n.node.node_id, 1.0 + np.log(n.score) / 2) for n in nodes])
    assert lc.get_table().count_rows() == len(TEXTS)


def test_lancedb_idempotent_and_guarded(shards, tmp_path):
    import lancedb

    target = f"lancedb://{tmp_path / 'l'}"
    load_shards(shards, target, collection=COLLECTION, show_progress_bar=False)
    assert load_shards(shards, target, collection=COLLECTION, show_progress_bar=False).count == len(
        TEXTS
    )
    table = lancedb.connect(str(tmp_path / "l")).open_table(COLLECTION)
    assert sorted(table.to_arrow().column("id").to_pylist()) == sorted(
        f"doc{i:02d}.txt#0" for i in range(len(TEXTS))
    )
    other = other_fingerprint_shards(shards, tmp_path / "other")
    with pytest.raises(FingerprintMismatchError):
        load_shards(other, target, collection=COLLECTION, show_progress_bar=False)
    # allowed anyway: the rows are written, the collection keeps its first manifest
    with pytest.warns(UserWarning, match="loading anyway"):
        forced = load_shards(
            other,
            target,
            collection=COLLECTION,
            allow_fingerprint_mismatch=True,
            show_progress_bar=False,
        )
    assert forced.count == len(TEXTS)
    with pytest.raises(FingerprintMismatchError):
        load_shards(other, target, collection=COLLECTION, show_progress_bar=False)
    assert load_shards(shards, target, collection=COLLECTION, show_progress_bar=False).count == len(
        TEXTS
    )


# ------------------------------------------------------------------ killed loads
# rows and rows per batch of the killed load: Qdrant's local mode commits each point to
# SQLite on its own (about 15 ms a point here), the others a batch at a time
KILL_LOADS = {"postgresql": (3000, 5), "qdrant": (150, 5), "lancedb": (1000, 20)}
KILL_SCRIPT = """
import sys
from llm2vec_retrieval.vectordb import load_shards
load_shards(sys.argv[1], sys.argv[2], collection=sys.argv[3], batch_rows=int(sys.argv[4]), show_progress_bar=True)
"""


def random_shards(out: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = [f"f{i}.txt#0" for i in range(n)]
    metas = [{"source": f"f{i}.txt", "chunk": 0} for i in range(n)]
    return make_shards(out, [f"text {i}" for i in range(n)], ids, metas, x, {"m": 1}, 100)


def kill_mid_load(shards: Path, target: str, collection: str, rows: int, batch_rows: int) -> int:
    """Start a load in another process, SIGKILL it once its progress bar shows a tenth of
    the rows; the number of rows it had reported."""
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(shards), target, collection, str(batch_rows)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    seen, buf = 0, ""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ch = proc.stderr.read(1)
        if not ch:
            break
        buf = buf[-200:] + ch
        m = re.findall(rf"(\d+)/{rows}", buf)
        if m and int(m[-1]) >= rows // 10:
            seen = int(m[-1])
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert seen, f"the load never reported progress: {buf[-500:]}"
    assert seen < rows, "the load finished before it was killed"
    return seen


@pytest.mark.integration  # a loader SIGKILLed midway (and PostgreSQL); make test-fast skips it
@pytest.mark.parametrize("kind", ["postgresql", "qdrant", "lancedb"])
def test_rerun_after_kill_completes_without_duplicates(kind, tmp_path, request):
    rows, batch_rows = KILL_LOADS[kind]
    shards = random_shards(tmp_path / "shards", rows)
    if kind == "postgresql":
        target = request.getfixturevalue("pg_url")
    else:
        target = f"{kind}://{tmp_path / kind}"
    collection = "killed"
    kill_mid_load(shards, target, collection, rows, batch_rows)
    result = load_shards(shards, target, collection=collection, show_progress_bar=False)
    assert result.count == rows
    if kind == "postgresql":
        import psycopg

        with psycopg.connect(target) as conn:
            n, distinct = conn.execute(
                "SELECT count(*), count(DISTINCT node_id) FROM data_killed"
            ).fetchone()
        assert n == distinct == rows


# ------------------------------------------------------------------ integers beyond 64 bits
WIDE = 2**70  # a .jsonl field the shards keep exact; Arrow raised OverflowError on it
EDGE = 2**63 - 1  # the largest int64: stays a number


def wide_metadata(i: int) -> dict:
    m = {"source": f"w{i}.txt", "chunk": 0, "n": i, "edge": EDGE}
    if i == 3:
        m["n"] = WIDE
    if i == 4:
        m["tags"] = [1, 2**64]  # in a list too
    if i == 5:
        m["neg"] = -(2**63) - 1
    return m


@pytest.fixture()
def wide_shards(tmp_path):
    n = 6
    x = np.random.default_rng(1).standard_normal((n, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = [f"w{i}.txt#0" for i in range(n)]
    metas = [wide_metadata(i) for i in range(n)]
    # two rows per shard: the wide value comes after rows that hold small ints in that key
    return make_shards(tmp_path / "wide", [f"t{i}" for i in range(n)], ids, metas, x, {"m": 1}, 2)


def stored_metadata(kind: str, target: str, path: Path) -> dict[str, dict]:
    """chunk id -> the metadata dict as the database holds it (the frameworks' view)."""
    if kind == "postgresql":
        return {r[0]: r[2] for r in pg_rows(target, "wide")}
    if kind == "qdrant":
        from qdrant_client import QdrantClient

        client = QdrantClient(path=str(path))
        try:
            points, _ = client.scroll("wide", limit=100, with_payload=True)
        finally:
            client.close()
        for p in points:  # LlamaIndex filters read the top-level copy
            assert {k: p.payload[k] for k in p.payload["metadata"] if k != "chunk_id"} == {
                k: v for k, v in p.payload["metadata"].items() if k != "chunk_id"
            }
        return {p.payload["metadata"].pop("chunk_id"): p.payload["metadata"] for p in points}
    import lancedb

    rows = lancedb.connect(str(path)).open_table("wide").to_arrow().to_pylist()
    out = {}
    for r in rows:
        meta = {k: v for k, v in r["metadata"].items() if v is not None}
        out[meta.pop("chunk_id")] = meta
    return out


@pytest.mark.parametrize(
    "kind", [pytest.param("postgresql", marks=pytest.mark.integration), "qdrant", "lancedb"]
)
def test_integers_beyond_64_bits_are_stored_exactly_as_text(
    kind, wide_shards, tmp_path, request, capsys
):
    """One policy for the three sinks (vectordb.rows.storable_metadata): an integer beyond
    int64 is stored as its decimal string, with one note; nothing else changes, except that
    LanceDB (one type per column) keeps every integer of such a key as text."""
    path = tmp_path / kind
    target = request.getfixturevalue("pg_url") if kind == "postgresql" else f"{kind}://{path}"
    result = load_shards(wide_shards, target, collection="wide", batch_rows=1)
    assert (result.rows, result.count) == (6, 6)
    assert result.text_keys == ["n", "neg", "tags"]
    err = capsys.readouterr().err
    note = "note: metadata key(s) n, neg, tags hold integers beyond 64 bits; stored exactly, as"
    assert err.count(note) == 1 and err.count("note:") == 1
    got = stored_metadata(kind, target, path)
    assert got["w3.txt#0"]["n"] == str(WIDE)
    assert got["w4.txt#0"]["tags"] == ["1", str(2**64)]
    assert got["w5.txt#0"]["neg"] == str(-(2**63) - 1)
    assert all(m["edge"] == EDGE and m["chunk"] == 0 for m in got.values())
    small_n = [got[f"w{i}.txt#0"]["n"] for i in (0, 1, 2, 4, 5)]
    if kind == "lancedb":
        assert small_n == ["0", "1", "2", "4", "5"]
    else:
        assert small_n == [0, 1, 2, 4, 5]
    # a second load is the same (idempotent), still one note
    assert load_shards(wide_shards, target, collection="wide", show_progress_bar=False).count == 6
    assert capsys.readouterr().err.count("note:") == 1
    assert stored_metadata(kind, target, path) == got


def test_lancedb_refuses_wide_integers_into_a_numeric_column(wide_shards, tmp_path):
    """A table whose key is a number column cannot take these shards' text: refused with one
    line before a row is written."""
    import lancedb

    from llm2vec_retrieval.shards import open_shards

    s = open_shards(wide_shards)
    batches = list(s.iter_batches(100))
    small = make_shards(
        tmp_path / "small",
        [t for b in batches for t in b.texts],
        [i for b in batches for i in b.ids],
        [{**wide_metadata(i), "n": i, "tags": [1], "neg": -1} for i in range(6)],
        np.concatenate([b.vectors for b in batches]),
        {"m": 1},
    )
    target = f"lancedb://{tmp_path / 'l'}"
    load_shards(small, target, collection="wide", show_progress_bar=False)
    before = lancedb.connect(str(tmp_path / "l")).open_table("wide").to_arrow()
    with pytest.raises(UserError, match="stores metadata key\\(s\\) n \\(int64.*pass --recreate"):
        load_shards(wide_shards, target, collection="wide", show_progress_bar=False)
    assert lancedb.connect(str(tmp_path / "l")).open_table("wide").to_arrow() == before
    # --recreate rebuilds it (it crashed while the manifest table was left empty: len() == 0)
    assert load_shards(wide_shards, target, collection="wide", recreate=True).text_keys == [
        "n",
        "neg",
        "tags",
    ]


def test_lancedb_metadata_type_plans_text_keys_and_names_mixed_keys():
    import pyarrow as pa

    from llm2vec_retrieval.vectordb.lance import metadata_type

    # the wide value shares a batch with a small one of its key, a struct holds ints too
    batches = [[{"n": 1, "d": {"a": 1}}, {"n": WIDE}], [{"n": 3, "x": [1]}, {"d": {"a": 2**64}}]]
    struct, text = metadata_type(batches)
    assert text == {"n", "d"}
    assert {f.name: f.type for f in struct} == {
        "chunk_id": pa.string(),
        "n": pa.string(),
        "d": pa.struct([("a", pa.string())]),
        "x": pa.list_(pa.int64()),
    }
    # a number and a string under one key in one batch: one line naming the key
    with pytest.raises(UserError, match="metadata key 'k' holds values of types int64 and string"):
        metadata_type([[{"k": 1}, {"k": "a"}]])


# ------------------------------------------------------------------ inputs and CLI
def test_targets_and_bad_inputs(shards, tmp_path):
    assert parse_target("qdrant+http://localhost:6333").location == "http://localhost:6333"
    assert parse_target("lancedb:///data/x").location == "/data/x"
    assert parse_target("postgres://u:secret@h/db").describe() == "postgresql://h/db"
    with pytest.raises(UserError, match="unknown target"):
        parse_target("mysql://x")
    with pytest.raises(UserError, match="invalid collection"):
        load_shards(shards, f"lancedb://{tmp_path}", collection="Bad-Name")
    with pytest.raises(UserError, match="is not a shard folder"):
        load_shards(tmp_path, f"lancedb://{tmp_path}", collection="ok")


def test_cli_load_shards(shards, tmp_path, capsys):
    from llm2vec_retrieval import cli

    target = f"lancedb://{tmp_path / 'cli'}"
    assert cli.main(["load-shards", str(shards), target, "--collection", "c1"]) == 0
    out = capsys.readouterr().out
    assert f"{len(TEXTS)} rows" in out and "c1" in out
    other = other_fingerprint_shards(shards, tmp_path / "other")
    assert cli.main(["load-shards", str(other), target, "--collection", "c1"]) == 2
    assert "fingerprint mismatch" in capsys.readouterr().err
