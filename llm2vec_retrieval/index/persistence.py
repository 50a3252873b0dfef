"""Saving and loading an IndexStore: a directory, written atomically, no pickle.

Layout of ``path/`` (format 4):

``index.faiss``     the FAISS index (``faiss.write_index``/``write_index_binary``);
                    absent for an IVF store that is not trained yet, and for a ``flat``
                    store, whose index is built from its vector segments when first used.
``seg-*.vec.arr``   a ``flat`` store's vectors, one file per segment (`vectors`: internal
                    ids and float32 vectors, read memory-mapped).
``vectors.npy``     float32 (count, dim), rows in ascending internal-id order, written
                    with ``allow_pickle=False``; present when the kind keeps float vectors
                    (binary, ivf_sq8/ivf_pq with keep_vectors, untrained IVF).
``seg-*.docs.arr``  the documents, one file per segment (`docstore`): internal ids, places
                    in insertion order, string ids, JSON records and metadata, in the
                    array-file format of `segments` (read memory-mapped).
``seg-*.lex.arr``   the BM25 part of each segment (`lexical`: token ids and postings);
                    absent for a store made with ``lexical=False``.
``vocab-*.json``    the BM25 vocabulary, one JSON list per part, in token-id order.
``deleted.arr``     the internal ids of segment documents deleted since (absent when none).
``manifest.json``   ``format_version``, ``kind``, ``metric``, ``dim``, ``count``,
                    ``params``, ``state``, ``fingerprint``, ``lexical`` (the BM25
                    settings, or null), ``segments`` (each one's ``name`` and ``count``),
                    ``vocab`` (each part's ``name`` and ``count``), ``extra`` (the caller's
                    metadata: ``save(path, extra=...)``), ``created_at``, library and
                    faiss versions, ``files`` (sha256 and size of every other file) and
                    ``manifest_sha256`` (of the manifest itself, canonical JSON, without
                    that key).

Segments and vocabulary parts never change once written: a save writes the documents
(and a flat store's vectors) added since the last one as a new segment (and merges
segments as `segments.merge_plan` says), and hard-links the files it already has from the
directory it replaces, reusing their checksums (computed when they were written). So a
commit of a flat store costs the new documents and the manifest, not the whole index;
the other kinds write their FAISS index (and ``vectors.npy``) whole, as FAISS writes an
HNSW graph or IVF lists. Format 3 (a flat store's vectors in ``index.faiss``) and format 2
(``docstore.jsonl``, ``lexical_vocab.json``, ``lexical.npz``) still load; the next save
writes them as format 4.

Atomic save (``llm2vec_retrieval._io.staged_dir``): everything is written and fsynced in a
sibling ``.<name>.tmp-<pid>-<rand>`` directory (manifest last); then the old directory is
renamed to ``.<name>.bak``, the new one renamed into place, and the backup removed. A save is committed once the new
directory has its final name. If a process dies between the two renames (or while a
save is between them), ``path`` is missing and ``.<name>.bak`` holds the previous index:
``load`` reads it there, in place, and only the next ``save`` (a writer) moves it back:
readers never move files, so a search running beside an indexer cannot pull a directory
from under its save. ``load`` reads every file of one directory version through a
directory handle, so a save that swaps the directory meanwhile does not mix two
versions; if the old version is deleted mid-read, it reads the new one (a few attempts).
Leftover temporary directories of dead processes are removed by the next save.
Concurrent saves to one path from several processes are not supported.
Other files in the directory (a user's own, say) are carried over
into the new directory (hard links, else copies); a directory that is not a saved
index and has sub-directories is refused, so a mistyped path cannot swap a big tree.

Integrity: every file's sha256 is computed when it is written. Load verifies the
manifest checksum, every file's size, the sha256 of the small files it reads whole (the
vocabulary, the deletion marks) and the structure of the segment files, which it
memory-maps instead of reading (a search reads the records of its hits only, and a
damaged record is reported when read). It opens the FAISS index and float vectors and
reads them on first use (a lexical search never does), their sha256 verified *before*
any byte reaches FAISS, which can crash on garbage; a flat store's vector segments are
checked (shapes, ids) when its index is built from them. ``verify_store`` (``llm2vec-retrieval info
--verify``) checks the sha256 of every file. Any failure raises ``IndexCorruptedError``
naming the file. An expected fingerprint whose ``dim`` differs from the saved vectors'
raises ``DimensionMismatchError``, even with ``allow_fingerprint_mismatch``: such vectors
cannot be searched at all.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import re
import shutil
import stat
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import numpy as np

from .._io import (
    fsync_file,
    locate_dir,
    restore_backup,
    sha256_and_size,
    staged_dir,
)
from ..fingerprint import as_saved, check_fingerprint
from ._faiss import get_faiss
from .docstore import DocStore
from .docstore import check_segment as check_docs_segment
from .errors import IndexCorruptedError
from .kinds import KINDS, METRICS, Backend, make_backend, resolve_params
from .segments import ArrayFileError, Segment, locate, map_arrays, parse_arrays, write_arrays
from .snapshot import StoreSnapshot
from .vectors import VectorSegments

T = TypeVar("T")

# 4: a flat store's vectors in segments; 3 (segments, flat vectors in index.faiss) and 2
# (one docstore.jsonl and lexical.npz) still load
FORMAT_VERSION = 4
VECTOR_SEGMENTS_SINCE = 4
INDEX_FILE = "index.faiss"
VECTORS_FILE = "vectors.npy"
DELETED_FILE = "deleted.arr"
MANIFEST_FILE = "manifest.json"
DOCS_SUFFIX = ".docs.arr"
LEX_SUFFIX = ".lex.arr"
VEC_SUFFIX = ".vec.arr"
# format 2
DOCSTORE_FILE = "docstore.jsonl"
LEXICAL_VOCAB_FILE = "lexical_vocab.json"
LEXICAL_FILE = "lexical.npz"
_SEGMENT_NAME = re.compile(r"seg-[0-9]{6,}-[0-9a-f]{8}")
_VOCAB_NAME = re.compile(r"vocab-[0-9]{6,}-[0-9a-f]{8}\.json")
_SEGMENT_FILE = re.compile(_SEGMENT_NAME.pattern + r"\.(docs|lex|vec)\.arr")


def pause_stage(stage: str) -> None:
    """A named point of a save (``index_written``, ``files_written``, ``before_swap``,
    ``backed_up``, ``swapped``; the `index` command marks its own around a commit's save):
    it does nothing. Tests that must act at a stage (kill the process, read beside it)
    replace this function in the process they start."""


def _library_version() -> str:
    try:
        from importlib.metadata import version

        return version("llm2vec-retrieval")
    except Exception:
        mod = sys.modules.get("llm2vec_retrieval")
        return str(getattr(mod, "__version__", "unknown"))


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def manifest_checksum(manifest: dict[str, Any]) -> str:
    """The ``manifest_sha256`` of a manifest: sha256 of its canonical JSON without that key."""
    return hashlib.sha256(
        _canonical({k: v for k, v in manifest.items() if k != "manifest_sha256"})
    ).hexdigest()


def _locate(path: Path) -> Path:
    """The directory a reader reads: ``path``, or its backup while only that exists."""
    return locate_dir(path, MANIFEST_FILE)


class _Moved(Exception):
    """The directory being read was deleted by a concurrent save: read again."""


class _DirReader:
    """Reads files of one directory version: through a directory handle where the
    platform has them, so that renaming the directory meanwhile changes nothing."""

    def __init__(self, d: Path):
        self.d = d
        self.fd = None
        if os.open in os.supports_dir_fd:
            try:
                self.fd = os.open(d, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            except FileNotFoundError:
                raise _Moved() from None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def gone(self) -> bool:
        """True when the directory was deleted after it was opened."""
        if self.fd is None:
            return not self.d.is_dir()
        return os.fstat(self.fd).st_nlink == 0

    def superseded(self, path: Path) -> bool:
        """True when the directory is no longer the version readers of `path` read: a save
        swapped another in (and may be deleting this one's files before the directory)."""
        if self.fd is None:
            return False
        try:
            now = os.stat(_locate(path))
        except OSError:
            return True
        mine = os.fstat(self.fd)
        return (now.st_dev, now.st_ino) != (mine.st_dev, mine.st_ino)

    def open(self, name: str) -> int | None:
        """A read-only descriptor of the file, or None when it does not exist (or is not
        a regular file)."""
        try:
            if self.fd is None:
                fd = os.open(self.d / name, os.O_RDONLY)
            else:
                fd = os.open(name, os.O_RDONLY, dir_fd=self.fd)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            if self.gone():
                raise _Moved() from None
            return None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        return fd

    def read(self, name: str) -> bytes | None:
        """The file's bytes, or None when it does not exist (or is not a file)."""
        fd = self.open(name)
        if fd is None:
            return None
        with os.fdopen(fd, "rb") as f:
            return f.read()


OWN_FILES = frozenset(
    {
        INDEX_FILE,
        VECTORS_FILE,
        DELETED_FILE,
        MANIFEST_FILE,
        DOCSTORE_FILE,
        LEXICAL_VOCAB_FILE,
        LEXICAL_FILE,
    }
)


def is_own_file(name: str) -> bool:
    """True for the names of the files a saved store is made of."""
    return name in OWN_FILES or bool(_SEGMENT_FILE.fullmatch(name) or _VOCAB_NAME.fullmatch(name))


def _link_or_copy(src: str | Path, dst: str | Path) -> None:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst, follow_symlinks=False)


def _carry_foreign(src: Path, dst: Path) -> None:
    """Bring files that are not ours into the new directory."""
    for entry in src.iterdir():
        if is_own_file(entry.name) or (dst / entry.name).exists():
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, dst / entry.name, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry, dst / entry.name)


