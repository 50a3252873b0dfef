"""files.json records the store version its entries describe (issue 26): a run that finds
that version takes each file's chunks from its entry and reads no chunk's metadata; any
other state (a run killed between the two writes, an edited files.json, chunks no entry
vouches for) reads the metadata of every chunk, as before."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("faiss")

from llm2vec_retrieval import cli  # noqa: E402
from llm2vec_retrieval.index import IndexStore  # noqa: E402


def make_index(tmp_path: Path, tiny_llama: str) -> tuple[Path, Path, list[str]]:
    corpus = tmp_path / "c"
    corpus.mkdir()
    for i in range(3):
        (corpus / f"f{i}.txt").write_text(f"File {i}. " + "Rivers flow into the sea. " * 12)
    idx = tmp_path / "idx"
    model = ["--model", tiny_llama, "--root", str(tmp_path), "--no-progress"]
    model += ["--chunk-tokens", "16", "--overlap", "4"]
    assert cli.main(["index", str(corpus), "--index", str(idx), *model]) == 0
    return corpus, idx, model


def files_json(idx: Path) -> dict:
    return json.loads((idx / "files.json").read_text())


def store_manifest(idx: Path) -> dict:
    return json.loads((idx / "store" / "manifest.json").read_text())


def spoil_metadata(idx: Path) -> None:
    """Make the metadata of the store's first segment unparseable (same size, so load still
    opens it): only a run that reads every chunk's metadata notices."""
    seg = sorted((idx / "store").glob("*.docs.arr"))[0]
    data = seg.read_bytes()
    at = data.index(b'"sha256": "')
    seg.write_bytes(data[:at] + b'"sha256": !' + data[at + 11 :])


def test_a_commit_records_the_store_version_and_the_next_run_reads_no_metadata(
    tmp_path, tiny_llama, capsys
):
    corpus, idx, model = make_index(tmp_path, tiny_llama)
    recorded = files_json(idx)
    assert recorded["store_version"] == store_manifest(idx)["manifest_sha256"]
    spoil_metadata(idx)
    new = tmp_path / "new"
    new.mkdir()
    (new / "note.txt").write_text("One small new file about mountains.")
    capsys.readouterr()
    assert cli.main(["index", str(new), "--index", str(idx), *model]) == 0
    assert "indexed 1 file(s)" in capsys.readouterr().out
    after = files_json(idx)
    assert sorted(after["files"]) == ["c/f0.txt", "c/f1.txt", "c/f2.txt", "new/note.txt"]
    assert after["store_version"] == store_manifest(idx)["manifest_sha256"]
    for name in ("c/f0.txt", "c/f1.txt", "c/f2.txt"):
        assert after["files"][name] == recorded["files"][name]  # untouched
    store = IndexStore.load(idx / "store")
    assert len(store) == sum(e["chunks"] for e in after["files"].values())
    assert store.get(["new/note.txt#0"])[0].text.startswith("One small new file")


def test_another_store_version_reads_every_chunk_as_before(tmp_path, tiny_llama, capsys):
    """files.json written by another commit than the store's (here: edited, as a run killed
    between the store's save and files.json would leave it): the metadata is read, so the
    damage is found; with the right version, the run goes through without reading it."""
    corpus, idx, model = make_index(tmp_path, tiny_llama)
    spoil_metadata(idx)
    body = files_json(idx)
    right = body["store_version"]
    body["store_version"] = "0" * 64
    (idx / "files.json").write_text(json.dumps(body))
    capsys.readouterr()
    assert cli.main(["index", str(corpus), "--index", str(idx), *model]) == 2
    assert "its meta are unreadable" in capsys.readouterr().err
    body["store_version"] = right
    (idx / "files.json").write_text(json.dumps(body))
    capsys.readouterr()
    assert cli.main(["index", str(corpus), "--index", str(idx), *model]) == 0
    assert "3 unchanged" in capsys.readouterr().out


def test_chunks_no_entry_vouches_for_leave_no_version(tmp_path, tiny_llama, capsys):
    """A store holding chunks of a file files.json has no entry for (not among this run's
    sources, so they stay): files.json cannot describe the store and records no version;
    the next runs read every chunk's metadata (and index the file again), until a commit
    of a run that found every chunk vouched for records it again."""
    corpus, idx, model = make_index(tmp_path, tiny_llama)
    body = files_json(idx)
    del body["files"]["c/f1.txt"], body["store_version"]
    (idx / "files.json").write_text(json.dumps(body))
    new = tmp_path / "new"
    new.mkdir()
    (new / "note.txt").write_text("Another small file.")
    assert cli.main(["index", str(new), "--index", str(idx), *model]) == 0
    after = files_json(idx)
    assert "store_version" not in after and "c/f1.txt" not in after["files"]
    capsys.readouterr()
    assert cli.main(["index", str(corpus), "--index", str(idx), *model]) == 0
    out = capsys.readouterr().out
    assert "indexed 1 file(s)" in out and "2 unchanged" in out  # f1's chunks, checked again
    assert "store_version" not in files_json(idx)  # this run started from such a store
    assert cli.main(["index", str(corpus), "--index", str(idx), *model]) == 0  # commits nothing
    assert "store_version" not in files_json(idx)
    (corpus / "f0.txt").write_text("File 0, changed.")
    assert cli.main(["index", str(corpus), "--index", str(idx), *model]) == 0
    final = files_json(idx)  # this run found every chunk vouched for: recorded again
    assert final["store_version"] == store_manifest(idx)["manifest_sha256"]
    assert sorted(final["files"]) == ["c/f0.txt", "c/f1.txt", "c/f2.txt", "new/note.txt"]
