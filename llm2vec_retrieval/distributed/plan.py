"""Which files a corpus encoding reads, and how they are cut into shards.

Files are found as ``llm2vec-retrieval index`` finds them (`ingest.readers.discover`: .txt,
.md, .jsonl, .csv, .pdf), in the same order, plus ``.parquet`` tables (one document per
row, id and text columns) after them. Consecutive files are grouped until a group holds
about ``shard_bytes`` of input (or ``max_files`` files); a group becomes one shard whose
name depends only on its files (`shards.shard_name`), and whose ``position`` (the place
of its first file in the full, sorted list) orders the shards as the files were found.
Files already in a finished shard are left out before grouping, so a rerun never puts a
file in two shards.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..ingest.indexer import relative_source
from ..ingest.readers import discover, display_path, is_hidden
from ..shards import shard_name

PARQUET_SUFFIX = ".parquet"


@dataclass
class SourceFile:
    """A file to encode: absolute ``path``, ``src`` (as the index records it), ``size``."""

    path: str
    src: str
    size: int

    @property
    def is_parquet(self) -> bool:
        return self.path.lower().endswith(PARQUET_SUFFIX)


@dataclass
class Group:
    """The files of one shard (``name`` from their sources; ``position`` orders shards)."""

    name: str
    position: int
    files: list[SourceFile] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Group:
        return cls(data["name"], int(data["position"]), [SourceFile(**f) for f in data["files"]])


def _parquet_files(sources: Sequence[str | os.PathLike]) -> list[Path]:
    found: dict[Path, None] = {}
    for s in sources:
        path = Path(os.path.abspath(os.path.expanduser(os.fspath(s))))
        if path.is_file() and path.suffix.lower() == PARQUET_SUFFIX:
            found[path] = None
        elif path.is_dir():
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames[:] = sorted(d for d in dirnames if not is_hidden(d))
                for name in sorted(filenames):
                    if not is_hidden(name) and name.lower().endswith(PARQUET_SUFFIX):
                        found[Path(dirpath) / name] = None
    return list(found)


def find_sources(
    sources: Sequence[str | os.PathLike], root: Path, exclude: Sequence[Path] = ()
) -> tuple[list[SourceFile], list[tuple[str, str]]]:
    """(files to encode in order, [(source, reason)] for paths refused). A source that does
    not exist raises FileNotFoundError."""
    named_parquet = [
        s for s in sources if os.fspath(s).lower().endswith(PARQUET_SUFFIX) and os.path.isfile(s)
    ]
    others = [s for s in sources if s not in named_parquet]
    paths, refused = discover(others, exclude=list(exclude)) if others else ([], [])
    excluded = [Path(os.path.abspath(p)) for p in exclude]
    for p in _parquet_files(sources):
        if p not in paths and not any(p == e or e in p.parents for e in excluded):
            paths.append(p)
    files = []
    for p in paths:
        try:
            size = p.stat().st_size
        except OSError as exc:
            refused.append((p, f"unreadable ({exc.strerror or type(exc).__name__})"))
            continue
        files.append(SourceFile(str(p), relative_source(p, root), size))
    return files, [(display_path(relative_source(p, root)), r) for p, r in refused]


def plan_groups(
    files: Sequence[SourceFile],
    done: set[str] | frozenset[str] = frozenset(),
    shard_bytes: int = 64 << 20,
    max_files: int = 1000,
) -> list[Group]:
    """Groups of consecutive files not in ``done`` (sources), each about ``shard_bytes``
    of input and at most ``max_files`` files."""
    if shard_bytes < 1 or max_files < 1:
        raise ValueError("shard_bytes and max_files must be at least 1")
    groups: list[Group] = []
    current: list[tuple[int, SourceFile]] = []
    size = 0

    def close() -> None:
        nonlocal size
        if current:
            fs = [f for _, f in current]
            groups.append(Group(shard_name([f.src for f in fs]), current[0][0], fs))
            current.clear()
            size = 0

    for i, f in enumerate(files):
        if f.src in done:
            close()  # groups never span a finished shard: positions stay in file order
            continue
        current.append((i, f))
        size += f.size
        if size >= shard_bytes or len(current) >= max_files:
            close()
    close()
    return groups
