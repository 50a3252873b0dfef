"""Incremental, crash-safe indexing of files into an index folder.

One run:

1. load the store (if any) and ``files.json``; a file entry counts only if the store
   holds exactly its chunks with its sha256 (so a crash between the two writes of a
   commit is repaired by re-indexing that file);
2. find the files under the sources; hash each one; unchanged files are skipped,
   new and changed ones are (re-)chunked and embedded (a changed file's old chunks
   are deleted first), chunks of files that no longer exist are removed;
3. commit in groups, at file boundaries: save the store atomically, then rewrite
   ``files.json``. A crash or Ctrl-C loses at most the uncommitted group; the next run
   picks up where it stopped. Chunk ids are ``"<path>#<n>"`` so re-adding is an upsert
   and nothing is ever duplicated.

Chunk metadata: ``source`` (path relative to the index root, or absolute outside it),
``chunk`` (position in the file), ``start``/``end`` (character offsets in the file's
text, or in the record/row/page text for .jsonl/.csv/.pdf, which add ``line``/``row``/
``page`` and the record's other scalar fields), ``sha256`` (of the file's bytes).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .chunking import check_chunking, chunk_spans
from .folder import FolderLock, IndexFolder, IndexFolderError, describe_embedder, embedder_spec, now
from .readers import ReadOptions, SkipFile, discover, read_segments

# Test/debug hook: seconds to sleep after each commit (prints "llm2vec-index-commit: ..." to stderr).
COMMIT_SLEEP_ENV = "LLM2VEC_RETRIEVAL_INDEX_COMMIT_SLEEP"
ENCODE_BATCH = 32  # chunks embedded per encoder call (progress granularity)


class EmptyCorpusError(Exception):
    """Nothing to index."""


@dataclass
class IndexSettings:
    """Options of ``index``; None means "keep what the index folder says" (or the default)."""

    model: str | None = None
    adapter: str | None = None
    kind: str | None = None
    chunk_tokens: int | None = None
    overlap: int | None = None
    text_field: str | None = None
    text_column: str | None = None
    query_instruction: str | None = None
    root: str | None = None
    rebuild: bool = False
    lexical: bool | None = (
        None  # keep a BM25 index beside the vectors (hybrid search); None: as recorded, else yes
    )
    commit_every: int = 512  # chunks per commit (at file boundaries)
    commit_seconds: float = 60.0  # or at least this often


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
        progress: bool | None = None,
    ):
        self.folder = folder
        self.settings = settings
        self.progress = progress

    # ------------------------------------------------------------ configuration
    def _resolve_config(self) -> tuple[dict[str, Any], bool]:
        """(manifest to write, whether every file must be re-chunked).

        A new index takes the options given (else the defaults). An existing one keeps what
        it records; --rebuild starts over from what it records, with the options given.
        """
        s = self.settings
        old = self.folder.read_manifest() if self.folder.exists() else None
        fresh = old is None or s.rebuild
        base: dict[str, Any] = dict(old) if old is not None else {}
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
        manifest = {
            **base,
            "lexical": bool(lexical),
            "embedder": spec,
            "query_instruction": s.query_instruction
            if s.query_instruction is not None
            else base.get("query_instruction"),
            "kind": kind,
            "metric": "cosine",
            "chunking": chunking,
            "root": root,
        }
        if fresh:
            manifest["created_at"] = now()
        return manifest, fresh or changed

    # ------------------------------------------------------------ main
    def run(self, sources: Sequence[str | os.PathLike]) -> IndexReport:
        p = self.folder.path
        if p.exists() and not p.is_dir():
            raise IndexFolderError(f"{p} exists and is not a folder")
        if p.is_dir() and not self.folder.exists() and any(e.name != ".lock" for e in p.iterdir()):
            raise IndexFolderError(
                f"{p} exists, is not empty and is not an llm2vec-retrieval index; choose another --index folder"
            )
        with FolderLock(self.folder):
            try:
                return self._run(sources)
            finally:
                self._cleanup_empty_folder()

    def _cleanup_empty_folder(self) -> None:
        # a first run that committed nothing leaves no folder behind (only our lock file)
        p = self.folder.path
        try:
            if p.is_dir() and {e.name for e in p.iterdir()} <= {".lock"}:
                (p / ".lock").unlink(missing_ok=True)
                p.rmdir()
        except OSError:
            pass

    def _run(self, sources: Sequence[str | os.PathLike]) -> IndexReport:
        from ..index import FingerprintMismatchError, IndexStore
        from ..index.errors import fingerprint_diff

        t0 = time.perf_counter()
        report = IndexReport()
        manifest, rechunk_all = self._resolve_config()
        old_spec = self.folder.read_manifest().get("embedder") if self.folder.exists() else None
        embedder_changed = old_spec is not None and old_spec != manifest["embedder"]
        chunking = manifest["chunking"]
        check_chunking(chunking["chunk_tokens"], chunking["overlap"])
        root = Path(manifest["root"])
        new_index = not self.folder.exists() or self.settings.rebuild

        # Find files first: a bad source fails before the model loads.
        files, refused = discover(sources, exclude=[self.folder.path])
        for p, reason in refused:
            report.skipped.append((relative_source(p, root), reason))
        source_roots = [Path(os.path.abspath(os.path.expanduser(os.fspath(s)))) for s in sources]

        encoder = None

        def get_encoder():
            """The embedder, loaded on first need (a run with nothing to embed loads no model)."""
            nonlocal encoder
            if encoder is None:
                from .folder import load_encoder

                encoder = load_encoder(manifest["embedder"])
                limit = encoder.config.doc_max_length
                if chunking["chunk_tokens"] > limit:
                    raise ValueError(
                        f"--chunk-tokens {chunking['chunk_tokens']} is more than the model's doc_max_length ({limit})"
                    )
                stored = store.fingerprint if store is not None else None
                if stored is not None:
                    diff = fingerprint_diff(stored, encoder.fingerprint())
                    if diff:
                        raise FingerprintMismatchError(stored, encoder.fingerprint(), diff)
            return encoder

        if not new_index and self.folder.has_store():
            store = IndexStore.load(
                self.folder.store_path
            )  # fingerprint checked when the model loads
            state = self.folder.read_files()
            if embedder_changed:
                get_encoder()  # a different --model must match the index before anything is written
        else:
            if not files:
                raise EmptyCorpusError(
                    "empty corpus: no indexable files (.txt, .md, .jsonl, .csv, .pdf) in "
                    + ", ".join(os.fspath(x) for x in sources)
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

        # Changed or new files.
        todo: list[tuple[Path, str, bytes, str]] = []
        for p in files:
            src = relative_source(p, root)
            try:
                data = p.read_bytes()
            except OSError as exc:
                report.skipped.append((src, f"unreadable ({exc.strerror or type(exc).__name__})"))
                if src in recorded:
                    removed.append(src)
                continue
            sha = sha256_bytes(data)
            entry = state.get(src)
            if entry is not None and entry.get("sha256") == sha and not rechunk_all:
                report.unchanged += 1
                continue
            todo.append((p, src, data, sha))

        committer = _Committer(self.folder, store, manifest, state, report, self.settings)
        committer.dirty = lexical_changed
        for src in removed:
            store.delete([cid for cid, _ in by_source.get(src, ())])
            committer.forget(src)
            report.removed.append(src)

        options = ReadOptions(chunking["text_field"], chunking["text_column"])
        buffer: list[tuple[str, str, dict[str, Any]]] = []
        tokens_done = 0
        t_start = time.perf_counter()

        bar = _progress_bar(len(todo), self.progress)

        def flush(all_: bool) -> None:
            nonlocal tokens_done
            while buffer and (all_ or len(buffer) >= ENCODE_BATCH):
                batch = buffer[:ENCODE_BATCH]
                del buffer[:ENCODE_BATCH]
                vectors = get_encoder().encode_documents([t for _, t, _ in batch])
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

        try:
            for path, src, data, sha in todo:
                try:
                    segments, notes = read_segments(path, data, options)
                except SkipFile as exc:
                    report.skipped.append((src, str(exc)))
                    if src in by_source or src in state:
                        store.delete([cid for cid, _ in by_source.get(src, ())])
                        committer.forget(src)
                    if bar is not None:
                        bar.update(1)
                    continue
                for note in notes:
                    report.notes.append((src, note))
                spans = chunk_spans(
                    get_encoder().tokenizer,
                    [s.text for s in segments],
                    chunking["chunk_tokens"],
                    chunking["overlap"],
                )
                chunks = []
                n = 0
                for seg, seg_spans in zip(segments, spans, strict=True):
                    for sp in seg_spans:
                        meta = {
                            **seg.meta,
                            "source": src,
                            "chunk": n,
                            "start": sp.start,
                            "end": sp.end,
                            "tokens": sp.tokens,
                            "sha256": sha,
                        }
                        chunks.append((f"{src}#{n}", seg.text[sp.start : sp.end], meta))
                        n += 1
                old_ids = [cid for cid, _ in by_source.get(src, ())]
                if old_ids:
                    store.delete(old_ids)
                buffer.extend(chunks)
                n_tokens = sum(m["tokens"] for _, _, m in chunks)
                committer.stage(
                    src,
                    {
                        "sha256": sha,
                        "bytes": len(data),
                        "chunks": len(chunks),
                        "tokens": n_tokens,
                        "indexed_at": now(),
                    },
                )
                report.indexed.append(src)
                report.chunks_added += len(chunks)
                report.tokens += n_tokens
                flush(False)
                if bar is not None:
                    bar.update(1)
                if committer.due():
                    flush(True)
                    committer.commit()
            flush(True)
            if new_index and len(store) == 0:
                raise EmptyCorpusError(
                    "empty corpus: no text to index in " + ", ".join(os.fspath(x) for x in sources)
                )
            committer.commit(final=True)
        finally:
            if bar is not None:
                bar.close()
        report.total_files = len(committer.state)
        report.total_chunks = len(store)
        report.seconds = time.perf_counter() - t0
        return report


class _Committer:
    """Groups changes and writes them: store first (atomic), then files.json."""

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
        self.manifest_written = False

    def stage(self, src: str, entry: dict[str, Any]) -> None:
        self.state[src] = entry
        self.pending_files += 1
        self.pending_chunks += entry["chunks"]
        self.dirty = True

    def forget(self, src: str) -> None:
        self.state.pop(src, None)
        self.dirty = True

    def due(self) -> bool:
        return self.pending_chunks >= self.settings.commit_every or (
            self.dirty and time.monotonic() - self.last >= self.settings.commit_seconds
        )

    def commit(self, final: bool = False) -> None:
        if not self.dirty:
            if final and self.folder.exists():
                self._touch_manifest()
            return
        if not self.manifest_written:
            self.manifest["updated_at"] = now()
            self.folder.write_manifest(
                {k: v for k, v in self.manifest.items() if k not in ("format", "format_version")}
            )
            self.manifest_written = True
        self.store.save(self.folder.store_path)
        self.folder.write_files(self.state)
        self.report.commits += 1
        self.pending_files = self.pending_chunks = 0
        self.dirty = False
        self.last = time.monotonic()
        sleep = os.environ.get(COMMIT_SLEEP_ENV)
        if sleep:
            sys.stderr.write(
                f"llm2vec-index-commit: {len(self.state)} files, {len(self.store)} chunks\n"
            )
            sys.stderr.flush()
            time.sleep(float(sleep))

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


def _progress_bar(total: int, enabled: bool | None):
    if enabled is False or total == 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        unit="file",
        desc="Indexing",
        disable=None if enabled is None else False,
        dynamic_ncols=True,
        file=sys.stderr,
    )


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
