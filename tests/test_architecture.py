"""docs/architecture.md's "where things are" table agrees with the code.

Each row names a concept, the module it lives in and names defined there (``Class.attr`` for an
attribute). The table is read from the doc, so a module or name that moves without its row fails
here, and a subpackage without a row is reported too.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
HEADING = "## Where things are"


def table_rows(text: str) -> list[tuple[str, str, list[str]]]:
    """(concept, module, names) of each row of the table under HEADING."""
    section = text.split(HEADING, 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not line.lstrip().startswith("|"):
            continue
        concept, module, names = cells
        modules = re.findall(r"`([^`]+)`", module)
        if concept in ("Concept", "---") or not modules:
            continue
        assert len(modules) == 1, f"one module per row: {line}"
        rows.append((concept, modules[0], re.findall(r"`([^`]+)`", names)))
    return rows


def stale(rows: list[tuple[str, str, list[str]]]) -> list[str]:
    """One line per module that does not import and per name it does not define."""
    problems = []
    for concept, module, names in rows:
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            problems.append(f"{concept}: module {module} does not import ({exc})")
            continue
        if not names:
            problems.append(f"{concept}: {module} lists no names")
        for name in names:
            obj = mod
            for part in name.split("."):
                obj = getattr(obj, part, None)
                if obj is None:
                    problems.append(f"{concept}: {module} has no {name}")
                    break
    return problems


ROWS = table_rows(DOC.read_text())


def test_the_table_is_there():
    assert len(ROWS) >= 30, "the where-things-are table lost its rows"


def test_every_row_names_a_module_and_names_that_exist():
    assert stale(ROWS) == []


def test_every_subpackage_has_a_row():
    listed = {module for _, module, _ in ROWS}
    for init in sorted((ROOT / "llm2vec_retrieval").glob("*/__init__.py")):
        package = f"llm2vec_retrieval.{init.parent.name}"
        assert any(m == package or m.startswith(package + ".") for m in listed), (
            f"{package} has no row in docs/architecture.md"
        )


def test_no_concept_is_listed_twice():
    concepts = [concept for concept, _, _ in ROWS]
    assert len(concepts) == len(set(concepts))


@pytest.mark.parametrize(
    "row, reason",
    [
        (("Chunking", "llm2vec_retrieval.ingest.chunking", ["no_such_name"]), "has no"),
        (("Gone", "llm2vec_retrieval.no_such_module", ["x"]), "does not import"),
        (("Attr", "llm2vec_retrieval.encoder", ["LLM2Vec.no_such_method"]), "has no"),
    ],
)
def test_a_stale_row_is_reported(row, reason):
    problems = stale([row])
    assert len(problems) == 1 and reason in problems[0], problems