def save_store(snap: StoreSnapshot, path: str | os.PathLike[str]) -> str:
    """Write a store's state into directory `path` atomically (the module docstring says how);
    the ``manifest_sha256`` of the version written. The caller keeps the state unchanged
    meanwhile (`IndexStore.save` holds its lock); once the save is committed, the segments
    and vocabulary parts record where their files are, for the next save to link them."""
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    restore_backup(path, MANIFEST_FILE)
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{path} exists and is not a directory")
        if not (path / MANIFEST_FILE).exists() and any(p.is_dir() for p in path.iterdir()):
            raise ValueError(
                f"refusing to save into {path}: it has sub-directories and is not a saved index"
            )
    committed: list[tuple[Any, dict[str, Any]]] = []
    with staged_dir(path, marker=MANIFEST_FILE, on_stage=pause_stage) as tmp:
        version = _write_files(snap, path, tmp, committed)
    for obj, info in committed:
        if isinstance(obj, Segment):
            obj.info, obj.source = info, path
        else:
            obj["info"], obj["source"] = info, path
    return version


def _put(
    obj: Any, name: str, tmp: Path, write: Callable[[BinaryIO], object], committed: list
) -> dict[str, Any]:
    """Put an immutable file into the new directory: linked from where it was committed
    (its checksum reused) when that file is still there, else written; its file entry."""
    info = obj.info if isinstance(obj, Segment) else obj["info"]
    source = obj.source if isinstance(obj, Segment) else obj["source"]
    if info is not None and source is not None:
        src = Path(source) / name
        try:
            if src.stat().st_size == info["bytes"]:
                _link_or_copy(src, tmp / name)
                return info
        except OSError:
            pass
    with open(tmp / name, "wb") as f:
        write(f)
    fsync_file(tmp / name)
    digest, size = sha256_and_size(tmp / name)
    info = {"sha256": digest, "bytes": size}
    committed.append((obj, info))
    return info


