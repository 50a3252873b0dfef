"""The index flow (issue 24.1, 26.1): one typed manifest and files.json entry, each file
read and hashed once, commits as --commit-every says, indexes written by earlier versions
read as they are.

Real index folders on the tiny random model; the file reads are counted by wrapping
``open`` (every read of a file goes through it).
"""

from __future__ import annotations

import builtins
import io
import json
from pathlib import Path

import pytest

from llm2vec_retrieval.ingest import Indexer, IndexFolder, IndexSettings
from llm2vec_retrieval.ingest.chunking import Position
from llm2vec_retrieval.ingest.manifest import Chunking, FileEntry, IndexManifest, files_from_json

pytest.importorskip("faiss")


def run_index(idx: Path, sources, **settings) -> Indexer:
    indexer = Indexer(IndexFolder(idx), IndexSettings(**settings), show_progress_bar=False)
    indexer.run([str(s) for s in sources])
    return indexer


def chunks_of(idx: Path) -> dict[str, tuple[str, dict]]:
    from llm2vec_retrieval.index import IndexStore

    store = IndexStore.load(idx / "store")
    return {r.id: (r.text, r.metadata) for r in store.get(store.ids, include_vectors=False)}


# ---------------------------------------------------------------------- the typed JSON
# llm2vec-index.json and a files.json entry exactly as the previous version wrote them
MAIN_MANIFEST = {
    "format": "llm2vec-retrieval-index",
    "format_version": 1,
    "chunking": {"chunk_tokens": 16, "overlap": 4, "text_column": "text", "text_field": "text"},
    "created_at": "2026-12-01T10:00:00+00:00",
    "embedder": {"adapter": None, "adapter_path": None, "model": "m", "model_path": "/m"},
    "encoded_in": ["float32"],
    "follow_symlinks": False,
    "hybrid": {"alpha": 0.9, "fusion": "minmax_theoretical"},
    "kind": "flat",
    "lexical": True,
    "metric": "cosine",
    "query_instruction": None,
    "root": "/data",
    "updated_at": "2026-12-01T10:05:00+00:00",
}
MAIN_ENTRY = {
    "sha256": "ab" * 32,
    "bytes": 120,
    "chunks": 3,
    "tokens": 40,
    "indexed_at": "2026-12-01T10:05:00+00:00",
}


def test_manifest_and_entries_round_trip_the_json_earlier_versions_wrote():
    m = IndexManifest.from_json(MAIN_MANIFEST)
    assert m.chunking == Chunking(16, 4) and m.kind == "flat" and m.encoded_in == ["float32"]
    written = {"format": "llm2vec-retrieval-index", "format_version": 1, **m.to_json()}
    assert written == MAIN_MANIFEST
    # an index from before hybrid search and links: defaults, and unknown keys are kept
    old = {k: v for k, v in MAIN_MANIFEST.items() if k not in ("hybrid", "follow_symlinks")}
    old = {**old, "chunking": {"chunk_tokens": 16}, "from_a_newer_version": [1]}
    del old["lexical"]
    m = IndexManifest.from_json(old)
    assert m.lexical and m.follow_symlinks is None and m.hybrid is None
    assert m.chunking == Chunking(chunk_tokens=16)  # overlap 32, text fields "text"
    assert m.to_json()["from_a_newer_version"] == [1]
    assert "hybrid" not in m.to_json() and "follow_symlinks" not in m.to_json()

    assert FileEntry.from_json(MAIN_ENTRY).to_json() == MAIN_ENTRY
    partial = {**MAIN_ENTRY, "partial": {"segment": 0, "token": 30, "char": 99, "same": 0}}
    del partial["indexed_at"]
    entry = FileEntry.from_json(partial)
    assert entry.partial == Position(0, 30, 99) and not entry.complete
    assert entry.to_json() == partial
    derived = {"sha256": "cd" * 32, "chunks": 2, "derived": True}
    assert FileEntry.from_json(derived).to_json() == derived
    # what this version cannot use is dropped (its file is indexed again), never an error
    bad = [{"chunks": 1}, {**MAIN_ENTRY, "chunks": "3"}, {**MAIN_ENTRY, "partial": {"x": 1}}, 7]
    body = {"files": {f"f{i}": e for i, e in enumerate(bad)} | {"ok": MAIN_ENTRY}}
    assert list(files_from_json(body)) == ["ok"]


def test_shard_manifests_take_typed_entries(tmp_path):
    """`ShardWriter` records a `FileEntry` (what `FileRecords.entry` gives) as the JSON the
    Ray workers send."""
    pytest.importorskip("pyarrow")
    import numpy as np

    from llm2vec_retrieval.shards import ShardWriter, open_shards

    header = {"embedder": {}, "fingerprint": {}, "dimension": 4, "chunking": {}}
    header |= {"query_instruction": None, "source_root": str(tmp_path)}
    typed = FileEntry("ab" * 32, chunks=1, tokens=3, bytes=10)
    with ShardWriter(tmp_path / "out", header) as w:
        w.write("s1", {"a.txt": typed}, ["a.txt#0"], ["t"], [{}], np.ones((1, 4)))
        w.write("s2", {"b.txt": typed.to_json()}, ["b.txt#0"], ["t"], [{}], np.ones((1, 4)))
    files = open_shards(tmp_path / "out").manifest["files"]
    want = {"sha256": "ab" * 32, "chunks": 1, "tokens": 3, "bytes": 10}
    assert files == {"a.txt": {**want, "shard": "s1"}, "b.txt": {**want, "shard": "s2"}}


