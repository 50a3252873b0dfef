"""Which files a corpus encoding reads, and how they are cut into shards.

Files are found as ``llm2vec-retrieval index`` finds them, by the same walker with the same
link and file-type policy (`ingest.readers.discover`: .txt, .md, .jsonl, .csv, .pdf), in
the same order, plus ``.parquet`` tables (one document per row, id and text columns) after
them. Consecutive files are grouped until a group holds
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

from ..ingest.plan import relative_source
from ..ingest.readers import SUPPORTED_SUFFIXES, discover, display_path
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


def find_sources(
    sources: Sequence[str | os.PathLike],
    root: Path,
    exclude: Sequence[Path] = (),
    follow_symlinks: bool = False,
) -> tuple[list[SourceFile], list[tuple[str, str]]]:
    """(files to encode in order, [(source, reason)] for paths refused). A source that does
    not exist raises FileNotFoundError. Links and special files: as `discover` treats them
    (``follow_symlinks``: follow links that lead outside the sources)."""
    found, refused = discover(
        sources,
        exclude=list(exclude),
        suffixes=(*SUPPORTED_SUFFIXES, PARQUET_SUFFIX),
        follow_symlinks=follow_symlinks,
    )
    # the index command's files in its order, then the parquet tables
    paths = [p for p in found if p.suffix.lower() != PARQUET_SUFFIX]
    paths += [p for p in found if p.suffix.lower() == PARQUET_SUFFIX]
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