def _write_files(snap: StoreSnapshot, path: Path, tmp: Path, committed: list) -> str:
    """Every file of the store into the empty directory `tmp` (the manifest last), and the
    foreign files of the current `path`; the manifest's checksum."""
    files: dict[str, dict[str, Any]] = {}
    fresh: list[str] = []
    backend, vecs = snap.backend, snap.vectors
    if vecs is None and backend is not None and backend.write(str(tmp / INDEX_FILE)):
        fresh.append(INDEX_FILE)
    pause_stage("index_written")
    docs = snap.docs
    if docs.has_pending:
        raise RuntimeError("documents not sealed into a segment before the save")
    if vecs is not None:
        if vecs.has_pending or len(vecs.segments) != len(docs.segments):
            raise RuntimeError("vectors not sealed into segments before the save")
        for vseg, dseg in zip(vecs.segments, docs.segments, strict=True):
            if vseg is None or vseg.name != dseg.name:
                raise RuntimeError("vector segments do not match the document segments")
            name = vseg.name + VEC_SUFFIX
            files[name] = _put(
                vseg, name, tmp, partial(write_arrays, arrays=vseg.arrays), committed
            )
    if vecs is None and backend is not None and backend.keeps_vectors:
        with open(tmp / VECTORS_FILE, "wb") as f:
            np.save(
                f,
                np.ascontiguousarray(backend.fs.get(snap.iids), dtype=np.float32),
                allow_pickle=False,
            )
        fresh.append(VECTORS_FILE)
    for seg in docs.segments:
        name = seg.name + DOCS_SUFFIX
        files[name] = _put(seg, name, tmp, partial(write_arrays, arrays=seg.arrays), committed)
    lexical = snap.lexical
    vocab: list[dict[str, Any]] = []
    if lexical is not None:
        for seg in lexical.segments:
            name = seg.name + LEX_SUFFIX
            files[name] = _put(seg, name, tmp, partial(write_arrays, arrays=seg.arrays), committed)
        parts, start = lexical.vocab_parts, 0
        have = sum(p["count"] for p in parts)
        if lexical.n_terms > have:
            name = f"vocab-{snap.next_iid:06d}-{os.urandom(4).hex()}.json"
            parts.append(
                {"name": name, "count": lexical.n_terms - have, "info": None, "source": None}
            )
        for part in parts:
            terms = lexical.terms[start : start + part["count"]]
            start += part["count"]
            files[part["name"]] = _put(
                part,
                part["name"],
                tmp,
                partial(_write_terms, terms=terms),
                committed,
            )
            vocab.append({"name": part["name"], "count": part["count"]})
    if docs.dead:
        with open(tmp / DELETED_FILE, "wb") as f:
            write_arrays(f, {"iids": np.sort(np.fromiter(docs.dead, np.int64, len(docs.dead)))})
        fresh.append(DELETED_FILE)
    for name in fresh:
        fsync_file(tmp / name)
        digest, size = sha256_and_size(tmp / name)
        files[name] = {"sha256": digest, "bytes": size}
    pause_stage("files_written")
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "library": "llm2vec-retrieval",
        "library_version": _library_version(),
        "faiss_version": getattr(get_faiss(), "__version__", "unknown"),
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "kind": snap.kind,
        "metric": snap.metric,
        "dim": snap.dim,
        "count": len(docs),
        "params": snap.params,
        "state": {"next_iid": snap.next_iid, **(backend.state() if backend is not None else {})},
        "fingerprint": snap.fingerprint,
        "lexical": None if lexical is None else lexical.settings,
        "segments": [{"name": s.name, "count": len(s)} for s in docs.segments],
        "vocab": vocab,
        "extra": snap.extra,
        "files": files,
    }
    manifest["manifest_sha256"] = manifest_checksum(manifest)
    with open(tmp / MANIFEST_FILE, "w", encoding="utf-8") as mf:
        json.dump(manifest, mf, indent=2, sort_keys=True)
        mf.write("\n")
    if path.exists():
        _carry_foreign(path, tmp)
    return str(manifest["manifest_sha256"])


