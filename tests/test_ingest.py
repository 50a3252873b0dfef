"""Ingest hardening (issue 14): windowed chunking of large files, resuming inside a file,
index folders and odd files among the sources, files.json recovery, file modes.

Real files and real index folders on the tiny random model; `test_cli.py` has the
subprocess ones (kills, interrupts, concurrent search).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llm2vec_retrieval import cli
from llm2vec_retrieval.ingest import Indexer, IndexFolder, IndexSettings
from llm2vec_retrieval.ingest.chunking import Position, chunk_spans, iter_chunks
from llm2vec_retrieval.ingest.readers import open_text

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("faiss")

WORDS = (
    "the river floods after rain ünïcode 😀 immune cells proteins a.b,c Über ﬁne tab\tsep "
    "new\nline double\n\nbreak   spaces"
).split(" ")


def corpus_text(n_words: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def metaspace_tokenizer(text: str):
    """A SentencePiece-style tokenizer (a "▁" is prepended: the start of a window matters)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.train_from_iterator([text], trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


@pytest.fixture(scope="module")
def tokenizers(tiny_encoder):
    return {
        "byte-level": tiny_encoder.tokenizer,
        "metaspace": metaspace_tokenizer(corpus_text(3000)),
    }


@pytest.mark.parametrize("name", ["byte-level", "metaspace"])
def test_windowed_chunking_equals_whole_text(tokenizers, tmp_path, name):
    """Issue 14.6: tokenizing a window at a time gives the chunks of the whole text at once,
    from a file or a string, and continues exactly at any chunk's `next` position."""
    tok = tokenizers[name]
    text = corpus_text(6000, seed=1)
    (tmp_path / "t.txt").write_text(text, encoding="utf-8", newline="")
    ref = chunk_spans(tok, [text], 16, 4)[0]
    for window in (512, 1500):
        with open_text(tmp_path / "t.txt") as f:
            got = list(iter_chunks(tok, [f], 16, 4, window_chars=window))
        assert len(text) > 20 * window
        assert [c.span for c in got] == ref
        assert all(c.text == text[c.span.start : c.span.end] for c in got)
        assert got == list(iter_chunks(tok, [text], 16, 4, window_chars=window))
        for k in range(0, len(got) - 1, 107):  # resumed at some 20 positions across the text
            with open_text(tmp_path / "t.txt") as f:
                rest = list(iter_chunks(tok, [f], 16, 4, window_chars=window, start=got[k].next))
            assert [c.span for c in rest] == ref[k + 1 :], k


def test_windowed_chunking_of_many_segments(tokenizers):
    """Records (short ones batched, long ones windowed) chunk as one batched call does."""
    tok = tokenizers["metaspace"]
    text = corpus_text(8000, seed=2)
    segs = [text[i * 97 : (i + 1) * 97 + (3000 if i % 40 == 0 else 0)] for i in range(150)]
    segs[7] = ""
    ref = [(i, sp) for i, spans in enumerate(chunk_spans(tok, segs, 8, 2)) for sp in spans]
    got = list(iter_chunks(tok, segs, 8, 2, window_chars=600))
    assert [(c.segment, c.span) for c in got] == ref
    for k in range(0, len(got) - 1, 53):
        rest = list(iter_chunks(tok, segs, 8, 2, window_chars=600, start=got[k].next))
        assert [(c.segment, c.span) for c in rest] == ref[k + 1 :]
    assert list(iter_chunks(tok, segs, 8, 2, start=Position(len(segs), 0, 0))) == []


MEMORY_CHILD = textwrap.dedent(
    """
    import sys
    from transformers import AutoTokenizer
    from llm2vec_retrieval.ingest.chunking import iter_chunks
    from llm2vec_retrieval.ingest.readers import open_text, scan_text_file
    from llm2vec_retrieval.ingest.records import chunk_record

    def peak_mb():  # this process's peak RSS (getrusage's ru_maxrss keeps the parent's)
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) // 1024

    tok = AutoTokenizer.from_pretrained(sys.argv[1])
    tok("warm up", return_offsets_mapping=True)
    before = peak_mb()
    # what the indexer does with a .txt larger than its window: check and hash it in
    # blocks, then stream it to the chunker and make each chunk's record
    sha, size = scan_text_file(sys.argv[2])
    n = end = 0
    with open_text(sys.argv[2]) as f:
        for chunk in iter_chunks(tok, [f], 256, 32):
            cid, meta = chunk_record("big.txt", sha, n, chunk, [{}])
            n, end = n + 1, meta["end"]
    print(n, end, size, peak_mb() - before)
    """
)


@pytest.mark.slow  # tokenizing 20 MB takes about 20 s on a 2-core machine (any HF tokenizer)
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmHWM (Linux)")
def test_chunking_memory_does_not_grow_with_the_file(tiny_llama, tmp_path):
    """Issue 14.6: a 20 MB file took 5.4 GB (offsets of every token at once); issue 23.9
    asked again. The indexer's path for a large .txt (checked, hashed and chunked in a
    subprocess; its peak RSS, so the tokenizer's own memory counts) stays within 100 MB
    over the baseline on a 20 MB file, through its last character: 50 MB with the default
    window of 64 Ki characters (256 Ki: 190 MB; whole-text tokenization: 7.6 GB).
    The peak is VmHWM: the child's ru_maxrss starts at the parent's peak (Linux keeps it
    across exec), which under pytest hid any growth below the size of the test process."""
    block = corpus_text(180_000, seed=3) + "\n"
    repeats = -(-20_000_000 // len(block.encode("utf-8")))
    path = tmp_path / "big.txt"
    path.write_text(block * repeats, encoding="utf-8")
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, tiny_llama, str(path)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"},
    )
    assert out.returncode == 0, out.stderr
    n, end, size, growth_mb = map(int, out.stdout.split())
    assert size >= 20_000_000 and n > 10_000
    assert end == len((block * repeats).rstrip())  # the last chunk ends where the text does
    assert growth_mb < 100, growth_mb


def index_chunks(idx: Path) -> dict[str, tuple[str, dict]]:
    from llm2vec_retrieval.index import IndexStore

    store = IndexStore.load(idx / "store")
    return {r.id: (r.text, r.metadata) for r in store.get(store.ids, include_vectors=False)}


def run_index(idx: Path, sources, model=None, **settings) -> Indexer:
    indexer = Indexer(
        IndexFolder(idx), IndexSettings(model=model, **settings), show_progress_bar=False
    )
    indexer.run([str(s) for s in sources])
    return indexer


def test_large_file_is_streamed_and_committed_inside(tiny_llama, tmp_path):
    """A .txt file larger than the window: streamed, committed in groups inside it, chunks
    identical (ids, offsets, texts) to the whole-file way; the progress is in bytes."""
    corpus = tmp_path / "c"
    corpus.mkdir()
    # 12 k characters, about 390 chunks: 12 windows of 1 Ki characters, 6 groups of 64 chunks
    (corpus / "big.txt").write_text(corpus_text(2000, seed=4), encoding="utf-8")
    (corpus / "small.md").write_text("A small file about rivers.\n")
    common = dict(root=str(tmp_path), chunk_tokens=32, overlap=8, commit_every=64)
    streamed = run_index(tmp_path / "a", [corpus], tiny_llama, window_chars=1024, **common)
    whole = run_index(tmp_path / "b", [corpus], tiny_llama, window_chars=10**9, **common)
    assert (corpus / "big.txt").stat().st_size > 10 * 1024
    assert streamed.report.commits > 3 and whole.report.commits == 2  # after each file
    assert index_chunks(tmp_path / "a") == index_chunks(tmp_path / "b")
    files = json.loads((tmp_path / "a" / "files.json").read_text())["files"]
    assert all("partial" not in e for e in files.values())
    again = run_index(tmp_path / "a", [corpus], window_chars=1024, **common)
    assert again.report.unchanged == 2 and not again.report.indexed


def test_unfinished_large_file_continues_where_it_stopped(tiny_llama, tmp_path):
    """A run stopped inside a large file (here: the store and files.json as a commit inside
    the file leaves them) continues at the recorded position, embedding only the rest."""
    corpus = tmp_path / "c"
    corpus.mkdir()
    # 12 k characters, about 390 chunks: the cut after 150 of them is windows deep inside it
    (corpus / "big.txt").write_text(corpus_text(2000, seed=5), encoding="utf-8")
    common = dict(root=str(tmp_path), chunk_tokens=32, overlap=8, window_chars=1024)
    full = run_index(tmp_path / "a", [corpus], tiny_llama, **common)
    total = full.report.chunks_added
    # Cut the index back to its first 150 chunks, as a commit inside the file records them.
    from llm2vec_retrieval.index import IndexStore

    store = IndexStore.load(tmp_path / "a" / "store")
    chunks = list(
        iter_chunks(
            full_tokenizer(tiny_llama),
            [(corpus / "big.txt").read_text(encoding="utf-8")],
            32,
            8,
            window_chars=1024,
        )
    )
    assert chunks[149].next.char > 3 * 1024 and len(chunks) > 300
    store.delete([f"c/big.txt#{n}" for n in range(150, total)])
    store.save(tmp_path / "a" / "store")
    folder = IndexFolder(tmp_path / "a")
    entry = folder.read_files()["c/big.txt"]
    tokens = sum(c.span.tokens for c in chunks[:150])
    folder.write_files(
        {
            "c/big.txt": {
                **entry,
                "chunks": 150,
                "tokens": tokens,
                "partial": chunks[149].next.to_dict(),
            }
        }
    )
    resumed = run_index(tmp_path / "a", [corpus], **common)
    assert resumed.report.chunks_added == total - 150
    clean = run_index(tmp_path / "b", [corpus], tiny_llama, **common)
    assert index_chunks(tmp_path / "a") == index_chunks(tmp_path / "b")
    assert clean.report.chunks_added == total
    assert "partial" not in folder.read_files()["c/big.txt"]


def full_tokenizer(model: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model)


def test_index_folders_among_the_sources_are_skipped(tiny_llama, tmp_path, capsys):
    """Issue 14.2: another index folder (or a saved store) inside a source was indexed as
    documents (its files); every one is now skipped with a reason."""
    import numpy as np

    from llm2vec_retrieval.index import IndexStore

    corpus = tmp_path / "corpus"
    (corpus / "notes").mkdir(parents=True)
    (corpus / "notes" / "a.txt").write_text("Rivers flood after heavy rain.")
    (corpus / "b.md").write_text("Vaccines train the immune system.")
    model = ["--model", tiny_llama, "--root", str(tmp_path)]
    assert (
        cli.main(["index", str(corpus / "notes"), "--index", str(corpus / "old-index"), *model])
        == 0
    )
    saved = IndexStore(4)
    saved.add(["x"], np.ones((1, 4)), texts=["a stored text"])
    saved.save(corpus / "saved-store")  # a bare store, as LangChain's save_local writes one
    capsys.readouterr()
    assert cli.main(["index", str(corpus), "--index", str(tmp_path / "idx"), *model]) == 0
    err = capsys.readouterr().err
    assert "skipped corpus/old-index: an llm2vec-retrieval index folder" in err
    assert "skipped corpus/saved-store: a saved index store" in err
    sources = {m["source"] for _, m in index_chunks(tmp_path / "idx").values()}
    assert sources == {"corpus/b.md", "corpus/notes/a.txt"}
    # named directly: the store's own file is refused too
    capsys.readouterr()
    doc = corpus / "old-index" / "store" / "manifest.json"
    assert (
        cli.main(["index", str(doc), str(corpus / "b.md"), "--index", str(tmp_path / "i2"), *model])
        == 0
    )
    assert "manifest.json: inside a saved index store" in capsys.readouterr().err


def test_lone_surrogates_in_jsonl_are_repaired(tiny_llama, tmp_path, capsys):
    """Issue 14.3: an escaped lone surrogate in a .jsonl record aborted every `index` run
    with a tokenizer TypeError. Now the text (and fields) hold U+FFFD, with a note."""
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "r.jsonl").write_text(
        '{"text": "cut emoji \\ud83d here", "tag": "x\\udcff"}\n{"text": "a fine record"}\n'
    )
    args = ["index", str(corpus), "--index", str(tmp_path / "idx"), "--model", tiny_llama]
    args += ["--root", str(tmp_path)]
    assert cli.main(args) == 0
    err = capsys.readouterr().err
    assert "note c/r.jsonl: 1 record(s) contained lone surrogates" in err
    texts = {m["line"]: (t, m) for t, m in index_chunks(tmp_path / "idx").values()}
    assert texts[1][0] == "cut emoji \ufffd here" and texts[1][1]["tag"] == "x\ufffd"
    assert cli.main(["search", str(tmp_path / "idx"), "emoji", "--json"]) == 0
    assert "\ufffd" in capsys.readouterr().out
    assert cli.main(args) == 0
    assert "1 unchanged" in capsys.readouterr().out


