"""Finding and reading source files: .txt, .md, .jsonl, .csv and (with pypdf) .pdf.

A file becomes a list of `Segment`s: the whole text for .txt/.md, one per record for
.jsonl (``line``), one per row for .csv (``row``), one per page for .pdf (``page``).
Chunk offsets (``start``/``end``) are relative to the segment's text. A file that cannot
be read raises `SkipFile` with a short reason; the indexer reports it and goes on.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TEXT_SUFFIXES = (".txt", ".md", ".markdown")
SUPPORTED_SUFFIXES = (*TEXT_SUFFIXES, ".jsonl", ".csv", ".pdf")
# Metadata keys set by the indexer; record fields with these names are not copied.
RESERVED_KEYS = frozenset({"source", "chunk", "start", "end", "sha256", "line", "row", "page", "tokens"})
_MAX_FIELD_CHARS = 1000  # record fields longer than this are not copied into metadata


class SkipFile(Exception):
    """A file that is skipped; ``str(exc)`` is the reason shown to the user."""


@dataclass
class Segment:
    """A piece of a file's text with its own metadata (e.g. ``{"line": 3}``)."""

    text: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class ReadOptions:
    text_field: str = "text"
    text_column: str = "text"


def is_hidden(name: str) -> bool:
    return name.startswith(".")


def discover(
    sources: Sequence[str | os.PathLike], exclude: Sequence[Path] = ()
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files to index under ``sources`` (absolute, sorted, de-duplicated) and files refused.

    Folders are walked recursively (hidden entries and symlinked folders skipped) and only
    supported suffixes are kept; a file named directly is always tried (an unsupported
    suffix is reported). Paths under ``exclude`` (the index folder) are left out. A source
    that does not exist raises FileNotFoundError.
    """
    excluded = [Path(os.path.abspath(p)) for p in exclude]

    def is_excluded(p: Path) -> bool:
        return any(p == e or e in p.parents for e in excluded)

    found: dict[Path, None] = {}
    refused: list[tuple[Path, str]] = []
    for src in sources:
        path = Path(os.path.abspath(os.path.expanduser(os.fspath(src))))
        if not path.exists():
            raise FileNotFoundError(f"source not found: {src}")
        if path.is_file():
            if is_excluded(path):
                continue
            if path.suffix.lower() in SUPPORTED_SUFFIXES:
                found[path] = None
            else:
                refused.append((path, f"unsupported file type {path.suffix or '(none)'!r}; supported: "
                                      + ", ".join(SUPPORTED_SUFFIXES)))
            continue
        for dirpath, dirnames, filenames in os.walk(path):
            base = Path(dirpath)
            dirnames[:] = sorted(d for d in dirnames if not is_hidden(d) and not is_excluded(base / d))
            for name in sorted(filenames):
                p = base / name
                if is_hidden(name) or p.suffix.lower() not in SUPPORTED_SUFFIXES or is_excluded(p):
                    continue
                if p.is_file():
                    found[p] = None
    return sorted(found), refused


def _decode(data: bytes) -> str:
    if b"\x00" in data[:8192]:
        raise SkipFile("binary file (NUL bytes)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SkipFile(f"not UTF-8 text (byte {exc.start})") from None


def _scalar_fields(record: dict[str, Any], text_key: str) -> dict[str, Any]:
    out = {}
    for key, value in record.items():
        if key == text_key or key in RESERVED_KEYS or not isinstance(key, str):
            continue
        if isinstance(value, bool) or isinstance(value, (int, float)) and value == value and abs(value) != float("inf"):
            out[key] = value
        elif isinstance(value, str) and len(value) <= _MAX_FIELD_CHARS:
            out[key] = value
    return out


def read_segments(path: Path, data: bytes, options: ReadOptions) -> tuple[list[Segment], list[str]]:
    """The segments of one file (its bytes already read) and notes (non-fatal problems)."""
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        return _read_pdf(path, data)
    text = _decode(data)
    if suffix == ".jsonl":
        return _read_jsonl(text, options.text_field)
    if suffix == ".csv":
        return _read_csv(text, options.text_column)
    return [Segment(text)], []


def _read_jsonl(text: str, text_field: str) -> tuple[list[Segment], list[str]]:
    segments, missing, records = [], 0, 0
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise SkipFile(f"line {n} is not valid JSON") from None
        records += 1
        if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
            missing += 1
            continue
        segments.append(Segment(record[text_field], {"line": n, **_scalar_fields(record, text_field)}))
    if records and not segments:
        raise SkipFile(f"no record has a string field {text_field!r} (choose it with --text-field)")
    notes = [f"{missing} of {records} records have no string field {text_field!r}"] if missing else []
    return segments, notes


def _read_csv(text: str, column: str) -> tuple[list[Segment], list[str]]:
    csv.field_size_limit(1 << 30)
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = reader.fieldnames or []
        if not header:
            return [], []
        if column not in header:
            raise SkipFile(f"no column {column!r} (columns: {', '.join(header)}; choose it with --text-column)")
        segments = []
        for n, row in enumerate(reader, 1):
            value = row.get(column)
            if value:
                extra = {k: v for k, v in row.items()
                         if isinstance(k, str) and k != column and k not in RESERVED_KEYS
                         and isinstance(v, str) and len(v) <= _MAX_FIELD_CHARS}
                segments.append(Segment(value, {"row": n, **extra}))
    except csv.Error as exc:
        raise SkipFile(f"malformed CSV ({exc})") from None
    return segments, []


def _read_pdf(path: Path, data: bytes) -> tuple[list[Segment], list[str]]:
    try:
        import pypdf
    except ImportError:
        raise SkipFile("PDF support needs pypdf: pip install pypdf") from None
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        segments = []
        for i, page in enumerate(reader.pages, 1):
            text = page.extract_text() or ""
            if text.strip():
                segments.append(Segment(text, {"page": i}))
    except Exception as exc:  # pypdf raises many types on damaged files
        raise SkipFile(f"unreadable PDF ({type(exc).__name__}: {str(exc)[:100]})") from None
    return segments, []


def pdf_supported() -> bool:
    try:
        import pypdf  # noqa: F401
    except ImportError:
        return False
    return True