def _write_terms(f: BinaryIO, terms: list[str]) -> None:
    """A vocabulary part: its terms as one ASCII JSON list, into the open binary file."""
    f.write(json.dumps(terms, ensure_ascii=True).encode())


def _corrupt(file: Path, msg: str) -> IndexCorruptedError:
    return IndexCorruptedError(f"{file}: {msg}", file=str(file))


def _json_error(exc: Exception) -> str:
    return "nested too deeply" if isinstance(exc, RecursionError) else type(exc).__name__


def _named_list(v: Any, pattern: re.Pattern) -> bool:
    return isinstance(v, list) and all(
        isinstance(e, dict)
        and isinstance(e.get("name"), str)
        and pattern.fullmatch(e["name"])
        and isinstance(e.get("count"), int)
        and e["count"] >= 0
        for e in v
    )


def _read_manifest(d: Path, reader: _DirReader) -> dict[str, Any]:
    mpath = d / MANIFEST_FILE
    raw = reader.read(MANIFEST_FILE)
    if raw is None:
        raise _corrupt(mpath, "missing (not a saved index store)")
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _corrupt(mpath, f"not valid JSON ({_json_error(exc)})") from None
    if not isinstance(manifest, dict) or "manifest_sha256" not in manifest:
        raise _corrupt(mpath, "not an index manifest (no manifest_sha256)")
    if manifest_checksum(manifest) != manifest["manifest_sha256"]:
        raise _corrupt(mpath, "checksum mismatch (corrupted or edited)")
    fv = manifest.get("format_version")
    if not isinstance(fv, int) or fv > FORMAT_VERSION or fv < 2:
        raise _corrupt(
            mpath,
            f"unsupported format_version {fv!r} (this library reads 2 to {FORMAT_VERSION}; "
            "index the folder again with --rebuild)",
        )
    checks = {
        "kind": lambda v: v in KINDS,
        "metric": lambda v: v in METRICS,
        "dim": lambda v: v is None or (isinstance(v, int) and v > 0),
        "count": lambda v: isinstance(v, int) and v >= 0,
        "params": lambda v: isinstance(v, dict),
        "state": lambda v: isinstance(v, dict) and isinstance(v.get("next_iid"), int),
        "files": lambda v: isinstance(v, dict) and (fv > 2 or DOCSTORE_FILE in v),
        "fingerprint": lambda v: v is None or isinstance(v, dict),
        "lexical": lambda v: v is None or isinstance(v, dict),
        "extra": lambda v: isinstance(v, dict),
    }
    if fv > 2:
        checks["segments"] = lambda v: _named_list(v, _SEGMENT_NAME)
        checks["vocab"] = lambda v: _named_list(v, _VOCAB_NAME)
    manifest.setdefault("extra", {})  # saved before save(extra=...) existed
    for key, ok in checks.items():
        if key not in manifest or not ok(manifest[key]):
            raise _corrupt(mpath, f"bad or missing field {key!r}")
    if manifest["dim"] is None and manifest["count"]:
        raise _corrupt(mpath, "documents saved without a vector dimension")
    return manifest


def _file_info(d: Path, name: str, info: Any) -> dict[str, Any]:
    if (
        not isinstance(info, dict)
        or not isinstance(info.get("sha256"), str)
        or not isinstance(info.get("bytes"), int)
    ):
        raise _corrupt(d / MANIFEST_FILE, f"bad file entry for {name}")
    return info


def _check_size(d: Path, name: str, size: int, info: dict[str, Any]) -> None:
    if size != info["bytes"]:
        raise _corrupt(
            d / name, f"truncated or extended: {size} bytes, manifest says {info['bytes']}"
        )


