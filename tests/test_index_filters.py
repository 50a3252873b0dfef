"""The metadata filter language (pure Python, no FAISS needed)."""

from __future__ import annotations

import pytest

from llm2vec_retrieval.errors import UserError
from llm2vec_retrieval.index.filters import (
    FilterSyntaxError,
    compile_filter,
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
        ({"year": {"$gt": 2020}}, [1, 2]),  # "2021" is a string: not compared with numbers
        ({"year": {"$gte": 2020, "$lt": 2024}}, [0, 1]),
        ({"year": {"$lte": 2020}}, [0]),
        ({"year": {"$gt": "2000"}}, [3]),
        ({"score": {"$lt": 1}}, [0]),
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
