"""The command line on a tiny random model: index, re-index, search, info, errors, kill + resume.

Subprocesses run the real `python -m llm2vec_retrieval`; the other checks call `cli.main`
in-process (the model stays loaded, which keeps the suite fast on small machines).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hooked_cli import index_command

from llm2vec_retrieval import cli

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("faiss")


def run_cli(
    *args: str, cwd: Path, env: dict | None = None, timeout: float = 240
) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "llm2vec_retrieval", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def main_json(capsys, *args: str) -> dict:
    capsys.readouterr()
    assert cli.main(list(args)) == 0
    return json.loads(capsys.readouterr().out)


def write_corpus(folder: Path) -> Path:
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    (folder / "a.md").write_text(
        "# Vaccines\n\nVaccines expose the immune system to a harmless piece of a pathogen so it can "
        "respond faster later. Cells, proteins and genes are studied in biology and medicine.\n"
    )
    (folder / "sub" / "b.txt").write_text(
        "Heavy rain and melting snow raise river levels until the water spills over the banks.\n"
    )
    (folder / "c.jsonl").write_text(
        json.dumps(
            {"text": "The quick brown fox jumps over the lazy dog.", "lang": "en", "year": 2024}
        )
        + "\n"
        + json.dumps({"text": "Search indexes store vectors with ids.", "lang": "fr", "year": 2020})
        + "\n"
    )
    (folder / "d.csv").write_text(
        "id,text\n1,Rivers flow into the sea\n2,Mountains rise above the clouds\n"
    )
    (folder / "binary.txt").write_bytes(b"\x89PNG\x00\x00\x01binary")
    (folder / "ignored.py").write_text(
        "print('not indexed')\n"
    )  # unsupported suffix inside a folder: ignored
    return folder


@pytest.fixture(scope="module")
def model(tiny_llama) -> str:
    return tiny_llama


@pytest.fixture(scope="module")
def other_model(tmp_path_factory) -> str:
    from llm2vec_retrieval.testing import make_tiny_checkpoint

    return str(make_tiny_checkpoint(tmp_path_factory.mktemp("tiny2") / "tiny2", "llama", seed=1))


@pytest.fixture(scope="module")
def built(tmp_path_factory, model):
    """A corpus indexed by a real subprocess: (workdir, index dir, completed process)."""
    work = tmp_path_factory.mktemp("work")
    write_corpus(work / "corpus")
    proc = run_cli(
        "index",
        "corpus",
        "--index",
        "idx",
        "--model",
        model,
        "--chunk-tokens",
        "16",
        "--overlap",
        "4",
        cwd=work,
    )
    return work, work / "idx", proc


def test_index_subprocess(built):
    work, idx, proc = built
    assert proc.returncode == 0, proc.stderr
    assert "indexed 4 file(s)" in proc.stdout
    assert "skipped corpus/binary.txt: binary file" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "ignored.py" not in proc.stderr
    manifest = json.loads((idx / "llm2vec-index.json").read_text())
    assert manifest["root"] == str(work)
    assert manifest["chunking"] == {
        "chunk_tokens": 16,
        "overlap": 4,
        "text_column": "text",
        "text_field": "text",
    }
    files = json.loads((idx / "files.json").read_text())["files"]
    assert sorted(files) == ["corpus/a.md", "corpus/c.jsonl", "corpus/d.csv", "corpus/sub/b.txt"]
    store = json.loads((idx / "store" / "manifest.json").read_text())
    assert store["count"] == sum(f["chunks"] for f in files.values()) > 4


def test_search_json(built, capsys):
    work, idx, _ = built
    out = main_json(
        capsys,
        "search",
        str(idx),
        "fox",
        "-k",
        "50",
        "--json",
        "--filter",
        "source=corpus/c.jsonl",
        "--filter",
        "year>=2021",
    )
    assert out["instruction"].startswith("Given a web search query")
    results = out["results"]
    assert results and all(
        r["source"] == "corpus/c.jsonl" and r["metadata"]["year"] == 2024 for r in results
    )
    assert [r["rank"] for r in results] == list(range(1, len(results) + 1))
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    record = "The quick brown fox jumps over the lazy dog."
    for r in results:  # chunks are exact substrings, with their offsets
        assert r["id"] == f"corpus/c.jsonl#{r['chunk']}"
        assert record[r["start"] : r["end"]] == r["text"]
        assert r["metadata"]["line"] == 1


def test_search_text_and_info(built, capsys):
    work, idx, _ = built
    assert cli.main(["search", str(idx), "rivers", "-k", "3"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n[") + out.startswith("[") == 3
    assert "corpus/" in out
    info = main_json(capsys, "info", str(idx), "--json")
    files = json.loads((idx / "files.json").read_text())["files"]
    assert info["files"] == 4 and info["chunks"] == sum(f["chunks"] for f in files.values())
    assert info["kind"] == "flat" and info["pooling"] == "mean" and info["dim"] == 32
    assert info["model_path"] and info["size_bytes"] > 0
    assert info["query_instruction"].startswith("Given a web search query")
    assert cli.main(["info", str(idx)]) == 0
    text = capsys.readouterr().out
    assert "chunks:" in text and "size on disk:" in text and "flat (cosine, dim 32)" in text


def test_the_index_records_the_fusion_its_searches_use(tmp_path, model, capsys):
    from llm2vec_retrieval.index.fusion import default_hybrid

    corpus = write_corpus(tmp_path / "corpus")
    idx = tmp_path / "idx"
    args = ["index", str(corpus), "--index", str(idx), "--model", model]
    args += ["--chunk-tokens", "16", "--overlap", "4"]
    assert cli.main(args) == 0
    manifest_path = idx / "llm2vec-index.json"
    manifest = json.loads(manifest_path.read_text())
    assert manifest["hybrid"] == default_hybrid()
    info = main_json(capsys, "info", "--index", str(idx), "--json")
    assert info["hybrid"] == default_hybrid()

    def search(*extra):
        out = main_json(
            capsys, "search", "--index", str(idx), "rivers flow", "-k", "4", "--json", *extra
        )
        return out, [r["id"] for r in out["results"]]

    # an index that records lexical-only weighting searches with it unless told otherwise
    manifest["hybrid"] = {"fusion": "alpha", "alpha": 0.0}
    manifest_path.write_text(json.dumps(manifest))
    out, ids = search()
    assert out["fusion"] == "alpha" and out["alpha"] == 0.0
    lexical, _ = search("--mode", "lexical")
    matching = [r["id"] for r in lexical["results"] if r["score"] > 0]
    assert matching and ids[: len(matching)] == matching
    out, _ = search("--fusion", "rrf")
    assert out["fusion"] == "rrf"
    out, _ = search("--alpha", "1.0")  # an alpha alone keeps the recorded (weighted) fusion
    assert out["fusion"] == "alpha" and out["alpha"] == 1.0
    capsys.readouterr()
    assert cli.main(["info", "--index", str(idx)]) == 0
    assert "hybrid fusion:     alpha, alpha 0.0 (dense weight)" in capsys.readouterr().out
    # the record stays across runs; an index that has none (older versions) gets the default
    assert cli.main(args) == 0
    assert json.loads(manifest_path.read_text())["hybrid"] == {"fusion": "alpha", "alpha": 0.0}
    del manifest["hybrid"]
    manifest_path.write_text(json.dumps(manifest))
    out, _ = search()
    assert (out["fusion"], out.get("alpha", default_hybrid()["alpha"])) == tuple(
        default_hybrid().values()
    )
    assert cli.main(args) == 0
    assert json.loads(manifest_path.read_text())["hybrid"] == default_hybrid()


def chunks_of(idx: Path) -> dict[str, tuple[str, dict]]:
    from llm2vec_retrieval.index import IndexStore

    store = IndexStore.load(idx / "store")
    return {r.id: (r.text, r.metadata) for r in store.get(store.ids, include_vectors=False)}


def test_reindex_after_edit_and_delete(tmp_path, model, capsys):
    corpus = write_corpus(tmp_path / "corpus")
    idx = tmp_path / "idx"
    base = [
        "--index",
        str(idx),
        "--model",
        model,
        "--root",
        str(tmp_path),
        "--chunk-tokens",
        "16",
        "--overlap",
        "4",
    ]
    assert cli.main(["index", str(corpus), *base]) == 0
    first = chunks_of(idx)
    n_b = sum(1 for t, m in first.values() if m["source"] == "corpus/sub/b.txt")
    n_d = sum(1 for t, m in first.values() if m["source"] == "corpus/d.csv")

    capsys.readouterr()
    assert cli.main(["index", str(corpus), "--index", str(idx)]) == 0  # nothing changed
    assert "indexed 0 file(s)" in capsys.readouterr().out
    assert chunks_of(idx) == first

    (corpus / "sub" / "b.txt").write_text(
        "Zebras graze on the savanna grass while lions sleep in the shade of trees.\n"
    )
    (corpus / "d.csv").unlink()
    assert cli.main(["index", str(corpus), "--index", str(idx)]) == 0
    out = capsys.readouterr().out
    assert "indexed 1 file(s)" in out and "1 removed" in out and "2 unchanged" in out
    second = chunks_of(idx)
    assert not any(m["source"] == "corpus/d.csv" for _, m in second.values())
    new_b = {i: (t, m) for i, (t, m) in second.items() if m["source"] == "corpus/sub/b.txt"}
    assert len(new_b) != n_b or any(t not in first.get(i, ("",))[0] for i, (t, _) in new_b.items())
    assert [new_b[f"corpus/sub/b.txt#{i}"][1]["chunk"] for i in range(len(new_b))] == list(
        range(len(new_b))
    )
    assert len(second) == len(first) - n_b - n_d + len(new_b)
    files = json.loads((idx / "files.json").read_text())["files"]
    assert sorted(files) == ["corpus/a.md", "corpus/c.jsonl", "corpus/sub/b.txt"]
    assert sum(f["chunks"] for f in files.values()) == len(second)
    # the changed content is what search returns for that file
    out = main_json(
        capsys,
        "search",
        str(idx),
        "zebras",
        "-k",
        "20",
        "--json",
        "--filter",
        "source=corpus/sub/b.txt",
    )
    texts = [r["text"] for r in out["results"]]
    assert (
        len(texts) == len(new_b)
        and any("Zebras" in t for t in texts)
        and not any("river" in t for t in texts)
    )
    # numeric comparisons and != on chunk positions
    out = main_json(
        capsys,
        "search",
        str(idx),
        "q",
        "-k",
        "100",
        "--json",
        "--filter",
        "chunk>=2",
        "--filter",
        "chunk!=3",
    )
    assert out["results"] and all(r["chunk"] >= 2 and r["chunk"] != 3 for r in out["results"])


def test_errors_are_one_line(tmp_path, model, other_model, built, capsys):
    work, idx, _ = built

    def error(*args: str) -> str:
        capsys.readouterr()
        assert cli.main(list(args)) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
        return err

    assert "index folder not found" in error("search", "--index", str(tmp_path / "missing"), "q")
    assert "index folder not found" in error("info", "--index", str(tmp_path / "missing"))
    msg = error("search", "--index", str(idx), "q", "--model", other_model)
    assert "another embedder" in msg and "--allow-mismatch" in msg
    allow = ["search", "--index", str(idx), "q", "--model", other_model, "--allow-mismatch"]
    assert cli.main([*allow, "-k", "1"]) == 0
    assert "--rebuild" in error(
        "index", str(work / "corpus"), "--index", str(idx), "--model", other_model
    )
    assert "bad filter" in error("search", "--index", str(idx), "q", "--filter", "no-operator")
    assert "bad filter" in error("search", "--index", str(idx), "q", "--filter", "chunk>=")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "blank.txt").write_text("   \n")
    assert "empty corpus" in error(
        "index", str(tmp_path / "empty"), "--index", str(tmp_path / "e"), "--model", model
    )
    assert not (tmp_path / "e").exists()
    assert "source not found" in error(
        "index", str(tmp_path / "nope"), "--index", str(tmp_path / "e")
    )
    not_index = tmp_path / "not-index"
    not_index.mkdir()
    (not_index / "x.txt").write_text("x")
    assert "not an llm2vec-retrieval index" in error(
        "index", str(work / "corpus"), "--index", str(not_index)
    )
    from llm2vec_retrieval.ingest import IndexFolderError

    with pytest.raises(IndexFolderError):  # --debug: the exception, not one line
        cli.main(["--debug", "search", str(tmp_path / "missing"), "q"])


def test_help_for_every_command():
    parser = cli.build_parser()
    actions = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"][0]
    assert {"demo", "index", "search", "info", "eval", "serve"} <= set(actions.choices)
    for name, sub in actions.choices.items():
        assert sub.format_help().strip(), name


@pytest.mark.slow  # subprocesses: tens of seconds; make test runs it, make test-fast skips it
def test_kill_during_index_then_resume(tmp_path, model):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(30):
        (corpus / f"doc{i:02d}.txt").write_text(
            f"Document number {i}. " + "Rivers flow into the sea. " * (1 + i % 4)
        )
    idx = tmp_path / "idx"
    common = ["--model", model, "--root", str(tmp_path), "--chunk-tokens", "16", "--overlap", "4"]
    # float32: bf16 vectors depend on how texts are batched, and a resumed run batches differently
    common += ["--dtype", "float32"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [
            *HOOKED_CLI,
            "index-commit",
            "0.3",  # seconds paused after each commit
            "index",
            str(corpus),
            "--index",
            str(idx),
            *common,
            "--commit-every",
            "1",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    commits = 0
    deadline = time.monotonic() + 180
    try:
        while commits < 3 and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            commits += line.startswith("llm2vec-index-commit:")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    assert commits >= 3, "the indexing subprocess did not commit"
    committed = json.loads((idx / "files.json").read_text())["files"]
    assert 3 <= len(committed) < 30  # killed mid-way

    assert (
        cli.main(["index", str(corpus), "--index", str(idx), "--dtype", "float32"]) == 0
    )  # resume
    clean = tmp_path / "clean"
    assert cli.main(["index", str(corpus), "--index", str(clean), *common]) == 0
    resumed, expected = chunks_of(idx), chunks_of(clean)
    assert resumed == expected  # same ids, texts and metadata: nothing lost, nothing duplicated
    ids = list(resumed)
    from llm2vec_retrieval.index import IndexStore

    a, b = IndexStore.load(idx / "store"), IndexStore.load(clean / "store")
    assert len(a) == len(b) == len(ids)
    np.testing.assert_allclose(a.vectors(ids), b.vectors(ids), atol=1e-5)
    files = json.loads((idx / "files.json").read_text())["files"]
    assert len(files) == 30 and sum(f["chunks"] for f in files.values()) == len(ids)


def test_pdf_without_pypdf_is_skipped_with_hint(tmp_path, model, capsys):
    try:
        import pypdf  # noqa: F401

        pytest.skip("pypdf is installed")
    except ImportError:
        pass
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "a.txt").write_text("Some text about rivers.")
    (tmp_path / "c" / "b.pdf").write_bytes(b"%PDF-1.4\n%fake\n")
    assert (
        cli.main(["index", str(tmp_path / "c"), "--index", str(tmp_path / "i"), "--model", model])
        == 0
    )
    assert "pip install pypdf" in capsys.readouterr().err


def minimal_pdf(pages: list[str]) -> bytes:
    """A tiny valid PDF with one line of text per page (Helvetica), written by hand."""
    objs = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    kids = []
    for text in pages:
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET"
        objs.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream")
        objs.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {len(objs)} 0 R "
            "/Resources << /Font << /F1 3 0 R >> >> >>"
        )
        kids.append(f"{len(objs)} 0 R")
    objs[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>"
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def test_pdf_pages_with_pypdf(tmp_path, model, capsys):
    pytest.importorskip("pypdf")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "a.pdf").write_bytes(
        minimal_pdf(["Rivers flow into the sea", "Vaccines train the immune system"])
    )
    (tmp_path / "c" / "broken.pdf").write_bytes(b"%PDF-1.4 garbage")
    idx = tmp_path / "i"
    assert (
        cli.main(
            [
                "index",
                str(tmp_path / "c"),
                "--index",
                str(idx),
                "--model",
                model,
                "--root",
                str(tmp_path),
            ]
        )
        == 0
    )
    assert "skipped c/broken.pdf: unreadable PDF" in capsys.readouterr().err
    chunks = chunks_of(idx)
    assert {(t, m["page"]) for t, m in chunks.values()} == {
        ("Rivers flow into the sea", 1),
        ("Vaccines train the immune system", 2),
    }


def test_demo_indexes_docs(tmp_path, model, monkeypatch, capsys):
    """In a source checkout the demo indexes the checkout's docs/ folder. The checkout is
    made here (this project's pyproject.toml, and the demo's own pages as its docs/) so that
    the test does not embed the whole of the real docs/ (tens of seconds)."""
    from llm2vec_retrieval.cli import demo

    checkout = tmp_path / "checkout"
    (checkout / "docs").mkdir(parents=True)
    shutil.copy(ROOT / "pyproject.toml", checkout)
    for page in demo.DEMO_CORPUS.glob("*.md"):
        shutil.copy(page, checkout / "docs")
    monkeypatch.setattr(demo, "PROJECT_ROOT", checkout)
    assert demo.demo_sources()[:2] == (checkout / "docs", checkout)
    assert cli.main(["demo", "--model", model, "--index", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert out.count("search: ") == 2 and "[1]" in out and "docs/" in out
    # --json: one JSON document on stdout (the run's lines go to stderr), the same searches
    assert cli.main(["demo", "--model", model, "--index", str(tmp_path / "demo"), "--json"]) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert [s["query"] for s in doc["searches"]] == demo.DEMO_SEARCHES
    assert all(1 <= len(s["results"]) <= 3 for s in doc["searches"])
    assert all(r["source"].startswith("docs/") for s in doc["searches"] for r in s["results"])
    assert doc["indexed"] == 0 and doc["unchanged"] > 0  # the second run reuses the index
    assert "indexing " in captured.err
    shutil.rmtree(tmp_path / "demo")


def test_demo_outside_a_checkout_indexes_the_corpus_it_ships(tmp_path, model, monkeypatch, capsys):
    """Issue 25: installed from a wheel (no docs/ beside the package) the demo printed a
    similarity table whose third query had no right answer ("fast and red" -> the vaccines
    text). Now it indexes the pages shipped in the package, into the cache folder; a docs/
    folder that another distribution put beside the package is not taken for ours."""
    from llm2vec_retrieval.cli import demo

    site = tmp_path / "site-packages"
    (site / "docs").mkdir(parents=True)
    (site / "docs" / "other.md").write_text("Another package's documentation.")
    monkeypatch.setattr(demo, "PROJECT_ROOT", site)
    monkeypatch.setenv("LLM2VEC_RETRIEVAL_CACHE", str(tmp_path / "cache"))
    corpus, root, index = demo.demo_sources()
    assert corpus == demo.DEMO_CORPUS and root == demo.DEMO_CORPUS.parent
    assert index == tmp_path / "cache" / "demo-index"
    shipped = sorted(p.name for p in demo.DEMO_CORPUS.glob("*.md"))
    assert {"indexing.md", "pooling.md"} <= set(shipped)  # the answers to DEMO_SEARCHES
    assert cli.main(["demo", "--model", model]) == 0
    out = capsys.readouterr().out
    assert out.count("search: ") == 2 and "demo_corpus/" in out and "other.md" not in out
    assert "cosine" not in out and "best: doc" not in out
    assert f"{len(shipped)} files" in out and (index / "llm2vec-index.json").is_file()


def test_eval_commands(tmp_path, model, capsys):
    beir = tmp_path / "scifact"
    (beir / "qrels").mkdir(parents=True)
    docs = {
        "d1": "Vaccines train the immune system.",
        "d2": "Rivers flood after heavy rain.",
        "d3": "Foxes are red.",
    }
    (beir / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n" for k, v in docs.items())
    )
    (beir / "queries.jsonl").write_text(
        json.dumps({"_id": "q1", "text": "how do vaccines work"})
        + "\n"
        + json.dumps({"_id": "q2", "text": "why do rivers flood"})
        + "\n"
    )
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n")
    out = main_json(capsys, "eval", "beir", str(beir), "--model", model, "--json")
    assert set(out["metrics"]) >= {"ndcg@10"} and out["n_queries"] == 2 and out["n_docs"] == 3
    assert out["query_instruction"].startswith("Given a scientific claim")  # from the folder name
    sts = tmp_path / "sts-test.csv"
    rows = [
        ("a man plays guitar", "a man plays a guitar", 4.8),
        ("a dog runs", "the stock market fell", 0.2),
        ("rivers flood", "heavy rain floods rivers", 3.9),
    ]
    sts.write_text("".join(f"g\tf\t2012\t{i}\t{s}\t{a}\t{b}\n" for i, (a, b, s) in enumerate(rows)))
    out = main_json(capsys, "eval", "sts", str(sts), "--model", model, "--json")
    assert out["n_pairs"] == 3 and "spearman" in out["metrics"]
    assert cli.main(["eval", "sts", str(sts), "--model", model]) == 0
    assert "spearman" in capsys.readouterr().out


def test_chunks_are_exact_substrings_with_overlap():
    from llm2vec_retrieval.ingest import chunk_spans
    from llm2vec_retrieval.ingest.chunking import windows
    from llm2vec_retrieval.testing import make_tiny_tokenizer

    tok = make_tiny_tokenizer()
    text = "  The quick brown fox jumps over the lazy dog.\n\nRivers flow into the sea; héllo wörld 2024!  "
    spans = chunk_spans(tok, [text, "", "   "], chunk_tokens=8, overlap=3)
    assert spans[1] == [] and spans[2] == []
    n = len(tok(text, add_special_tokens=False)["input_ids"])
    assert len(spans[0]) == len(windows(n, 8, 3)) > 2
    for a, b in zip(spans[0], spans[0][1:], strict=False):
        assert a.start < b.start < a.end <= b.end  # consecutive chunks overlap
    for sp in spans[0]:
        chunk = text[sp.start : sp.end]
        assert chunk == chunk.strip() and chunk and sp.tokens <= 8
    assert text[spans[0][0].start :].startswith("The quick") and text[: spans[0][-1].end].endswith(
        "2024!"
    )
    assert windows(10, 4, 0) == [(0, 4), (4, 8), (8, 10)]
    assert windows(10, 4, 2) == [(0, 4), (2, 6), (4, 8), (6, 10)]
    with pytest.raises(ValueError):
        windows(10, 4, 4)


def test_rebuild_and_changed_chunking(tmp_path, model, other_model, capsys):
    corpus = write_corpus(tmp_path / "corpus")
    idx = tmp_path / "idx"
    common = ["--index", str(idx), "--root", str(tmp_path)]
    assert (
        cli.main(
            [
                "index",
                str(corpus),
                *common,
                "--model",
                model,
                "--chunk-tokens",
                "16",
                "--overlap",
                "4",
            ]
        )
        == 0
    )
    n16 = len(chunks_of(idx))
    assert (
        cli.main(["index", str(corpus), *common, "--chunk-tokens", "32"]) == 0
    )  # re-chunks every file
    assert "indexed 4 file(s)" in capsys.readouterr().out
    assert len(chunks_of(idx)) < n16
    assert (
        cli.main(["index", str(corpus), *common, "--rebuild"]) == 0
    )  # keeps the recorded model and chunking
    manifest = json.loads((idx / "llm2vec-index.json").read_text())
    assert manifest["embedder"]["model"] == model and manifest["chunking"]["chunk_tokens"] == 32
    assert cli.main(["index", str(corpus), *common, "--rebuild", "--model", other_model]) == 0
    assert cli.main(["search", str(idx), "river", "-k", "1"]) == 0  # the new model, no mismatch
    info = main_json(capsys, "info", str(idx), "--json")
    assert info["model_path"] == other_model and info["chunks"] == len(chunks_of(idx))


def test_search_modes(built, capsys):
    work, idx, _ = built
    info = main_json(capsys, "info", str(idx), "--json")
    assert info["lexical"] is True
    lexical = main_json(capsys, "search", str(idx), "fox", "--mode", "lexical", "-k", "3", "--json")
    assert lexical["mode"] == "lexical"
    top = lexical["results"][0]
    assert "fox" in top["text"].lower() and top["score"] > 0
    hybrid = main_json(capsys, "search", str(idx), "fox", "-k", "3", "--json")  # the default mode
    from llm2vec_retrieval.index import DEFAULT_FUSION

    assert hybrid["mode"] == "hybrid" and hybrid["fusion"] == DEFAULT_FUSION
    assert any(
        "fox" in r["text"].lower() and r["lexical_score"] > 0 and r["dense_score"] is not None
        for r in hybrid["results"]
    )
    weighted = main_json(capsys, "search", str(idx), "fox", "-k", "3", "--alpha", "0", "--json")
    assert weighted["fusion"] == DEFAULT_FUSION and weighted["alpha"] == 0
    assert weighted["results"][0]["id"] == top["id"]  # alpha 0: the BM25 order
    dense = main_json(capsys, "search", str(idx), "fox", "-k", "3", "--mode", "dense", "--json")
    assert all(r["lexical_score"] is None for r in dense["results"])
    filtered = main_json(
        capsys,
        "search",
        str(idx),
        "rivers",
        "-k",
        "50",
        "--mode",
        "lexical",
        "--json",
        "--filter",
        "source=corpus/d.csv",
    )
    assert filtered["results"] and {r["source"] for r in filtered["results"]} == {"corpus/d.csv"}
    assert cli.main(["search", str(idx), "fox", "--alpha", "2"]) == 2
    assert "--alpha must be in [0, 1]" in capsys.readouterr().err


def test_lexical_search_lists_only_matches_and_says_so(built, capsys):
    """Issue 25: a lexical query sharing no word with the index printed k chunks at score 0
    as if they matched. Now only matching chunks are listed, and the shortfall is said."""
    work, idx, _ = built
    capsys.readouterr()
    assert cli.main(["search", str(idx), "zebra giraffe", "--mode", "lexical"]) == 0
    out = capsys.readouterr().out
    assert "[1]" not in out and "0.0000" not in out
    assert "0 of 5 requested: no chunk shares a word with the query" in out
    n = sum("river" in text.lower() for text, _ in chunks_of(idx).values())  # rivers, river
    assert 0 < n < 5
    assert cli.main(["search", str(idx), "rivers", "--mode", "lexical"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n[") + out.startswith("[") == n
    verb = "chunks share" if n > 1 else "chunk shares"
    assert out.rstrip().endswith(f"{n} of 5 requested: only {n} {verb} a word with the query")
    # --json: stdout stays one JSON document, the note goes to stderr
    capsys.readouterr()
    assert cli.main(["search", str(idx), "rivers", "--mode", "lexical", "--json"]) == 0
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)["results"]) == n
    assert f"note: {n} of 5 requested" in captured.err
    # a filter that matches fewer chunks than k, in the default mode
    from llm2vec_retrieval.ingest import Searcher

    with pytest.raises(ValueError, match="^the query is only whitespace"):
        Searcher(idx, lexical_only=True).search(" \n", mode="lexical")
    m = sum(meta["source"] == "corpus/d.csv" for _, meta in chunks_of(idx).values())
    argv = ["search", str(idx), "fox", "-k", "10", "--filter", "source=corpus/d.csv"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith(f"{m} of 10 requested: only {m} chunks match the filter")


@pytest.mark.parametrize("query", ["", "   ", "\t\n"])
def test_empty_query_is_one_line_before_anything_loads(query, capsys):
    # the index does not even exist: the query is checked first
    assert cli.main(["search", "--index", "no-such-index", query]) == 2
    err = capsys.readouterr().err.strip()
    reason = "empty" if not query else "only whitespace"
    assert err == f"error: the query is {reason}: give the words to search for"


def test_index_without_lexical_part(tmp_path, model, capsys):
    """--no-lexical, and an index saved before hybrid search existed: dense by default, a one-line
    error for hybrid, and the next `index` run adds the lexical part without re-embedding."""
    corpus = write_corpus(tmp_path / "corpus")
    idx = tmp_path / "idx"
    assert (
        cli.main(
            [
                "index",
                str(corpus),
                "--index",
                str(idx),
                "--model",
                model,
                "--no-lexical",
                "--no-progress",
                "--root",
                str(tmp_path),
            ]
        )
        == 0
    )
    assert main_json(capsys, "info", str(idx), "--json")["lexical"] is False
    out = main_json(capsys, "search", str(idx), "fox", "--json")
    assert out["mode"] == "dense"
    capsys.readouterr()
    assert cli.main(["search", str(idx), "fox"]) == 0
    assert "has no lexical (BM25) part" in capsys.readouterr().err
    assert cli.main(["search", "--index", str(idx), "fox", "--mode", "hybrid"]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot search in hybrid mode" in err and "\n" not in err and "Traceback" not in err
    before = {p.name: p.read_bytes() for p in (idx / "store").glob("*.vec.arr")}
    # as an index folder written before hybrid search existed: no "lexical" key at all
    mpath = idx / "llm2vec-index.json"
    mpath.write_text(
        json.dumps({k: v for k, v in json.loads(mpath.read_text()).items() if k != "lexical"})
    )
    assert cli.main(["index", str(corpus), "--index", str(idx), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "added the lexical (BM25) part" in captured.err and "indexed 0 file(s)" in captured.out
    after = {p.name: p.read_bytes() for p in (idx / "store").glob("*.vec.arr")}
    assert before and after == before  # nothing re-embedded
    assert main_json(capsys, "search", str(idx), "fox", "--json")["mode"] == "hybrid"


# ---------------------------------------------------------------------- issue 14 hardening
def _default_sigint() -> None:
    # A command started in the background by a non-interactive shell (`make test &`) starts
    # with SIGINT ignored, its children inherit that, and Python then installs no
    # KeyboardInterrupt handler: give the child the disposition a terminal's Ctrl-C meets.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# the CLI with a pause at a save stage or after each commit (see tests/hooked_cli.py)
HOOKED_CLI = [sys.executable, str(Path(__file__).parent / "hooked_cli.py")]


def _popen_index(
    args: list[str],
    cwd: Path,
    env: dict | None = None,
    pause: str | None = None,
    until: Path | None = None,
    pause_after_commit: float | None = None,
) -> subprocess.Popen:
    """`index` in a subprocess; ``pause``: ``STAGE:SECONDS``, ``until``: a file that ends
    the pause; ``pause_after_commit``: seconds to pause after each commit (printing
    "llm2vec-index-commit: ..." first; see tests/hooked_cli.py)."""
    return subprocess.Popen(
        [*index_command(pause, pause_after_commit, until), *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )


def _wait_stderr(proc: subprocess.Popen, prefix: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            raise AssertionError(f"the process ended before {prefix!r}: {proc.wait()}")
        if line.startswith(prefix):
            return
    raise AssertionError(f"timeout waiting for {prefix!r}")


@pytest.mark.slow  # subprocesses: tens of seconds; make test runs it, make test-fast skips it
def test_file_name_not_utf8_is_skipped_and_reruns_are_incremental(tmp_path, model):
    """Issue 14.4: a file name that is not UTF-8 made every run fail writing files.json
    (the store saved, files.json never), so each run re-embedded everything."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "good.txt").write_text("Rivers flood after heavy rain.")
    with open(os.path.join(os.fsencode(corpus), b"caf\xe9.txt"), "wb") as f:
        f.write(b"Latin-1 named file.")
    args = ["index", "corpus", "--index", "idx", "--model", model]
    first = run_cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "skipped corpus/caf\\xe9.txt: file name is not valid UTF-8" in first.stderr
    files = json.loads((tmp_path / "idx" / "files.json").read_text())["files"]
    assert list(files) == ["corpus/good.txt"]
    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "indexed 0 file(s) (0 chunks, 0 tokens), 1 unchanged, 1 skipped" in again.stdout


