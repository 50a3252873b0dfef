"""The planning step of an index run: which options the index gets, and what changed.

`resolve_manifest` merges the options given with what the folder records (a new index
takes the options given, else the defaults; an existing one keeps what it records, and
--rebuild starts over from that with the options given). `plan_changes` compares the
files found with ``files.json`` and the store: which entries still count (the store holds
exactly their chunks with their sha256), which sources are gone, and which files to look
at. Whether a file changed is known only once it is read and hashed, which the run does
once per file (:mod:`.run`).

Nothing here reads a file's contents, loads a model or writes anything.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, overload

from ..index.fusion import default_hybrid, recorded_hybrid
from .folder import MANIFEST_FILE, IndexFolderError, embedder_spec, now
from .manifest import CHUNKING_DEFAULTS, FileEntry, IndexManifest

if TYPE_CHECKING:
    from .indexer import IndexSettings

DEFAULT_KIND = "flat"
#: (chunk id, the sha256 its metadata records) of each stored chunk, per source
Stored = dict[str, Sequence[tuple[str, "str | None"]]]


class SourceChunks(Sequence[tuple[str, "str | None"]]):
    """The chunks the store holds of one source as its ``files.json`` entry says, when
    files.json records the store version found (`IndexStore.version`): ``"<src>#<n>"``
    for n from 0 to ``count - 1`` (`records.chunk_record`'s ids), each with the entry's
    sha256. Made on demand: a run that adds a file to a large index reads no chunk's
    metadata."""

    def __init__(self, src: str, sha256: str, count: int):
        self.src, self.sha256, self.n = src, sha256, count

    def __len__(self) -> int:
        return self.n

    @overload
    def __getitem__(self, i: int) -> tuple[str, str | None]: ...
    @overload
    def __getitem__(self, i: slice) -> list[tuple[str, str | None]]: ...
    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n))]
        if not -self.n <= i < self.n:
            raise IndexError(i)
        return f"{self.src}#{i % self.n}", self.sha256

    def __iter__(self) -> Iterator[tuple[str, str | None]]:
        return ((f"{self.src}#{n}", self.sha256) for n in range(self.n))


def _sha256s(chunks: Sequence[tuple[str, str | None]]) -> set[str | None]:
    if isinstance(chunks, SourceChunks):
        return {chunks.sha256} if len(chunks) else set()
    return {sha for _, sha in chunks}


def relative_source(path: Path, root: Path) -> str:
    """The ``source`` of a file: POSIX path relative to root, or absolute outside it."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def resolve_source(source: str, root: Path) -> Path:
    p = Path(source)
    return p if p.is_absolute() else root / p


@dataclass
class RunConfig:
    """What a run writes and how it starts."""

    manifest: IndexManifest
    fresh: bool  # the index starts over (new, --rebuild, or a stopped --rebuild)
    rechunk_all: bool  # every file is chunked again (fresh, or chunking options changed)
    embedder_changed: bool  # another model than the one recorded: checked before writing
    notes: list[tuple[str, str]] = field(default_factory=list)


def resolve_manifest(old: IndexManifest | None, s: IndexSettings, folder_path: Path) -> RunConfig:
    """The manifest this run writes, from the recorded one (``old``, None for a new
    index) and the settings. `IndexFolderError` for a --kind or --root that differs from
    an existing index's."""
    unfinished = old is not None and old.rebuild_unfinished
    fresh = old is None or s.rebuild or unfinished
    notes = []
    if unfinished and not s.rebuild:
        notes.append(
            (
                MANIFEST_FILE,
                "a --rebuild was stopped before its first commit: starting it over with "
                "the options it recorded",
            )
        )
    base = replace(old, rebuild_unfinished=False) if old is not None else IndexManifest()
    old_spec = base.embedder
    if s.model is not None or s.adapter is not None or not old_spec:
        spec = embedder_spec(
            s.model if s.model is not None else old_spec.get("model"),
            s.adapter if s.adapter is not None else old_spec.get("adapter"),
        )
    else:
        spec = old_spec
    root_given = os.path.abspath(os.path.expanduser(s.root)) if s.root else None
    kind = s.kind or base.kind or DEFAULT_KIND
    root = root_given or base.root or os.getcwd()
    if not fresh:
        if kind != base.kind:
            raise IndexFolderError(
                f"{folder_path} is a {base.kind!r} index; to change the kind "
                f"to {kind!r} re-create it with --rebuild"
            )
        if root != base.root:
            raise IndexFolderError(
                f"{folder_path} has root {base.root}; "
                "to change it re-create the index with --rebuild"
            )
    given = {k: getattr(s, k) for k in CHUNKING_DEFAULTS if getattr(s, k) is not None}
    chunking = replace(base.chunking, **given)
    manifest = replace(
        base,
        lexical=bool(s.lexical if s.lexical is not None else base.lexical),
        follow_symlinks=bool(
            s.follow_symlinks if s.follow_symlinks is not None else base.follow_symlinks
        ),
        embedder=spec,
        query_instruction=s.query_instruction
        if s.query_instruction is not None
        else base.query_instruction,
        kind=kind,
        metric="cosine",
        chunking=chunking,
        root=root,
        # the fusion searches of this index use: set when it is made (or rebuilt, or first
        # indexed by a version that records it), kept afterwards
        hybrid=(None if fresh else recorded_hybrid({"hybrid": base.hybrid})) or default_hybrid(),
    )
    if fresh:
        manifest.created_at = now()
        manifest.encoded_in = None  # filled by the run's encoder
    return RunConfig(
        manifest,
        fresh,
        fresh or chunking != base.chunking,
        embedder_changed=old is not None and old.embedder != spec,
        notes=notes,
    )


@dataclass
class Candidate:
    """A file found under the sources, with what the index holds of it."""

    path: Path
    src: str
    size: int  # from stat: progress and the choice of how to read it
    entry: FileEntry | None  # its files.json entry, when that still counts
    stored: Sequence[tuple[str, str | None]]  # its chunks in the store


@dataclass
class Plan:
    """What changed: entries that count, sources to remove, files to look at."""

    state: dict[str, FileEntry]
    removed: list[str]
    candidates: list[Candidate]
    recorded: set[str]  # sources files.json or the store knows
    #: every stored chunk belongs to an entry that counts (so files.json, kept by the
    #: run's commits, describes the store exactly and may record its version)
    exact: bool = False


def entries_from_store(stored: Stored) -> dict[str, FileEntry]:
    """files.json lost: an entry per source whose stored chunks all carry one sha256,
    checked against the file when it is read (``derived``)."""
    state = {}
    for src, chunks in stored.items():
        shas = _sha256s(chunks)
        if len(shas) == 1 and None not in shas:
            state[src] = FileEntry(sha256=str(shas.pop()), chunks=len(chunks), derived=True)
    return state


def plan_changes(
    files: Sequence[Path],
    sources: Sequence[str | os.PathLike],
    root: Path,
    state: dict[str, FileEntry] | None,
    stored: Stored,
) -> Plan:
    """Compare the files found (``files``, under ``sources``) with the entries of
    files.json (``state``; None when it was lost) and the chunks in the store."""
    if state is None:
        state = entries_from_store(stored)
    state = {
        src: e
        for src, e in state.items()
        if e.chunks == len(stored.get(src, ())) and _sha256s(stored.get(src, ())) <= {e.sha256}
    }
    # Removed files: recorded but gone, or under a given folder but no longer found.
    source_roots = [Path(os.path.abspath(os.path.expanduser(os.fspath(s)))) for s in sources]
    found = {relative_source(p, root) for p in files}
    recorded = set(state) | set(stored)
    removed = []
    for src in sorted(recorded - found):
        path = resolve_source(src, root)
        under_given = any(path == r or r in path.parents for r in source_roots)
        if not path.exists() or under_given:
            removed.append(src)
    candidates = []
    for p in files:
        src = relative_source(p, root)
        try:
            size = p.stat().st_size
        except OSError:
            size = 0  # reading it says why
        candidates.append(Candidate(p, src, size, state.get(src), stored.get(src, [])))
    exact = set(stored) <= set(state) and all(_numbered(src, c) for src, c in stored.items())
    return Plan(state, removed, candidates, recorded, exact=exact)


def _numbered(src: str, chunks: Sequence[tuple[str, str | None]]) -> bool:
    """Whether the chunk ids are ``"<src>#0"`` to ``"<src>#<n-1>"`` (as `SourceChunks`
    makes them back)."""
    if isinstance(chunks, SourceChunks):
        return True
    return {cid for cid, _ in chunks} == {f"{src}#{n}" for n in range(len(chunks))}


def unchanged(entry: FileEntry | None, sha: str, rechunk_all: bool) -> bool:
    """Whether a file that hashes to ``sha`` is indexed as its entry says."""
    return entry is not None and entry.sha256 == sha and entry.complete and not rechunk_all