def test_deeply_nested_json_line_skips_that_line(tiny_llama, tmp_path, capsys):
    """Issue 14.5: a source line nested 100k deep raised RecursionError; now that line is
    skipped with a reason and the file's other records are indexed."""
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "r.jsonl").write_text(
        '{"text": "first record"}\n' + "[" * 100_000 + '\n{"text": "third record"}\n'
    )
    assert (
        cli.main(["index", str(corpus), "--index", str(tmp_path / "idx"), "--model", tiny_llama])
        == 0
    )
    err = capsys.readouterr().err
    assert "1 line(s) skipped: JSON nested too deeply (line 2)" in err
    assert sorted(m["line"] for _, m in index_chunks(tmp_path / "idx").values()) == [1, 3]


def test_deeply_nested_index_files_are_one_line_errors(tiny_llama, tmp_path, capsys):
    """Issue 14.5: every index file nested 100k deep: a one-line error, no traceback."""
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "a.txt").write_text("Rivers flood after rain.")
    idx = tmp_path / "idx"
    assert cli.main(["index", str(corpus), "--index", str(idx), "--model", tiny_llama]) == 0
    deep = "[" * 100_000

    def error(*args: str) -> str:
        capsys.readouterr()
        assert cli.main(list(args)) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err
        return err

    for name, commands in (
        (
            "llm2vec-index.json",
            (["info", "--index", str(idx)], ["search", "--index", str(idx), "q"]),
        ),
        (
            "store/manifest.json",
            (["info", "--index", str(idx)], ["search", "--index", str(idx), "q"]),
        ),
        ("files.json", (["info", "--index", str(idx)],)),
    ):
        path = idx / name
        good = path.read_bytes()
        path.write_text(deep)
        for command in commands:
            assert "nested too deeply" in error(*command), (name, command)
        path.write_bytes(good)


