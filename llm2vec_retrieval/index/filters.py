"""Metadata filters: a small dict language (MongoDB-like) compiled to a predicate.

A filter is ``None`` (everything matches), a callable ``f(metadata) -> bool``, or a dict:

- ``{"key": value, ...}``: equality on every key (AND over keys).
- ``{"key": {"$op": operand, ...}}``: operators on a field, several ops are ANDed:

  ========== ====================================================================
  ``$eq``     equal (JSON semantics: ``True`` is not ``1``; ``1 == 1.0``)
  ``$ne``     not equal (a missing key matches)
  ``$gt``     ``$gte``, ``$lt``, ``$lte``: ordered comparison; the operand is a
              number or a string. A number operand compares with numbers and with
              numeric text (a string such as ``"7"``, ``"-2.5"`` or ``"1e3"``, see
              `numeric_text`: what CSV columns and other text fields hold) by value;
              a string operand compares with strings, as text. A missing key, another
              type or non-numeric text under a number operand never matches
  ``$in``     the value equals one element of the operand (a list)
  ``$nin``    the value equals none of them (a missing key matches)
  ``$exists`` ``True``: the key is present; ``False``: it is absent
  ``$contains`` the value is a list holding the operand, or a string containing it
  ========== ====================================================================

- ``{"$and": [f, ...]}``, ``{"$or": [f, ...]}`` (non-empty lists of filters),
  ``{"$not": f}``; these combine with field keys in the same dict (AND).

A dict value whose keys all start with ``$`` is an operator spec; a dict value without
``$`` keys is compared for equality; mixing both is an error. Any malformed filter
raises ``ValueError`` when compiled, before anything is searched. Keys are top-level
metadata keys (no dotted paths).

Equality stays exact (``{"n": 7}`` does not match ``"7"``); the ``--filter`` syntax adds
the text form for ``key=7`` itself, so on the command line ``=`` and the ordered operators
both read numbers stored as text.

`parse_filter_expressions` reads the command line's ``--filter KEY=VALUE`` syntax into such a
dict; a malformed expression raises `FilterSyntaxError` (a `UserError` and a `ValueError`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import UserError

Predicate = Callable[[Mapping[str, Any]], bool]

FIELD_OPERATORS = (
    "$eq",
    "$ne",
    "$gt",
    "$gte",
    "$lt",
    "$lte",
    "$in",
    "$nin",
    "$exists",
    "$contains",
)
LOGICAL_OPERATORS = ("$and", "$or", "$not")

_MISSING = object()


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _json_eq(a: Any, b: Any) -> bool:
    """Equality as JSON sees it: booleans never equal numbers; tuples equal lists."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) and _is_number(b):
        return a == b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_json_eq(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_json_eq(a[k], b[k]) for k in a)
    if type(a) is not type(b) and not (isinstance(a, str) and isinstance(b, str)):
        return False
    return a == b


# A decimal number as text: what ``numeric_text`` reads and what a ``--filter`` value must
# look like to count as a number (no "1_000", "inf", "nan" or surrounding spaces).
_NUMERIC_TEXT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)


def numeric_text(text: str) -> int | float | None:
    """The number a string spells in decimal (``"7"`` -> 7, ``"-2.5"`` -> -2.5, ``"1e3"`` ->
    1000.0), else ``None`` (also for ``"inf"``, ``"nan"``, ``"1_000"``, ``" 7"`` and a value
    too large for a float)."""
    if not _NUMERIC_TEXT.fullmatch(text):
        return None
    if text.lstrip("+-").isdigit():
        try:
            return int(text)
        except ValueError:  # more digits than int() reads (sys.get_int_max_str_digits)
            return None
    value = float(text)
    return value if math.isfinite(value) else None


def _ordered(op: str, a: Any, b: Any) -> bool:
    if _is_number(b) and isinstance(a, str):
        a = numeric_text(a)  # numeric text compares by value; other text never matches
    if _is_number(a) and _is_number(b) or isinstance(a, str) and isinstance(b, str):
        if op == "$gt":
            return a > b
        if op == "$gte":
            return a >= b
        if op == "$lt":
            return a < b
        return a <= b
    return False


def _bad(msg: str) -> ValueError:
    return ValueError(f"invalid filter: {msg}")


def _compile_field_ops(key: str, spec: Mapping[str, Any]) -> Predicate:
    preds = [_field_op(key, op, operand) for op, operand in spec.items()]
    if not preds:
        raise _bad(f"empty operator dict on key {key!r}")
    if len(preds) == 1:
        return preds[0]
    return lambda m: all(p(m) for p in preds)


