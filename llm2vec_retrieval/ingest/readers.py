"""Finding and reading source files: .txt, .md, .jsonl, .csv and (with pypdf) .pdf.

A file becomes a list of `Segment`s: the whole text for .txt/.md, one per record for
.jsonl (``line``), one per row for .csv (``row``), one per page for .pdf (``page``).
Chunk offsets (``start``/``end``) are relative to the segment's text. A file that cannot
be read raises `SkipFile` with a short reason; the indexer reports it and goes on.
A .txt/.md file larger than the indexer's window is not read whole: `scan_text_file`
checks and hashes it in blocks, and `open_text` streams it to the chunker.

Texts and string fields with lone surrogates (a ``"\ud83d"`` escape in a .jsonl record)
are repaired (U+FFFD, see :mod:`llm2vec_retrieval.text`) and reported in a note.
Folders that hold an index (an ``index`` folder, a saved ``IndexStore``, which includes
LangChain and LlamaIndex saves) are not walked into, and files whose names are not valid
UTF-8 are refused: both are reported with the reason. So are symbolic links that lead
outside the sources (unless followed on request), dangling links, link loops, FIFOs and
devices (`discover`).
"""

from __future__ import annotations

import codecs
import csv
import errno
import hashlib
import io
import json
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..text import has_surrogates, repair_surrogates, repaired_message

TEXT_SUFFIXES = (".txt", ".md", ".markdown")
SUPPORTED_SUFFIXES = (*TEXT_SUFFIXES, ".jsonl", ".csv", ".pdf")
# Metadata keys set by the indexer; record fields with these names are not copied.
RESERVED_KEYS = frozenset(
    {"source", "chunk", "start", "end", "sha256", "line", "row", "page", "tokens"}
)
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


def display_path(path: str | os.PathLike) -> str:
    """A path as it can be printed: bytes that are not UTF-8 shown as ``\\xNN``."""
    text = os.fspath(path)
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return repair_surrogates(text)


def index_folder_reason(folder: Path) -> str | None:
    """Why ``folder`` is not walked into when it holds an index, else None."""
    from .folder import MANIFEST_FILE

    if (folder / MANIFEST_FILE).is_file():
        return "an llm2vec-retrieval index folder: its files are not indexed"
    if _is_saved_store(folder):
        return "a saved index store: its files are not indexed"
    return None


def _is_saved_store(folder: Path) -> bool:
    """True when ``folder`` holds a saved IndexStore (its manifest says so)."""
    try:
        m = json.loads((folder / "manifest.json").read_bytes())
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(m, dict) and m.get("library") == "llm2vec-retrieval" and "files" in m


BAD_NAME = "file name is not valid UTF-8; rename it to index it"
FOLLOW_HINT = "pass --follow-symlinks to index it"


