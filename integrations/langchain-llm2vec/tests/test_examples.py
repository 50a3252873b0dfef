"""Smoke tests: the RAG examples run end to end (offline, tiny checkpoint, tmp docs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples"
INTEGRATIONS = sorted(p.parent for p in (ROOT / "integrations").glob("*/pyproject.toml"))

DOCS = {
    "rivers.md": "# Rivers\n\nRivers flow into the sea. The longest rivers cross whole continents.\n\n"
    "Deltas form where rivers meet the sea and drop their sediment.",
    "notes/mountains.txt": "Mountains rise above the plains. Glaciers carve valleys into mountains.\n\n"
    + "Climbers train for years before attempting the highest peaks. " * 20,
    "notes/cells.md": "Cells are the units of life. Proteins and genes are studied in biology.",
    "ignored.rst": "This file is not .txt or .md and must not be indexed.",
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    from llm2vec_retrieval.testing import make_tiny_checkpoint

    root = tmp_path_factory.mktemp("rag")
    docs = root / "docs"
    for name, text in DOCS.items():
        (docs / name).parent.mkdir(parents=True, exist_ok=True)
        (docs / name).write_text(text)
    ckpt = make_tiny_checkpoint(root / "tiny", "llama")
    (root / "fake_llms.py").write_text(
        "def langchain_llm():\n"
        "    from langchain_core.language_models.fake_chat_models import FakeListChatModel\n"
        "    return FakeListChatModel(responses=['Rivers flow into the sea.'])\n"
        "\n"
        "def llamaindex_llm():\n"
        "    from llama_index.core.llms.mock import MockLLM\n"
        "    return MockLLM(max_tokens=5)\n"
    )
    return docs, ckpt


def _run(script: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    # the integration packages are installed (make test); their roots keep an uninstalled
    # checkout working too
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *map(str, INTEGRATIONS), env.get("PYTHONPATH", "")]
    )
    env["HF_HUB_OFFLINE"] = "1"
    env.pop("LLM2VEC_RAG_LLM", None)
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd or ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


@pytest.mark.slow  # subprocesses: tens of seconds; make test runs it, make test-fast skips it
def test_langchain_rag_subprocess(setup, tmp_path) -> None:
    docs, ckpt = setup
    out = _run(
        "langchain_rag.py",
        "--docs",
        str(docs),
        "--model",
        str(ckpt),
        "--question",
        "Where do rivers flow?",
        "--k",
        "2",
        "--mmr",
        "--chunk-size",
        "200",
        "--chunk-overlap",
        "20",
        "--save",
        str(tmp_path / "idx"),
        "--llm",
        f"{docs.parent / 'fake_llms.py'}:langchain_llm",
    )
    assert "Retrieved 2 chunks:" in out.stdout
    assert "Answer:\nRivers flow into the sea." in out.stdout
    assert "Generation skipped" not in out.stdout
    assert "ignored.rst" not in out.stdout
    assert "chunks" in out.stderr
    assert (tmp_path / "idx" / "manifest.json").is_file()


@pytest.mark.slow  # subprocesses: tens of seconds; make test runs it, make test-fast skips it
def test_llamaindex_rag_subprocess(setup, tmp_path) -> None:
    docs, ckpt = setup
    out = _run(
        "llamaindex_rag.py",
        "--docs",
        str(docs),
        "--model",
        str(ckpt),
        "--question",
        "What are cells?",
        "--k",
        "2",
        "--chunk-size",
        "64",
        "--chunk-overlap",
        "8",
        "--persist-dir",
        str(tmp_path / "storage"),
    )
    assert "Retrieved 2 chunks:" in out.stdout
    assert "Generation skipped" in out.stdout
    assert "ignored.rst" not in out.stdout
    assert (tmp_path / "storage" / "default__vector_store.json").is_file()


def test_langchain_rag_in_process_without_llm(setup, capsys, monkeypatch) -> None:
    docs, ckpt = setup
    monkeypatch.delenv("LLM2VEC_RAG_LLM", raising=False)
    main = _example("langchain_rag").main
    assert (
        main(
            [
                "--docs",
                str(docs),
                "--model",
                str(ckpt),
                "-q",
                "rivers",
                "--k",
                "3",
                "--chunk-size",
                "300",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "Retrieved 3 chunks:" in out and "Generation skipped" in out


def test_llamaindex_rag_in_process_with_llm(setup, capsys, monkeypatch) -> None:
    docs, ckpt = setup
    monkeypatch.setenv("LLM2VEC_RAG_LLM", f"{docs.parent / 'fake_llms.py'}:llamaindex_llm")
    main = _example("llamaindex_rag").main
    assert (
        main(
            [
                "--docs",
                str(docs),
                "--model",
                str(ckpt),
                "-q",
                "cells",
                "--chunk-size",
                "64",
                "--chunk-overlap",
                "8",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "Answer:" in out and "Generation skipped" not in out


def _example(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["langchain_rag", "llamaindex_rag"])
def test_example_helpers(setup, tmp_path, monkeypatch, name) -> None:
    docs, _ = setup
    example = _example(name)
    # --llm as module:factory, imported from the working directory
    monkeypatch.chdir(docs.parent)
    monkeypatch.setattr(sys, "path", list(sys.path))
    factory = example.load_factory("fake_llms:langchain_llm")
    assert callable(factory)
    with pytest.raises(SystemExit, match="module:factory"):
        example.load_factory("no_colon")
    # only .txt/.md files, recursively, with their relative path as source
    loaded = example.load_documents(docs)
    assert sorted(d.metadata["source"] for d in loaded) == [
        "notes/cells.md",
        "notes/mountains.txt",
        "rivers.md",
    ]
    # an empty folder fails clearly, before any model is loaded
    with pytest.raises(SystemExit, match="no non-empty"):
        example.main(["--docs", str(tmp_path), "--question", "x", "--model", "/nonexistent"])
    with pytest.raises(SystemExit):
        example.main(
            ["--docs", str(docs), "-q", "x", "--chunk-size", "10", "--chunk-overlap", "10"]
        )


def test_simple_splitter() -> None:
    split = _example("langchain_rag")._simple_split
    text = "Para one. Short.\n\n" + "A sentence that goes on. " * 30 + "\n\n" + "x" * 500
    chunks = split(text, 120, 20)
    assert all(len(c) <= 120 for c in chunks)
    assert "".join(chunks).replace(" ", "").replace("\n", "").count("x") >= 500
    assert chunks[0].startswith("Para one. Short.")
