"""Immutable segment files and the rule that merges segments by size.

A store's documents and BM25 postings live in segments: each commit writes the documents
added since the last one as a new small segment, and never rewrites an old one (a later
save hard-links it into the new directory version). Deleting marks a document; merging a
run of neighbouring segments rewrites them as one without the marked documents.

Array file (``*.arr``): the magic ``L2VARR1\\n``, the header length (8 bytes, little
endian), a JSON header ``{name: {"dtype", "shape", "offset"}}`` and the raw arrays,
each 64-byte aligned from the start of the file. Numbers only (no pickle, no objects):
it is read by memory-mapping the file, so opening a segment reads only its header and
searching touches only the pages of the postings it scores.
"""

from __future__ import annotations

import json
import math
import mmap
import os
from collections.abc import Mapping, Sequence

import numpy as np

MAGIC = b"L2VARR1\n"
_ALIGN = 64
_DTYPES = frozenset({"<i4", "<i8", "<f4", "|u1"})
#: Segments of the same size class (a power of MERGE_FACTOR) merge once this many of them
#: end the list: a document is rewritten about log_10(count) times over an index's life.
MERGE_FACTOR = 10
#: A segment with more than this share of its documents deleted is rewritten without them.
PURGE_SHARE = 0.5


class ArrayFileError(ValueError):
    """An array file that cannot be what we wrote (the message says what is wrong)."""


def _pad(n: int) -> int:
    return -n % _ALIGN