def _read_verified(d: Path, reader: _DirReader, name: str, info: Any) -> bytes:
    info = _file_info(d, name, info)
    data = reader.read(name)
    if data is None:
        raise _corrupt(d / name, "missing")
    _check_size(d, name, len(data), info)
    if hashlib.sha256(data).hexdigest() != info["sha256"]:
        raise _corrupt(d / name, "checksum mismatch (corrupted)")
    return data


def _map_segment(d: Path, reader: _DirReader, name: str, info: Any) -> Segment:
    """A segment file, memory-mapped after its size and header are checked (its checksum
    is `verify_store`'s)."""
    info = _file_info(d, name, info)
    fd = reader.open(name)
    if fd is None:
        raise _corrupt(d / name, "missing")
    try:
        size = os.fstat(fd).st_size
        _check_size(d, name, size, info)
        arrays = map_arrays(fd, size)
    except ArrayFileError as exc:
        raise _corrupt(d / name, f"unreadable ({exc})") from None
    finally:
        os.close(fd)
    return Segment(name.split(".", 1)[0], arrays, info)


def _is_streamed(name: str) -> bool:
    """Files that load memory-maps instead of reading whole."""
    return bool(_SEGMENT_FILE.fullmatch(name))


def load_store(
    path: str | os.PathLike[str],
    fingerprint: dict[str, Any] | None = None,
    allow_fingerprint_mismatch: bool = False,
) -> StoreSnapshot:
    """The state saved at `path` (see the module docstring for what is verified); the
    fingerprint compared by `check_fingerprint` (the same embedder: its fingerprint as
    written now is kept, so newer digest spellings replace older ones)."""
    path = Path(path).absolute()
    d, manifest, blobs, segments, deferred = _read_files(path)
    stored_fp = check_fingerprint(
        manifest["fingerprint"],
        fingerprint,
        allow_fingerprint_mismatch=allow_fingerprint_mismatch,
        saved_dim=manifest["dim"],
        path=str(path),
        stacklevel=4,  # the caller of IndexStore.load
    )
    if stored_fp is None and fingerprint is not None:  # an index saved without one takes it
        stored_fp = as_saved(fingerprint)
    count, dim = manifest["count"], manifest["dim"]
    next_iid = manifest["state"]["next_iid"]
    if manifest["format_version"] == 2:
        docs, vec_iids, lexical = _read_format2(d, manifest, blobs)
    else:
        docs, lexical = _read_segments(d, path, manifest, blobs, segments)
        vec_iids = docs.live_iids()
    if count and (vec_iids.min() < 0 or vec_iids.max() >= next_iid):
        raise _corrupt(d / MANIFEST_FILE, "internal ids out of range")

    kind, metric = manifest["kind"], manifest["metric"]
    open_backend = None
    vectors = None
    in_segments = kind == "flat" and manifest["format_version"] >= VECTOR_SEGMENTS_SINCE
    if any(n.endswith(VEC_SUFFIX) for n in segments) and (not in_segments or dim is None):
        raise _corrupt(d / MANIFEST_FILE, "vector segments listed for a store without them")
    if dim is not None and in_segments:
        if deferred:
            raise _corrupt(d / MANIFEST_FILE, "a flat store lists a FAISS file")
        vectors = _read_vector_segments(d, path, dim, docs, segments)
    elif dim is not None:
        try:
            params = resolve_params(kind, dim, manifest["params"])
        except ValueError as exc:
            raise _corrupt(d / MANIFEST_FILE, f"invalid parameters ({exc})") from None
        if INDEX_FILE not in deferred and (
            kind in ("flat", "hnsw", "binary") or manifest["state"].get("trained")
        ):
            raise _corrupt(d / INDEX_FILE, "missing from the manifest")

        def open_backend() -> Backend:
            return _read_backend(d, manifest, params, deferred, vec_iids)

    elif deferred:
        raise _corrupt(d / MANIFEST_FILE, "vector files listed but no vector dimension")
    return StoreSnapshot(
        dim=dim,
        kind=kind,
        metric=metric,
        params=manifest["params"],
        fingerprint=stored_fp,
        next_iid=next_iid,
        docs=docs,
        backend=None,
        lexical=lexical,
        extra=manifest["extra"],
        vectors=vectors,
        version=manifest["manifest_sha256"],
        open_backend=open_backend,
    )


def _segments_beside_docs(
    d: Path, path: Path, docs: DocStore, segments: dict[str, Segment], suffix: str
) -> list[Segment]:
    """The segment named ``<docstore segment><suffix>`` for each docstore segment, in
    order (a missing one: the directory is corrupted), tagged with the store's path."""
    out = []
    for dseg in docs.segments:
        name = dseg.name + suffix
        seg = segments.get(name)
        if seg is None:
            raise _corrupt(d / name, "missing from the manifest's files")
        seg.source = path
        out.append(seg)
    return out


