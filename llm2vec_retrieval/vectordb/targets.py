"""Where `load_shards` writes: a target URL parsed into a `Target`, and the collection name rule.

``postgresql://user:pass@host:port/db`` (any libpq URL, ``?host=/socket/dir`` included),
``qdrant:///abs/path`` or ``qdrant://rel/path`` (qdrant-client local mode),
``qdrant+http://host:port`` / ``qdrant+https://host:port`` (a Qdrant server; the API key
from ``QDRANT_API_KEY``), ``lancedb:///abs/path`` or ``lancedb://rel/path``.
Nothing is imported or opened here.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ..errors import UserError

SCHEMES = ("postgresql", "qdrant", "lancedb")
EXAMPLES = (
    "postgresql://user:password@host:5432/dbname",
    "qdrant:///path/to/folder",
    "qdrant+http://host:6333",
    "lancedb:///path/to/folder",
)
#: Lower case so that every client (LlamaIndex lower-cases Postgres table names) sees the
#: same name; 50 characters leave room for the ``data_`` prefix and index suffixes within
#: Postgres' 63.
COLLECTION_RE = re.compile(r"^[a-z_][a-z0-9_]{0,49}$")


@dataclass(frozen=True)
class Target:
    """A parsed target: ``kind`` is one of `SCHEMES`; ``location`` is a libpq URL, a folder,
    or (Qdrant server) an http(s) URL; ``remote`` is True for a Qdrant server."""

    kind: str
    location: str
    remote: bool = False

    def describe(self) -> str:
        if self.kind == "postgresql":  # never print a password
            return "postgresql://" + re.sub(r"^[^@/]*@", "", self.location.split("://", 1)[1])
        return f"{self.kind} {self.location}"


def parse_target(url: str) -> Target:
    """`Target` of a target URL; `UserError` naming the accepted forms for anything else."""
    scheme, sep, rest = str(url).partition("://")
    scheme = scheme.lower()
    if sep and scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        return Target("postgresql", "postgresql://" + rest)
    if sep and scheme in ("qdrant+http", "qdrant+https"):
        if not rest:
            raise UserError(f"{url!r} names no Qdrant server; e.g. qdrant+http://localhost:6333")
        return Target("qdrant", f"{scheme.split('+')[1]}://{rest}", remote=True)
    if sep and scheme in ("qdrant", "lancedb"):
        if not rest:
            raise UserError(f"{url!r} names no folder; e.g. {scheme}:///path/to/folder")
        return Target(scheme, os.path.abspath(os.path.expanduser(rest)))
    raise UserError(f"unknown target {url!r}; use one of: {', '.join(EXAMPLES)}")


def check_collection(name: str) -> str:
    """``name`` if it is a valid collection name, else `UserError`."""
    if not isinstance(name, str) or not COLLECTION_RE.match(name):
        raise UserError(
            f"invalid collection name {name!r}: use 1-50 lower-case letters, digits and "
            "underscores, not starting with a digit"
        )
    return name