def special_file_reason(path: Path) -> str | None:
    """Why ``path`` (links followed) cannot be read as a document, or None for a regular
    file: a dangling link, a link loop, a FIFO, a device, a socket (reading a FIFO or a
    device would block or never end)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if os.path.islink(path):
            if exc.errno == errno.ELOOP:
                return "symbolic link loop"
            try:
                target = display_path(os.readlink(path))
            except OSError:
                target = "?"
            return f"dangling symbolic link (to {target})"
        return f"unreadable ({exc.strerror or type(exc).__name__})"
    if stat.S_ISREG(mode):
        return None
    kinds = [
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a folder"),
    ]
    kind = next((name for test, name in kinds if test(mode)), "a special file")
    return f"not a regular file: {kind}"


class _Walk:
    """One `discover` walk: the link and file-type policy (see there) and what it found."""

    def __init__(
        self, roots: Sequence[Path], exclude: Sequence[Path], follow: bool, suffixes: tuple
    ):
        self.roots = roots  # the sources, links resolved
        self.excluded = [Path(os.path.abspath(p)) for p in exclude]
        self.excluded += [Path(os.path.realpath(p)) for p in self.excluded]
        self.follow = follow
        self.suffixes = suffixes
        self.found: dict[Path, None] = {}
        self.refused: list[tuple[Path, str]] = []
        self.seen: set[Path] = set()  # real folders walked (a followed link may lead back)

    def is_excluded(self, p: Path) -> bool:
        return any(p == e or e in p.parents for e in self.excluded)

    def inside(self, real: Path) -> bool:
        return any(real == r or r in real.parents for r in self.roots)

    def link_reason(self, p: Path, what: str) -> tuple[Path | None, str | None]:
        """(resolved path, None) for a link that may be followed; (None, None) for one left
        out silently (into the index folder, or a folder under the sources, walked anyway);
        (None, reason) for one refused."""
        real = Path(os.path.realpath(p))
        if self.is_excluded(real):
            return None, None
        if self.inside(real):
            return (real, None) if what == "file" else (None, None)
        if not self.follow:
            target = display_path(os.fspath(real))
            return None, f"symbolic link to a {what} outside the sources ({target}); {FOLLOW_HINT}"
        return real, None

    def add_file(self, p: Path) -> None:
        reason = special_file_reason(p)
        if reason is not None:
            self.refused.append((p, reason))
        elif has_surrogates(os.fspath(p)):
            self.refused.append((p, BAD_NAME))
        else:
            self.found[p] = None

    def add_source(self, path: Path) -> None:
        """A source named directly: a file is tried whatever its suffix (another is
        reported), a folder is walked depth first, in name order."""
        if self.is_excluded(path):
            return
        if not path.is_dir():
            reason = index_folder_reason(path.parent)
            if reason is not None:
                self.refused.append((path, f"inside {reason.split(':')[0]}"))
            elif path.suffix.lower() in self.suffixes:
                self.add_file(path)
            else:
                supported = ", ".join(self.suffixes)
                kind = path.suffix or "(none)"
                self.refused.append(
                    (path, f"unsupported file type {kind!r}; supported: {supported}")
                )
            return
        reason = index_folder_reason(path)
        if reason is not None:
            self.refused.append((path, reason))
            return
        stack = [path]  # no recursion: any depth
        while stack:
            stack += reversed(self.walk_dir(stack.pop()))

    def walk_dir(self, folder: Path) -> list[Path]:
        """Take in the files of ``folder``; its sub-folders to walk, in order."""
        real = Path(os.path.realpath(folder))
        if real in self.seen or self.is_excluded(real):  # walked, or the index (via a link)
            return []
        self.seen.add(real)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            self.refused.append((folder, f"unreadable ({exc.strerror or type(exc).__name__})"))
            return []
        subdirs = []
        for entry in entries:
            p = folder / entry.name
            if is_hidden(entry.name) or self.is_excluded(p):
                continue
            if self.walk_entry(entry, p):
                subdirs.append(p)
        return subdirs

    def walk_entry(self, entry: os.DirEntry, p: Path) -> bool:
        """Take in one entry of a walked folder; whether it is a folder to walk."""
        is_link = entry.is_symlink()
        try:
            is_dir = entry.is_dir()  # links followed
        except OSError:
            is_dir = False
        if is_dir:
            if is_link:
                target, reason = self.link_reason(p, "folder")
                if reason is not None:
                    self.refused.append((p, reason))
                if target is None:
                    return False
            reason = index_folder_reason(p)
            if reason is not None:
                self.refused.append((p, reason))
                return False
            return True
        if p.suffix.lower() not in self.suffixes:
            return False
        if is_link and special_file_reason(p) is None:
            target, reason = self.link_reason(p, "file")
            if target is None:
                if reason is not None:
                    self.refused.append((p, reason))
                return False
        self.add_file(p)
        return False


def discover(
    sources: Sequence[str | os.PathLike],
    exclude: Sequence[Path] = (),
    *,
    suffixes: Sequence[str] = SUPPORTED_SUFFIXES,
    follow_symlinks: bool = False,
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files to index under ``sources`` (absolute, sorted, de-duplicated) and paths refused
    (with the reason). The one walker of the package: ``index`` and ``encode-corpus``
    (which adds ``.parquet`` to ``suffixes``) find files here.

    Folders are walked recursively (hidden entries skipped) and only ``suffixes`` are kept;
    a file named directly is always tried (another suffix is reported). Paths under
    ``exclude`` (the index folder) are left out silently; folders holding another index
    (`index_folder_reason`) and files whose names are not valid UTF-8 are refused.
    Symbolic links: a source named directly is used wherever it points; inside a walked
    folder, a link to a file under the sources (links resolved) is indexed under its own
    name, a link to a folder under them is not walked (its files are found where they
    are), and a link that leads outside the sources is refused unless ``follow_symlinks``
    (then it is followed, folders too, each real folder walked once). Dangling links, link
    loops, FIFOs, devices and sockets are refused (`special_file_reason`): reading one
    could block or never end. A source that does not exist raises FileNotFoundError.
    """
    named = [Path(os.path.abspath(os.path.expanduser(os.fspath(src)))) for src in sources]
    for src, path in zip(sources, named, strict=True):
        if not path.exists():
            reason = special_file_reason(path) if os.path.islink(path) else None
            raise FileNotFoundError(f"source not found: {src}" + (f" ({reason})" if reason else ""))
    roots = [Path(os.path.realpath(p)) for p in named]
    walk = _Walk(roots, exclude, follow_symlinks, tuple(s.lower() for s in suffixes))
    for path in named:
        walk.add_source(path)
    return sorted(walk.found), walk.refused


