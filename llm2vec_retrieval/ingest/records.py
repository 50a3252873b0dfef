"""A file's chunks as ``(id, text, metadata)`` records: exactly what ``index`` stores.

The indexer (:mod:`.indexer`) builds each chunk's record with `chunk_record`; code that
chunks files outside an index folder (corpus encoding into shards,
:mod:`llm2vec_retrieval.distributed`) uses `read_file_records`, so ids, texts, offsets and
metadata are the same. It leaves out what the indexer adds on top: resuming inside a large
file, streaming .txt files larger than memory (this reads a file whole), commits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .chunking import DEFAULT_WINDOW_CHARS, Chunk, iter_chunks
from .manifest import FileEntry
from .readers import ReadOptions, SkipFile, read_segments


def chunk_record(
    src: str, sha: str, n: int, chunk: Chunk, segment_metas: Sequence[dict[str, Any]]
) -> tuple[str, dict[str, Any]]:
    """(id, metadata) of chunk number ``n`` of file ``src`` (whose bytes hash to ``sha``):
    the segment's own fields (``line``, ``row``, ``page``, a record's scalars), then
    ``source``, ``chunk``, ``start``/``end`` (offsets in the segment), ``tokens``,
    ``sha256``. The id is ``"<src>#<n>"``."""
    span = chunk.span
    meta = {
        **segment_metas[chunk.segment],
        "source": src,
        "chunk": n,
        "start": span.start,
        "end": span.end,
        "tokens": span.tokens,
        "sha256": sha,
    }
    return f"{src}#{n}", meta


@dataclass
class FileRecords:
    """One file read and chunked: its `FileEntry` (``sha256``, ``bytes``, ``chunks``,
    ``tokens``), its records, and notes about it (e.g. repaired text)."""

    src: str
    sha256: str
    size: int
    records: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return sum(int(m["tokens"]) for _, _, m in self.records)

    def entry(self) -> FileEntry:
        return FileEntry(self.sha256, chunks=len(self.records), tokens=self.tokens, bytes=self.size)


def iter_records(
    tokenizer: Any,
    src: str,
    sha: str,
    texts: Sequence[str],
    metas: Sequence[dict[str, Any]],
    chunk_tokens: int,
    overlap: int,
    window_chars: int = DEFAULT_WINDOW_CHARS,
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """The records of a file's segments (``texts`` with their ``metas``), in order."""
    chunks = iter_chunks(tokenizer, texts, chunk_tokens, overlap, window_chars=window_chars)
    for n, chunk in enumerate(chunks):
        cid, meta = chunk_record(src, sha, n, chunk, metas)
        yield cid, chunk.text, meta


def read_file_records(
    path: Path,
    src: str,
    tokenizer: Any,
    chunk_tokens: int,
    overlap: int,
    options: ReadOptions | None = None,
    window_chars: int = DEFAULT_WINDOW_CHARS,
) -> FileRecords:
    """Read, hash and chunk one file. `SkipFile` (with the reason) when it cannot be read."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SkipFile(f"unreadable ({exc.strerror or type(exc).__name__})") from None
    sha = hashlib.sha256(data).hexdigest()
    segments, notes = read_segments(path, data, options or ReadOptions())
    out = FileRecords(src, sha, len(data), notes=list(notes))
    del data
    out.records = list(
        iter_records(
            tokenizer,
            src,
            sha,
            [s.text for s in segments],
            [s.meta for s in segments],
            chunk_tokens,
            overlap,
            window_chars,
        )
    )
    return out
