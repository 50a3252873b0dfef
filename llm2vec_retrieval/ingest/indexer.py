"""Incremental, crash-safe indexing of files into an index folder.

One run:

1. load the store (if any) and ``files.json``; a file entry counts only if the store
   holds exactly its chunks with its sha256 (so a crash between the two writes of a
   commit is repaired by re-indexing that file). An unreadable or missing ``files.json``
   beside a store is rebuilt from the store: each file whose stored chunks all carry
   its sha256 is re-chunked (no embedding) and kept when its chunks are the stored ones;
2. find the files under the sources; hash each one (in blocks); unchanged files are
   skipped, new and changed ones are (re-)chunked and embedded (a changed file's old
   chunks are deleted first), chunks of files that no longer exist are removed;
3. commit in groups, at file boundaries, and inside files larger than
   ``IndexSettings.window_chars``: save the store atomically, then rewrite
   ``files.json``. A file committed part way has an entry with ``partial`` (the
   `Position` where its chunking continues), and the next run continues it there. A crash
   or Ctrl-C loses at most the uncommitted group. Chunk ids are ``"<path>#<n>"`` so
   re-adding is an upsert and nothing is ever duplicated.

Memory does not grow with the size of a file: files are hashed in blocks, .txt/.md files
larger than the window are checked in blocks and streamed to the chunker, and chunking
tokenizes at most a window at a time (see :mod:`.chunking`). (.jsonl/.csv/.pdf files are
read whole; their records are tokenized a window at a time.)

Chunk metadata: ``source`` (path relative to the index root, or absolute outside it),
``chunk`` (position in the file), ``start``/``end`` (character offsets in the file's
text, or in the record/row/page text for .jsonl/.csv/.pdf, which add ``line``/``row``/
``page`` and the record's other scalar fields), ``sha256`` (of the file's bytes).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import LockedError, file_lock, sha256_and_size
from ..errors import InvalidInputError, UserError
from ..hardware import compute_dtype
from ..index.fusion import default_hybrid, recorded_hybrid
from ..index.persistence import pause_stage
from ..progress import progress_bar
from .chunking import DEFAULT_WINDOW_CHARS, Position, ResumeError, check_chunking, iter_chunks
from .folder import (
    FILES_FILE,
    LOCK_FILE,
    MANIFEST_FILE,
    REBUILD_KEY,
    IndexFolder,
    IndexFolderError,
    describe_embedder,
    embedder_spec,
    now,
)
from .readers import (
    TEXT_SUFFIXES,
    ReadOptions,
    SkipFile,
    discover,
    display_path,
    open_text,
    read_segments,
    scan_text_file,
)
from .records import chunk_record

# Test/debug hooks: seconds to sleep after each commit (prints "llm2vec-index-commit: ..." to
# stderr); and the save stages of `index.persistence.PAUSE_ENV`, which a commit extends with
# "manifest_written" (the first commit of a run, before the store is saved) and
# "files_json_written" (a rebuild's first commit, before the manifest drops REBUILD_KEY).
COMMIT_SLEEP_ENV = "LLM2VEC_RETRIEVAL_INDEX_COMMIT_SLEEP"
ENCODE_BATCH = 32  # chunks embedded per encoder call (progress granularity)


class EmptyCorpusError(UserError):
    """Nothing to index."""


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
    commit_share: float = field(
        default=0.1,
        metadata={"help": "but commits (whole-store saves) take at most this share of the time"},
    )
    window_chars: int = field(
        default=DEFAULT_WINDOW_CHARS,
        metadata={
            "help": "characters tokenized at once (bounds the memory of chunking); larger files "
            "are large: .txt/.md ones are streamed, and every large file is committed in groups"
        },
    )


DEFAULTS = {
    "kind": "flat",
    "chunk_tokens": 256,
    "overlap": 32,
    "text_field": "text",
    "text_column": "text",
}


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


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def relative_source(path: Path, root: Path) -> str:
    """The ``source`` of a file: POSIX path relative to root, or absolute outside it."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def resolve_source(source: str, root: Path) -> Path:
    p = Path(source)
    return p if p.is_absolute() else root / p


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

    # ------------------------------------------------------------ configuration
    def _resolve_config(self) -> tuple[dict[str, Any], bool, bool]:
        """(manifest to write, whether the index starts over, whether every file must be
        re-chunked).

        A new index takes the options given (else the defaults). An existing one keeps what
        it records; --rebuild starts over from what it records, with the options given, and
        so does the run after a --rebuild that was stopped before it committed (the
        manifest says ``REBUILD_KEY``).
        """
        s = self.settings
        old = self.folder.read_manifest() if self.folder.exists() else None
        unfinished = old is not None and bool(old.get(REBUILD_KEY))
        fresh = old is None or s.rebuild or unfinished
        if unfinished and not s.rebuild:
            self.report.notes.append(
                (
                    MANIFEST_FILE,
                    "a --rebuild was stopped before its first commit: starting it over with "
                    "the options it recorded",
                )
            )
        base: dict[str, Any] = dict(old) if old is not None else {}
        base.pop(REBUILD_KEY, None)
        base_chunking = dict(base.get("chunking") or {})
        for key in ("chunk_tokens", "overlap", "text_field", "text_column"):
            base_chunking.setdefault(key, DEFAULTS[key])
        old_spec = base.get("embedder") or {}

        if s.model is not None or s.adapter is not None or not old_spec:
            spec = embedder_spec(
                s.model if s.model is not None else old_spec.get("model"),
                s.adapter if s.adapter is not None else old_spec.get("adapter"),
            )
        else:
            spec = old_spec
        root_given = os.path.abspath(os.path.expanduser(s.root)) if s.root else None
        kind = s.kind or base.get("kind") or DEFAULTS["kind"]
        root = root_given or base.get("root") or os.getcwd()
        if not fresh:
            if kind != base.get("kind"):
                raise IndexFolderError(
                    f"{self.folder.path} is a {base.get('kind')!r} index; to change the kind "
                    f"to {kind!r} re-create it with --rebuild"
                )
            if root != base.get("root"):
                raise IndexFolderError(
                    f"{self.folder.path} has root {base.get('root')}; "
                    "to change it re-create the index with --rebuild"
                )
        chunking = dict(base_chunking)
        changed = False
        for key in chunking:
            value = getattr(s, key)
            if value is not None and value != chunking[key]:
                chunking[key] = value
                changed = True
        lexical = s.lexical if s.lexical is not None else base.get("lexical", True)
        follow = (
            s.follow_symlinks
            if s.follow_symlinks is not None
            else base.get("follow_symlinks", False)
        )
        manifest = {
            **base,
            "lexical": bool(lexical),
            "follow_symlinks": bool(follow),
            "embedder": spec,
            "query_instruction": s.query_instruction
            if s.query_instruction is not None
            else base.get("query_instruction"),
            "kind": kind,
            "metric": "cosine",
            "chunking": chunking,
            "root": root,
        }
        # the fusion searches of this index use: set when it is made (or rebuilt, or first
        # indexed by a version that records it), kept afterwards
        manifest["hybrid"] = (None if fresh else recorded_hybrid(base)) or default_hybrid()
        if fresh:
            manifest["created_at"] = now()
            manifest.pop("encoded_in", None)  # filled by the run's encoder
        return manifest, fresh, fresh or changed

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
                return self._run(sources)
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

    def _run(self, sources: Sequence[str | os.PathLike]) -> IndexReport:
        from ..fingerprint import check_fingerprint
        from ..index import IndexStore

        t0 = time.perf_counter()
        report = self.report
        manifest, new_index, rechunk_all = self._resolve_config()
        old_spec = self.folder.read_manifest().get("embedder") if self.folder.exists() else None
        embedder_changed = old_spec is not None and old_spec != manifest["embedder"]
        chunking = manifest["chunking"]
        check_chunking(chunking["chunk_tokens"], chunking["overlap"])
        window = self.settings.window_chars
        if window < 64:
            raise InvalidInputError(f"window_chars must be at least 64, got {window}")
        if not 0 < self.settings.commit_share <= 1:
            raise InvalidInputError(
                f"commit_share must be in (0, 1], got {self.settings.commit_share}"
            )
        root = Path(manifest["root"])

        # Find files first: a bad source fails before the model loads.
        files, refused = discover(
            sources, exclude=[self.folder.path], follow_symlinks=manifest["follow_symlinks"]
        )
        for p, reason in refused:
            report.skipped.append((display_path(relative_source(p, root)), reason))
        source_roots = [Path(os.path.abspath(os.path.expanduser(os.fspath(s)))) for s in sources]
        named = ", ".join(display_path(os.fspath(x)) for x in sources)

        encoder = None

        def get_encoder():
            """The embedder, loaded on first need (a run with nothing to embed loads no model)."""
            nonlocal encoder
            if encoder is None:
                from .folder import encoder_from_spec

                encoder = encoder_from_spec(manifest["embedder"], self.dtype)
                limit = encoder.config.doc_max_length
                if chunking["chunk_tokens"] > limit:
                    raise InvalidInputError(
                        f"--chunk-tokens {chunking['chunk_tokens']} is more than the model's doc_max_length ({limit})"
                    )
                if store is not None:
                    check_fingerprint(store.fingerprint, encoder.fingerprint())
                dtype = compute_dtype(encoder)
                if dtype is not None:  # every dtype that embedded chunks of this index
                    manifest["encoded_in"] = sorted({*manifest.get("encoded_in", []), dtype})
            return encoder

        state: dict[str, dict[str, Any]] | None
        if not new_index and self.folder.check_store():
            store = IndexStore.load(
                self.folder.store_path
            )  # fingerprint checked when the model loads
            try:
                state = self.folder.read_files() if self.folder.files_path.is_file() else None
            except IndexFolderError as exc:  # the store is intact: rebuild files.json from it
                state = None
                report.notes.append(
                    (
                        FILES_FILE,
                        f"{str(exc).split(';')[0]}; rebuilt from the store: files whose stored "
                        "chunks match them again are kept without re-embedding",
                    )
                )
            if embedder_changed:
                get_encoder()  # a different --model must match the index before anything is written
        else:
            if not files:
                raise EmptyCorpusError(
                    _with_skips(
                        "empty corpus: no indexable files (.txt, .md, .jsonl, .csv, .pdf) in "
                        + named,
                        report,
                    )
                )
            store = None
            enc = get_encoder()
            store = IndexStore(
                enc.embedding_dim,
                kind=manifest["kind"],
                metric="cosine",
                fingerprint=enc.fingerprint(),
                lexical=manifest["lexical"],
            )
            state = {}
        lexical_changed = store.has_lexical != manifest["lexical"]
        if lexical_changed:  # an index from before hybrid search, or --lexical/--no-lexical
            if manifest["lexical"]:
                store.build_lexical()
                report.notes.append(
                    (str(self.folder.path), "added the lexical (BM25) part from the stored texts")
                )
            else:
                store.drop_lexical()
        # Which chunks the store really holds, per source.
        by_source: dict[str, list[tuple[str, str | None]]] = {}
        for rec in store.get(store.ids, include_vectors=False):
            by_source.setdefault(str(rec.metadata.get("source")), []).append(
                (rec.id, rec.metadata.get("sha256"))
            )
        if state is None:  # files.json lost: entries from the store, checked when hashed
            state = {}
            for src, chunks in by_source.items():
                shas = {sha for _, sha in chunks}
                if len(shas) == 1 and None not in shas:
                    state[src] = {"sha256": shas.pop(), "chunks": len(chunks), "derived": True}
        state = {
            src: e
            for src, e in state.items()
            if e.get("chunks") == len(by_source.get(src, ()))
            and all(sha == e.get("sha256") for _, sha in by_source.get(src, ()))
        }

        # Removed files: recorded but gone, or under a given folder but no longer found.
        found = {relative_source(p, root) for p in files}
        recorded = set(state) | set(by_source)
        removed = []
        for src in sorted(recorded - found):
            path = resolve_source(src, root)
            under_given = any(path == r or r in path.parents for r in source_roots)
            if not path.exists() or under_given:
                removed.append(src)

        # Changed, new, unfinished or unchecked files (hashed in blocks: nothing is kept).
        todo: list[tuple[Path, str, int]] = []
        for p in files:
            src = relative_source(p, root)
            try:
                sha, size = sha256_and_size(p)
            except OSError as exc:
                report.skipped.append((src, f"unreadable ({exc.strerror or type(exc).__name__})"))
                if src in recorded:
                    removed.append(src)
                continue
            entry = state.get(src)
            if (
                entry is not None
                and entry.get("sha256") == sha
                and not rechunk_all
                and "partial" not in entry
                and not entry.get("derived")
            ):
                report.unchanged += 1
                continue
            todo.append((p, src, size))

        committer = _Committer(self.folder, store, manifest, state, report, self.settings)
        # Starting over in an existing index: until this run's first commit is complete, the
        # manifest (written first) says so, and a run after a kill starts over again.
        committer.rebuilding = new_index and self.folder.exists()
        committer.dirty = lexical_changed
        for src in removed:
            store.delete([cid for cid, _ in by_source.get(src, ())])
            committer.forget(src)
            report.removed.append(src)

        options = ReadOptions(chunking["text_field"], chunking["text_column"])
        buffer: list[tuple[str, str, dict[str, Any]]] = []
        tokens_done = 0
        t_start = time.perf_counter()

        total = sum(size for _, _, size in todo)
        bar = progress_bar(
            total,
            "Indexing",
            "B",
            self.show_progress_bar if total else False,
            unit_scale=True,
            unit_divisor=1024,
        )

        def flush(all_: bool) -> None:
            nonlocal tokens_done
            while buffer and (all_ or len(buffer) >= ENCODE_BATCH):
                batch = buffer[:ENCODE_BATCH]
                del buffer[:ENCODE_BATCH]
                enc = get_encoder()
                if self.on_encode is not None:
                    self.on_encode, said = None, self.on_encode
                    said()
                vectors = enc.encode_documents([t for _, t, _ in batch])
                store.add(
                    [i for i, _, _ in batch],
                    vectors,
                    [t for _, t, _ in batch],
                    [m for _, _, m in batch],
                )
                tokens_done += sum(m["tokens"] for _, _, m in batch)
                if bar is not None:
                    rate = tokens_done / max(time.perf_counter() - t_start, 1e-9)
                    bar.set_postfix_str(
                        f"chunks={report.chunks_added} tok/s={rate:,.0f}", refresh=False
                    )

        def drop(src: str) -> None:
            """Forget every chunk of src: in the store and still waiting to be embedded."""
            ids = [cid for cid, _ in by_source.pop(src, ())]
            ids += (
                [cid for cid in store.ids if cid.startswith(f"{src}#")]
                if committer.has(src)
                else []
            )
            buffer[:] = [c for c in buffer if c[2]["source"] != src]
            store.delete(list(dict.fromkeys(ids)))
            committer.forget(src)

        job = _FileJob(
            get_encoder, store, committer, buffer, flush, options, window, chunking, report
        )
        done_bytes = 0
        try:
            for path, src, size in todo:

                def progress(n_bytes: int, before: int = done_bytes) -> None:
                    if bar is not None and before + n_bytes > bar.n:
                        bar.update(before + n_bytes - bar.n)

                try:
                    job.run(
                        path,
                        src,
                        size,
                        state.get(src),
                        by_source.get(src, ()),
                        rechunk_all,
                        progress,
                    )
                except (SkipFile, _ReadError) as exc:
                    report.skipped.append((src, str(exc)))
                    if src in by_source or src in state or committer.has(src):
                        drop(src)
                done_bytes += size
                progress(0, done_bytes)
            flush(True)
            if new_index and len(store) == 0:
                raise EmptyCorpusError(
                    _with_skips("empty corpus: no text to index in " + named, report)
                )
            committer.commit(final=True)
        finally:
            if bar is not None:
                bar.close()
        report.total_files = len(committer.state)
        report.total_chunks = len(store)
        report.seconds = time.perf_counter() - t0
        return report