def write_arrays(f, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` (1-D or 2-D, int32/int64/float32/uint8) into the open binary file."""
    header: dict[str, dict] = {}
    offset = 0
    plain = {}
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        if a.dtype.str not in _DTYPES:
            raise TypeError(f"array {name!r}: unsupported dtype {a.dtype}")
        offset += _pad(offset)
        header[name] = {"dtype": a.dtype.str, "shape": list(a.shape), "offset": offset}
        offset += a.nbytes
        plain[name] = a
    head = json.dumps(header, sort_keys=True).encode()
    start = len(MAGIC) + 8 + len(head)
    f.write(MAGIC + len(head).to_bytes(8, "little") + head + b"\0" * _pad(start))
    pos = 0
    for name, a in plain.items():
        skip = header[name]["offset"] - pos
        f.write(b"\0" * skip)
        f.write(a.data.cast("B"))
        pos += skip + a.nbytes


def map_arrays(fd: int, size: int) -> dict[str, np.ndarray]:
    """The arrays of an array file open as ``fd`` (``size`` bytes), memory-mapped read-only.
    ArrayFileError when its header or sizes are not those of an array file."""
    if size < len(MAGIC) + 8:
        raise ArrayFileError("too short for an array file")
    return parse_arrays(mmap.mmap(fd, size, access=mmap.ACCESS_READ))


def parse_arrays(buf) -> dict[str, np.ndarray]:
    """The arrays of an array file's bytes (``bytes`` or a memory map), as views of it."""
    size = len(buf)
    if size < len(MAGIC) + 8 or buf[: len(MAGIC)] != MAGIC:
        raise ArrayFileError("not an array file (bad magic)")
    hlen = int.from_bytes(buf[len(MAGIC) : len(MAGIC) + 8], "little")
    start = len(MAGIC) + 8 + hlen
    if start > size:
        raise ArrayFileError("header longer than the file")
    try:
        header = json.loads(bytes(buf[len(MAGIC) + 8 : start]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ArrayFileError("unreadable header") from None
    base = start + _pad(start)
    out = {}
    if not isinstance(header, dict):
        raise ArrayFileError("unreadable header")
    for name, h in header.items():
        try:
            dtype, shape, offset = np.dtype(h["dtype"]), tuple(h["shape"]), int(h["offset"])
            if h["dtype"] not in _DTYPES or len(shape) not in (1, 2) or min(shape, default=0) < 0:
                raise ValueError
            count = math.prod(shape)
        except (KeyError, TypeError, ValueError):
            raise ArrayFileError(f"bad header entry for {name!r}") from None
        if offset < 0 or base + offset + count * dtype.itemsize > size:
            raise ArrayFileError(f"array {name!r} runs past the end of the file")
        out[name] = np.frombuffer(buf, dtype, count, base + offset).reshape(shape)
    return out


def read_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """`map_arrays` of the file at ``path``."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return map_arrays(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)  # the mapping stays valid without the descriptor


def size_class(n: int) -> int:
    return 0 if n < MERGE_FACTOR else int(math.log(n, MERGE_FACTOR) + 1e-9)


def merge_plan(live: Sequence[int], total: Sequence[int]) -> list[tuple[int, int]]:
    """Runs ``(start, end)`` of neighbouring segments to merge, given each segment's live
    and total (live + deleted) document counts; apply them in order, each to the list the
    ones before it left (a merged run becomes one segment).

    The run of segments that ends the list and shares the last one's size class merges once
    it has ``MERGE_FACTOR`` segments, and again while the result makes a new full run (a
    counter in base ``MERGE_FACTOR``); a segment whose deleted share is over ``PURGE_SHARE``
    is rewritten alone."""
    sizes = list(live)
    plan: list[tuple[int, int]] = []
    while True:
        end = len(sizes)
        if end < MERGE_FACTOR:
            break
        cls = size_class(sizes[-1])
        start = end
        while start > 0 and size_class(sizes[start - 1]) <= cls:
            start -= 1
        if end - start < MERGE_FACTOR:
            break
        plan.append((start, end))
        sizes[start:end] = [sum(sizes[start:end])]
    # the runs above only ever join segments at the list's end: purge the others
    merged_from = plan[-1][0] if plan else len(live)
    for i in range(min(merged_from, len(live)) - 1, -1, -1):
        if total[i] and (total[i] - live[i]) > PURGE_SHARE * total[i]:
            plan.append((i, i + 1))
    return plan


def new_name(counter: int) -> str:
    """A segment name unique across saves: a counter and random bits (a save links files by
    name from the directory it replaces, so a name is never reused for other content)."""
    return f"seg-{counter:06d}-{os.urandom(4).hex()}"


class Segment:
    """One immutable segment: named arrays (memory-mapped when loaded), and where its file
    was last committed (``info``: its sha256 and size; ``source``: the store directory), so
    that the next save links that file instead of writing it again."""

    __slots__ = ("name", "arrays", "info", "source")

    def __init__(
        self,
        name: str,
        arrays: dict[str, np.ndarray],
        info: dict | None = None,
        source: os.PathLike | None = None,
    ):
        self.name = name
        self.arrays = arrays
        self.info = info
        self.source = source

    @property
    def iids(self) -> np.ndarray:
        return self.arrays["iids"]

    def __len__(self) -> int:
        return len(self.arrays["iids"])

    def rows_of(self, iids: np.ndarray) -> np.ndarray:
        """Rows of ``iids`` (each must be in the segment; -1 where one is not)."""
        own = self.iids
        r = np.searchsorted(own, iids)
        r[r >= len(own)] = 0
        return np.where(own[r] == iids, r, -1) if len(own) else np.full(len(iids), -1)


def locate(segments: Sequence[Segment], iids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(segment index, row) of each iid; -1 / -1 where no segment holds it. Segments hold
    ascending, non-overlapping iid ranges, in order."""
    iids = np.asarray(iids, np.int64)
    seg = np.full(len(iids), -1, np.int64)
    row = np.full(len(iids), -1, np.int64)
    full = [j for j, s in enumerate(segments) if len(s)]
    if not full or not len(iids):
        return seg, row
    firsts = np.asarray([segments[j].iids[0] for j in full], np.int64)
    cand = np.searchsorted(firsts, iids, side="right") - 1
    for c in np.unique(cand[cand >= 0]).tolist():
        sel = np.flatnonzero(cand == c)
        r = segments[full[c]].rows_of(iids[sel])
        ok = r >= 0
        seg[sel[ok]], row[sel[ok]] = full[c], r[ok]
    return seg, row