def test_an_index_in_the_previous_format_is_used_as_it_is(tiny_llama, tmp_path):
    """An index whose llm2vec-index.json lacks what later versions added (no lexical,
    hybrid, follow_symlinks; a key this version does not know) and whose files.json is
    as the previous version wrote it: the next run re-embeds nothing, fills the keys in
    and keeps the unknown one."""
    corpus = tmp_path / "c"
    corpus.mkdir()
    for i in range(3):
        (corpus / f"f{i}.txt").write_text(f"File {i}. " + "Rivers flow into the sea. " * 10)
    idx = tmp_path / "idx"
    common = dict(root=str(tmp_path), chunk_tokens=16, overlap=4)
    run_index(idx, [corpus], model=tiny_llama, **common)
    path = idx / "llm2vec-index.json"
    written = json.loads(path.read_text())
    assert set(written) == set(MAIN_MANIFEST)  # the shape did not change
    files = json.loads((idx / "files.json").read_text())["files"]
    assert all(set(e) == set(MAIN_ENTRY) for e in files.values())
    before = chunks_of(idx)
    old = {k: v for k, v in written.items() if k not in ("hybrid", "follow_symlinks", "lexical")}
    path.write_text(json.dumps({**old, "from_a_newer_version": "kept"}))
    again = run_index(idx, [corpus])
    assert again.report.unchanged == 3 and not again.report.indexed
    assert again.report.commits == 0 and chunks_of(idx) == before
    now = json.loads(path.read_text())
    assert now["from_a_newer_version"] == "kept" and now["lexical"] is True
    assert now["hybrid"] == written["hybrid"] and now["follow_symlinks"] is False
    assert json.loads((idx / "files.json").read_text())["files"] == files


# ---------------------------------------------------------------------- reads and commits
@pytest.fixture
def opens(monkeypatch):
    """Counts the times each file is opened (``open``, ``io.open``: what pathlib, our
    hashing and our readers use)."""
    counts: dict[str, int] = {}
    real = builtins.open

    def counting(file, *args, **kwargs):
        if isinstance(file, (str, Path)):
            key = str(file)
            counts[key] = counts.get(key, 0) + 1
        return real(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting)
    monkeypatch.setattr(io, "open", counting)
    return counts


def test_each_file_is_read_and_hashed_once(tiny_llama, tmp_path, opens):
    """A new or changed file that fits the window is read once (hashed and chunked from the
    same bytes); an unchanged one once (hashed); a large .txt hashed once and, changed,
    streamed once (before: hashed, scanned, then streamed: three reads)."""
    corpus = tmp_path / "c"
    corpus.mkdir()
    small = [corpus / f"s{i}.txt" for i in range(3)]
    for i, p in enumerate(small):
        p.write_text(f"Small file {i}. " + "Cells make proteins. " * 8)
    (corpus / "r.jsonl").write_text(json.dumps({"text": "A record about rivers."}) + "\n")
    big = corpus / "big.txt"
    big.write_text("Rivers flood after heavy rain. " * 100)  # > the window below
    common = dict(root=str(tmp_path), chunk_tokens=16, overlap=4, window_chars=1024)
    assert max(p.stat().st_size for p in small) < 1024 < 2 * 1024 < big.stat().st_size
    files = [*small, corpus / "r.jsonl", big]

    def reads() -> dict[str, int]:
        return {p.name: opens.get(str(p), 0) for p in files}

    opens.clear()  # the writes above
    run_index(tmp_path / "idx", [corpus], model=tiny_llama, **common)
    assert reads() == {"s0.txt": 1, "s1.txt": 1, "s2.txt": 1, "r.jsonl": 1, "big.txt": 2}
    small[1].write_text("Small file 1 changed. " + "Mountains rise. " * 8)
    opens.clear()
    report = run_index(tmp_path / "idx", [corpus], **common).report
    assert report.indexed == ["c/s1.txt"] and report.unchanged == 4
    assert reads() == {"s0.txt": 1, "s1.txt": 1, "s2.txt": 1, "r.jsonl": 1, "big.txt": 1}
    big.write_text("Cells make proteins from genes. " * 100)
    opens.clear()
    report = run_index(tmp_path / "idx", [corpus], **common).report
    assert report.indexed == ["c/big.txt"] and reads()["big.txt"] == 2
    # and the chunks are those of a clean index of the same files
    run_index(tmp_path / "clean", [corpus], model=tiny_llama, **common)
    assert chunks_of(tmp_path / "idx") == chunks_of(tmp_path / "clean")


def test_commits_happen_as_commit_every_says(tiny_llama, tmp_path):
    """Issue 26.1: commits were spaced to at most a tenth of the run (each save rebuilt the
    BM25 part), so --commit-every 1 committed far less often. Now: one commit per file."""
    corpus = tmp_path / "c"
    corpus.mkdir()
    for i in range(8):
        (corpus / f"f{i}.txt").write_text(f"File {i} about rivers.")  # one chunk each
    report = run_index(
        tmp_path / "idx", [corpus], model=tiny_llama, root=str(tmp_path), commit_every=1
    ).report
    assert report.chunks_added == 8 and report.commits == 8
    files = json.loads((tmp_path / "idx" / "files.json").read_text())["files"]
    assert len(files) == 8 and all("partial" not in e for e in files.values())
