"""The documents of an IndexStore (string id, internal id, text, metadata), in segments.

Documents added since the last commit are kept in memory; a commit seals them into a new
segment (``segments.Segment``) whose arrays are:

``iids``      int64, ascending: the documents' internal ids.
``pos``       int64: each one's place in insertion order (an upsert keeps its id's place).
``ids``       uint8: the string ids, a JSON list in row order.
``records``   uint8: one JSON object per line, ``{"id", "iid", "text"}``; ``offsets``
              (int64, rows + 1) are where each line starts.
``meta``      uint8: one JSON object (the metadata) per line; ``meta_offsets``.

A loaded segment is memory-mapped: a search parses the records of its hits only, and the
string ids are read the first time something asks by id (add, delete, get, ``in``).
Deleting a document of a segment marks its internal id (``dead``); merging segments
drops the marked ones. Segments hold ascending, non-overlapping iid ranges, in order.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from .errors import IndexCorruptedError
from .segments import Segment, locate

_EMPTY = np.empty(0, np.int64)


def json_copy(obj: Any) -> Any:
    """Copy of JSON-shaped data (dicts, lists, scalars): fast and deep."""
    if isinstance(obj, dict):
        return {k: json_copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [json_copy(v) for v in obj]
    return obj


def _blob(lines: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(lines) + 1, np.int64)
    np.cumsum([len(b) for b in lines], out=offsets[1:])
    return np.frombuffer(b"".join(lines), np.uint8), offsets


def _json_line(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=True).encode() + b"\n"  # lone surrogates survive


def make_segment(name: str, docs: list[tuple[int, str, int, str | None, dict]]) -> Segment:
    """A segment of ``(iid, id, pos, text, metadata)`` tuples, sorted by iid."""
    docs = sorted(docs, key=lambda d: d[0])
    records, offsets = _blob([_json_line({"id": d[1], "iid": d[0], "text": d[3]}) for d in docs])
    meta, meta_offsets = _blob([_json_line(d[4]) for d in docs])
    return Segment(
        name,
        {
            "iids": np.fromiter((d[0] for d in docs), np.int64, len(docs)),
            "pos": np.fromiter((d[2] for d in docs), np.int64, len(docs)),
            "ids": np.frombuffer(json.dumps([d[1] for d in docs]).encode(), np.uint8),
            "records": records,
            "offsets": offsets,
            "meta": meta,
            "meta_offsets": meta_offsets,
        },
    )


def check_segment(seg: Segment) -> str | None:
    """What is structurally wrong with a loaded segment's arrays (cheap checks), or None."""
    a = seg.arrays
    for name in ("iids", "pos", "ids", "records", "offsets", "meta", "meta_offsets"):
        if name not in a or a[name].ndim != 1:
            return f"array {name!r} missing"
    n = len(a["iids"])
    if a["iids"].dtype != np.int64 or a["pos"].dtype != np.int64 or len(a["pos"]) != n:
        return "bad iids or positions"
    if n and (a["iids"][0] < 0 or (np.diff(a["iids"]) <= 0).any()):
        return "internal ids not ascending"
    for blob, off in (("records", "offsets"), ("meta", "meta_offsets")):
        o = a[off]
        if len(o) != n + 1 or o[0] != 0 or o[-1] != len(a[blob]) or (np.diff(o) < 0).any():
            return f"{off} do not match {blob}"
    return None


def _segment_ids(seg: Segment) -> list[str]:
    ids = json.loads(seg.arrays["ids"].tobytes().decode("utf-8"))
    if (
        not isinstance(ids, list)
        or len(ids) != len(seg)
        or not all(isinstance(i, str) for i in ids)
    ):
        raise ValueError("bad id list")
    return ids