def _read_vector_segments(
    d: Path, path: Path, dim: int, docs: DocStore, segments: dict[str, Segment]
) -> VectorSegments:
    """A flat store's vector segments, one per docstore segment, memory-mapped (their
    shapes and ids are checked when the FAISS index is built from them)."""
    vsegs = _segments_beside_docs(d, path, docs, segments, VEC_SUFFIX)
    return VectorSegments.opened(dim, vsegs, lambda name: str(d / (name + VEC_SUFFIX)))


class _Deferred:
    """A file of the directory version being loaded: opened (and its size checked) now,
    read and checksummed when first needed, whatever happened to the directory since."""

    def __init__(self, d: Path, name: str, fd: int, info: dict[str, Any]):
        self.path, self.fd, self.info = d / name, fd, info
        _check_size(d, name, os.fstat(fd).st_size, info)

    def read(self) -> bytes:
        with os.fdopen(os.dup(self.fd), "rb") as f:
            f.seek(0)
            data = f.read()
        _check_size(self.path.parent, self.path.name, len(data), self.info)
        if hashlib.sha256(data).hexdigest() != self.info["sha256"]:
            raise _corrupt(self.path, "checksum mismatch (corrupted)")
        return data

    def __del__(self) -> None:
        os.close(self.fd)


def _read_backend(
    d: Path,
    manifest: dict[str, Any],
    params: dict[str, Any],
    deferred: dict[str, _Deferred],
    iids: np.ndarray,
) -> Backend:
    """The FAISS side of a loaded store (``iids``: the live documents, the rows of the
    float vectors): every byte verified before FAISS reads it, then checked against the
    documents."""
    count, dim = manifest["count"], manifest["dim"]
    kind, metric = manifest["kind"], manifest["metric"]
    vectors = None
    if VECTORS_FILE in deferred:
        vpath = d / VECTORS_FILE
        data = deferred[VECTORS_FILE].read()
        try:
            vectors = np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as exc:
            raise _corrupt(vpath, f"unreadable .npy ({type(exc).__name__})") from None
        if vectors.dtype != np.float32 or vectors.shape != (count, dim):
            raise _corrupt(
                vpath, f"shape {vectors.shape} {vectors.dtype}, expected ({count}, {dim}) float32"
            )
    backend = make_backend(kind, dim, metric, params)
    index = None
    if INDEX_FILE in deferred:
        data = deferred[INDEX_FILE].read()
        try:
            index = backend.read(np.frombuffer(data, dtype=np.uint8))
        except Exception as exc:  # checksum matched, so this is a version/format problem
            raise _corrupt(
                d / INDEX_FILE, f"FAISS cannot read it ({str(exc).splitlines()[0][:200]})"
            ) from None
    try:
        backend.restore(index, manifest["state"])
    except Exception as exc:
        raise _corrupt(d / INDEX_FILE, f"unusable index ({exc})") from None
    needs_floats = kind == "binary" or (
        kind.startswith("ivf_") and (backend.params.get("keep_vectors") or index is None)
    )
    if needs_floats and count and vectors is None:
        raise _corrupt(d / VECTORS_FILE, "missing: this kind keeps float vectors")
    if vectors is not None:
        backend.fs.add(iids, vectors)
    msg = backend.validate(iids)
    if msg:
        raise _corrupt(d / INDEX_FILE, msg)
    return backend


def _read_segments(
    d: Path,
    path: Path,
    manifest: dict[str, Any],
    blobs: dict[str, bytes],
    segments: dict[str, Segment],
) -> tuple[DocStore, Any]:
    """The docstore and lexical index of a format-3 save."""
    mpath = d / MANIFEST_FILE
    dead: set[int] = set()
    if DELETED_FILE in blobs:
        try:
            marks = parse_arrays(blobs.pop(DELETED_FILE))["iids"]
            if marks.ndim != 1 or marks.dtype != np.int64:
                raise ArrayFileError("not int64 internal ids")
        except (ArrayFileError, KeyError) as exc:
            raise _corrupt(d / DELETED_FILE, f"unreadable ({exc})") from None
        dead = set(marks.tolist())
    docsegs: list[Segment] = []
    for entry in manifest["segments"]:
        name = entry["name"] + DOCS_SUFFIX
        seg = segments.get(name)
        if seg is None:
            raise _corrupt(d / name, "missing from the manifest's files")
        msg = check_docs_segment(seg)
        if not msg and len(seg) != entry["count"]:
            msg = f"{len(seg)} documents, manifest says {entry['count']}"
        if not msg and docsegs and len(seg) and docsegs[-1].iids[-1] >= seg.iids[0]:
            msg = "internal ids overlap the previous segment's"
        if msg:
            raise _corrupt(d / name, msg)
        seg.source = path
        docsegs.append(seg)
    if dead:
        where, _ = locate(docsegs, np.fromiter(dead, np.int64, len(dead)))
        if (where < 0).any():
            raise _corrupt(d / DELETED_FILE, "marks documents no segment holds")
    docs = DocStore.opened(docsegs, dead, lambda name: str(d / (name + DOCS_SUFFIX)))
    if len(docs) != manifest["count"]:
        raise _corrupt(mpath, f"{len(docs)} live documents, manifest says {manifest['count']}")
    lexical = None
    if manifest["lexical"] is not None:
        lexical = _read_lexical_segments(d, path, manifest, blobs, segments, docs)
    elif any(n.endswith(LEX_SUFFIX) for n in segments) or manifest["vocab"]:
        raise _corrupt(mpath, "lexical files listed but no lexical settings")
    return docs, lexical