def test_corrupt_or_missing_files_json_is_rebuilt_from_the_store(tiny_llama, tmp_path, capsys):
    """Issue 14.15: a corrupt files.json made `index` say "rebuild" although the store was
    intact. It is rebuilt from the store: files whose stored chunks still match are kept
    (not re-embedded); a changed file is re-indexed."""
    corpus = tmp_path / "c"
    corpus.mkdir()
    for i in range(3):
        (corpus / f"f{i}.txt").write_text(f"File {i}. " + "Rivers flow into the sea. " * 20)
    idx = tmp_path / "idx"
    args = ["index", str(corpus), "--index", str(idx), "--model", tiny_llama]
    args += ["--chunk-tokens", "16", "--overlap", "4", "--root", str(tmp_path)]
    assert cli.main(args) == 0
    before = index_chunks(idx)
    files_before = json.loads((idx / "files.json").read_text())["files"]
    capsys.readouterr()
    assert cli.main(["info", str(idx)]) == 0
    info_before = capsys.readouterr().out

    (idx / "files.json").write_text("{not json")
    capsys.readouterr()
    assert cli.main(["info", str(idx)]) == 2
    err = capsys.readouterr().err
    assert "files.json is unreadable" in err and "run `llm2vec-retrieval index`" in err
    (corpus / "f2.txt").write_text("File 2 changed. " + "Mountains rise. " * 20)
    assert cli.main(args) == 0
    out, err = capsys.readouterr()
    assert "rebuilt from the store" in err
    assert "indexed 1 file(s)" in out and "2 unchanged" in out
    files = json.loads((idx / "files.json").read_text())["files"]
    for name in ("c/f0.txt", "c/f1.txt"):
        assert {k: v for k, v in files[name].items() if k != "indexed_at"} == {
            k: v for k, v in files_before[name].items() if k != "indexed_at"
        }
    after = index_chunks(idx)
    assert {k: v for k, v in after.items() if "f2" not in k} == {
        k: v for k, v in before.items() if "f2" not in k
    }
    (idx / "files.json").unlink()  # missing: the same, every file is checked, none re-embedded
    capsys.readouterr()
    assert cli.main(args) == 0
    assert "indexed 0 file(s) (0 chunks, 0 tokens), 3 unchanged" in capsys.readouterr().out
    assert cli.main(["info", str(idx)]) == 0
    info_after = capsys.readouterr().out
    assert f"chunks:            {len(index_chunks(idx))}\n" in info_after
    assert [x for x in info_after.splitlines() if x.startswith("files:")] == [
        x for x in info_before.splitlines() if x.startswith("files:")
    ]