@pytest.mark.slow  # subprocesses: tens of seconds; make test runs it, make test-fast skips it
def test_search_while_index_commits_and_info_after_a_kill(tmp_path, model):
    """Issue 14.7: a search running while `index` swapped the store restored `.store.bak`
    under the writer, whose rename then failed. Real processes: the indexer pauses with its
    previous store in `.store.bak`; a search reads it there and the indexer finishes.
    Issue 14.15: `info` said 0 chunks while a killed save left the store in `.store.bak`."""
    corpus = write_corpus(tmp_path / "corpus")
    base = ["corpus", "--index", "idx", "--model", model, "--no-progress"]
    assert run_cli("index", *base, cwd=tmp_path).returncode == 0
    chunks = json.loads((tmp_path / "idx" / "store" / "manifest.json").read_text())["count"]
    (corpus / "new.txt").write_text("A new file about mountains and glaciers.")
    go = tmp_path / "go"  # the writer waits for it: a slow search cannot outlast the pause
    writer = _popen_index(base, tmp_path, pause="backed_up:300", until=go)
    try:
        _wait_stderr(writer, "llm2vec-save-stage: backed_up")
        assert not (tmp_path / "idx" / "store").exists()
        search = run_cli("search", "idx", "river", "-k", "2", "--json", cwd=tmp_path)
        assert search.returncode == 0, search.stderr
        assert len(json.loads(search.stdout)["results"]) == 2
        assert (tmp_path / "idx" / ".store.bak").is_dir()  # the reader moved nothing
        go.touch()
        out, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
        assert "indexed 1 file(s)" in out
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    # now kill a save between its renames: info still counts the chunks (in .store.bak)
    (corpus / "newer.txt").write_text("Another new file about deserts.")
    writer = _popen_index(base, tmp_path, pause="backed_up:60")
    try:
        _wait_stderr(writer, "llm2vec-save-stage: backed_up")
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        writer.stderr.close()
        writer.stdout.close()
    assert not (tmp_path / "idx" / "store").exists()
    info = run_cli("info", "idx", "--json", cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["chunks"] > chunks  # the last committed store, with new.txt
    resumed = run_cli("index", *base, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "indexed 1 file(s)" in resumed.stdout and (tmp_path / "idx" / "store").is_dir()


@pytest.mark.slow  # subprocesses: tens of seconds; make test runs it, make test-fast skips it
def test_ctrl_c_says_what_was_committed(tmp_path, model):
    """Issue 14.15: Ctrl-C printed "committed files are kept" even when nothing was."""
    write_corpus(tmp_path / "corpus")
    base = ["corpus", "--index", "idx", "--model", model, "--no-progress"]
    proc = _popen_index(base, tmp_path, pause="index_written:60")
    try:
        _wait_stderr(proc, "llm2vec-save-stage: index_written")  # inside the first commit
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=180)  # generous: a loaded CI machine
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert "interrupted before anything was committed: no index was written" in err
    assert "committed files are kept" not in err and not (tmp_path / "idx").exists()
    # after commits: it says how many were kept
    proc = _popen_index([*base, "--commit-every", "1"], tmp_path, pause_after_commit=30)
    try:
        _wait_stderr(proc, "llm2vec-index-commit:")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=180)  # generous: a loaded CI machine
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert "interrupted: the 1 commit(s) of this run are kept in" in err