class _ReadError(Exception):
    """A file could not be read (the reason is the message): it is skipped."""


class _Restart(Exception):
    """Index the file from scratch."""


class _FileJob:
    """Chunks and embeds one file after another: a file larger than the window is streamed
    and committed in groups inside it (files.json then records where to continue)."""

    def __init__(
        self, get_encoder, store, committer, buffer, flush, options, window, chunking, report
    ):
        self.get_encoder = get_encoder
        self.store = store
        self.committer = committer
        self.buffer = buffer
        self.flush = flush
        self.options = options
        self.window = window
        self.chunking = chunking
        self.report = report

    def run(
        self, path: Path, src: str, size: int, entry, stored, rechunk_all: bool, progress
    ) -> None:
        """Index one file; ``progress(n_bytes)`` is told how far a streamed file was read."""
        try:
            self._run(path, src, size, entry, stored, rechunk_all, progress)
        except _Restart:  # stored chunks that files.json no longer vouched for do not match
            self.store.delete([cid for cid, _ in stored])
            self.committer.forget(src)
            self._run(path, src, size, None, (), rechunk_all, progress)

    def _run(
        self, path: Path, src: str, size: int, entry, stored, rechunk_all: bool, progress
    ) -> None:
        large = size > self.window
        try:
            if large and path.suffix.lower() in TEXT_SUFFIXES:
                sha, size = scan_text_file(path)
                f = open_text(path)
            else:
                f = None
                data = path.read_bytes()
        except OSError as exc:
            raise _ReadError(f"unreadable ({exc.strerror or type(exc).__name__})") from None
        if f is not None:
            with f:
                source = _CountingReader(f, progress)
                self._index(src, sha, size, [source], [{}], entry, stored, rechunk_all, large)
            return
        sha, size = sha256_bytes(data), len(data)
        segments, notes = read_segments(path, data, self.options)
        del data
        for note in notes:
            self.report.notes.append((src, note))
        texts = [s.text for s in segments]
        metas = [s.meta for s in segments]
        self._index(src, sha, size, texts, metas, entry, stored, rechunk_all, large)

    def _index(self, src, sha, size, texts, metas, entry, stored, rechunk_all, large) -> None:
        store, committer, report = self.store, self.committer, self.report
        start, verify = None, 0
        if entry is not None and entry.get("sha256") == sha and not rechunk_all:
            if "partial" in entry:
                start = Position.from_dict(entry["partial"])
            elif entry.get("derived"):
                verify = len(stored)
        chunk_tokens, overlap = self.chunking["chunk_tokens"], self.chunking["overlap"]
        tokenizer = self.get_encoder().tokenizer
        chunks = None
        if start is not None:
            try:
                chunks = iter_chunks(
                    tokenizer, texts, chunk_tokens, overlap, window_chars=self.window, start=start
                )
            except ResumeError:
                chunks = None
        if chunks is None:  # from the start: the file's chunks in the store go first
            start = None
            if stored and not verify:
                store.delete([cid for cid, _ in stored])
            chunks = iter_chunks(tokenizer, texts, chunk_tokens, overlap, window_chars=self.window)
        n = int(entry.get("chunks", 0)) if start is not None else 0
        tokens = int(entry.get("tokens", 0)) if start is not None else 0
        if not verify:
            committer.begin(src, sha, size, n, tokens, start or Position())
        embedded = 0
        for chunk in chunks:
            span = chunk.span
            cid, meta = chunk_record(src, sha, n, chunk, metas)
            n += 1
            tokens += span.tokens
            if n <= verify:  # files.json was rebuilt from the store: is this chunk stored as is?
                rec = store.get([cid], include_vectors=False)
                if not (rec and rec[0].text == chunk.text and rec[0].metadata == meta):
                    raise _Restart()
                if n == verify:  # all stored ones match: the rest (if any) is new
                    committer.begin(src, sha, size, n, tokens, chunk.next)
                continue
            self.buffer.append((cid, chunk.text, meta))
            embedded += 1
            report.chunks_added += 1
            report.tokens += span.tokens
            committer.progress(src, n, tokens, chunk.next)
            self.flush(False)
            if large and committer.due():
                self.flush(True)
                committer.commit()
        if n < verify:  # the store holds more chunks than the file gives
            raise _Restart()
        committer.finish(src)
        if embedded or not verify:
            report.indexed.append(src)
        else:
            report.unchanged += 1
        if committer.due():
            self.flush(True)
            committer.commit()