def _decode(data: bytes) -> str:
    if b"\x00" in data[:8192]:
        raise SkipFile("binary file (NUL bytes)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SkipFile(f"not UTF-8 text (byte {exc.start})") from None


def scan_text_file(path: Path, block: int = 1 << 20) -> tuple[str, int]:
    """(sha256, size) of a text file read in blocks, after the checks `read_segments`
    makes on text (`SkipFile` for NUL bytes or bytes that are not UTF-8)."""
    h = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    size = 0
    with open(path, "rb") as f:
        while data := f.read(block):
            if size == 0 and b"\x00" in data[:8192]:
                raise SkipFile("binary file (NUL bytes)")
            h.update(data)
            try:
                decoder.decode(data)
            except UnicodeDecodeError as exc:
                raise SkipFile(f"not UTF-8 text (byte {size + exc.start})") from None
            size += len(data)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise SkipFile(f"not UTF-8 text (byte {size - len(decoder.getstate()[0])})") from None
    return h.hexdigest(), size


def open_text(path: Path) -> io.TextIOWrapper:
    """A checked text file (`scan_text_file`) opened for streaming: the same characters
    as ``read_segments`` gives (BOM dropped, line ends kept as they are)."""
    return open(path, encoding="utf-8-sig", newline="")


def _repair_segments(segments: list[Segment], notes: list[str]) -> list[Segment]:
    repaired = 0
    for seg in segments:
        changed = has_surrogates(seg.text)
        seg.text = repair_surrogates(seg.text)
        meta = {}
        for k, v in seg.meta.items():
            if isinstance(k, str) and has_surrogates(k):
                k, changed = repair_surrogates(k), True
            if isinstance(v, str) and has_surrogates(v):
                v, changed = repair_surrogates(v), True
            meta[k] = v
        seg.meta = meta
        repaired += changed
    if repaired:
        notes.append(repaired_message(repaired, "record(s)" if len(segments) > 1 else "text"))
    return segments


def _scalar_fields(record: dict[str, Any], text_key: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key == text_key or key in RESERVED_KEYS or not isinstance(key, str):
            continue
        if (
            isinstance(value, bool)
            or isinstance(value, (int, float))
            and value == value
            and abs(value) != float("inf")
        ):
            out[key] = value
        elif isinstance(value, str) and len(value) <= _MAX_FIELD_CHARS:
            out[key] = value
    return out


def read_segments(path: Path, data: bytes, options: ReadOptions) -> tuple[list[Segment], list[str]]:
    """The segments of one file (its bytes already read) and notes (non-fatal problems)."""
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        segments, notes = _read_pdf(path, data)
    else:
        text = _decode(data)
        if suffix == ".jsonl":
            segments, notes = _read_jsonl(text, options.text_field)
        elif suffix == ".csv":
            segments, notes = _read_csv(text, options.text_column)
        else:
            segments, notes = [Segment(text)], []
    return _repair_segments(segments, notes), notes


def _read_jsonl(text: str, text_field: str) -> tuple[list[Segment], list[str]]:
    segments, missing, records, deep = [], 0, 0, []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise SkipFile(f"line {n} is not valid JSON") from None
        except RecursionError:  # nested deeper than the parser goes: that line only
            deep.append(n)
            continue
        records += 1
        if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
            missing += 1
            continue
        segments.append(
            Segment(record[text_field], {"line": n, **_scalar_fields(record, text_field)})
        )
    if deep and not records:
        raise SkipFile(f"line {deep[0]}: JSON nested too deeply")
    if records and not segments:
        raise SkipFile(f"no record has a string field {text_field!r} (choose it with --text-field)")
    notes = (
        [f"{missing} of {records} records have no string field {text_field!r}"] if missing else []
    )
    if deep:
        shown = ", ".join(map(str, deep[:5])) + (", ..." if len(deep) > 5 else "")
        notes.append(f"{len(deep)} line(s) skipped: JSON nested too deeply (line {shown})")
    return segments, notes


def _read_csv(text: str, column: str) -> tuple[list[Segment], list[str]]:
    csv.field_size_limit(1 << 30)
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = reader.fieldnames or []
        if not header:
            return [], []
        if column not in header:
            raise SkipFile(
                f"no column {column!r} (columns: {', '.join(header)}; choose it with --text-column)"
            )
        segments = []
        for n, row in enumerate(reader, 1):
            value = row.get(column)
            if value:
                extra = {
                    k: v
                    for k, v in row.items()
                    if isinstance(k, str)
                    and k != column
                    and k not in RESERVED_KEYS
                    and isinstance(v, str)
                    and len(v) <= _MAX_FIELD_CHARS
                }
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
