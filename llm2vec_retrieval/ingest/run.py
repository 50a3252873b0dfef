"""One ``index`` run: `IndexRun` owns the store, the chunks waiting to be embedded, the
committer and the encoder, and visits the planned files once each.

Order: the manifest is read once and merged with the options (`plan.resolve_manifest`);
the sources are found (a bad source fails before the model loads); the store is opened
(or made); `plan.plan_changes` says which entries count and which sources are gone; then
each file found is read and hashed once:

- a file of at most ``window_chars`` bytes is read whole, hashed from those bytes, and
  when it changed, chunked from the same bytes;
- a larger one is hashed in blocks (a .txt/.md one checked as UTF-8 text in the same
  pass), so an unchanged large file costs no memory; when it changed it is read a second
  time (every chunk's metadata carries the file's sha256, and commits happen inside it, so
  the hash comes first): streamed (.txt/.md) or read whole (.jsonl/.csv/.pdf, hashed again
  from the bytes chunked).

Chunks are embedded `ENCODE_BATCH` at a time and committed as `committer.Committer` says.
The encoder loads on first need: a run with nothing to embed loads no model.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._io import sha256_and_size
from ..errors import InvalidInputError, UserError
from ..hardware import compute_dtype
from ..progress import progress_bar
from .chunking import Position, ResumeError, check_chunking, iter_chunks
from .committer import Committer
from .folder import FILES_FILE, IndexFolder, IndexFolderError
from .manifest import FileEntry
from .plan import (
    DEFAULT_KIND,
    Candidate,
    Plan,
    SourceChunks,
    Stored,
    plan_changes,
    relative_source,
    resolve_manifest,
    unchanged,
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

if TYPE_CHECKING:
    from ..encoder import LLM2Vec
    from ..index import IndexStore
    from .indexer import IndexReport, IndexSettings

ENCODE_BATCH = 32  # chunks embedded per encoder call (progress granularity)
#: what `index` reads (the empty-corpus message names them)
INDEXABLE = ".txt, .md, .jsonl, .csv, .pdf"


class EmptyCorpusError(UserError):
    """Nothing to index."""


class ReadError(Exception):
    """A file could not be read (the reason is the message): it is skipped."""


class _Restart(Exception):
    """Index the file from scratch (its stored chunks are not what the file gives)."""


@dataclass
class FileRead:
    """A file read once: its sha256 and size, and its bytes when it was read whole
    (None: a large file, read again only if it changed)."""

    sha256: str
    size: int
    data: bytes | None


def read_once(path: Path, size_hint: int, window: int) -> FileRead:
    """Read and hash ``path`` (see the module docstring). OSError when unreadable,
    `SkipFile` for a large .txt/.md file that is not UTF-8 text."""
    if size_hint > window:
        if path.suffix.lower() in TEXT_SUFFIXES:
            return FileRead(*scan_text_file(path), None)
        return FileRead(*sha256_and_size(path), None)
    data = path.read_bytes()
    return FileRead(hashlib.sha256(data).hexdigest(), len(data), data)


def unreadable(exc: OSError) -> str:
    return f"unreadable ({exc.strerror or type(exc).__name__})"


class IndexRun:
    """Runs one ``index`` invocation on a locked folder. See the module docstring."""

    def __init__(
        self,
        folder: IndexFolder,
        settings: IndexSettings,
        report: IndexReport,
        show_progress_bar: bool | None = None,
        dtype: Any = None,
        on_encode: Callable[[], None] | None = None,
    ):
        self.folder = folder
        self.settings = settings
        self.report = report
        self.show_progress_bar = show_progress_bar
        self.dtype = dtype  # as `models.load_encoder` takes it (None: "auto")
        self.on_encode = on_encode  # called once, right before the first text is encoded
        self.store: IndexStore | None = None
        self.buffer: list[tuple[str, str, dict[str, Any]]] = []  # (id, text, metadata)
        self.stored: Stored = {}  # the chunks the store holds, per source
        self.files_version: str | None = None  # the store version files.json records
        self._encoder: LLM2Vec | None = None
        self.tokens_done = 0
        self.done_bytes = 0
        self.bar: Any = None

    # ------------------------------------------------------------ set-up
    def execute(self, sources: Sequence[str | os.PathLike]) -> IndexReport:
        t0 = time.perf_counter()
        report = self.report
        recorded = self.folder.load_manifest() if self.folder.exists() else None
        config = resolve_manifest(recorded, self.settings, self.folder.path)
        report.notes += config.notes
        self.manifest, self.rechunk_all = config.manifest, config.rechunk_all
        self._check_settings()
        root = Path(str(self.manifest.root))
        files, refused = discover(
            sources, exclude=[self.folder.path], follow_symlinks=bool(self.manifest.follow_symlinks)
        )
        for p, reason in refused:
            report.skipped.append((display_path(relative_source(p, root)), reason))
        self.named = ", ".join(display_path(os.fspath(x)) for x in sources)
        state = self._open_store(files, config.fresh, config.embedder_changed)
        store = self.store
        assert store is not None
        lexical_changed = self._match_lexical(store)
        self.stored = self._stored_by_source(store, state)
        plan = plan_changes(files, sources, root, state, self.stored)
        self.committer = Committer(
            self.folder, store, self.manifest, recorded, plan.state, report, self.settings
        )
        self.committer.exact = plan.exact
        # Starting over in an existing index: until this run's first commit is complete,
        # the manifest (written first) says so, and a run after a kill starts over again.
        self.committer.rebuilding = config.fresh and self.folder.exists()
        self.committer.dirty = lexical_changed
        self._index(plan, config.fresh)
        report.total_files = len(self.committer.state)
        report.total_chunks = len(store)
        report.manifest = self.manifest
        report.seconds = time.perf_counter() - t0
        return report

    def _check_settings(self) -> None:
        chunking = self.manifest.chunking
        check_chunking(chunking.chunk_tokens, chunking.overlap)
        if self.settings.window_chars < 64:
            raise InvalidInputError(
                f"window_chars must be at least 64, got {self.settings.window_chars}"
            )
        self.options = ReadOptions(chunking.text_field, chunking.text_column)

    def encoder(self) -> LLM2Vec:
        """The embedder, loaded on first need and checked against the index."""
        if self._encoder is None:
            from ..fingerprint import check_fingerprint
            from .folder import encoder_from_spec

            encoder = encoder_from_spec(self.manifest.embedder, self.dtype)
            limit, chunk_tokens = encoder.config.doc_max_length, self.manifest.chunking.chunk_tokens
            if chunk_tokens > limit:
                raise InvalidInputError(
                    f"--chunk-tokens {chunk_tokens} is more than the model's doc_max_length ({limit})"
                )
            if self.store is not None:
                check_fingerprint(self.store.fingerprint, encoder.fingerprint())
            dtype = compute_dtype(encoder)
            if dtype is not None:  # every dtype that embedded chunks of this index
                self.manifest.encoded_in = sorted({*(self.manifest.encoded_in or []), dtype})
            self._encoder = encoder
        return self._encoder

    def _open_store(
        self, files: list[Path], fresh: bool, embedder_changed: bool
    ) -> dict[str, FileEntry] | None:
        """Load the store (or make a new one); the entries of files.json (None when it is
        lost and must be rebuilt from the store)."""
        from ..index import IndexStore

        if not fresh and self.folder.check_store():
            self.store = IndexStore.load(self.folder.store_path)  # fingerprint: see encoder()
            if embedder_changed:  # another --model must match the index before any write
                self.encoder()
            if not self.folder.files_path.is_file():
                return None
            try:
                state, self.files_version = self.folder.load_files_and_version()
                return state
            except IndexFolderError as exc:  # the store is intact: rebuild files.json from it
                self.report.notes.append(
                    (
                        FILES_FILE,
                        f"{str(exc).split(';')[0]}; rebuilt from the store: files whose stored "
                        "chunks match them again are kept without re-embedding",
                    )
                )
                return None
        if not files:
            raise EmptyCorpusError(
                self._with_skips(f"empty corpus: no indexable files ({INDEXABLE}) in {self.named}")
            )
        encoder = self.encoder()
        self.store = IndexStore(
            encoder.embedding_dim,
            kind=self.manifest.kind or DEFAULT_KIND,
            metric="cosine",
            fingerprint=encoder.fingerprint(),
            lexical=self.manifest.lexical,
        )
        return {}

    def _match_lexical(self, store: IndexStore) -> bool:
        """Add or drop the BM25 part as the manifest says; whether it changed."""
        if store.has_lexical == self.manifest.lexical:
            return False
        if self.manifest.lexical:  # an index from before hybrid search, or --lexical
            store.build_lexical()
            self.report.notes.append(
                (str(self.folder.path), "added the lexical (BM25) part from the stored texts")
            )
        else:
            store.drop_lexical()
        return True

    def _stored_by_source(self, store: IndexStore, state: dict[str, FileEntry] | None) -> Stored:
        """The chunks the store holds, per source: as files.json says when it records the
        store version loaded (its last commit wrote both), else read from every chunk's
        metadata (files.json lost, or a run killed between the two writes)."""
        if state is not None and self.files_version is not None:
            if self.files_version == store.version:
                return {
                    src: SourceChunks(src, e.sha256, e.chunks)
                    for src, e in state.items()
                    if e.chunks
                }
        by_source: dict[str, list[tuple[str, str | None]]] = {}
        for cid, meta in store.metadata().items():  # no texts: one parse per segment
            by_source.setdefault(str(meta.get("source")), []).append((cid, meta.get("sha256")))
        return dict(by_source)

    # ------------------------------------------------------------ the files
    def _index(self, plan: Plan, fresh: bool) -> None:
        for src in plan.removed:
            self._remove(src)
            self.report.removed.append(src)
        self.bar = _progress_bar(sum(c.size for c in plan.candidates), self.show_progress_bar)
        self.t_start = time.perf_counter()
        try:
            for c in plan.candidates:
                self._visit(c, plan)
                self.done_bytes += c.size
                self._progress(0)
            self._flush(True)
            assert self.store is not None
            if fresh and len(self.store) == 0:
                raise EmptyCorpusError(
                    self._with_skips("empty corpus: no text to index in " + self.named)
                )
            self.committer.commit(final=True)
        finally:
            if self.bar is not None:
                self.bar.close()

    def _visit(self, c: Candidate, plan: Plan) -> None:
        """Read and hash one file; index it when it is new or changed."""
        try:
            read = read_once(c.path, c.size, self.settings.window_chars)
        except OSError as exc:
            self.report.skipped.append((c.src, unreadable(exc)))
            if c.src in plan.recorded:
                self._remove(c.src)
                self.report.removed.append(c.src)
            return
        except SkipFile as exc:
            self._skip(c, plan, exc)
            return
        if unchanged(c.entry, read.sha256, self.rechunk_all):
            self.report.unchanged += 1
            return
        try:
            self._index_file(c, read)
        except (SkipFile, ReadError) as exc:
            self._skip(c, plan, exc)

    def _skip(self, c: Candidate, plan: Plan, reason: Exception) -> None:
        """A file that cannot be indexed: skipped, and what the index held of it dropped."""
        self.report.skipped.append((c.src, str(reason)))
        if c.src in plan.recorded or self.committer.has(c.src):
            self._drop(c.src)

    def _index_file(self, c: Candidate, read: FileRead) -> None:
        try:
            with self._texts(c, read) as (sha, size, texts, metas):
                self._chunk(c.src, sha, size, texts, metas, c.entry, c.stored)
        except _Restart:  # stored chunks that files.json no longer vouched for do not match
            assert self.store is not None
            self.store.delete([cid for cid, _ in c.stored])
            self.committer.forget(c.src)
            with self._texts(c, read) as (sha, size, texts, metas):
                self._chunk(c.src, sha, size, texts, metas, None, [])

    @contextlib.contextmanager
    def _texts(
        self, c: Candidate, read: FileRead
    ) -> Iterator[tuple[str, int, list[Any], list[dict[str, Any]]]]:
        """(sha256, size, texts, metadata of each text) of a changed file: its segments,
        or a streamed .txt/.md file (read again; its hash is the first read's)."""
        data, read.data = read.data, None  # the bytes are not kept past chunking
        large = read.size > self.settings.window_chars
        if data is None and large and c.path.suffix.lower() in TEXT_SUFFIXES:
            try:
                f = open_text(c.path)
            except OSError as exc:
                raise ReadError(unreadable(exc)) from None
            with f:
                yield read.sha256, read.size, [_CountingReader(f, self._progress)], [{}]
            return
        sha = read.sha256
        if data is None:  # a large .jsonl/.csv/.pdf (or a restart): read whole, hashed again
            try:
                data = c.path.read_bytes()
            except OSError as exc:
                raise ReadError(unreadable(exc)) from None
            sha = hashlib.sha256(data).hexdigest()
        size = len(data)
        segments, notes = read_segments(c.path, data, self.options)
        del data
        self.report.notes += [(c.src, note) for note in notes]
        yield sha, size, [s.text for s in segments], [s.meta for s in segments]

    def _resume_at(
        self, entry: FileEntry | None, sha: str, stored: Sequence
    ) -> tuple[Position | None, int]:
        """(where chunking continues, how many stored chunks to check) for a file whose
        entry is ``entry``: a file committed part way continues; a derived entry's
        chunks are checked one by one."""
        if entry is None or entry.sha256 != sha or self.rechunk_all:
            return None, 0
        if entry.partial is not None:
            return entry.partial, 0
        return None, len(stored) if entry.derived else 0

    def _chunk(
        self,
        src: str,
        sha: str,
        size: int,
        texts: list[Any],
        metas: list[dict[str, Any]],
        entry: FileEntry | None,
        stored: Sequence[tuple[str, str | None]],
    ) -> None:
        """Chunk one file and queue its chunks for embedding (committing inside a large
        file, and at its end when due)."""
        store, committer, report = self.store, self.committer, self.report
        assert store is not None
        start, verify = self._resume_at(entry, sha, stored)
        chunking, window = self.manifest.chunking, self.settings.window_chars
        tokenizer = self.encoder().tokenizer
        args = (tokenizer, texts, chunking.chunk_tokens, chunking.overlap)
        chunks = None
        if start is not None:
            try:
                chunks = iter_chunks(*args, window_chars=window, start=start)
            except ResumeError:
                chunks = None
        if chunks is None:  # from the start: the file's chunks in the store go first
            start = None
            if stored and not verify:
                store.delete([cid for cid, _ in stored])
            chunks = iter_chunks(*args, window_chars=window)
        n = entry.chunks if start is not None and entry is not None else 0
        tokens = entry.tokens if start is not None and entry is not None else 0
        if not verify:
            committer.begin(src, sha, size, n, tokens, start or Position())
        large, embedded = size > window, 0
        for chunk in chunks:
            cid, meta = chunk_record(src, sha, n, chunk, metas)
            n += 1
            tokens += chunk.span.tokens
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
            report.tokens += chunk.span.tokens
            committer.progress(src, n, tokens, chunk.next)
            self._flush(False)
            if large and committer.due():
                self._commit()
        if n < verify:  # the store holds more chunks than the file gives
            raise _Restart()
        committer.finish(src)
        if embedded or not verify:
            report.indexed.append(src)
        else:
            report.unchanged += 1
        if committer.due():
            self._commit()

    # ------------------------------------------------------------ store and commits
    def _flush(self, all_: bool) -> None:
        """Embed the waiting chunks, `ENCODE_BATCH` at a time (all of them with ``all_``)."""
        assert self.store is not None
        while self.buffer and (all_ or len(self.buffer) >= ENCODE_BATCH):
            batch = self.buffer[:ENCODE_BATCH]
            del self.buffer[:ENCODE_BATCH]
            encoder = self.encoder()
            said, self.on_encode = self.on_encode, None
            if said is not None:
                said()
            vectors = encoder.encode_documents([t for _, t, _ in batch])
            self.store.add(
                [i for i, _, _ in batch], vectors, [t for _, t, _ in batch], [m for *_, m in batch]
            )
            self.tokens_done += sum(m["tokens"] for *_, m in batch)
            if self.bar is not None:
                rate = self.tokens_done / max(time.perf_counter() - self.t_start, 1e-9)
                self.bar.set_postfix_str(
                    f"chunks={self.report.chunks_added} tok/s={rate:,.0f}", refresh=False
                )

    def _commit(self) -> None:
        self._flush(True)
        self.committer.commit()

    def _remove(self, src: str) -> None:
        """Forget a source the store held before this run (gone, or unreadable now)."""
        assert self.store is not None
        self.store.delete([cid for cid, _ in self.stored.pop(src, ())])
        self.committer.forget(src)

    def _drop(self, src: str) -> None:
        """Forget every chunk of src: in the store (also those this run committed) and
        still waiting to be embedded."""
        assert self.store is not None
        ids = [cid for cid, _ in self.stored.pop(src, ())]
        if self.committer.has(src):
            ids += [cid for cid in self.store.ids if cid.startswith(f"{src}#")]
        self.buffer[:] = [c for c in self.buffer if c[2]["source"] != src]
        self.store.delete(list(dict.fromkeys(ids)))
        self.committer.forget(src)

    def _progress(self, n_bytes: int) -> None:
        """``n_bytes`` of the current file were read (a streamed file reports as it goes)."""
        if self.bar is not None and self.done_bytes + n_bytes > self.bar.n:
            self.bar.update(self.done_bytes + n_bytes - self.bar.n)

    def _with_skips(self, message: str) -> str:
        """An empty-corpus message with the reasons files were skipped (the likely cause)."""
        skipped = self.report.skipped
        if not skipped:
            return message
        shown = "; ".join(f"{src}: {reason}" for src, reason in skipped[:3])
        more = f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        return f"{message} (skipped {shown}{more})"


class _CountingReader:
    """A text file's ``read`` that reports how many bytes were read so far."""

    def __init__(self, f, on_bytes):
        self.f = f
        self.on_bytes = on_bytes

    def read(self, n: int) -> str:
        try:
            text = self.f.read(n)
        except OSError as exc:
            raise ReadError(unreadable(exc)) from None
        except UnicodeDecodeError:
            raise ReadError("changed while being read (no longer UTF-8 text)") from None
        if self.on_bytes is not None:
            self.on_bytes(self.f.buffer.tell())
        return text


def _progress_bar(total: int, enabled: bool | None) -> Any:
    return progress_bar(
        total, "Indexing", "B", enabled if total else False, unit_scale=True, unit_divisor=1024
    )
