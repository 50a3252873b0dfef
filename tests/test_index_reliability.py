"""Reliability of folder indexing (issue 23): a --rebuild killed at any save stage, links
and special files among the sources, a damaged store, the memory of chunking a large file.

Real subprocesses killed with SIGKILL at the save stages of `index.persistence` and the
indexer (made to pause there, and right after a commit, by tests/hooked_cli.py), real
files, links, FIFOs and index folders on the tiny random model.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from hooked_cli import index_command

from llm2vec_retrieval import cli

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("faiss")


def chunks_of(idx: Path) -> dict[str, tuple[str, dict]]:
    from llm2vec_retrieval.index import IndexStore

    store = IndexStore.load(idx / "store")
    return {r.id: (r.text, r.metadata) for r in store.get(store.ids, include_vectors=False)}


def popen_index(
    args: list[str],
    cwd: Path,
    env: dict,
    pause: str | None = None,
    pause_after_commit: float | None = None,
) -> subprocess.Popen:
    """`index` in a subprocess; ``pause``: ``STAGE:SECONDS``; ``pause_after_commit``: seconds
    to pause after each commit (printing "llm2vec-index-commit: ..." first; see
    tests/hooked_cli.py)."""
    return subprocess.Popen(
        [*index_command(pause, pause_after_commit), *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_stderr(proc: subprocess.Popen, prefix: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            raise AssertionError(f"the process ended before {prefix!r}: {proc.wait()}")
        if line.startswith(prefix):
            return
    raise AssertionError(f"timeout waiting for {prefix!r}")


def write_docs(folder: Path, n: int = 6) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"doc{i}.txt").write_text(
            f"Document {i}. " + "Rivers flood after heavy rain and cells make proteins. " * (2 + i)
        )
    return folder


# ---------------------------------------------------------------------- item 2: --rebuild
@pytest.fixture(scope="module")
def rebuild_case(tmp_path_factory, tiny_llama):
    """A corpus, its index with 16-token chunks, and a clean index of it with 24-token ones."""
    work = tmp_path_factory.mktemp("rebuild")
    corpus = write_docs(work / "corpus")
    common = ["--root", str(work), "--no-progress"]
    old = ["--model", tiny_llama, "--chunk-tokens", "16", "--overlap", "4", *common]
    assert cli.main(["index", str(corpus), "--index", str(work / "old"), *old]) == 0
    new = ["--model", tiny_llama, "--chunk-tokens", "24", "--overlap", "4", *common]
    assert cli.main(["index", str(corpus), "--index", str(work / "clean"), *new]) == 0
    assert chunks_of(work / "old").keys() != chunks_of(work / "clean").keys()
    return work, corpus


# Every point where the first commit of a rebuild can die: the manifest written, the store's
# save stages (persistence), files.json written, and after the whole commit.
REBUILD_STAGES = [
    "manifest_written",
    "index_written",
    "files_written",
    "before_swap",
    "backed_up",
    "swapped",
    "files_json_written",
    "after_commit",
]


@pytest.mark.slow  # one subprocess per stage: tens of seconds; make test-fast skips it
@pytest.mark.parametrize("stage", REBUILD_STAGES)
def test_rebuild_killed_at_any_save_stage_is_finished_by_the_next_run(
    rebuild_case, tmp_path, stage, capsys
):
    """Issue 23.2: a --rebuild with new chunking killed inside its first commit left the new
    options in llm2vec-index.json beside the old store; the next `index` said "0 indexed,
    N unchanged" and kept the old chunks. Now the next plain `index` gives what a clean
    build with the new options gives (same ids, texts and metadata)."""

    work, corpus = rebuild_case
    idx = tmp_path / "idx"
    shutil.copytree(work / "old", idx)
    args = [str(corpus), "--index", str(idx), "--no-progress", "--rebuild"]
    args += ["--chunk-tokens", "24", "--overlap", "4", "--commit-every", "1"]
    if stage == "after_commit":
        env, pause, after, marker = {}, None, 60.0, "llm2vec-index-commit:"
    else:
        env, pause, after, marker = {}, f"{stage}:60", None, f"llm2vec-save-stage: {stage}"
    proc = popen_index(args, work, env, pause, pause_after_commit=after)
    try:
        wait_stderr(proc, marker)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    capsys.readouterr()
    assert cli.main(["index", str(corpus), "--index", str(idx), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert chunks_of(idx) == chunks_of(work / "clean")
    manifest = json.loads((idx / "llm2vec-index.json").read_text())
    assert manifest["chunking"]["chunk_tokens"] == 24 and "rebuild_unfinished" not in manifest
    files = json.loads((idx / "files.json").read_text())["files"]
    assert sum(e["chunks"] for e in files.values()) == len(chunks_of(idx))
    # before its first commit ended the rebuild starts over; after it, the next run continues
    assert ("a --rebuild was stopped before its first commit" in err) == (stage != "after_commit")


def test_searching_a_stopped_rebuild_with_another_model_says_to_finish_it(
    tmp_path, tiny_llama, capsys
):
    """What a --rebuild with another --model leaves when killed inside its first commit
    (the new embedder and the marker in llm2vec-index.json, the old store; the kill test
    above makes this state for real): `search` says to finish the rebuild, not "pass
    --allow-mismatch"."""
    from llm2vec_retrieval.ingest.folder import REBUILD_KEY, IndexFolder, embedder_spec
    from llm2vec_retrieval.testing import make_tiny_checkpoint

    other = str(make_tiny_checkpoint(tmp_path / "other", "llama", seed=1))
    corpus = write_docs(tmp_path / "corpus", 2)
    idx = tmp_path / "idx"
    assert cli.main(["index", str(corpus), "--index", str(idx), "--model", tiny_llama]) == 0
    folder = IndexFolder(idx)
    manifest = folder.read_manifest()
    folder.write_manifest({**manifest, "embedder": embedder_spec(other, None), REBUILD_KEY: True})
    capsys.readouterr()
    assert cli.main(["search", "--index", str(idx), "rivers"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        "\n" not in err and "--rebuild of index" in err and "run `llm2vec-retrieval index`" in err
    )
    assert cli.main(["index", str(corpus), "--index", str(idx), "--no-progress"]) == 0
    assert cli.main(["search", "--index", str(idx), "rivers", "--json"]) == 0
    assert "rebuild_unfinished" not in json.loads((idx / "llm2vec-index.json").read_text())


# ---------------------------------------------------------------------- item 9: a damaged store
def test_missing_store_manifest_is_a_one_line_error_naming_it(tmp_path, tiny_llama, capsys):
    """Issue 23.9: with store/manifest.json deleted, `search` said "has no committed chunks
    yet" (and `index` silently started over). Both now name the missing file and the fix;
    --rebuild re-creates the index. A store folder removed while files.json lists files
    is named the same way."""
    corpus = write_docs(tmp_path / "corpus", 2)
    idx = tmp_path / "idx"
    base = ["index", str(corpus), "--index", str(idx), "--no-progress"]
    assert cli.main([*base, "--model", tiny_llama]) == 0
    (idx / "store" / "manifest.json").unlink()
    for argv in (
        ["search", "--index", str(idx), "rivers"],
        ["search", "--index", str(idx), "rivers", "--mode", "lexical"],
        ["info", "--index", str(idx)],
        base,
    ):
        capsys.readouterr()
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err, err
        assert str(idx / "store" / "manifest.json") + " is missing" in err and "--rebuild" in err
    assert cli.main([*base, "--rebuild"]) == 0
    assert cli.main(["search", "--index", str(idx), "rivers", "--json"]) == 0
    shutil.rmtree(idx / "store")
    capsys.readouterr()
    assert cli.main(["search", "--index", str(idx), "rivers"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{idx / 'store'} is missing although files.json lists 2 file(s)" in err
    assert "--rebuild" in err and "\n" not in err


# ---------------------------------------------------------------------- item 7: links
def link_tree(tmp_path: Path) -> Path:
    """corpus/ with a link to a file outside it (an /etc/passwd stand-in), a link to a
    folder outside it, and links to a file and a folder inside it."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("root:x:0:0 swordfish password line")
    (tmp_path / "outdir").mkdir()
    (tmp_path / "outdir" / "far.txt").write_text("A far away file about glaciers.")
    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    (corpus / "real.txt").write_text("Rivers flood after heavy rain.")
    (corpus / "sub" / "deep.md").write_text("Cells make proteins.")
    os.symlink("real.txt", corpus / "alias.txt")  # inside: indexed under its own name
    os.symlink("sub", corpus / "sublink")  # inside: its files are found in sub/
    os.symlink(tmp_path / "outside" / "secret.txt", corpus / "passwd.txt")
    os.symlink(tmp_path / "outdir", corpus / "farlink")
    return corpus


def indexed_sources(idx: Path) -> list[str]:
    return sorted(json.loads((idx / "files.json").read_text())["files"])


def test_links_out_of_the_sources_are_skipped_unless_followed(tmp_path, tiny_llama, capsys):
    """Issue 23.7: `ln -s /etc/passwd fs/passwd.txt; index fs` indexed and served
    /etc/passwd. Links that lead outside the sources are skipped with a note unless
    --follow-symlinks (recorded: later runs keep it until --no-follow-symlinks, which
    removes what the links brought); links inside the sources work as before."""
    corpus = link_tree(tmp_path)
    idx = tmp_path / "idx"
    base = ["index", str(corpus), "--index", str(idx), "--root", str(tmp_path), "--no-progress"]
    capsys.readouterr()
    assert cli.main([*base, "--model", tiny_llama]) == 0
    err = capsys.readouterr().err
    inside = ["corpus/alias.txt", "corpus/real.txt", "corpus/sub/deep.md"]
    assert indexed_sources(idx) == inside
    hint = "outside the sources ({}); pass --follow-symlinks to index it"
    secret = tmp_path / "outside" / "secret.txt"
    assert f"skipped corpus/passwd.txt: symbolic link to a file {hint.format(secret)}" in err
    assert (
        f"skipped corpus/farlink: symbolic link to a folder {hint.format(tmp_path / 'outdir')}"
        in err
    )
    assert "sublink" not in err and "alias" not in err
    out = json.loads(_search(capsys, idx, "swordfish password"))
    assert all("swordfish" not in r["text"] for r in out["results"])

    assert cli.main([*base, "--follow-symlinks"]) == 0
    assert indexed_sources(idx) == sorted([*inside, "corpus/farlink/far.txt", "corpus/passwd.txt"])
    capsys.readouterr()
    assert cli.main(base) == 0  # recorded
    assert "1 unchanged" not in capsys.readouterr().out
    assert len(indexed_sources(idx)) == 5
    assert cli.main([*base, "--no-follow-symlinks"]) == 0
    assert indexed_sources(idx) == inside
    assert all("swordfish" not in text for text, _ in chunks_of(idx).values())


def _search(capsys, idx: Path, query: str) -> str:
    capsys.readouterr()
    assert cli.main(["search", "--index", str(idx), query, "--mode", "lexical", "--json"]) == 0
    return capsys.readouterr().out


def test_encode_corpus_walks_files_with_the_same_link_policy(tmp_path):
    """encode-corpus finds files with the index command's walker: the same links refused
    (or followed with follow_symlinks), .parquet tables after the other files."""
    from llm2vec_retrieval.distributed.plan import find_sources

    corpus = link_tree(tmp_path)
    (corpus / "t.parquet").write_bytes(b"PAR1")  # found, not read
    os.symlink(tmp_path / "outside" / "secret.txt", corpus / "x.parquet")
    files, refused = find_sources([corpus], tmp_path)
    assert [f.src for f in files] == [
        "corpus/alias.txt",
        "corpus/real.txt",
        "corpus/sub/deep.md",
        "corpus/t.parquet",
    ]
    reasons = dict(refused)
    assert set(reasons) == {"corpus/farlink", "corpus/passwd.txt", "corpus/x.parquet"}
    assert all("pass --follow-symlinks" in r for r in reasons.values())
    files, refused = find_sources([corpus], tmp_path, follow_symlinks=True)
    assert not refused
    assert [f.src for f in files][-2:] == ["corpus/t.parquet", "corpus/x.parquet"]
    assert "corpus/farlink/far.txt" in [f.src for f in files]


# ---------------------------------------------------------------------- item 9: special files
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifos_devices_dangling_links_and_loops_are_skipped_with_a_note(
    tmp_path, tiny_llama, capsys
):
    """Issue 23.9: FIFOs, links to devices, dangling links and link loops were left out
    without a word (binary files get a note). Each is reported now; a FIFO or a dangling
    link named on the command line too."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "good.txt").write_text("Rivers flood after heavy rain.")
    os.mkfifo(corpus / "pipe.txt")
    os.symlink("/dev/null", corpus / "null.md")
    os.symlink(tmp_path / "gone.txt", corpus / "dangling.txt")
    os.symlink("loop2.txt", corpus / "loop1.txt")
    os.symlink("loop1.txt", corpus / "loop2.txt")
    os.mkfifo(corpus / "pipe.py")  # a suffix that is not indexed: ignored as always
    base = ["--index", str(tmp_path / "idx"), "--root", str(tmp_path), "--no-progress"]
    capsys.readouterr()
    assert cli.main(["index", str(corpus), *base, "--model", tiny_llama]) == 0
    captured = capsys.readouterr()
    assert "indexed 1 file(s)" in captured.out and "5 skipped" in captured.out
    skipped = {
        line.split(": ", 1)[0][len("skipped ") :]: line.split(": ", 1)[1]
        for line in captured.err.splitlines()
        if line.startswith("skipped ")
    }
    assert skipped == {
        "corpus/pipe.txt": "not a regular file: a FIFO (named pipe)",
        "corpus/null.md": "not a regular file: a character device",
        "corpus/dangling.txt": f"dangling symbolic link (to {tmp_path / 'gone.txt'})",
        "corpus/loop1.txt": "symbolic link loop",
        "corpus/loop2.txt": "symbolic link loop",
    }
    new = ["--index", str(tmp_path / "new"), "--model", tiny_llama]
    assert cli.main(["index", str(corpus / "pipe.txt"), *new]) == 2
    err = capsys.readouterr().err
    assert "empty corpus" in err and "not a regular file: a FIFO" in err and "\n" not in err.strip()
    assert cli.main(["index", str(corpus / "dangling.txt"), *new]) == 2
    err = capsys.readouterr().err.strip()
    assert "source not found" in err and "dangling symbolic link" in err
