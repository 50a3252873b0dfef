"""The float vectors of a ``flat`` store, in segments beside the documents' (format 4).

Each docstore segment has a vector segment of the same name (``seg-*.vec.arr``, the array
file of `segments`) with two arrays:

``iids``     int64, ascending: the internal ids it holds (those of its docstore segment
             that were live when it was written: a superset of the ones live now).
``vectors``  float32 (rows, dim): their vectors, as stored (normalized for cosine).

A commit writes the vectors added since the last one as a new segment and never rewrites an
old one (a save hard-links it), so it costs the new vectors, not the index. Deletions are
the docstore's marks: a deleted document's vector stays in its segment until the segment
is merged (with its docstore segment) or the FAISS index is built, which skips it. The
FAISS index is not saved: it is built from the segments (memory-mapped) when a search
first needs it (`fill`). Until then, vectors added are kept here (`add`), so a commit that
adds a file never reads the index.

A store saved before vector segments (format 2 or 3) keeps its vectors in ``index.faiss``:
its segments are missing (None, `complete` False) and are written from the FAISS index by
the next save (`seal`, `merge` and `fill_missing` take a ``fetch(iids)`` that reads it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .segments import Segment, locate

Fetch = Callable[[np.ndarray], np.ndarray]


def make_segment(name: str, iids: np.ndarray, vectors: np.ndarray) -> Segment:
    return Segment(
        name,
        {
            "iids": np.ascontiguousarray(iids, np.int64),
            "vectors": np.ascontiguousarray(vectors, np.float32),
        },
    )


def check_segment(seg: Segment, dim: int, live: np.ndarray) -> str | None:
    """What is wrong with a loaded vector segment that must hold the ``live`` iids of its
    docstore segment, or None."""
    a = seg.arrays
    iids, x = a.get("iids"), a.get("vectors")
    if iids is None or iids.ndim != 1 or iids.dtype != np.int64:
        return "array 'iids' missing or not int64"
    if x is None or x.dtype != np.float32 or x.shape != (len(iids), dim):
        return f"array 'vectors' missing or not float32 ({len(iids)}, {dim})"
    if len(iids) and (np.diff(iids) <= 0).any():
        return "internal ids not ascending"
    if len(live) and (seg.rows_of(live) < 0).any():
        return "vectors of its documents are missing"
    return None


class VectorSegments:
    """Vector segments (one per docstore segment, in the same order) and the vectors added
    since the last seal."""

    def __init__(self, dim: int, complete: bool = True):
        self.dim = dim
        #: None where a store saved before vector segments has the vectors in its FAISS index
        self.segments: list[Segment | None] = []
        #: False while some live vector is only in a FAISS index read from an older save
        self.complete = complete
        self._iids: list[np.ndarray] = []  # added since the last seal (ascending overall)
        self._x: list[np.ndarray] = []
        self._where: Callable[[str], str] = lambda name: name
        self._checked: set[str] = set()

    @classmethod
    def opened(
        cls, dim: int, segments: Sequence[Segment | None], where: Callable[[str], str]
    ) -> VectorSegments:
        """Vector segments of a loaded store (memory-mapped, checked on first use);
        ``where(name)``: the file named in errors."""
        vs = cls(dim, complete=all(s is not None for s in segments))
        vs.segments = list(segments)
        vs._where = where
        return vs

    @classmethod
    def legacy(cls, dim: int, n_segments: int) -> VectorSegments:
        """Those of a store saved before vector segments (with ``n_segments`` docstore
        segments): none yet, the FAISS index holds the vectors."""
        vs = cls(dim, complete=False)
        vs.segments = [None] * n_segments
        return vs

    @property
    def has_pending(self) -> bool:
        return bool(self._iids)

    def add(self, iids: np.ndarray, x: np.ndarray) -> None:
        """Keep vectors added while no FAISS index is built (new iids, larger than all)."""
        self._iids.append(np.array(iids, np.int64))
        self._x.append(np.array(x, np.float32))

    def _pending(self) -> Segment:
        if not self._iids:
            return make_segment("", np.empty(0, np.int64), np.empty((0, self.dim), np.float32))
        return make_segment("", np.concatenate(self._iids), np.concatenate(self._x))

    def _checked_segment(self, seg: Segment, live: np.ndarray) -> Segment:
        if seg.name not in self._checked:
            msg = check_segment(seg, self.dim, live)
            if msg:
                from .errors import IndexCorruptedError

                f = self._where(seg.name)
                raise IndexCorruptedError(f"{f}: {msg}", file=f)
            self._checked.add(seg.name)
        return seg

    def _gather(
        self, sources: Sequence[Segment | None], iids: np.ndarray, fetch: Fetch
    ) -> np.ndarray:
        """Vectors of ``iids`` from the given segments, ``fetch`` for the rest."""
        out = np.empty((len(iids), self.dim), np.float32)
        present = [s for s in sources if s is not None and len(s)]
        where, rows = locate(present, iids)
        for j, seg in enumerate(present):
            sel = np.flatnonzero(where == j)
            if len(sel):
                out[sel] = seg.arrays["vectors"][rows[sel]]
        missing = np.flatnonzero(where < 0)
        if len(missing):
            out[missing] = fetch(iids[missing])
        return out

    def seal(self, name: str, iids: np.ndarray, fetch: Fetch) -> None:
        """Segment ``name`` of the docstore segment sealed with ``iids``: the vectors added
        since the last seal (those of documents deleted meanwhile are dropped), ``fetch``
        for the others (held by a FAISS index)."""
        x = self._gather([self._pending()], iids, fetch)
        self.segments.append(make_segment(name, iids, x))
        self.discard_pending()

    def discard_pending(self) -> None:
        self._iids.clear()
        self._x.clear()

    def merge(self, start: int, end: int, name: str | None, iids: np.ndarray, fetch: Fetch):
        """Replace segments [start, end) as the docstore merged them: by segment ``name``
        holding ``iids`` (its live documents), or by nothing (``name`` None)."""
        run = self.segments[start:end]
        merged: list[Segment | None] = []
        if name is not None:
            merged = [make_segment(name, iids, self._gather(run, iids, fetch))]
        self.segments[start:end] = merged

    def fill_missing(self, names: Sequence[str], live: Sequence[np.ndarray], fetch: Fetch):
        """Write the segments a store from an older save lacks (``names`` and ``live`` iids
        of each docstore segment), from ``fetch``; the vectors are then all here."""
        for j, seg in enumerate(self.segments):
            if seg is None:
                self.segments[j] = make_segment(names[j], live[j], fetch(live[j]))
        self.complete = True

    def fill(self, add: Callable[[np.ndarray, np.ndarray], None], live, pending) -> None:
        """Add every live vector to a new FAISS index through ``add(iids, x)``: ``live``,
        the live iids of each docstore segment, ``pending`` those added since the last
        seal. The vectors kept since the last seal are then the index's."""
        if not self.complete:
            raise RuntimeError("vector segments missing: the FAISS index holds the vectors")
        for seg, ids in zip(self.segments, live, strict=True):
            assert seg is not None
            self._checked_segment(seg, ids)
            if not len(ids):
                continue
            if len(ids) == len(seg):
                add(ids, seg.arrays["vectors"])
            else:
                add(ids, seg.arrays["vectors"][seg.rows_of(ids)])
        if len(pending):
            add(pending, self._gather([self._pending()], pending, _none_missing))
        self.discard_pending()


def _none_missing(iids: np.ndarray) -> np.ndarray:
    raise KeyError(int(iids[0]))