@pytest.mark.slow  # subprocesses: tens of seconds; make test runs it, make test-fast skips it
def test_killed_inside_a_large_file_continues_there(tmp_path, model, capsys):
    """Issue 14.6: a large file was committed only at its end. Killed (SIGKILL) after a few
    commits inside one large file, the next run embeds only the rest; the result equals a
    clean index."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    words = "rivers flood after heavy rain while cells make proteins and genes".split()
    rng = np.random.default_rng(0)
    text = " ".join(words[i] for i in rng.integers(0, len(words), 90_000))  # > one window
    (corpus / "big.txt").write_text(text)
    common = ["--model", model, "--root", str(tmp_path), "--no-progress"]
    proc = _popen_index(
        ["corpus", "--index", "idx", *common, "--commit-every", "64"],
        tmp_path,
        pause_after_commit=0.2,
    )
    try:
        for _ in range(3):
            _wait_stderr(proc, "llm2vec-index-commit:")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        proc.stdout.close()
    entry = json.loads((tmp_path / "idx" / "files.json").read_text())["files"]["corpus/big.txt"]
    assert entry["chunks"] >= 3 * 64 and "partial" in entry
    capsys.readouterr()
    assert cli.main(["index", str(corpus), "--index", str(tmp_path / "idx"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    clean = tmp_path / "clean"
    assert cli.main(["index", str(corpus), "--index", str(clean), *common]) == 0
    resumed, expected = chunks_of(tmp_path / "idx"), chunks_of(clean)
    assert resumed == expected and len(expected) > entry["chunks"]
    assert f"({len(expected) - entry['chunks']} chunks" in out  # only the rest was embedded
    files = json.loads((tmp_path / "idx" / "files.json").read_text())["files"]
    assert "partial" not in files["corpus/big.txt"]


def test_allow_mismatch_with_another_dimension(built, tmp_path, capsys):
    """Issue 14.8: --allow-mismatch with a model of another dimension loaded, then every
    search said "bad filter: query must have shape ..."."""
    from llm2vec_retrieval.testing import make_tiny_checkpoint

    wide = make_tiny_checkpoint(tmp_path / "wide", config_overrides={"hidden_size": 48})
    work, idx, _ = built
    capsys.readouterr()
    assert (
        cli.main(["search", "--index", str(idx), "q", "--model", str(wide), "--allow-mismatch"])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "bad filter" not in err
    assert "32-dimensional" in err and "48-dimensional" in err
    assert cli.main(["search", str(idx), "q", "--model", str(wide)]) == 2
    assert "48-dimensional" in capsys.readouterr().err


# ---------------------------------------------------------------------- issue 16.1: --dtype
@pytest.mark.slow  # subprocesses: tens of seconds; make test runs it, make test-fast skips it
def test_dtype_auto_is_said_and_explicit_is_honoured(built, tmp_path):
    """The default (auto) resolves by hardware and says so in one stderr line before the
    first text is encoded; an explicit --dtype is honoured, also on an index built in the
    other dtype; a bad one is a one-line error listing the choices (real subprocesses)."""
    from llm2vec_retrieval.hardware import resolve_dtype

    work, idx, index_proc = built
    auto = resolve_dtype("auto")
    assert auto.name in ("float32", "bfloat16")
    assert auto.describe("--dtype") in index_proc.stderr.splitlines()  # `built` used the default
    other = "float32" if auto.name == "bfloat16" else "bfloat16"
    proc = run_cli("search", str(idx), "rivers", "--dtype", other, "-k", "1", "--json", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert f"encoding in {other} (--dtype {other}" in proc.stderr
    assert f"encoding in {auto.name}" not in proc.stderr
    assert json.loads(proc.stdout)["results"]
    bad = run_cli("search", str(idx), "rivers", "--dtype", "bogus", cwd=work)
    assert bad.returncode == 2
    assert bad.stderr.strip() == (
        "error: unknown --dtype 'bogus'; valid choices: auto, float32, bfloat16, float16, int8"
    )
    # runs that embed nothing say nothing about the dtype
    again = run_cli("index", "corpus", "--index", str(idx), cwd=work)
    assert again.returncode == 0, again.stderr
    assert "encoding in" not in again.stderr and "indexed 0 file(s)" in again.stdout
    lexical = run_cli("search", str(idx), "rivers", "--mode", "lexical", cwd=work)
    assert lexical.returncode == 0 and "encoding in" not in lexical.stderr, lexical.stderr


def test_dtype_on_every_model_command(tmp_path, model, capsys):
    choices = "valid choices: auto, float32, bfloat16, float16, int8"
    for argv in (
        ["demo"],
        ["index", str(tmp_path), "--index", str(tmp_path / "i")],
        ["search", str(tmp_path), "q"],
        ["eval", "beir", str(tmp_path)],
        ["eval", "sts", str(tmp_path)],
        ["serve", "--port", "0"],
    ):
        capsys.readouterr()
        assert cli.main([*argv, "--dtype", "fp32"]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err == f"error: unknown --dtype 'fp32'; {choices}", argv
    assert "encoder_dtype" not in vars(cli.build_parser().parse_args(["info", "x"]))


def test_eval_cache_keeps_dtypes_apart(tmp_path, model, capsys):
    """The encoder's fingerprint leaves the dtype out (indexes are shared across dtypes), but
    `eval --cache-dir` must not serve float32 embeddings to a bfloat16 run."""
    sts = tmp_path / "sts-test.csv"
    rows = [("a man plays guitar", "a man plays a guitar", 4.8), ("a dog", "stocks fell", 0.2)]
    sts.write_text("".join(f"g\tf\t2012\t{i}\t{s}\t{a}\t{b}\n" for i, (a, b, s) in enumerate(rows)))
    base = ["eval", "sts", str(sts), "--model", model, "--cache-dir", str(tmp_path / "c"), "--json"]
    assert main_json(capsys, *base, "--dtype", "float32")["cached"] is False
    assert main_json(capsys, *base, "--dtype", "float32")["cached"] is True
    assert main_json(capsys, *base, "--dtype", "bfloat16")["cached"] is False


# ---------------------------------------------------------------------- issue 13.6: errors
def test_a_bug_prints_its_traceback_and_a_hint(monkeypatch, tmp_path, capsys):
    """Not a user error (here: a RuntimeError from inside a command): the traceback, then the
    hint to report it, exit code 1; --debug raises it."""
    from llm2vec_retrieval.cli import info as info_command

    def broken(path):
        raise RuntimeError("an unexpected state")

    monkeypatch.setattr(info_command, "index_info", broken)
    capsys.readouterr()
    assert cli.main(["info", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert "RuntimeError: an unexpected state" in err
    assert err.strip().splitlines()[-1] == cli.BUG_HINT and not err.startswith("error:")
    with pytest.raises(RuntimeError, match="unexpected state"):
        cli.main(["--debug", "info", str(tmp_path)])


def test_a_user_error_is_one_line_and_debug_shows_its_traceback(tmp_path):
    """Real subprocesses: `error: <message>`, exit code 2; with --debug, the traceback."""
    proc = run_cli("search", "--index", str(tmp_path), "q", "--filter", "no-operator", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: bad filter 'no-operator': expected KEY=VALUE, KEY!=VALUE, KEY>=N, KEY<=N, "
        "KEY>N or KEY<N"
    )
    debug = run_cli("--debug", "info", str(tmp_path / "missing"), cwd=tmp_path)
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert "index folder not found" in debug.stderr.strip().splitlines()[-1]


def test_other_value_errors_in_search_are_not_a_bad_filter(monkeypatch, tmp_path, capsys):
    """Search used to turn any ValueError into "bad filter: ..."; now only the filter says so,
    and a ValueError from elsewhere is a bug (traceback + hint)."""
    from llm2vec_retrieval.cli import search as search_command
    from llm2vec_retrieval.ingest import IndexFolder

    class Searcher:
        notice = None
        query_instruction = None
        encoder = None  # no local model: the search prints no dtype line
        hybrid_default = {"fusion": "rrf", "alpha": 0.5}

        def prepare(self, request):
            return request.resolve("dense", self.hybrid_default)

        def search(self, *args, **kwargs):
            raise ValueError("query must have shape (1, 32)")

    monkeypatch.setattr(search_command, "open_searcher", lambda args, manifest=None: Searcher())
    monkeypatch.setattr(IndexFolder, "read_manifest", lambda self: {})
    capsys.readouterr()
    assert cli.main(["search", "--index", str(tmp_path / "idx"), "q", "--filter", "chunk>=2"]) == 1
    err = capsys.readouterr().err
    assert "bad filter" not in err and "ValueError: query must have shape" in err
    assert err.strip().splitlines()[-1] == cli.BUG_HINT
    assert cli.main(["search", "--index", str(tmp_path / "idx"), "q", "--filter", "chunk>="]) == 2
    assert capsys.readouterr().err.startswith("error: bad filter 'chunk>=': missing value")


def test_info_verifies_the_store_manifest_checksum(built, tmp_path, capsys):
    """`info` reads no vectors, but an edited store manifest is refused as a load refuses it."""
    _, idx, _ = built
    copy = tmp_path / "idx"
    shutil.copytree(idx, copy)
    assert main_json(capsys, "info", str(copy), "--json")["chunks"] > 0
    mpath = copy / "store" / "manifest.json"
    manifest = json.loads(mpath.read_text())
    mpath.write_text(json.dumps({**manifest, "count": manifest["count"] + 1}))
    assert cli.main(["info", "--index", str(copy)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "checksum mismatch" in err and "\n" not in err


def test_the_cli_names_stay_importable():
    from llm2vec_retrieval.cli.demo import DEMO_SEARCHES
    from llm2vec_retrieval.index.filters import FilterSyntaxError

    assert issubclass(FilterSyntaxError, cli.UserError) and DEMO_SEARCHES
    assert callable(cli.index_info) and callable(cli.build_parser)
    assert not hasattr(cli, "parse_filters") and not hasattr(cli, "DEMO_SEARCHES")


def test_reader_gone_away_is_not_a_bug(tmp_path, model, capsys):
    """`search ... | head`: the reader closes the pipe before the results are written. The
    command stops quietly (exit 141, as a shell reports SIGPIPE) instead of printing a
    BrokenPipeError traceback and the "this is a bug" hint."""
    write_corpus(tmp_path / "corpus")
    assert (
        cli.main(
            [
                "index",
                str(tmp_path / "corpus"),
                "--index",
                str(tmp_path / "idx"),
                "--model",
                model,
                "--no-progress",
            ]
        )
        == 0
    )
    capsys.readouterr()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llm2vec_retrieval",
            "search",
            str(tmp_path / "idx"),
            "rivers",
            "--mode",
            "lexical",
            "--json",
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc.stdout.close()  # the reader is gone before anything is written
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "bug" not in err and "Exception ignored" not in err


def test_info_says_which_dtypes_embedded_the_index(tmp_path, model, capsys):
    """The compute dtype of every run that embedded chunks is recorded; `info` warns when
    runs differed, and --rebuild starts the record over."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("Rivers flood after heavy rain.")
    argv = ["index", str(corpus), "--index", str(tmp_path / "idx"), "--model", model]

    def encoded_in() -> list[str] | None:
        return main_json(capsys, "info", str(tmp_path / "idx"), "--json")["encoded_in"]

    assert cli.main([*argv, "--dtype", "float32"]) == 0
    assert encoded_in() == ["float32"]
    assert cli.main([*argv, "--dtype", "bfloat16"]) == 0  # nothing new: no model, no change
    assert encoded_in() == ["float32"]
    (corpus / "b.txt").write_text("Vaccines train the immune system.")
    assert cli.main([*argv, "--dtype", "bfloat16"]) == 0
    assert encoded_in() == ["bfloat16", "float32"]
    capsys.readouterr()
    assert cli.main(["info", str(tmp_path / "idx")]) == 0
    assert "bfloat16, float32 (runs in different dtypes" in capsys.readouterr().out
    assert cli.main([*argv, "--dtype", "float32", "--rebuild"]) == 0
    assert encoded_in() == ["float32"]
