"""The typed contents of an index folder's JSON files: ``llm2vec-index.json`` and the
entries of ``files.json``.

`IndexManifest` is what built an index (embedder, chunking, kind, root, ...); `FileEntry`
is one indexed file (sha256 of its bytes, size, chunk and token counts, and while a large
file is committed part way, the `Position` where its chunking continues). The indexer,
`shards.build_index_from_shards` and `records.FileRecords` make and read them here, so
the JSON shape is written in one place. `from_json` reads every shape an earlier version
wrote (missing keys take the defaults an index run fills in); keys this version does not
know are kept and written back.

Not here: the folder layout, locking and atomic writes (:mod:`.folder`), deciding what a
run changes (:mod:`.plan`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from .chunking import Position

#: What None means for a new index (and for a manifest that lacks the key).
CHUNKING_DEFAULTS: dict[str, Any] = {
    "chunk_tokens": 256,
    "overlap": 32,
    "text_field": "text",
    "text_column": "text",
}


@dataclass(frozen=True)
class Chunking:
    """How files are cut into chunks (the manifest's ``chunking``)."""

    chunk_tokens: int = CHUNKING_DEFAULTS["chunk_tokens"]
    overlap: int = CHUNKING_DEFAULTS["overlap"]
    text_field: str = CHUNKING_DEFAULTS["text_field"]
    text_column: str = CHUNKING_DEFAULTS["text_column"]

    @classmethod
    def from_json(cls, data: Any) -> Chunking:
        data = data if isinstance(data, dict) else {}
        return cls(**{**CHUNKING_DEFAULTS, **{k: data[k] for k in CHUNKING_DEFAULTS if k in data}})

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in CHUNKING_DEFAULTS}


# keys IndexManifest reads itself (the others go to `extra`); "format"/"format_version"
# belong to the folder (`IndexFolder.write_manifest` adds them)
_FOLDER_KEYS = ("format", "format_version")
REBUILD_KEY = "rebuild_unfinished"


@dataclass
class IndexManifest:
    """``llm2vec-index.json`` less its format keys. None fields are not written (an index
    built from shards records no ``follow_symlinks`` and no ``hybrid``, as before)."""

    embedder: dict[str, Any] = field(default_factory=dict)  # `folder.embedder_spec`
    kind: str | None = None
    root: str | None = None
    chunking: Chunking = field(default_factory=Chunking)
    lexical: bool = True
    follow_symlinks: bool | None = None
    query_instruction: str | None = None
    metric: str = "cosine"
    hybrid: dict[str, Any] | None = None  # {"fusion", "alpha"} searches use
    created_at: str | None = None
    updated_at: str | None = None
    encoded_in: list[str] | None = None  # every dtype that embedded chunks of the index
    from_shards: str | None = None
    #: a --rebuild has not finished its first commit (the next run starts it over)
    rebuild_unfinished: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IndexManifest:
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        values = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known and k not in _FOLDER_KEYS}
        values["chunking"] = Chunking.from_json(data.get("chunking"))
        values["embedder"] = dict(data.get("embedder") or {})
        values["lexical"] = bool(data.get("lexical", True))
        values["rebuild_unfinished"] = bool(data.get(REBUILD_KEY))
        return cls(**values, extra=extra)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            **self.extra,
            "embedder": self.embedder,
            "kind": self.kind,
            "root": self.root,
            "chunking": self.chunking.to_json(),
            "lexical": self.lexical,
            "query_instruction": self.query_instruction,
            "metric": self.metric,
        }
        for key in ("follow_symlinks", "hybrid", "created_at", "updated_at", "encoded_in"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.from_shards is not None:
            out["from_shards"] = self.from_shards
        if self.rebuild_unfinished:
            out[REBUILD_KEY] = True
        return out

    def same_as(self, other: IndexManifest) -> bool:
        """Equal apart from ``updated_at`` (nothing to write but the time)."""
        return replace(self, updated_at=None).to_json() == replace(other, updated_at=None).to_json()


@dataclass
class FileEntry:
    """One file of ``files.json``.

    ``partial``: the file is committed part way and its chunking continues there (a run
    killed inside a large file); ``derived``: the entry was rebuilt from the store after
    files.json was lost, and the file's stored chunks are checked against it when it is
    read again. Entries count only when the store holds exactly their chunks.
    """

    sha256: str
    chunks: int = 0
    tokens: int = 0
    bytes: int | None = None
    indexed_at: str | None = None
    partial: Position | None = None
    derived: bool = False

    @property
    def complete(self) -> bool:
        """Indexed to its end from what it says (not resumed, not to be checked)."""
        return self.partial is None and not self.derived

    @classmethod
    def from_json(cls, data: Any) -> FileEntry | None:
        """The entry, or None when it is not one this version can use (its file is then
        indexed from the start, as a new one)."""
        if not isinstance(data, dict):
            return None
        sha, chunks, tokens = data.get("sha256"), data.get("chunks"), data.get("tokens", 0)
        if not isinstance(sha, str) or not _is_count(chunks) or not _is_count(tokens):
            return None
        assert isinstance(chunks, int) and isinstance(tokens, int)  # what _is_count checked
        partial = None
        if "partial" in data:
            partial = Position.from_dict(data["partial"])
            if partial is None:
                return None
        size = data.get("bytes")
        return cls(
            sha256=sha,
            chunks=chunks,
            tokens=tokens,
            bytes=size if _is_count(size) else None,
            indexed_at=data.get("indexed_at") if isinstance(data.get("indexed_at"), str) else None,
            partial=partial,
            derived=data.get("derived") is True,
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sha256": self.sha256, "chunks": self.chunks}
        if self.derived:
            return {**out, "derived": True}
        out.update(bytes=self.bytes, tokens=self.tokens)
        if self.indexed_at is not None:
            out["indexed_at"] = self.indexed_at
        if self.partial is not None:
            out["partial"] = self.partial.to_dict()
        return out


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def files_from_json(data: Any) -> dict[str, FileEntry]:
    """The usable entries of a ``files.json`` body (``{"files": {source: entry}}``)."""
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict):
        return {}
    entries = {src: FileEntry.from_json(e) for src, e in files.items()}
    return {src: e for src, e in entries.items() if e is not None}


def files_to_json(files: dict[str, FileEntry], store_version: str | None = None) -> dict[str, Any]:
    """A ``files.json`` body; ``store_version``: the store version (`IndexStore.version`)
    whose chunks are exactly those of the entries, when the writer knows it."""
    body: dict[str, Any] = {"files": {src: files[src].to_json() for src in sorted(files)}}
    if store_version is not None:
        body["store_version"] = store_version
    return body


def store_version_from_json(data: Any) -> str | None:
    """The ``store_version`` a ``files.json`` body records (None when none)."""
    v = data.get("store_version") if isinstance(data, dict) else None
    return v if isinstance(v, str) else None
