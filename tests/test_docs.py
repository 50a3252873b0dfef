"""The docs agree with the code: generated settings tables are current, quoted defaults match.

`llm2vec_retrieval.docgen` does the work; these tests run it on the checkout, and on a copy
of the docs with one thing made wrong, to show that each kind of drift is caught.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from llm2vec_retrieval import docgen
from llm2vec_retrieval.config import EncoderConfig
from llm2vec_retrieval.errors import UserError
from llm2vec_retrieval.training.config import MNTPConfig, TrainConfig

ROOT = docgen.ROOT


@pytest.fixture
def docs_copy(tmp_path: Path) -> Path:
    """README.md and docs/*.md of the checkout, copied under tmp_path."""
    (tmp_path / "docs").mkdir()
    for path in docgen.doc_paths(ROOT):
        shutil.copy(path, tmp_path / path.relative_to(ROOT))
    return tmp_path


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) >= 1, f"{path.name} no longer contains {old!r}"
    path.write_text(text.replace(old, new, 1))


def test_generated_tables_are_current():
    stale = docgen.stale_docs(docgen.doc_paths(ROOT))
    assert not stale, f"stale settings tables in {stale}: run python -m llm2vec_retrieval.docgen"


def test_quoted_defaults_agree_with_the_code():
    assert docgen.check_prose(ROOT) == []


def test_every_settings_class_has_help_and_a_table_in_the_docs():
    marked = "".join(p.read_text() for p in docgen.doc_paths(ROOT))
    for name in docgen.SETTINGS_CLASSES:
        cls = docgen.settings_class(name)
        assert all(f.metadata.get("help") for f in dataclasses.fields(cls)), name
        assert f"<!-- settings:{name}" in marked, f"no table of {name} in the docs"


def test_table_shows_the_code_defaults():
    table = docgen.render_table(EncoderConfig)
    default = EncoderConfig().max_batch_tokens
    assert f"| `max_batch_tokens` | `int` | `{default}` |" in table
    own = docgen.render_table(MNTPConfig, own=True)
    assert "`block_size`" in own and "`seed`" not in own  # seed is TrainConfig's
    assert "| `lr` | `float` | `5e-5` | `5e-5` |" in own  # the paper column
    assert "`seed`" in docgen.render_table(TrainConfig)
    index = docgen.render_table(docgen.settings_class("IndexSettings"))
    assert "| `chunk_tokens` | `int \\| None` | `None` (`256`) |" in index


def test_stale_table_fails_the_check_and_is_rewritten(docs_copy: Path, capsys):
    default = EncoderConfig().max_batch_tokens
    api = docs_copy / "docs" / "api.md"
    _edit(
        api,
        f"| `max_batch_tokens` | `int` | `{default}` |",
        "| `max_batch_tokens` | `int` | `16384` |",
    )
    assert docgen.stale_docs(docgen.doc_paths(docs_copy)) == [api]
    assert docgen.main(["--check", "--root", str(docs_copy)]) == 1
    out = capsys.readouterr().out
    assert "docs/api.md: settings table is stale" in out
    assert "16384" in api.read_text()  # --check changes nothing

    assert docgen.main(["--root", str(docs_copy)]) == 0
    assert "16384" not in api.read_text()
    assert api.read_text() == (ROOT / "docs" / "api.md").read_text()
    assert docgen.main(["--check", "--root", str(docs_copy)]) == 0


@pytest.mark.parametrize(
    ("doc", "old", "new", "expected"),
    [
        # a default quoted in a sentence (the example)
        (
            "docs/concepts.md",
            "`max_batch_tokens` (default 4096)",
            "`max_batch_tokens` (default 16384)",
            "quotes 16384, the code says 4096",
        ),
        # an inline-code signature
        (
            "docs/api.md",
            "`MicroBatcher(encoder, max_batch_tokens=8192, wait_ms=2.0)`",
            "`MicroBatcher(encoder, max_batch_tokens=8192, wait_ms=5.0)`",
            "`MicroBatcher(... wait_ms=...)`: documented default 5.0, the code says 2.0",
        ),
        # a command-line option
        (
            "docs/cli.md",
            "`--read-timeout` seconds (default 30)",
            "`--read-timeout` seconds (default 60)",
            "--read-timeout documented default 60, the code says 30",
        ),
        # a usage line
        (
            "docs/cli.md",
            "[--port 8000]",
            "[--port 8080]",
            "--port documented default 8080, the code says 8000",
        ),
        # an option table row
        (
            "docs/cli.md",
            "| `--overlap N` | 32 |",
            "| `--overlap N` | 16 |",
            "quotes 16, the code says 32",
        ),
        # the index kinds table
        (
            "docs/api.md",
            "`M` 32, `ef_construction` 200",
            "`M` 16, `ef_construction` 200",
            "quotes 16, the code says 32",
        ),
        # the trainer's default model
        (
            "docs/training.md",
            "untrained base, `gemma3-270m` (`sources.DEFAULT_BASE`)",
            "untrained base, `gemma3-270m-llm2vec` (`sources.DEFAULT_BASE`)",
            "quotes gemma3-270m-llm2vec, the code says gemma3-270m",
        ),
    ],
)
def test_wrong_quoted_default_is_caught(docs_copy: Path, doc, old, new, expected):
    _edit(docs_copy / doc, old, new)
    problems = docgen.check_prose(docs_copy)
    # one wrong number, one or two reports (a flag's table row is also read as a flag default)
    assert problems and any(expected in p for p in problems), problems
    assert all(Path(doc).name in p for p in problems), problems


def test_a_reworded_sentence_is_reported_not_silently_skipped(docs_copy: Path):
    _edit(docs_copy / "docs" / "hybrid.md", "`rrf_k = 60`", "`rrf_k` of 60")
    (problem,) = docgen.check_prose(docs_copy)
    assert "docs/hybrid.md: no sentence matches" in problem and "PROSE_DEFAULTS" in problem


def test_example_calls_are_not_read_as_signatures():
    text = 'Use `search(mode="lexical")` or `MicroBatcher(enc, wait_ms=9.0)`.'
    problems, seen = docgen.signature_mismatches(Path("x.md"), text)
    assert problems == [] and seen == set()


def test_unknown_table_name_is_a_user_error():
    with pytest.raises(UserError, match="valid names are: EncoderConfig"):
        docgen.update_tables("<!-- settings:NoSuchConfig -->\n<!-- /settings -->\n")
    with pytest.raises(UserError, match="valid: own"):
        docgen.update_tables("<!-- settings:EncoderConfig mine -->\n<!-- /settings -->\n")
