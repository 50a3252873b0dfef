"""The served index, reloaded when `llm2vec-retrieval index` commits to its folder.

`serve --index DIR` keeps running while ``index`` updates DIR. Every commit of ``index``
saves the whole store atomically (`index.persistence`): a new ``store/`` directory with a
new ``manifest.json`` is swapped in. ``LiveIndex.current()`` stats that file (its inode,
size and mtime: one ``stat`` per call, no read) and, when it changed, opens the new commit
with the served encoder (a full load, as at start-up, but only once per commit) and swaps
one reference. A request holds the ``Searcher`` it got for its whole life, so no request
sees half of two versions; a request that arrives while a reload is running waits for it,
so a request that starts after a commit is on disk never gets an older one (a deleted file
is not served after the commit that removed it).

A commit the served encoder cannot search (the folder rebuilt with another model, deleted,
or unreadable) is not papered over with the version in memory: ``current()`` raises
``IndexUnavailable`` with a one-line reason until a later commit loads. The commit served is
the store manifest's ``manifest_sha256`` (``commit``) and its ``created_at``.

Not here: watching other files of the folder (``files.json`` and ``llm2vec-index.json`` are
written by the same commits), or reloading the model.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..ingest import IndexFolder, Searcher

logger = logging.getLogger("llm2vec_retrieval.server")

# (device, inode, size, mtime_ns) of the store's manifest.json
Signature = tuple[int, int, int, int]


class IndexUnavailable(Exception):
    """The commit on disk cannot be served (message: one line that says why and what to do)."""


def signature(folder: IndexFolder) -> Signature | None:
    """What identifies the commit on disk: the stat of the store's manifest.json (a commit
    writes a new file; a save in progress reads the previous one, under ``.store.bak``);
    None when the folder holds no committed store."""
    st = _stat(folder.store_path / "manifest.json")  # the common case: one stat
    for _ in range(2):  # a save between its two renames: in .store.bak, or gone an instant
        if st is not None:
            break
        path = folder.store_manifest_path()
        st = _stat(path) if path is not None else None
    return None if st is None else (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _stat(path: os.PathLike) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


@dataclass(frozen=True)
class Commit:
    """One loaded version of the index."""

    searcher: Searcher
    commit: str | None  # the store manifest's manifest_sha256
    committed_at: str | None


class LiveIndex:
    """The ``Searcher`` of an index folder, reopened (with the same encoder) on each commit.

    ``opened``: the ``signature`` taken *before* ``searcher`` was loaded (None: now), so that
    a commit that landed during that load is picked up by the first ``current()``.
    ``allow_fingerprint_mismatch``: as given to the first ``Searcher``.
    """

    def __init__(
        self,
        searcher: Searcher,
        *,
        opened: Signature | None = None,
        allow_fingerprint_mismatch: bool = False,
    ):
        self.folder = searcher.folder
        self.encoder = searcher.encoder
        self.allow_fingerprint_mismatch = allow_fingerprint_mismatch
        self._signature = opened if opened is not None else signature(self.folder)
        # (the commit served, why the one on disk is not): replaced as one reference
        self._state: tuple[Commit, str | None] = (Commit(searcher, *self._commit_id()), None)
        self._lock = threading.Lock()
        self.reloads = 0

    # ------------------------------------------------------------------ reading
    def current(self) -> Commit:
        """The latest commit, reloaded first when the one on disk changed; raises
        ``IndexUnavailable`` when that commit cannot be served."""
        if signature(self.folder) != self._signature:
            with self._lock:  # one reload at a time; the others wait for its result
                if signature(self.folder) != self._signature:
                    self._reload()
        served, error = self._state
        if error is not None:
            raise IndexUnavailable(error)
        return served

    @property
    def state(self) -> tuple[Commit, str | None]:
        """(the last commit loaded, why the commit on disk is not served or None), as of
        the last check (the disk is not looked at)."""
        return self._state

    # ------------------------------------------------------------------ reloading
    def _commit_id(self) -> tuple[str | None, str | None]:
        try:
            manifest = self.folder.read_store_manifest() or {}
        except Exception:  # unreadable: the load says why
            manifest = {}
        return manifest.get("manifest_sha256"), manifest.get("created_at")

    def _open(self) -> Searcher:
        import warnings

        from ..ingest import Searcher

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a mismatch allowed at start needs no warning
            return Searcher(
                self.folder.path,
                encoder=self.encoder,
                allow_fingerprint_mismatch=self.allow_fingerprint_mismatch,
            )

    def _reload(self) -> None:
        """Open the commit on disk; the swap is one assignment once it is fully loaded. The
        signature is taken before the load: a commit that lands during it (and may be the
        one loaded) makes the next call load again, so none is missed."""
        before = signature(self.folder)
        if before is None:
            self._fail(
                before,
                f"index {self.folder.path} no longer holds a committed index; run "
                "`llm2vec-retrieval index` on it, or restart `serve` with another --index",
            )
            return
        commit, committed_at = self._commit_id()
        try:
            searcher = self._open()
        except Exception as exc:
            self._fail(before, self._reason(exc))
            return
        self._state = (Commit(searcher, commit, committed_at), None)
        self._signature = before
        self.reloads += 1

    def _fail(self, sig: Signature | None, message: str) -> None:
        """Serve nothing from this index until the next commit (tried once per commit)."""
        self._state = (self._state[0], message)
        self._signature = sig
        logger.error("%s", message)

    def _reason(self, exc: Exception) -> str:
        from ..errors import UserError
        from ..index import FingerprintMismatchError

        where = f"index {self.folder.path}"
        if isinstance(exc, FingerprintMismatchError):
            return (
                f"{where} was re-indexed with another model than the served one; restart "
                "`serve` to serve its new model"
            )
        first = (str(exc).splitlines() or [""])[0]
        if isinstance(exc, UserError):
            return f"cannot reload {where}: {first}"
        return f"cannot reload {where}: {type(exc).__name__}: {first}"