class DocStore:
    """Documents by string id and internal id: sealed segments plus the ones added since."""

    def __init__(self) -> None:
        self.segments: list[Segment] = []
        self.dead: set[int] = set()  # iids of segment documents deleted or replaced since
        # iid -> (id, pos, text, metadata) of documents added since the last seal
        self._pending: dict[int, tuple[str, int, str | None, dict[str, Any]]] = {}
        self._map: dict[str, int] | None = None  # id -> iid, built on first need
        self._count = 0
        self._where: Callable[[str], str] = lambda name: name  # file of a segment, for errors
        self._meta_cache: dict[str, list[dict[str, Any]]] = {}

    @classmethod
    def opened(
        cls, segments: list[Segment], dead: Iterable[int], where: Callable[[str], str]
    ) -> DocStore:
        """A docstore over loaded segments; ``where(name)``: the file named in errors."""
        ds = cls()
        ds.segments = segments
        ds.dead = set(dead)
        ds._count = sum(len(s) for s in segments) - len(ds.dead)
        ds._where = where
        return ds

    @classmethod
    def from_records(
        cls, records: Iterable[tuple[str, int, str | None, dict[str, Any]]]
    ) -> DocStore:
        """A docstore holding ``(id, iid, text, metadata)`` records in insertion order (those
        of an older save: they are sealed into a segment by the next save)."""
        ds = cls()
        ds._pending = {
            iid: (id_, pos, text, meta) for pos, (id_, iid, text, meta) in enumerate(records)
        }
        ds._count = len(ds._pending)
        return ds

    def __len__(self) -> int:
        return self._count

    # -- by id --------------------------------------------------------------------------
    def _ids_of(self, j: int) -> list[str]:
        seg = self.segments[j]
        try:
            return _segment_ids(seg)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise self._corrupt(seg, "its id list is unreadable") from None

    @property
    def id_map(self) -> dict[str, int]:
        """id -> iid of every document (read from the segments the first time)."""
        if self._map is None:
            m: dict[str, int] = {}
            dead = self.dead
            for j, seg in enumerate(self.segments):
                for i, iid in zip(self._ids_of(j), seg.iids.tolist(), strict=True):
                    if iid not in dead:
                        m[i] = iid
            for iid, d in self._pending.items():
                m[d[0]] = iid
            self._map = m
        return self._map

    def __contains__(self, id: object) -> bool:
        return id in self.id_map

    def iid(self, id: str) -> int | None:
        return self.id_map.get(id)

    def ids(self) -> list[str]:
        """Ids in insertion order (an upsert keeps its id's first place)."""
        keyed: list[tuple[int, str]] = []
        dead = self.dead
        for j, seg in enumerate(self.segments):
            keyed += [
                (p, i)
                for i, iid, p in zip(
                    self._ids_of(j), seg.iids.tolist(), seg.arrays["pos"].tolist(), strict=True
                )
                if iid not in dead
            ]
        keyed += [(d[1], d[0]) for d in self._pending.values()]
        keyed.sort()
        return [i for _, i in keyed]

    # -- mutation -----------------------------------------------------------------------
    def _pos(self, iid: int) -> int:
        if iid in self._pending:
            return self._pending[iid][1]
        seg, row = locate(self.segments, np.asarray([iid]))
        return int(self.segments[seg[0]].arrays["pos"][row[0]])

    def put(self, id: str, iid: int, text: str | None, metadata: dict[str, Any]) -> int | None:
        """Store a document under a new iid; returns the iid it replaces (or None)."""
        old = self.id_map.get(id)
        pos = iid if old is None else self._pos(old)
        if old is not None:
            self._drop(old)
        self._pending[iid] = (id, pos, text, metadata)
        self._map[id] = iid  # type: ignore[index]
        self._count += 1
        return old

    def pop(self, id: str) -> int | None:
        """Remove a document; returns its iid (None when there is none)."""
        iid = self.id_map.pop(id, None)
        if iid is not None:
            self._drop(iid)
        return iid

    def _drop(self, iid: int) -> None:
        if self._pending.pop(iid, None) is None:
            self.dead.add(iid)
        self._count -= 1

    # -- reading ------------------------------------------------------------------------
    def _corrupt(self, seg: Segment, msg: str) -> IndexCorruptedError:
        f = self._where(seg.name)
        return IndexCorruptedError(
            f"{f}: {msg}; `llm2vec-retrieval info --index DIR --verify` checks every file",
            file=f,
        )

    def records(self, iids: Iterable[int]) -> list[tuple[str, str | None, dict[str, Any]]]:
        """(id, text, metadata) of each iid (each must be live), in order."""
        iids = np.fromiter(iids, np.int64)
        out: list[Any] = [None] * len(iids)
        rest = []
        for k, iid in enumerate(iids.tolist()):
            d = self._pending.get(iid)
            if d is None:
                rest.append(k)
            else:
                out[k] = (d[0], d[2], json_copy(d[3]))
        if rest:
            segs, rows = locate(self.segments, iids[rest])
            if (segs < 0).any():
                raise KeyError(int(iids[rest][segs < 0][0]))
            whole: dict[int, tuple[list, list]] = {}  # segments most of which is asked for
            for j, c in zip(*np.unique(segs, return_counts=True), strict=True):
                if c > 64 and c > len(self.segments[j]) // 8:
                    whole[int(j)] = (self._parse(int(j), "records"), self._parse(int(j), "meta"))
            for k, j, r in zip(rest, segs.tolist(), rows.tolist(), strict=True):
                if j in whole:
                    recs, metas = whole[j]
                    out[k] = self._checked(j, recs[r], metas[r], int(iids[k]))
                else:
                    out[k] = self._record(j, r, int(iids[k]))
        return out

    def _parse(self, j: int, blob: str) -> list[Any]:
        """Every line of a segment's ``records`` or ``meta`` blob, parsed at once."""
        seg = self.segments[j]
        text = seg.arrays[blob].tobytes().decode("utf-8", "replace").rstrip("\n")
        try:
            out = json.loads("[" + text.replace("\n", ",") + "]") if len(seg) else []
        except (ValueError, RecursionError):
            raise self._corrupt(seg, f"its {blob} are unreadable") from None
        if len(out) != len(seg):
            raise self._corrupt(seg, f"its {blob} do not match its documents")
        return out

    def _record(self, j: int, r: int, iid: int) -> tuple[str, str | None, dict[str, Any]]:
        seg = self.segments[j]
        a = seg.arrays
        try:
            rec = json.loads(a["records"][a["offsets"][r] : a["offsets"][r + 1]].tobytes())
            meta = json.loads(a["meta"][a["meta_offsets"][r] : a["meta_offsets"][r + 1]].tobytes())
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise self._corrupt(seg, f"the record of internal id {iid} is unreadable") from None
        return self._checked(j, rec, meta, iid)

    def _checked(self, j: int, rec: Any, meta: Any, iid: int) -> tuple[str, str | None, dict]:
        """(id, text, metadata) of a parsed record, or IndexCorruptedError."""
        if (
            not isinstance(rec, dict)
            or rec.get("iid") != iid
            or not isinstance(rec.get("id"), str)
            or not (rec.get("text") is None or isinstance(rec.get("text"), str))
            or not isinstance(meta, dict)
        ):
            raise self._corrupt(
                self.segments[j], f"the record of internal id {iid} is not a document"
            )
        return rec["id"], rec["text"], meta

    def live_iids(self) -> np.ndarray:
        """Every live iid: the segments' in order, then the pending ones (ascending)."""
        parts = [s.iids for s in self.segments]
        if self.dead:
            dead = np.fromiter(self.dead, np.int64, len(self.dead))
            parts = [p[~np.isin(p, dead)] for p in parts]
        parts.append(np.fromiter(sorted(self._pending), np.int64, len(self._pending)))
        return np.concatenate(parts) if parts else _EMPTY

    def parts(self) -> tuple[list[np.ndarray], np.ndarray]:
        """(live iids of each segment, iids added since the last seal)."""
        dead = np.fromiter(self.dead, np.int64, len(self.dead))
        sealed = [s.iids[~np.isin(s.iids, dead)] for s in self.segments]
        return sealed, np.fromiter(sorted(self._pending), np.int64, len(self._pending))

    def _metadata(self, j: int) -> list[dict[str, Any]]:
        """A segment's metadata, parsed once (the filters read them at every search)."""
        seg = self.segments[j]
        cached = self._meta_cache.get(seg.name)
        if cached is None:
            cached = self._meta_cache[seg.name] = self._parse(j, "meta")
        return cached

    def metadata_items(self) -> list[tuple[str, dict[str, Any]]]:
        """(id, metadata) of every live document, segment by segment (not in insertion
        order): copies, the caller's to change."""
        out: list[tuple[str, dict[str, Any]]] = []
        dead = self.dead
        for j, seg in enumerate(self.segments):
            cached = self._meta_cache.get(seg.name)
            metas = self._parse(j, "meta") if cached is None else json_copy(cached)
            ids = self._ids_of(j)
            if dead:
                out += [
                    (i, m)
                    for i, iid, m in zip(ids, seg.iids.tolist(), metas, strict=True)
                    if iid not in dead
                ]
            else:
                out += zip(ids, metas, strict=True)
        out += [(d[0], json_copy(d[3])) for d in self._pending.values()]
        return out

    def matching(self, pred: Callable[[Mapping[str, Any]], bool]) -> np.ndarray:
        """iids of the live documents whose metadata ``pred`` accepts."""
        out: list[int] = []
        dead = self.dead
        for j, seg in enumerate(self.segments):
            out += [
                iid
                for iid, m in zip(seg.iids.tolist(), self._metadata(j), strict=True)
                if iid not in dead and pred(m)
            ]
        out += [iid for iid, d in self._pending.items() if pred(d[3])]
        return np.asarray(out, np.int64)

    # -- sealing and merging ------------------------------------------------------------
    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    def seal(self, name: str) -> None:
        """Turn the documents added since the last seal into segment ``name``."""
        docs = [(iid, d[0], d[1], d[2], d[3]) for iid, d in self._pending.items()]
        self.segments.append(make_segment(name, docs))
        self._pending.clear()

    def counts(self) -> tuple[list[int], list[int]]:
        """(live, total) documents of each segment."""
        dead = np.fromiter(self.dead, np.int64, len(self.dead))
        total = [len(s) for s in self.segments]
        live = [
            t - int(np.isin(s.iids, dead).sum()) for t, s in zip(total, self.segments, strict=True)
        ]
        return live, total

    def merge(self, start: int, end: int, name: str) -> bool:
        """Replace segments [start, end) by one named ``name`` without their deleted
        documents; False when none is left (the run is then simply removed)."""
        run = self.segments[start:end]
        dead = np.fromiter(self.dead, np.int64, len(self.dead))
        cols: dict[str, list] = {k: [] for k in ("iids", "pos", "ids", "rec", "meta")}
        for j, seg in zip(range(start, end), run, strict=True):
            a = seg.arrays
            gone = np.isin(seg.iids, dead)
            keep = np.flatnonzero(~gone)
            ids = self._ids_of(j)
            cols["iids"].append(seg.iids[keep])
            cols["pos"].append(a["pos"][keep])
            cols["ids"] += [ids[r] for r in keep.tolist()]
            for blob, off, key in (("records", "offsets", "rec"), ("meta", "meta_offsets", "meta")):
                o = a[off]
                cols[key] += [a[blob][o[r] : o[r + 1]].tobytes() for r in keep.tolist()]
            self.dead.difference_update(seg.iids[gone].tolist())
        records, offsets = _blob(cols["rec"])
        meta, meta_offsets = _blob(cols["meta"])
        iids = np.concatenate(cols["iids"]) if cols["iids"] else _EMPTY
        merged = Segment(
            name,
            {
                "iids": iids,
                "pos": np.concatenate(cols["pos"]) if cols["pos"] else _EMPTY,
                "ids": np.frombuffer(json.dumps(cols["ids"]).encode(), np.uint8),
                "records": records,
                "offsets": offsets,
                "meta": meta,
                "meta_offsets": meta_offsets,
            },
        )
        for seg in run:
            self._meta_cache.pop(seg.name, None)
        self.segments[start:end] = [merged] if len(iids) else []
        return bool(len(iids))