def _read_lexical_segments(
    d: Path,
    path: Path,
    manifest: dict[str, Any],
    blobs: dict[str, bytes],
    segments: dict[str, Segment],
    docs: DocStore,
):
    from .lexical import LexicalIndex

    terms: list[str] = []
    parts = []
    for entry in manifest["vocab"]:
        name = entry["name"]
        if name not in blobs:
            raise _corrupt(d / name, "missing from the manifest's files")
        try:
            part = json.loads(blobs.pop(name).decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise _corrupt(d / name, f"not valid JSON ({_json_error(exc)})") from None
        if (
            not isinstance(part, list)
            or len(part) != entry["count"]
            or not all(isinstance(t, str) for t in part)
        ):
            raise _corrupt(d / name, "not the list of tokens the manifest names")
        terms += part
        info = manifest["files"][name]
        parts.append({"name": name, "count": len(part), "info": info, "source": path})
    live, _ = docs.parts()
    lexsegs = _segments_beside_docs(d, path, docs, segments, LEX_SUFFIX)
    try:
        lex = LexicalIndex.opened(manifest["lexical"], terms, parts, lexsegs, docs.dead)
    except ImportError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise _corrupt(d / MANIFEST_FILE, f"inconsistent lexical index ({exc})") from None
    for seg, dlive in zip(lexsegs, live, strict=True):
        mine = seg.iids[~np.isin(seg.iids, np.fromiter(lex.dead, np.int64, len(lex.dead)))]
        if not np.array_equal(mine, dlive):
            raise _corrupt(d / (seg.name + LEX_SUFFIX), "its documents are not the docstore's")
    return lex


def _read_format2(d: Path, manifest: dict[str, Any], blobs: dict[str, bytes]):
    """(docstore, iids in docstore order, lexical index) of a format-2 save: one
    ``docstore.jsonl`` and ``lexical.npz``, read whole (the next save converts them)."""
    dpath = d / DOCSTORE_FILE
    docs: list[tuple[str, int, str | None, dict[str, Any]]] = []
    try:
        lines = blobs.pop(DOCSTORE_FILE).decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise _corrupt(dpath, "not UTF-8") from None
    for n, line in enumerate(lines, 1):
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise _corrupt(dpath, f"line {n} is not valid JSON ({_json_error(exc)})") from None
        if (
            not isinstance(rec, dict)
            or not isinstance(rec.get("id"), str)
            or not isinstance(rec.get("iid"), int)
            or not (rec.get("text") is None or isinstance(rec.get("text"), str))
            or not isinstance(rec.get("metadata"), dict)
        ):
            raise _corrupt(dpath, f"line {n} is not a document record")
        docs.append((rec["id"], rec["iid"], rec["text"], rec["metadata"]))
    count = manifest["count"]
    if len(docs) != count:
        raise _corrupt(dpath, f"{len(docs)} documents, manifest says {count}")
    iids = np.asarray([x[1] for x in docs], dtype=np.int64)
    if len({x[0] for x in docs}) != count or len(set(iids.tolist())) != count:
        raise _corrupt(dpath, "duplicate ids")
    lexical = None
    if manifest.get("lexical") is not None:
        lexical = _read_lexical2(d, manifest["lexical"], blobs, iids)
    elif LEXICAL_FILE in blobs or LEXICAL_VOCAB_FILE in blobs:
        raise _corrupt(d / MANIFEST_FILE, "lexical files listed but no lexical settings")
    return DocStore.from_records(docs), iids, lexical


def _read_lexical2(d: Path, settings: dict[str, Any], blobs: dict[str, bytes], iids: np.ndarray):
    from .lexical import LexicalIndex

    vpath, apath = d / LEXICAL_VOCAB_FILE, d / LEXICAL_FILE
    for name in (LEXICAL_VOCAB_FILE, LEXICAL_FILE):
        if name not in blobs:
            raise _corrupt(
                d / name, "missing from the manifest (the manifest names lexical settings)"
            )
    try:
        vocab = json.loads(blobs.pop(LEXICAL_VOCAB_FILE).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _corrupt(vpath, f"not valid JSON ({type(exc).__name__})") from None
    if not isinstance(vocab, list) or not all(isinstance(t, str) for t in vocab):
        raise _corrupt(vpath, "not a list of tokens")
    try:
        with np.load(io.BytesIO(blobs.pop(LEXICAL_FILE)), allow_pickle=False) as npz:
            arrays = {
                name: npz[name] for name in ("iids", "tokens", "offsets") if name in npz.files
            }
    except Exception as exc:
        raise _corrupt(apath, f"unreadable .npz ({type(exc).__name__})") from None
    for name in ("iids", "tokens", "offsets"):
        if name not in arrays or arrays[name].ndim != 1 or arrays[name].dtype.kind != "i":
            raise _corrupt(apath, f"array {name!r} missing or not a 1-D integer array")
    saved = arrays["iids"]
    try:
        if saved.shape != iids.shape or not np.array_equal(saved, np.sort(iids)):
            raise ValueError("its documents are not the docstore's")
        return LexicalIndex.from_tokens(settings, vocab, saved, arrays["tokens"], arrays["offsets"])
    except ImportError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise _corrupt(apath, f"inconsistent lexical index ({exc})") from None


_READ_ATTEMPTS = 5


def _read_one_version(path: Path, read: Callable[[Path, _DirReader], T]) -> T:
    """``read(directory, reader)`` on one directory version of the store at `path`; read
    again when a concurrent save deletes or replaces it meanwhile."""
    for attempt in range(_READ_ATTEMPTS):
        d = _locate(path)
        if not d.exists():
            if _locate(path).exists():
                # a save renamed it between our two looks: it is there again, read again
                time.sleep(0.02 * (attempt + 1))
                continue
            raise FileNotFoundError(f"no saved index at {path}")
        if not d.is_dir():
            raise _corrupt(d, "not a directory")
        try:
            reader = _DirReader(d)
        except _Moved:
            continue
        try:
            return read(d, reader)
        except _Moved:
            pass
        except IndexCorruptedError:
            if not (reader.gone() or reader.superseded(path)):
                raise
        finally:
            reader.close()
        time.sleep(0.02 * (attempt + 1))
    raise IndexCorruptedError(
        f"{path}: replaced by another process {_READ_ATTEMPTS} times while being read; try again",
        file=str(path),
    )


def _read_files(path: Path):
    """(directory read, its checked manifest, the verified bytes of every small file it
    lists, the segments memory-mapped, the FAISS files opened as `_Deferred`), all from one
    directory version."""

    def read(d: Path, reader: _DirReader):
        manifest = _read_manifest(d, reader)
        files = manifest["files"]
        unknown = [n for n in files if not is_own_file(n) or n == MANIFEST_FILE]
        if unknown:
            raise _corrupt(
                d / MANIFEST_FILE, f"unknown file(s) listed: {', '.join(sorted(unknown))}"
            )
        segments = {
            name: _map_segment(d, reader, name, info)
            for name, info in files.items()
            if _is_streamed(name)
        }
        deferred = {}
        for name in (INDEX_FILE, VECTORS_FILE):
            if name in files:
                info = _file_info(d, name, files[name])
                fd = reader.open(name)
                if fd is None:
                    raise _corrupt(d / name, "missing")
                deferred[name] = _Deferred(d, name, fd, info)
        blobs = {
            name: _read_verified(d, reader, name, info)
            for name, info in files.items()
            if not _is_streamed(name) and name not in deferred
        }
        return d, manifest, blobs, segments, deferred

    return _read_one_version(path, read)


def load_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of the store saved at `path` (kind, metric, dim, count, fingerprint,
    lexical settings...), its checksum and fields verified as ``load`` verifies them, without
    reading the other files: what a saved store holds, cheaply (the CLI's ``info``).

    Raises ``FileNotFoundError`` when nothing is saved there and ``IndexCorruptedError`` when
    the manifest is unreadable, corrupted or edited.
    """
    return _read_one_version(Path(path).absolute(), _read_manifest)


def verify_store(path: str | Path) -> dict[str, int]:
    """Check every file of the store saved at `path` against its sha256 and size in the
    manifest, then load it (which checks how the files fit together); ``{"files", "bytes"}``
    checked. Raises ``IndexCorruptedError`` naming the first bad file (the CLI's ``info
    --verify``)."""
    path = Path(path).absolute()

    def read(d: Path, reader: _DirReader) -> dict[str, int]:
        manifest = _read_manifest(d, reader)
        total = 0
        for name, info in sorted(manifest["files"].items()):
            info = _file_info(d, name, info)
            fd = reader.open(name)
            if fd is None:
                raise _corrupt(d / name, "missing")
            h = hashlib.sha256()
            with os.fdopen(fd, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
                    total += len(block)
                _check_size(d, name, f.tell(), info)
            if h.hexdigest() != info["sha256"]:
                raise _corrupt(d / name, "checksum mismatch (corrupted)")
        return {"files": len(manifest["files"]), "bytes": total}

    checked = _read_one_version(path, read)
    load_store(path, allow_fingerprint_mismatch=True)
    return checked