def _field_op(key: str, op: str, v: Any) -> Predicate:
    """The predicate of one operator on one key (its own scope: each closure keeps its operand)."""
    if op not in FIELD_OPERATORS:
        raise _bad(f"unknown operator {op!r} on key {key!r}; valid: {', '.join(FIELD_OPERATORS)}")
    if op == "$eq":
        return lambda m: _json_eq(m.get(key, _MISSING), v)
    if op == "$ne":
        return lambda m: not _json_eq(m.get(key, _MISSING), v)
    if op in ("$gt", "$gte", "$lt", "$lte"):
        if not (_is_number(v) or isinstance(v, str)):
            raise _bad(f"{op} on key {key!r} needs a number or a string, got {type(v).__name__}")
        return lambda m: _ordered(op, m.get(key, _MISSING), v)
    if op in ("$in", "$nin"):
        if not isinstance(v, (list, tuple, set, frozenset)):
            raise _bad(f"{op} on key {key!r} needs a list, got {type(v).__name__}")
        values = list(v)
        if op == "$in":
            return lambda m: (
                (x := m.get(key, _MISSING)) is not _MISSING and any(_json_eq(x, e) for e in values)
            )
        return lambda m: (
            (x := m.get(key, _MISSING)) is _MISSING or not any(_json_eq(x, e) for e in values)
        )
    if op == "$exists":
        if not isinstance(v, bool):
            raise _bad(f"$exists on key {key!r} needs true or false, got {v!r}")
        return lambda m: (key in m) == v

    def contains(m: Mapping[str, Any]) -> bool:  # $contains
        x = m.get(key, _MISSING)
        if isinstance(x, (list, tuple)):
            return any(_json_eq(e, v) for e in x)
        if isinstance(x, str) and isinstance(v, str):
            return v in x
        return False

    return contains


def _compile(f: Any, where: str) -> Predicate:
    if not isinstance(f, Mapping):
        raise _bad(f"{where} must be a dict, got {type(f).__name__}")
    preds = [_key_predicate(key, value) for key, value in f.items()]
    if not preds:
        return lambda m: True
    if len(preds) == 1:
        return preds[0]
    return lambda m: all(p(m) for p in preds)


def _key_predicate(key: Any, value: Any) -> Predicate:
    """One entry of a filter dict: a logical operator, a key with operators, or key == value."""
    if not isinstance(key, str):
        raise _bad(f"keys must be strings, got {key!r}")
    if key.startswith("$"):
        if key in ("$and", "$or"):
            if not isinstance(value, (list, tuple)) or not value:
                raise _bad(f"{key} needs a non-empty list of filters")
            subs = [_compile(v, f"{key}[{i}]") for i, v in enumerate(value)]
            if key == "$and":
                return lambda m: all(p(m) for p in subs)
            return lambda m: any(p(m) for p in subs)
        if key == "$not":
            sub = _compile(value, "$not")
            return lambda m: not sub(m)
        raise _bad(
            f"unknown top-level operator {key!r}; valid: {', '.join(LOGICAL_OPERATORS)}"
            f" (field operators like {FIELD_OPERATORS[0]} go inside {{'key': {{...}}}})"
        )
    if isinstance(value, Mapping) and value and any(str(k).startswith("$") for k in value):
        if not all(isinstance(k, str) and k.startswith("$") for k in value):
            raise _bad(f"value of key {key!r} mixes operators and plain keys: {dict(value)!r}")
        return _compile_field_ops(key, value)
    return lambda m: _json_eq(m.get(key, _MISSING), value)


def compile_filter(filter: Any) -> Predicate | None:
    """Turn a filter (None, dict or callable) into a predicate on a metadata dict.

    Returns ``None`` for ``None`` (no filtering). Raises ``ValueError`` for a malformed
    filter. A callable is wrapped so that its result is read as a bool.
    """
    if filter is None:
        return None
    if callable(filter) and not isinstance(filter, Mapping):
        return lambda m: bool(filter(m))
    if not isinstance(filter, Mapping):
        raise _bad(f"expected None, a dict or a callable, got {type(filter).__name__}")
    return _compile(filter, "filter")


# ---------------------------------------------------------------------- the --filter syntax
class FilterSyntaxError(ValueError, UserError):
    """A ``--filter`` expression that does not parse; the message starts with "bad filter"."""


_EXPRESSION = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*(==|!=|>=|<=|=|>|<)\s*(.*?)\s*$", re.S)
_ORDERED_OPS = {">=": "$gte", "<=": "$lte", ">": "$gt", "<": "$lt"}


def parse_filter_expressions(expressions: list[str] | None) -> dict[str, Any] | None:
    """``--filter`` expressions -> a filter dict (AND of all); ``None`` for none.

    ``key=value`` (``==`` too) and ``key!=value``: a numeric value also matches the same
    number stored as text; ``true``/``false`` match booleans too; quote a value
    (``key="2"``) to compare it as text only. ``key>=n``, ``key<=n``, ``key>n``, ``key<n``:
    ordered comparison; a numeric value compares by value with numbers and numeric text
    (``n>=5`` matches ``7`` and ``"7"``, not ``"abc"``), any other value (or a quoted one)
    with text, as text. A value is numeric when `numeric_text` reads it. Raises
    `FilterSyntaxError` for a malformed one.
    """
    if not expressions:
        return None
    clauses = []
    for expr in expressions:
        m = _EXPRESSION.match(expr)
        if not m:
            raise FilterSyntaxError(
                f"bad filter {expr!r}: expected KEY=VALUE, KEY!=VALUE, KEY>=N, KEY<=N, KEY>N or KEY<N"
            )
        key, op, raw = m.groups()
        quoted = len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'"
        text = raw[1:-1] if quoted else raw
        if op in _ORDERED_OPS:
            if not text:
                raise FilterSyntaxError(f"bad filter {expr!r}: missing value after {op}")
            num = None if quoted else numeric_text(text)
            clauses.append({key: {_ORDERED_OPS[op]: num if num is not None else text}})
            continue
        values: list[Any] = [text]
        if not quoted:
            num = numeric_text(text)
            if num is not None:
                values.insert(0, num)
            elif text.lower() in ("true", "false"):
                values.insert(0, text.lower() == "true")
        clauses.append({key: {"$in" if op in ("=", "==") else "$nin": values}})
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}
