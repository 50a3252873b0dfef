"""Saving and loading an IndexStore: a directory, written atomically, no pickle.

Layout of ``path/``:

``index.faiss``     the FAISS index (``faiss.write_index``/``write_index_binary``);
                    absent for an IVF store that is not trained yet.
``docstore.jsonl``  one JSON object per document, in insertion order:
                    ``{"id", "iid" (internal FAISS id), "text", "metadata"}``.
``vectors.npy``     float32 (count, dim), rows in docstore order, written with
                    ``allow_pickle=False``; present when the kind keeps float vectors
                    (binary, ivf_sq8/ivf_pq with keep_vectors, untrained IVF).
``lexical_vocab.json``, ``lexical.npz``
                    the BM25 part (format 2; absent for a store made with
                    ``lexical=False``): the token vocabulary (a JSON list, id order) and
                    arrays (``np.savez``, read with ``allow_pickle=False``): the
                    internal ids (ascending), each one's token ids (``tokens``/``offsets``)
                    and bm25s's score matrix (``data``/``indices``/``indptr``).
``manifest.json``   ``format_version``, ``kind``, ``metric``, ``dim``, ``count``,
                    ``params``, ``state``, ``fingerprint``, ``lexical`` (the BM25
                    settings, or null), ``extra`` (the caller's metadata:
                    ``save(path, extra=...)``), ``created_at``, library and
                    faiss versions, ``files`` (sha256 and size of every other file) and
                    ``manifest_sha256`` (of the manifest itself, canonical JSON, without
                    that key).

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

Load verifies the manifest checksum, then every file's size and sha256 *before* any
bytes reach FAISS (FAISS can crash on garbage), then the consistency between index,
docstore and vectors. Any failure raises ``IndexCorruptedError`` naming the file. An
expected fingerprint whose ``dim`` differs from the saved vectors' raises
``DimensionMismatchError``, even with ``allow_fingerprint_mismatch``: such vectors cannot
be searched at all.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import shutil
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

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
from .errors import IndexCorruptedError
from .kinds import KINDS, METRICS, make_backend, resolve_params
from .snapshot import StoredDoc, StoreSnapshot

T = TypeVar("T")

FORMAT_VERSION = 2  # 2: the lexical (BM25) part; format 1 (vectors only) still loads
INDEX_FILE = "index.faiss"
DOCSTORE_FILE = "docstore.jsonl"
VECTORS_FILE = "vectors.npy"
LEXICAL_VOCAB_FILE = "lexical_vocab.json"
LEXICAL_FILE = "lexical.npz"
MANIFEST_FILE = "manifest.json"
LEXICAL_ARRAYS = ("iids", "tokens", "offsets", "data", "indices", "indptr")

# Test hook: "stage[,stage...]:seconds" or "*:seconds" makes save() print
# "llm2vec-save-stage: <stage>" to stderr and sleep at those stages
# (index_written, files_written, before_swap, backed_up, swapped; the `index` command
# adds its own around a commit's save, see `ingest.indexer`).
PAUSE_ENV = "LLM2VEC_RETRIEVAL_SAVE_PAUSE"


def pause_stage(stage: str) -> None:
    """The `PAUSE_ENV` test hook at ``stage`` (a no-op unless the variable names it)."""
    spec = os.environ.get(PAUSE_ENV)
    if not spec:
        return
    stages, _, seconds = spec.rpartition(":")
    if stages == "*" or stage in stages.split(","):
        sys.stderr.write(f"llm2vec-save-stage: {stage}\n")
        sys.stderr.flush()
        time.sleep(float(seconds or 0))


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

    def read(self, name: str) -> bytes | None:
        """The file's bytes, or None when it does not exist (or is not a file)."""
        try:
            if self.fd is None:
                return (self.d / name).read_bytes()
            fd = os.open(name, os.O_RDONLY, dir_fd=self.fd)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            if self.gone():
                raise _Moved() from None
            return None
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return None
            return f.read()


