"""Commits of an index run: the store saved atomically, then ``files.json``.

A file being indexed has an entry with ``partial`` (where its chunking continues) until
it is done; a commit inside a large file records that, so that the next run continues
there. Entries count only when the store holds exactly their chunks (see :mod:`.plan`).

``files.json`` records the version of the store saved with it (`IndexStore.version`) when
its entries describe every chunk of the store (the run started from such a state): the
next run then takes the chunks of each file from its entry instead of reading the metadata
of every chunk. A run killed between the two writes leaves versions that differ.

When: after ``commit_every`` chunks, or ``commit_seconds`` after the last commit when
something changed; the run asks (`due`) at file boundaries and inside large files.

The first commit of a run writes the manifest first. A run that starts an existing index
over (--rebuild) writes it with ``rebuild_unfinished`` until its store and files.json are
in place, so that a run after a kill starts over again. The save stages are announced
through `index.persistence.pause_stage` (extended here with ``manifest_written`` and
``files_json_written``), which the kill tests use.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING

from ..index.persistence import pause_stage
from .chunking import Position
from .folder import IndexFolder, now
from .manifest import FileEntry, IndexManifest

if TYPE_CHECKING:
    from ..index import IndexStore
    from .indexer import IndexReport, IndexSettings


class Committer:
    """Groups an index run's changes to ``files.json`` and writes them with the store."""

    def __init__(
        self,
        folder: IndexFolder,
        store: IndexStore,
        manifest: IndexManifest,
        recorded: IndexManifest | None,
        state: dict[str, FileEntry],
        report: IndexReport,
        settings: IndexSettings,
    ):
        self.folder = folder
        self.store = store
        self.manifest = manifest  # what this run writes (the encoder may add a dtype)
        self.recorded = recorded  # what the folder held when the run started
        self.state = dict(state)
        self.report = report
        self.settings = settings
        self.pending_chunks = 0
        self.dirty = False
        self.last = time.monotonic()
        self.manifest_written = False
        self.rebuilding = False  # the manifest says REBUILD_KEY until the first commit ends
        #: the entries describe every chunk of the store (`plan.Plan.exact`): files.json
        #: then records the store version it matches
        self.exact = False

    def has(self, src: str) -> bool:
        return src in self.state

    def begin(self, src: str, sha: str, size: int, chunks: int, tokens: int, at: Position) -> None:
        """A file starts (or continues at ``at`` with ``chunks`` already stored)."""
        self.state[src] = FileEntry(sha, chunks=chunks, tokens=tokens, bytes=size, partial=at)
        self.dirty = True

    def progress(self, src: str, chunks: int, tokens: int, nxt: Position) -> None:
        """One more chunk of src is on its way to the store; chunking continues at nxt."""
        entry = self.state[src]
        entry.chunks, entry.tokens, entry.partial = chunks, tokens, nxt
        self.pending_chunks += 1
        self.dirty = True

    def finish(self, src: str) -> None:
        entry = self.state[src]
        entry.partial = None
        entry.indexed_at = now()
        self.dirty = True

    def forget(self, src: str) -> None:
        self.state.pop(src, None)
        self.dirty = True

    def due(self) -> bool:
        """``commit_every`` chunks are waiting, or ``commit_seconds`` passed with changes."""
        since = time.monotonic() - self.last
        return self.pending_chunks >= self.settings.commit_every or (
            self.dirty and since >= self.settings.commit_seconds
        )

    def commit(self, final: bool = False) -> None:
        if not self.dirty:
            if final and self.folder.exists():
                self._touch_manifest()
            return
        if not self.manifest_written:
            self.manifest.updated_at = now()
            self._write_manifest(unfinished=self.rebuilding)
            self.manifest_written = True
            pause_stage("manifest_written")
        self.store.save(self.folder.store_path)
        self.folder.save_files(self.state, self.store.version if self.exact else None)
        if self.rebuilding:  # the new store and its files.json are in place
            pause_stage("files_json_written")
            self._write_manifest()
            self.rebuilding = False
        self.report.commits += 1
        self.pending_chunks = 0
        self.dirty = False
        self.last = time.monotonic()

    def _write_manifest(self, unfinished: bool = False) -> None:
        self.folder.save_manifest(replace(self.manifest, rebuild_unfinished=unfinished))

    def _touch_manifest(self) -> None:
        """A run with nothing to commit still records new options (e.g. a query
        instruction) and the fusion of an index made before it was recorded."""
        if self.manifest_written:
            return
        if self.recorded is None or not self.manifest.same_as(self.recorded):
            self.manifest.updated_at = now()
            self.folder.save_manifest(self.manifest)