def test_index_files_get_the_mode_of_plain_new_files(tiny_llama, tmp_path):
    """Issue 14.14: files.json and llm2vec-index.json were 0600 while store/ was 0644."""
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "a.txt").write_text("Rivers flood after rain.")
    old = os.umask(0o027)
    try:
        assert (
            cli.main(
                ["index", str(corpus), "--index", str(tmp_path / "idx"), "--model", tiny_llama]
            )
            == 0
        )
    finally:
        os.umask(old)
    modes = {
        p.relative_to(tmp_path / "idx").as_posix(): p.stat().st_mode & 0o777
        for p in (tmp_path / "idx").rglob("*")
    }
    assert modes["files.json"] == modes["llm2vec-index.json"] == modes["store/manifest.json"]
    assert {m for name, m in modes.items() if (tmp_path / "idx" / name).is_file()} == {0o640}
    assert {m for name, m in modes.items() if (tmp_path / "idx" / name).is_dir()} == {0o750}


def test_one_bad_file_says_why_the_corpus_is_empty(tiny_llama, tmp_path, capsys):
    """Issue 14.15: a single unreadable file gave "empty corpus" without the skip reason."""
    (tmp_path / "bad.txt").write_bytes(b"\x89PNG\x00\x00binary")
    (tmp_path / "notes.py").write_text("print()")
    capsys.readouterr()
    for source, reason in (
        ("bad.txt", "bad.txt: binary file (NUL bytes)"),
        ("notes.py", "notes.py: unsupported file type '.py'"),
    ):
        args = ["index", str(tmp_path / source), "--index", str(tmp_path / "idx")]
        assert cli.main([*args, "--model", tiny_llama, "--root", str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: empty corpus") and reason in err and "\n" not in err
        assert not (tmp_path / "idx").exists()