OWN_FILES = frozenset(
    {INDEX_FILE, DOCSTORE_FILE, VECTORS_FILE, LEXICAL_VOCAB_FILE, LEXICAL_FILE, MANIFEST_FILE}
)


def _link_or_copy(src: str | Path, dst: str | Path) -> None:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst, follow_symlinks=False)


def _carry_foreign(src: Path, dst: Path) -> None:
    """Bring files that are not ours into the new directory."""
    for entry in src.iterdir():
        if entry.name in OWN_FILES or (dst / entry.name).exists():
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, dst / entry.name, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry, dst / entry.name)


def save_store(snap: StoreSnapshot, path: str | Path) -> None:
    """Write a store's state into directory `path` atomically (the module docstring says how).
    The caller keeps the state unchanged meanwhile (`IndexStore.save` holds its lock)."""
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
    with staged_dir(path, marker=MANIFEST_FILE, on_stage=pause_stage) as tmp:
        _write_files(snap, path, tmp)


def _write_files(snap: StoreSnapshot, path: Path, tmp: Path) -> None:
    """Every file of the store into the empty directory `tmp` (the manifest last), and the
    foreign files of the current `path`."""
    files: list[str] = []
    backend = snap.backend
    if backend is not None and backend.write(str(tmp / INDEX_FILE)):
        files.append(INDEX_FILE)
    pause_stage("index_written")
    with open(tmp / DOCSTORE_FILE, "w", encoding="utf-8", newline="\n") as f:
        for d in snap.docs:
            f.write(
                json.dumps(
                    {"id": d.id, "iid": d.iid, "text": d.text, "metadata": d.metadata},
                    ensure_ascii=True,  # lone surrogates in texts survive too
                )
            )
            f.write("\n")
    files.append(DOCSTORE_FILE)
    if backend is not None and backend.keeps_vectors:
        iids = snap.iids
        with open(tmp / VECTORS_FILE, "wb") as f:
            np.save(
                f,
                np.ascontiguousarray(backend.fs.get(iids), dtype=np.float32),
                allow_pickle=False,
            )
        files.append(VECTORS_FILE)
    lexical = snap.lexical
    if lexical is not None:
        vocab, arrays = lexical.snapshot()
        with open(tmp / LEXICAL_VOCAB_FILE, "w", encoding="utf-8") as f:
            json.dump(vocab, f, ensure_ascii=True)
        with open(tmp / LEXICAL_FILE, "wb") as f:
            np.savez(f, **arrays)
        files += [LEXICAL_VOCAB_FILE, LEXICAL_FILE]
    file_info = {}
    for name in files:
        fsync_file(tmp / name)
        digest, size = sha256_and_size(tmp / name)
        file_info[name] = {"sha256": digest, "bytes": size}
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
        "count": len(snap.docs),
        "params": snap.params,
        "state": {"next_iid": snap.next_iid, **(backend.state() if backend is not None else {})},
        "fingerprint": snap.fingerprint,
        "lexical": None if lexical is None else lexical.settings,
        "extra": snap.extra,
        "files": file_info,
    }
    manifest["manifest_sha256"] = manifest_checksum(manifest)
    with open(tmp / MANIFEST_FILE, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write("\n")
    if path.exists():
        _carry_foreign(path, tmp)


def _corrupt(file: Path, msg: str) -> IndexCorruptedError:
    return IndexCorruptedError(f"{file}: {msg}", file=str(file))


def _json_error(exc: Exception) -> str:
    return "nested too deeply" if isinstance(exc, RecursionError) else type(exc).__name__


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
    if not isinstance(fv, int) or fv > FORMAT_VERSION or fv < 1:
        raise _corrupt(
            mpath, f"unsupported format_version {fv!r} (this library reads {FORMAT_VERSION})"
        )
    checks = {
        "kind": lambda v: v in KINDS,
        "metric": lambda v: v in METRICS,
        "dim": lambda v: v is None or (isinstance(v, int) and v > 0),
        "count": lambda v: isinstance(v, int) and v >= 0,
        "params": lambda v: isinstance(v, dict),
        "state": lambda v: isinstance(v, dict) and isinstance(v.get("next_iid"), int),
        "files": lambda v: isinstance(v, dict) and DOCSTORE_FILE in v,
        "fingerprint": lambda v: v is None or isinstance(v, dict),
        "lexical": lambda v: v is None or isinstance(v, dict),
        "extra": lambda v: isinstance(v, dict),
    }
    manifest.setdefault("lexical", None)  # format 1 had no lexical part
    manifest.setdefault("extra", {})  # saved before save(extra=...) existed
    for key, ok in checks.items():
        if key not in manifest or not ok(manifest[key]):
            raise _corrupt(mpath, f"bad or missing field {key!r}")
    if manifest["dim"] is None and manifest["count"]:
        raise _corrupt(mpath, "documents saved without a vector dimension")
    return manifest


def _read_verified(d: Path, reader: _DirReader, name: str, info: Any) -> bytes:
    fpath = d / name
    if (
        not isinstance(info, dict)
        or not isinstance(info.get("sha256"), str)
        or not isinstance(info.get("bytes"), int)
    ):
        raise _corrupt(d / MANIFEST_FILE, f"bad file entry for {name}")
    data = reader.read(name)
    if data is None:
        raise _corrupt(fpath, "missing")
    if len(data) != info["bytes"]:
        raise _corrupt(
            fpath, f"truncated or extended: {len(data)} bytes, manifest says {info['bytes']}"
        )
    if hashlib.sha256(data).hexdigest() != info["sha256"]:
        raise _corrupt(fpath, "checksum mismatch (corrupted)")
    return data


def load_store(
    path: str | Path,
    fingerprint: dict[str, Any] | None = None,
    allow_fingerprint_mismatch: bool = False,
) -> StoreSnapshot:
    """The state saved at `path`, every file verified (see the module docstring); the
    fingerprint compared by `check_fingerprint` (the same embedder: its fingerprint as
    written now is kept, so newer digest spellings replace older ones)."""
    path = Path(path).absolute()
    d, manifest, blobs = _read_files(path)
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

    # docstore
    dpath = d / DOCSTORE_FILE
    docs: list[tuple[str, int, str | None, dict[str, Any]]] = []
    try:
        lines = blobs[DOCSTORE_FILE].decode("utf-8").splitlines()
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
    count, dim = manifest["count"], manifest["dim"]
    if len(docs) != count:
        raise _corrupt(dpath, f"{len(docs)} documents, manifest says {count}")
    next_iid = manifest["state"]["next_iid"]
    iids = np.asarray([x[1] for x in docs], dtype=np.int64)
    if len({x[0] for x in docs}) != count or len(set(iids.tolist())) != count:
        raise _corrupt(dpath, "duplicate ids")
    if count and (iids.min() < 0 or iids.max() >= next_iid):
        raise _corrupt(dpath, "internal ids out of range")

    # vectors
    vectors = None
    if VECTORS_FILE in blobs:
        vpath = d / VECTORS_FILE
        try:
            vectors = np.load(io.BytesIO(blobs.pop(VECTORS_FILE)), allow_pickle=False)
        except Exception as exc:
            raise _corrupt(vpath, f"unreadable .npy ({type(exc).__name__})") from None
        if vectors.dtype != np.float32 or vectors.shape != (count, dim):
            raise _corrupt(
                vpath, f"shape {vectors.shape} {vectors.dtype}, expected ({count}, {dim}) float32"
            )

    lexical = None
    if manifest["lexical"] is not None:
        lexical = _read_lexical(d, manifest["lexical"], blobs, iids)
    elif LEXICAL_FILE in blobs or LEXICAL_VOCAB_FILE in blobs:
        raise _corrupt(d / MANIFEST_FILE, "lexical files listed but no lexical settings")

    kind, metric = manifest["kind"], manifest["metric"]
    backend = None
    if dim is not None:
        try:
            backend = make_backend(kind, dim, metric, resolve_params(kind, dim, manifest["params"]))
        except ValueError as exc:
            raise _corrupt(d / MANIFEST_FILE, f"invalid parameters ({exc})") from None
    elif INDEX_FILE in blobs or VECTORS_FILE in blobs:
        raise _corrupt(d / MANIFEST_FILE, "vector files listed but no vector dimension")
    index = None
    if INDEX_FILE in blobs:
        ipath = d / INDEX_FILE
        try:
            index = backend.read(np.frombuffer(blobs.pop(INDEX_FILE), dtype=np.uint8))
        except Exception as exc:  # checksum matched, so this is a version/format problem
            raise _corrupt(
                ipath, f"FAISS cannot read it ({str(exc).splitlines()[0][:200]})"
            ) from None
    elif dim is not None and (
        kind in ("flat", "hnsw", "binary") or manifest["state"].get("trained")
    ):
        raise _corrupt(d / INDEX_FILE, "missing from the manifest")
    if backend is not None:
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
    return StoreSnapshot(
        dim=dim,
        kind=kind,
        metric=metric,
        params=manifest["params"],
        fingerprint=stored_fp,
        next_iid=next_iid,
        docs=[StoredDoc(id_, iid, text, meta) for id_, iid, text, meta in docs],
        backend=backend,
        lexical=lexical,
        extra=manifest["extra"],
    )


_READ_ATTEMPTS = 5


def _read_one_version(path: Path, read: Callable[[Path, _DirReader], T]) -> T:
    """``read(directory, reader)`` on one directory version of the store at `path`; read
    again when a concurrent save deletes or replaces it meanwhile."""
    for attempt in range(_READ_ATTEMPTS):
        d = _locate(path)
        if not d.exists():
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


def _read_files(path: Path) -> tuple[Path, dict[str, Any], dict[str, bytes]]:
    """(directory read, its checked manifest, the verified bytes of every file it lists),
    all from one directory version."""

    def read(d: Path, reader: _DirReader) -> tuple[Path, dict[str, Any], dict[str, bytes]]:
        manifest = _read_manifest(d, reader)
        files = manifest["files"]
        unknown = set(files) - (OWN_FILES - {MANIFEST_FILE})
        if unknown:
            raise _corrupt(
                d / MANIFEST_FILE, f"unknown file(s) listed: {', '.join(sorted(unknown))}"
            )
        blobs = {name: _read_verified(d, reader, name, info) for name, info in files.items()}
        return d, manifest, blobs

    return _read_one_version(path, read)


def load_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of the store saved at `path` (kind, metric, dim, count, fingerprint,
    lexical settings...), its checksum and fields verified as ``load`` verifies them, without
    reading the other files: what a saved store holds, cheaply (the CLI's ``info``).

    Raises ``FileNotFoundError`` when nothing is saved there and ``IndexCorruptedError`` when
    the manifest is unreadable, corrupted or edited.
    """
    return _read_one_version(Path(path).absolute(), _read_manifest)


def _read_lexical(d: Path, settings: dict[str, Any], blobs: dict[str, bytes], iids: np.ndarray):
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
            arrays = {name: npz[name] for name in npz.files if name in LEXICAL_ARRAYS}
    except Exception as exc:
        raise _corrupt(apath, f"unreadable .npz ({type(exc).__name__})") from None
    for name in ("iids", "tokens", "offsets"):
        if name not in arrays or arrays[name].ndim != 1 or arrays[name].dtype.kind != "i":
            raise _corrupt(apath, f"array {name!r} missing or not a 1-D integer array")
    try:
        return LexicalIndex.restore(settings, vocab, arrays, iids)
    except ImportError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise _corrupt(apath, f"inconsistent lexical index ({exc})") from None
