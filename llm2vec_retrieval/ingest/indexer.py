"""Incremental, crash-safe indexing of files into an index folder: the settings, the
report, and `Indexer`, which takes the folder's lock and runs one `run.IndexRun`.

One run:

1. read the manifest once and merge it with the options (:mod:`.plan`); load the store
   (if any) and ``files.json``; a file entry counts only if the store holds exactly its
   chunks with its sha256 (so a crash between the two writes of a commit is repaired by
   re-indexing that file). An unreadable or missing ``files.json`` beside a store is
   rebuilt from the store: each file whose stored chunks all carry its sha256 is
   re-chunked (no embedding) and kept when its chunks are the stored ones;
2. find the files under the sources; chunks of files that no longer exist are removed;
   read and hash each file once (:mod:`.run`): unchanged files are skipped, new and
   changed ones are (re-)chunked and embedded (a changed file's old chunks are deleted
   first);
3. commit (:mod:`.committer`) after about ``commit_every`` chunks or ``commit_seconds``,
   at file boundaries and inside files larger than ``IndexSettings.window_chars``: save the
   store atomically, then rewrite ``files.json``. A file committed part way has an entry
   with ``partial`` (the `Position` where its chunking continues), and the next run
   continues it there. A crash or Ctrl-C loses at most the uncommitted group. Chunk ids
   are ``"<path>#<n>"`` so re-adding is an upsert and nothing is ever duplicated.

Memory does not grow with the size of a file: large files are hashed in blocks, .txt/.md
files larger than the window are streamed to the chunker, and chunking tokenizes at most
a window at a time (see :mod:`.chunking`). (.jsonl/.csv/.pdf files are read whole; their
records are tokenized a window at a time.)

Chunk metadata: ``source`` (path relative to the index root, or absolute outside it),
``chunk`` (position in the file), ``start``/``end`` (character offsets in the file's
text, or in the record/row/page text for .jsonl/.csv/.pdf, which add ``line``/``row``/
``page`` and the record's other scalar fields), ``sha256`` (of the file's bytes).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._io import LockedError, file_lock
from .chunking import DEFAULT_WINDOW_CHARS
from .folder import LOCK_FILE, MANIFEST_FILE, IndexFolder, IndexFolderError, describe_embedder
from .manifest import CHUNKING_DEFAULTS, IndexManifest
from .plan import DEFAULT_KIND
from .run import IndexRun


@dataclass
class IndexSettings:
    """Options of ``index``; None means "keep what the index folder says" (or the default)."""

    # metadata["none_default"]: what None means for a new index (the docs show it beside None)
    model: str | None = field(
        default=None,
        metadata={
            "help": "model of a new index: a folder, .gguf file or embedded name "
            "(None: llm2vec_retrieval.DEFAULT_MODEL)"
        },
    )
    adapter: str | None = field(
        default=None, metadata={"help": "PEFT adapter folder stacked on the model (new index)"}
    )
    kind: str | None = field(
        default=None,
        metadata={
            "help": "FAISS index kind of a new index (one of llm2vec_retrieval.index.KINDS)",
            "none_default": lambda: DEFAULTS["kind"],
        },
    )
    chunk_tokens: int | None = field(
        default=None,
        metadata={"help": "tokens per chunk", "none_default": lambda: DEFAULTS["chunk_tokens"]},
    )
    overlap: int | None = field(
        default=None,
        metadata={
            "help": "tokens shared by consecutive chunks",
            "none_default": lambda: DEFAULTS["overlap"],
        },
    )
    text_field: str | None = field(
        default=None,
        metadata={
            "help": ".jsonl field holding the text",
            "none_default": lambda: DEFAULTS["text_field"],
        },
    )
    text_column: str | None = field(
        default=None,
        metadata={
            "help": ".csv column holding the text",
            "none_default": lambda: DEFAULTS["text_column"],
        },
    )
    query_instruction: str | None = field(
        default=None,
        metadata={"help": "instruction `search` prepends to queries (None: the model's)"},
    )
    root: str | None = field(
        default=None,
        metadata={"help": "folder `source` paths are relative to (None: the current folder)"},
    )
    rebuild: bool = field(
        default=False, metadata={"help": "start over with the recorded options and those given"}
    )
    follow_symlinks: bool | None = field(
        default=None,
        metadata={
            "help": "follow symbolic links that lead outside the sources (else they are skipped "
            "with a note); None: as recorded, no for a new index"
        },
    )
    lexical: bool | None = field(
        default=None,
        metadata={
            "help": "keep a BM25 index beside the vectors (hybrid search); None: as recorded, "
            "yes for a new index"
        },
    )
    commit_every: int = field(
        default=512,
        metadata={"help": "chunks per commit (at file boundaries, and inside large files)"},
    )
    commit_seconds: float = field(default=60.0, metadata={"help": "or at least this often"})
    window_chars: int = field(
        default=DEFAULT_WINDOW_CHARS,
        metadata={
            "help": "characters tokenized at once (bounds the memory of chunking); larger files "
            "are large: .txt/.md ones are streamed, and every large file is committed in groups"
        },
    )


#: What None means for a new index.
DEFAULTS: dict[str, Any] = {"kind": DEFAULT_KIND, **CHUNKING_DEFAULTS}


@dataclass
class IndexReport:
    indexed: list[str] = field(default_factory=list)
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)
    chunks_added: int = 0
    tokens: int = 0
    commits: int = 0
    seconds: float = 0.0
    total_files: int = 0
    total_chunks: int = 0
    #: the manifest the run wrote (or found unchanged); None until the run ends
    manifest: IndexManifest | None = None


class Indexer:
    """Runs one ``index`` invocation on a folder. See the module docstring."""

    def __init__(
        self,
        folder: IndexFolder,
        settings: IndexSettings,
        show_progress_bar: bool | None = None,
        *,
        dtype: Any = None,
        on_encode: Callable[[], None] | None = None,
    ):
        """``dtype``: the encoder's compute dtype, as `models.load_encoder` takes it (None:
        "auto"). ``on_encode``: called once, right before the run's first text is encoded
        (the CLI says which dtype runs; a run that embeds nothing calls it never)."""
        self.folder = folder
        self.settings = settings
        self.show_progress_bar = show_progress_bar
        self.dtype = dtype
        self.on_encode = on_encode
        #: The report of the current (or last) run; its ``commits`` say what an interrupted
        #: run kept.
        self.report = IndexReport()

    # ------------------------------------------------------------ main
    def run(self, sources: Sequence[str | os.PathLike]) -> IndexReport:
        p = self.folder.path
        if p.exists() and not p.is_dir():
            raise IndexFolderError(f"{p} exists and is not a folder")
        if (
            p.is_dir()
            and not self.folder.exists()
            and any(e.name != LOCK_FILE for e in p.iterdir())
        ):
            raise IndexFolderError(
                f"{p} exists, is not empty and is not an llm2vec-retrieval index; choose another --index folder"
            )
        self.report = IndexReport()
        existed = self.folder.exists()
        with contextlib.ExitStack() as locked:
            self.folder.path.mkdir(parents=True, exist_ok=True)
            try:  # one writer at a time (flock on POSIX, the Windows lock there)
                locked.enter_context(file_lock(self.folder.path / LOCK_FILE))
            except LockedError:
                raise IndexFolderError(f"another process is indexing {self.folder.path}") from None
            try:
                return IndexRun(
                    self.folder,
                    self.settings,
                    self.report,
                    self.show_progress_bar,
                    dtype=self.dtype,
                    on_encode=self.on_encode,
                ).execute(sources)
            finally:
                if not existed and not self.report.commits and not self.folder.has_store():
                    self._cleanup_empty_folder()

    def _cleanup_empty_folder(self) -> None:
        # a first run that committed nothing (failed, or interrupted before its first commit)
        # leaves no folder behind: at most the manifest of its first commit and our lock file
        p = self.folder.path
        try:
            if p.is_dir() and {e.name for e in p.iterdir()} <= {LOCK_FILE, MANIFEST_FILE}:
                (p / MANIFEST_FILE).unlink(missing_ok=True)
                (p / LOCK_FILE).unlink(missing_ok=True)
                p.rmdir()
        except OSError:
            pass


def summary(report: IndexReport, folder: IndexFolder) -> str:
    parts = [
        f"indexed {len(report.indexed)} file(s) ({report.chunks_added} chunks, {report.tokens:,} tokens)"
    ]
    if report.unchanged:
        parts.append(f"{report.unchanged} unchanged")
    if report.removed:
        parts.append(f"{len(report.removed)} removed")
    if report.skipped:
        parts.append(f"{len(report.skipped)} skipped")
    head = ", ".join(parts) + f" in {report.seconds:.1f}s"
    tail = f"index {folder.path}: {report.total_files} files, {report.total_chunks} chunks"
    if report.manifest is not None:
        tail += f" ({describe_embedder(report.manifest.embedder)})"
    return head + "\n" + tail
