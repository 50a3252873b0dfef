"""The metadata filter language: pure Python first, then through IndexStore (FAISS, BM25) in
every search mode and through the command line's ``--filter`` on a tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llm2vec_retrieval.errors import UserError
from llm2vec_retrieval.index.filters import (
    FilterSyntaxError,
    compile_filter,
    numeric_text,
    parse_filter_expressions,
)

DOCS = [
    {"lang": "en", "year": 2020, "score": 0.5, "tags": ["a", "b"], "flag": True},
    {"lang": "fr", "year": 2022, "score": 1.5, "tags": ["b"], "flag": False},
    {"lang": "en", "year": 2024, "tags": []},
    {"year": "2021", "title": "hello world", "flag": 1},
    {},
]


def matches(f):
    p = compile_filter(f)
    return [i for i, d in enumerate(DOCS) if p(d)]


@pytest.mark.parametrize(
    "f, expected",
    [
        ({}, [0, 1, 2, 3, 4]),
        ({"lang": "en"}, [0, 2]),
        ({"lang": "en", "year": 2024}, [2]),
        ({"lang": {"$eq": "fr"}}, [1]),
        ({"lang": {"$ne": "en"}}, [1, 3, 4]),  # missing key matches $ne
        ({"year": {"$gt": 2020}}, [1, 2, 3]),  # "2021" is numeric text: compared as 2021
        ({"year": {"$lt": 2021.5}}, [0, 3]),
        ({"year": {"$gt": 2021}}, [1, 2]),
        ({"year": {"$gte": 2020, "$lt": 2024}}, [0, 1, 3]),
        ({"year": {"$lte": 2020}}, [0]),
        ({"year": {"$gt": "2000"}}, [3]),
        ({"score": {"$lt": 1}}, [0]),
        ({"title": {"$gte": 0}}, []),  # non-numeric text never matches a number operand
        ({"year": 2021}, []),  # equality stays exact: 2021 is not "2021"
        ({"lang": {"$in": ["fr", "de"]}}, [1]),
        ({"lang": {"$nin": ["en"]}}, [1, 3, 4]),
        ({"score": {"$exists": True}}, [0, 1]),
        ({"score": {"$exists": False}}, [2, 3, 4]),
        ({"tags": {"$contains": "b"}}, [0, 1]),
        ({"title": {"$contains": "world"}}, [3]),
        ({"tags": ["b"]}, [1]),  # plain equality on a list
        ({"flag": True}, [0]),  # JSON semantics: 1 is not True
        ({"flag": 1}, [3]),
        ({"$or": [{"lang": "fr"}, {"year": 2024}]}, [1, 2]),
        ({"$and": [{"lang": "en"}, {"year": {"$lt": 2021}}]}, [0]),
        ({"$not": {"lang": "en"}}, [1, 3, 4]),
        ({"$or": [{"lang": "en"}, {"flag": 1}], "year": {"$exists": True}}, [0, 2, 3]),
        ({"$not": {"$or": [{"lang": "en"}, {"lang": "fr"}]}}, [3, 4]),
    ],
)
def test_dict_language(f, expected):
    assert matches(f) == expected


def test_none_and_callable():
    assert compile_filter(None) is None
    assert matches(lambda m: m.get("year") == 2022) == [1]
    assert matches(lambda m: "lang" in m and 1) == [0, 1, 2]


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"x": {"$regex": "a"}}, "unknown operator '\\$regex'"),
        ({"$xor": []}, "unknown top-level operator"),
        ({"$and": []}, "non-empty list"),
        ({"$or": {"a": 1}}, "non-empty list"),
        ({"$not": [1]}, "must be a dict"),
        ({"x": {"$in": "abc"}}, "needs a list"),
        ({"x": {"$gt": None}}, "number or a string"),
        ({"x": {"$exists": 1}}, "true or false"),
        ({"x": {"$eq": 1, "y": 2}}, "mixes operators"),
        ({"x": {}}, None),  # empty dict value: equality with {} (valid)
        ({1: 2}, "keys must be strings"),
        ("lang == en", "expected None, a dict or a callable"),
    ],
)
def test_bad_filters_raise_value_error(bad, message):
    if message is None:
        compile_filter(bad)
        return
    with pytest.raises(ValueError, match=message):
        compile_filter(bad)


# ---------------------------------------------------------------------- the --filter syntax
def test_filter_expressions():
    parse = parse_filter_expressions
    assert parse(None) is None and parse([]) is None
    assert parse(["source=docs/a.md"]) == {"source": {"$in": ["docs/a.md"]}}
    assert parse(["chunk>=2", "year<2020"]) == {
        "$and": [{"chunk": {"$gte": 2}}, {"year": {"$lt": 2020}}]
    }
    assert parse(["n=2"]) == {"n": {"$in": [2, "2"]}}
    assert parse(['n="2"']) == {"n": {"$in": ["2"]}}
    assert parse(["ok!=true"]) == {"ok": {"$nin": [True, "true"]}}
    assert parse(["x==1.5", "y>abc", "z<='3'"]) == {
        "$and": [{"x": {"$in": [1.5, "1.5"]}}, {"y": {"$gt": "abc"}}, {"z": {"$lte": "3"}}]
    }
    assert parse(["n=inf"]) == {"n": {"$in": ["inf"]}}  # not a finite number: text


@pytest.mark.parametrize("bad", ["=x", "novalue", "a>", ">=3", "a b=1"])
def test_bad_filter_expressions(bad):
    with pytest.raises(FilterSyntaxError, match="^bad filter") as info:
        parse_filter_expressions([bad])
    assert isinstance(info.value, UserError) and isinstance(info.value, ValueError)


def test_parsed_expressions_compile_and_match():
    p = compile_filter(parse_filter_expressions(["lang=en", "year>=2022"]))
    assert [i for i, d in enumerate(DOCS) if p(d)] == [2]
    p = compile_filter(parse_filter_expressions(["year=2021"]))  # numbers stored as text too
    assert [i for i, d in enumerate(DOCS) if p(d)] == [3]


# ---------------------------------------------------------------------- numbers stored as text
@pytest.mark.parametrize(
    "text, number",
    [
        ("7", 7),
        ("-7", -7),
        ("+7", 7),
        ("007", 7),
        ("2.5", 2.5),
        (".5", 0.5),
        ("5.", 5.0),
        ("1e3", 1000.0),
        ("-2.5E-1", -0.25),
        ("123456789012345678901234567890", 123456789012345678901234567890),
        ("", None),
        ("abc", None),
        ("7a", None),
        (" 7", None),
        ("1_000", None),
        ("inf", None),
        ("nan", None),
        ("1e999", None),
        ("0x10", None),
        ("\u0667", None),  # an Arabic-Indic digit: not ASCII decimal
        ("1" * 5000, None),  # more digits than int() reads
    ],
)
def test_numeric_text(text, number):
    got = numeric_text(text)
    assert got == number and type(got) is type(number)


# CSV-like metadata: every value a string, one not a number, one a real number, one missing
NUMS = [{"n": str(i)} for i in range(1, 11)] + [{"n": "abc"}, {"n": 12}, {"n": "5.5"}, {}]
NUMS_IDS = [f"d{i}" for i in range(len(NUMS))]


def ids_where(test) -> set[str]:
    return {i for i, m in zip(NUMS_IDS, NUMS, strict=True) if test(m.get("n"))}


def value(n):
    return n if isinstance(n, (int, float)) else numeric_text(n) if isinstance(n, str) else None


ORDERED_CASES = [
    ({"n": {"$gte": 5}}, lambda n: value(n) is not None and value(n) >= 5),
    ({"n": {"$gt": 5}}, lambda n: value(n) is not None and value(n) > 5),
    ({"n": {"$lt": 5}}, lambda n: value(n) is not None and value(n) < 5),
    ({"n": {"$lte": 5, "$gte": 3}}, lambda n: value(n) is not None and 3 <= value(n) <= 5),
    ({"n": {"$gte": 5.5}}, lambda n: value(n) is not None and value(n) >= 5.5),
]


def test_ordered_operators_read_numeric_text():
    for f, test in ORDERED_CASES:
        p = compile_filter(f)
        assert {i for i, m in zip(NUMS_IDS, NUMS, strict=True) if p(m)} == ids_where(test), f
    assert ids_where(ORDERED_CASES[0][1]) == {"d4", "d5", "d6", "d7", "d8", "d9", "d11", "d12"}
    # a string operand compares text with text: "10" < "5"
    p = compile_filter({"n": {"$gte": "5"}})
    assert {i for i, m in zip(NUMS_IDS, NUMS, strict=True) if p(m)} == {
        "d4",
        "d5",
        "d6",
        "d7",
        "d8",
        "d10",
        "d12",
    }


def test_filter_expressions_ordered_on_numeric_text():
    """`--filter 'n>=5'` matches "5".."10" stored as text, as `n=5` matches "5"."""
    for expr, test in [
        ("n>=5", lambda n: value(n) is not None and value(n) >= 5),
        ("n>5", lambda n: value(n) is not None and value(n) > 5),
        ("n<=5", lambda n: value(n) is not None and value(n) <= 5),
        ("n<5", lambda n: value(n) is not None and value(n) < 5),
        ("n=5", lambda n: n in (5, "5")),
    ]:
        p = compile_filter(parse_filter_expressions([expr]))
        assert {i for i, m in zip(NUMS_IDS, NUMS, strict=True) if p(m)} == ids_where(test), expr
    p = compile_filter(parse_filter_expressions(['n>="5"']))  # quoted: text order
    assert {i for i, m in zip(NUMS_IDS, NUMS, strict=True) if p(m)} >= {"d4", "d10"}
    assert parse_filter_expressions(["n>=1_000"]) == {"n": {"$gte": "1_000"}}  # not a number


MODES = ["dense", "lexical", "hybrid"]


@pytest.fixture(scope="module")
def numeric_text_store():
    pytest.importorskip("faiss")
    from llm2vec_retrieval.index import IndexStore

    rng = np.random.default_rng(0)
    x = rng.standard_normal((len(NUMS), 8)).astype(np.float32)
    store = IndexStore(dim=8, lexical=True)
    texts = [f"river number {i}" for i in range(len(NUMS))]
    store.add(NUMS_IDS, x, texts=texts, metadatas=NUMS)
    return store, x[0]


@pytest.mark.parametrize("mode", MODES)
def test_store_ordered_filters_on_numeric_text(numeric_text_store, mode):
    store, q = numeric_text_store
    for f, test in ORDERED_CASES:
        hits = store.search(
            None if mode == "lexical" else q, k=50, filter=f, text="river", mode=mode
        )
        assert {h.id for h in hits} == ids_where(test), (mode, f)


@pytest.fixture(scope="module")
def csv_index(tiny_llama, tmp_path_factory):
    """A folder holding one CSV (column n: numbers, one not a number) indexed on a tiny model."""
    pytest.importorskip("faiss")
    from llm2vec_retrieval import cli

    work = tmp_path_factory.mktemp("csv")
    (work / "corpus").mkdir()
    rows = [f"{i},river bank number {i}" for i in range(1, 11)] + ["abc,river bank unknown"]
    (work / "corpus" / "n.csv").write_text("n,text\n" + "\n".join(rows) + "\n")
    args = ["index", str(work / "corpus"), "--index", str(work / "idx"), "--model", tiny_llama]
    assert cli.main(args) == 0
    return work / "idx"


@pytest.mark.parametrize("mode", MODES)
def test_cli_ordered_filter_on_csv_column(csv_index, mode, capsys):
    """The reported bug: `--filter n=5` found the row, `--filter 'n>=5'` none."""
    from llm2vec_retrieval import cli

    def search(*filters: str) -> list[str]:
        capsys.readouterr()
        args = ["search", "--index", str(csv_index), "river", "-k", "50", "--mode", mode, "--json"]
        for f in filters:
            args += ["--filter", f]
        assert cli.main(args) == 0
        return sorted(r["metadata"]["n"] for r in json.loads(capsys.readouterr().out)["results"])

    assert search("n=5") == ["5"]
    assert search("n>=5") == sorted(str(i) for i in range(5, 11))
    assert search("n>7", "n<=9") == ["8", "9"]
    assert search("n<2") == ["1"]
    assert search("n>=0", "n!=3") == sorted(str(i) for i in range(1, 11) if i != 3)