class _CountingReader:
    """A text file's ``read`` that reports how many bytes were read so far."""

    def __init__(self, f, on_bytes):
        self.f = f
        self.on_bytes = on_bytes

    def read(self, n: int) -> str:
        try:
            text = self.f.read(n)
        except OSError as exc:
            raise _ReadError(f"unreadable ({exc.strerror or type(exc).__name__})") from None
        except UnicodeDecodeError:
            raise _ReadError("changed while being read (no longer UTF-8 text)") from None
        if self.on_bytes is not None:
            self.on_bytes(self.f.buffer.tell())
        return text


def _with_skips(message: str, report: IndexReport) -> str:
    """An empty-corpus message with the reasons files were skipped (the likely cause)."""
    if not report.skipped:
        return message
    shown = "; ".join(f"{src}: {reason}" for src, reason in report.skipped[:3])
    more = f"; and {len(report.skipped) - 3} more" if len(report.skipped) > 3 else ""
    return f"{message} (skipped {shown}{more})"


class _Committer:
    """Groups changes and writes them: store first (atomic), then files.json.

    A file being indexed has an entry with ``partial`` (where chunking continues) until it
    is done; a commit inside a large file records that, so that the next run continues
    there. Entries count only when the store holds exactly their chunks (see `Indexer`).
    """

    def __init__(self, folder, store, manifest, state, report, settings):
        self.folder = folder
        self.store = store
        self.manifest = manifest
        self.state = dict(state)
        self.report = report
        self.settings = settings
        self.pending_files = 0
        self.pending_chunks = 0
        self.dirty = False
        self.last = time.monotonic()
        self.last_duration = 0.0  # seconds the last commit took
        self.manifest_written = False
        self.rebuilding = False  # the manifest says REBUILD_KEY until the first commit ends

    def has(self, src: str) -> bool:
        return src in self.state

    def begin(self, src: str, sha: str, size: int, chunks: int, tokens: int, at: Position) -> None:
        """A file starts (or continues at ``at`` with ``chunks`` already stored)."""
        self.state[src] = {
            "sha256": sha,
            "bytes": size,
            "chunks": chunks,
            "tokens": tokens,
            "partial": at.to_dict(),
        }
        self.dirty = True

    def progress(self, src: str, chunks: int, tokens: int, nxt: Position) -> None:
        """One more chunk of src is on its way to the store; chunking continues at nxt."""
        self.state[src].update(chunks=chunks, tokens=tokens, partial=nxt.to_dict())
        self.pending_chunks += 1
        self.dirty = True

    def finish(self, src: str) -> None:
        entry = self.state[src]
        entry.pop("partial", None)
        entry["indexed_at"] = now()
        self.pending_files += 1
        self.dirty = True

    def forget(self, src: str) -> None:
        self.state.pop(src, None)
        self.dirty = True

    def due(self) -> bool:
        since = time.monotonic() - self.last
        wanted = self.pending_chunks >= self.settings.commit_every or (
            self.dirty and since >= self.settings.commit_seconds
        )
        # Each commit saves the whole store, so its cost grows with the index: space commits
        # so that they take at most `commit_share` of the time (else a large file's commits
        # would cost quadratic time).
        share = self.settings.commit_share
        return wanted and since >= self.last_duration * (1 - share) / share

    def commit(self, final: bool = False) -> None:
        if not self.dirty:
            if final and self.folder.exists():
                self._touch_manifest()
            return
        if not self.manifest_written:
            self.manifest["updated_at"] = now()
            self._write_manifest(unfinished=self.rebuilding)
            self.manifest_written = True
            pause_stage("manifest_written")
        started = time.monotonic()
        self.store.save(self.folder.store_path)
        self.folder.write_files(self.state)
        if self.rebuilding:  # the new store and its files.json are in place
            pause_stage("files_json_written")
            self._write_manifest()
            self.rebuilding = False
        self.report.commits += 1
        self.pending_files = self.pending_chunks = 0
        self.dirty = False
        self.last = time.monotonic()
        self.last_duration = self.last - started
        sleep = os.environ.get(COMMIT_SLEEP_ENV)
        if sleep:
            sys.stderr.write(
                f"llm2vec-index-commit: {len(self.state)} files, {len(self.store)} chunks\n"
            )
            sys.stderr.flush()
            time.sleep(float(sleep))

    def _write_manifest(self, unfinished: bool = False) -> None:
        body = {k: v for k, v in self.manifest.items() if k not in ("format", "format_version")}
        self.folder.write_manifest({**body, REBUILD_KEY: True} if unfinished else body)

    def _touch_manifest(self) -> None:
        old = self.folder.read_manifest()
        body = {
            k: v
            for k, v in self.manifest.items()
            if k not in ("format", "format_version", "updated_at")
        }
        if {
            k: v for k, v in old.items() if k not in ("format", "format_version", "updated_at")
        } != body:
            self.folder.write_manifest({**body, "updated_at": now()})


def summary(
    report: IndexReport, folder: IndexFolder, manifest: dict[str, Any] | None = None
) -> str:
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
    if manifest is not None:
        tail += f" ({describe_embedder(manifest['embedder'])})"
    return head + "\n" + tail
