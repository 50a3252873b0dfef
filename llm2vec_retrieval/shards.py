"""Encoded corpora as parquet shards: the hand-off between corpus encoding and the stores.

``llm2vec-retrieval encode-corpus`` (Ray, :mod:`llm2vec_retrieval.distributed`) writes a
folder ``OUT/``; `build_index_from_shards` turns it into our index folder and the database
loaders read it with `open_shards`. Layout::

    OUT/shards.json            manifest (JSON, replaced atomically after each finished shard)
    OUT/shards/<name>.parquet  columns id, text, metadata (JSON string), vector
                               (fixed_size_list<float32>[D])
    OUT/.lock                  held by the process that writes the manifest

Manifest keys: ``format`` ("llm2vec-retrieval-shards"), ``version`` (1), ``embedder`` (the
spec `ingest.folder.embedder_spec` records), ``fingerprint`` (the encoder's), ``dimension``,
``chunking`` (``chunk_tokens``, ``overlap``, ``text_field``, ``text_column``),
``query_instruction``, ``source_root`` (absolute), ``shards`` (name -> ``rows``, ``sha256``
of the parquet file, ``files`` and ``position``, the shard's place in the source order) and
``files`` (source -> ``sha256`` of its bytes, ``shard``, ``chunks``, ``bytes``, ``tokens``),
``skipped`` (source -> reason). Ids, texts, metadata and vectors are exactly those that
``llm2vec-retrieval index`` of the same sources stores (ids ``"<source>#<n>"``).

A shard exists once it is listed in the manifest: a shard file is written under a temporary
name, fsynced and renamed, and only then added to the manifest; a file that is not listed
(a writer killed in between) is rewritten by the next run. Every shard's sha256 is checked
before its rows are read. pyarrow is imported where used (``pip install pyarrow``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._io import LockedError, atomic_open, atomic_write_json, file_lock, sha256_file
from .errors import UserError
from .fingerprint import as_saved, check_fingerprint, fingerprint_diff
from .index.errors import IndexCorruptedError
from .progress import progress_bar

if TYPE_CHECKING:
    from .ingest.manifest import Chunking, FileEntry, IndexManifest

FORMAT = "llm2vec-retrieval-shards"
VERSION = 1
MANIFEST_FILE = "shards.json"
SHARD_DIR = "shards"
LOCK_FILE = ".lock"
# What must agree between runs writing into one folder (and between shards and an index).
HEADER_KEYS = (
    "embedder",
    "fingerprint",
    "dimension",
    "chunking",
    "query_instruction",
    "source_root",
)

INSTALL_HINT = "reading and writing shards needs pyarrow: pip install 'llm2vec-retrieval[ray]' (or: pip install pyarrow)"


def shard_header(
    spec: dict[str, Any],
    encoder: Any,
    chunking: Chunking,
    query_instruction: str | None,
    source_root: str | os.PathLike,
) -> dict[str, Any]:
    """What every shard of a folder shares (`HEADER_KEYS`): the embedder's spec, its
    fingerprint and dimension (from `encoder`), the typed chunking, the query instruction
    and the root the sources are relative to."""
    return {
        "embedder": spec,
        "fingerprint": encoder.fingerprint(),
        "dimension": encoder.embedding_dim,
        "chunking": chunking.to_json(),
        "query_instruction": query_instruction,
        "source_root": str(source_root),
    }


class ShardError(UserError):
    """A shard folder that cannot be used as asked (one-line message)."""


class ShardCorruptedError(IndexCorruptedError):
    """A shard file differs from what the manifest says (missing, truncated, edited)."""


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    return pa, pq


def shard_name(files: Sequence[str]) -> str:
    """The name of the shard holding exactly ``files`` (the same list gives the same name)."""
    import hashlib

    digest = hashlib.sha256("\n".join(sorted(files)).encode("utf-8", "surrogatepass"))
    return f"shard-{digest.hexdigest()[:20]}"


def manifest_path(out: str | os.PathLike) -> Path:
    return Path(out) / MANIFEST_FILE


def shard_path(out: str | os.PathLike, name: str) -> Path:
    return Path(out) / SHARD_DIR / f"{name}.parquet"


def _meta_json(meta: dict[str, Any]) -> str:
    return json.dumps(meta, ensure_ascii=False, separators=(",", ":"))


def write_shard_file(
    path: str | os.PathLike,
    ids: Sequence[str],
    texts: Sequence[str],
    metadatas: Sequence[dict[str, Any]],
    vectors: Any,
    dimension: int,
) -> tuple[int, str]:
    """Write one shard's parquet file atomically (temporary name, fsync, rename);
    returns (rows, sha256 of the file). Vectors are stored as float32."""
    pa, pq = _pyarrow()
    x = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32).reshape(-1, dimension))
    n = len(ids)
    if not (len(texts) == len(metadatas) == len(x) == n):
        raise ValueError(
            f"shard rows disagree: {n} ids, {len(texts)} texts, {len(metadatas)} metadatas, {len(x)} vectors"
        )
    table = pa.table(
        {
            "id": pa.array(list(ids), pa.string()),
            "text": pa.array(list(texts), pa.string()),
            "metadata": pa.array([_meta_json(m) for m in metadatas], pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(
                pa.array(x.reshape(-1), pa.float32()), dimension
            ),
        }
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as f:
        pq.write_table(table, f, compression="zstd")
    return n, sha256_file(path)


def _read_manifest(out: Path) -> dict[str, Any]:
    path = manifest_path(out)
    if not path.is_file():
        if not out.exists():
            raise ShardError(f"shard folder not found: {out}")
        raise ShardError(
            f"{out} is not a shard folder (no {MANIFEST_FILE}); create it with: llm2vec-retrieval encode-corpus SOURCE --output {out}"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ShardCorruptedError(
            f"{path} is unreadable ({type(exc).__name__}); re-run encode-corpus into a new folder",
            str(path),
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ShardError(f"{path} is not an llm2vec-retrieval shard manifest")
    if not isinstance(data.get("version"), int) or data["version"] > VERSION:
        raise ShardError(
            f"{path}: version {data.get('version')!r} is newer than this library reads ({VERSION}); upgrade llm2vec-retrieval"
        )
    return data


class ShardWriter:
    """Adds finished shards to a shard folder's manifest; one writer per folder at a time.

    ``header``: the `HEADER_KEYS` values of this run. A folder that already holds shards of
    another header (another model, chunking or source folder) is refused. Use as a context
    manager (it holds ``OUT/.lock``)."""

    def __init__(self, out: str | os.PathLike, header: dict[str, Any]):
        self.out = Path(os.path.abspath(os.path.expanduser(os.fspath(out))))
        missing = [k for k in HEADER_KEYS if k not in header]
        if missing:
            raise ValueError(f"shard header lacks {', '.join(missing)}")
        self.header = {k: header[k] for k in HEADER_KEYS}
        self.manifest: dict[str, Any] = {}
        self._lock: contextlib.ExitStack | None = None

    def __enter__(self) -> ShardWriter:
        if self.out.exists() and not self.out.is_dir():
            raise ShardError(f"{self.out} exists and is not a folder")
        if (
            self.out.is_dir()
            and not manifest_path(self.out).is_file()
            and any(e.name != LOCK_FILE for e in self.out.iterdir())
        ):
            raise ShardError(
                f"{self.out} exists, is not empty and is not a shard folder; choose another --output"
            )
        (self.out / SHARD_DIR).mkdir(parents=True, exist_ok=True)
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(file_lock(self.out / LOCK_FILE))
        except LockedError:
            raise ShardError(f"another process is writing shards into {self.out}") from None
        self._lock = stack
        try:
            self._open_manifest()
        except BaseException:
            stack.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _open_manifest(self) -> None:
        if manifest_path(self.out).is_file():
            old = _read_manifest(self.out)
            diff = [k for k in HEADER_KEYS if k != "fingerprint" and old.get(k) != self.header[k]]
            if fingerprint_diff(old.get("fingerprint") or {}, as_saved(self.header["fingerprint"])):
                diff.append("fingerprint")
            if diff:
                raise ShardError(
                    f"{self.out} holds shards made with another {', '.join(sorted(diff))}; "
                    "write into a new --output folder (or delete this one)"
                )
            self.manifest = old
            return
        self.manifest = {
            "format": FORMAT,
            "version": VERSION,
            **self.header,
            "shards": {},
            "files": {},
            "skipped": {},
        }
        self._save()

    def _save(self) -> None:
        atomic_write_json(manifest_path(self.out), self.manifest)

    @property
    def done(self) -> set[str]:
        """Names of the shards the manifest lists (finished ones)."""
        return set(self.manifest.get("shards", {}))

    def path(self, name: str) -> Path:
        return shard_path(self.out, name)

    def commit(
        self,
        name: str,
        rows: int,
        sha256: str,
        files: dict[str, FileEntry] | dict[str, dict[str, Any]],
        position: int = 0,
        skipped: dict[str, str] | None = None,
    ) -> None:
        """Record a shard whose file is written (`write_shard_file`). ``files``: source ->
        the `FileEntry` of each file in it (or its JSON, as the Ray workers send it). A
        source already in another shard is refused (a file belongs to exactly one shard)."""
        from .ingest.manifest import FileEntry

        if self._lock is None:
            raise RuntimeError("ShardWriter.commit outside its `with` block")
        owners = self.manifest["files"]
        for src in files:
            other = owners.get(src, {}).get("shard")
            if other is not None and other != name:
                raise ShardError(f"{src} is already in shard {other}; it cannot go in {name} too")
        if sha256_file(self.path(name)) != sha256:
            raise ShardCorruptedError(
                f"{self.path(name)} changed while it was committed", str(self.path(name))
            )
        self.manifest["shards"][name] = {
            "rows": int(rows),
            "sha256": sha256,
            "files": sorted(files),
            "position": int(position),
        }
        for src, entry in files.items():
            as_json = entry.to_json() if isinstance(entry, FileEntry) else dict(entry)
            owners[src] = {**as_json, "shard": name}
        self.manifest.setdefault("skipped", {}).update(skipped or {})
        self._save()

    def write(
        self,
        name: str,
        files: dict[str, FileEntry] | dict[str, dict[str, Any]],
        ids: Sequence[str],
        texts: Sequence[str],
        metadatas: Sequence[dict[str, Any]],
        vectors: Any,
        position: int = 0,
    ) -> None:
        """Write shard ``name`` and record it (both steps in this process)."""
        rows, sha = write_shard_file(
            self.path(name), ids, texts, metadatas, vectors, self.header["dimension"]
        )
        self.commit(name, rows, sha, files, position)


@dataclass
class ShardBatch:
    """Rows of one shard: ids, texts, metadata dicts and float32 vectors (n, D)."""

    ids: list[str]
    texts: list[str]
    metadatas: list[dict[str, Any]]
    vectors: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


class ShardSet:
    """A finished (or partly finished) shard folder, read shard by shard."""

    def __init__(self, path: Path, manifest: dict[str, Any]):
        self.path = path
        self.manifest = manifest

    @property
    def dimension(self) -> int:
        return int(self.manifest["dimension"])

    @property
    def fingerprint(self) -> dict[str, Any]:
        return dict(self.manifest.get("fingerprint") or {})

    @property
    def count(self) -> int:
        return sum(int(s["rows"]) for s in self.manifest["shards"].values())

    @property
    def shard_names(self) -> list[str]:
        """Shard names in source order (as the files were found)."""
        shards = self.manifest["shards"]
        return sorted(shards, key=lambda n: (int(shards[n].get("position", 0)), n))

    def verify(self, name: str) -> Path:
        """The path of shard ``name`` after checking its sha256 (ShardCorruptedError)."""
        entry = self.manifest["shards"][name]
        path = shard_path(self.path, name)
        if not path.is_file():
            raise ShardCorruptedError(
                f"shard {path} listed in {MANIFEST_FILE} is missing; re-run encode-corpus to write it again",
                str(path),
            )
        if sha256_file(path) != entry["sha256"]:
            raise ShardCorruptedError(
                f"shard {path} is corrupted (its sha256 differs from {MANIFEST_FILE}); "
                f"delete it and its entry, then re-run encode-corpus",
                str(path),
            )
        return path

    def iter_batches(self, batch_rows: int = 4096) -> Iterator[ShardBatch]:
        """All rows, shard after shard in source order, at most ``batch_rows`` at a time.
        Each shard's checksum is verified before its rows are read."""
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be at least 1, got {batch_rows}")
        _, pq = _pyarrow()
        d = self.dimension
        for name in self.shard_names:
            path = self.verify(name)
            rows = 0
            for rb in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
                vec = rb.column("vector")
                x = vec.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
                yield ShardBatch(
                    ids=rb.column("id").to_pylist(),
                    texts=rb.column("text").to_pylist(),
                    metadatas=[json.loads(m) for m in rb.column("metadata").to_pylist()],
                    vectors=x.reshape(len(rb), d),
                )
                rows += len(rb)
            if rows != int(self.manifest["shards"][name]["rows"]):
                raise ShardCorruptedError(
                    f"shard {path} holds {rows} rows, {MANIFEST_FILE} says {self.manifest['shards'][name]['rows']}",
                    str(path),
                )


def open_shards(
    path: str | os.PathLike,
    fingerprint: dict | None = None,
    allow_fingerprint_mismatch: bool = False,
) -> ShardSet:
    """Open a shard folder. ``fingerprint`` (an encoder's ``fingerprint()``): shards made
    by another embedder raise `FingerprintMismatchError` (with
    ``allow_fingerprint_mismatch``: a warning), shards of another dimension
    `DimensionMismatchError` always."""
    out = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
    manifest = _read_manifest(out)
    for key in ("dimension", "shards", "files"):
        if key not in manifest:
            raise ShardCorruptedError(
                f"{manifest_path(out)} lacks {key!r}", str(manifest_path(out))
            )
    check_fingerprint(
        manifest.get("fingerprint") or {},
        fingerprint,
        allow_fingerprint_mismatch=allow_fingerprint_mismatch,
        saved_dim=manifest["dimension"],
        path=str(out),
    )
    return ShardSet(out, manifest)


# ------------------------------------------------------------------ shards -> our index
def ivf_build_params(kind: str, count: int, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Kind parameters for an IVF store built from ``count`` vectors at once: ``nlist`` as
    the store would pick for that count (``4 * sqrt(n)``, at most ``n // 39``), trained
    once on a random sample (``train_threshold``: 39 points per list, at least
    ``2 ** pq_nbits`` for ivf_pq) and no retraining while adding. Below the store's own
    training threshold (1000), the store's defaults (as ``index`` would use). Given
    ``params`` win."""
    params = dict(params or {})
    if not kind.startswith("ivf_") or count < 1000:
        return params
    nlist = params.get("nlist") or max(1, min(int(round(4 * math.sqrt(count))), count // 39))
    sample = 39 * nlist
    if kind == "ivf_pq":
        sample = max(sample, 2 ** int(params.get("pq_nbits") or 8))
    return {
        "nlist": nlist,
        "train_threshold": min(count, sample),
        "retrain_growth": 0,
        **params,
    }


def build_index_from_shards(
    shards_dir: str | os.PathLike,
    index_dir: str | os.PathLike,
    kind: str = "flat",
    lexical: bool = True,
    params: dict[str, Any] | None = None,
    batch_rows: int = 4096,
    seed: int = 0,
    show_progress_bar: bool | None = None,
) -> IndexManifest:
    """Build the index folder ``llm2vec-retrieval index`` writes (``llm2vec-index.json``,
    ``files.json``, ``store/``) from shards, without encoding anything; returns its manifest.

    IVF kinds are trained once, on a random sample of the vectors (`ivf_build_params`): the
    sample is added first, so the store trains on exactly it, then the rest. HNSW and flat
    add everything in source order. A later ``index`` run on the same sources finds every
    file unchanged (``files.json`` records the files' sha256 as ``index`` does)."""
    from .index import IndexStore
    from .index.kinds import KINDS
    from .ingest.folder import LOCK_FILE as INDEX_LOCK
    from .ingest.folder import IndexFolder, now
    from .ingest.manifest import Chunking, IndexManifest

    if kind not in KINDS:
        raise ShardError(f"unknown index kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    shards = open_shards(shards_dir)
    m = shards.manifest
    if shards.count == 0:
        raise ShardError(f"{shards.path} holds no chunks; nothing to index")
    folder = IndexFolder(index_dir)
    p = folder.path
    if p.exists() and (not p.is_dir() or any(e.name != INDEX_LOCK for e in p.iterdir())):
        raise ShardError(f"{p} exists and is not empty; choose a new index folder")
    chosen = ivf_build_params(kind, shards.count, params)
    store = IndexStore(
        shards.dimension,
        kind=kind,
        metric="cosine",
        fingerprint=shards.fingerprint,
        lexical=lexical,
        **chosen,
    )
    bar = progress_bar(shards.count, "Indexing shards", "chunk", show_progress_bar)
    try:
        _add_rows(store, shards, chosen.get("train_threshold"), batch_rows, seed, bar)
    finally:
        if bar is not None:
            bar.close()
    created = now()
    manifest = IndexManifest(
        embedder=m["embedder"],
        kind=kind,
        root=m["source_root"],
        chunking=Chunking.from_json(m.get("chunking")),
        lexical=bool(lexical),
        query_instruction=m.get("query_instruction"),
        created_at=created,
        updated_at=created,
        from_shards=str(shards.path),
    )
    files = _file_entries(shards, created)
    p.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        try:  # as `index` does: one writer per index folder
            stack.enter_context(file_lock(p / INDEX_LOCK))
        except LockedError:
            raise ShardError(f"another process is indexing {p}") from None
        folder.save_manifest(manifest)
        store.save(folder.store_path)
        # the entries describe every chunk (ids "<source>#<n>", as `index` numbers them)
        # except those of parquet tables ("<id>#<n>"): then files.json records no version
        exact = not any(src.lower().endswith(".parquet") for src in files)
        folder.save_files(files, store.version if exact else None)
    return manifest


def _add_rows(
    store: Any, shards: ShardSet, threshold: int | None, batch_rows: int, seed: int, bar: Any
) -> None:
    """Every row into ``store``: a random sample of ``threshold`` rows first (an IVF store
    trains on exactly it), then the rest in source order."""
    sample: set[str] = set()
    if threshold is not None and threshold < shards.count:
        picked = np.random.default_rng(seed).choice(shards.count, size=threshold, replace=False)
        wanted = np.zeros(shards.count, dtype=bool)
        wanted[picked] = True
        parts: list[ShardBatch] = []
        at = 0
        for b in shards.iter_batches(batch_rows):
            keep = np.nonzero(wanted[at : at + len(b)])[0]
            at += len(b)
            if len(keep):
                parts.append(_take(b, keep))
        for part in parts:  # the store trains when the last of them is added
            store.add(part.ids, part.vectors, part.texts, part.metadatas)
            sample.update(part.ids)
            if bar is not None:
                bar.update(len(part))
    for b in shards.iter_batches(batch_rows):
        if sample:
            keep = np.array([i not in sample for i in b.ids])
            b = _take(b, np.nonzero(keep)[0])
        if len(b):
            store.add(b.ids, b.vectors, b.texts, b.metadatas)
        if bar is not None:
            bar.update(len(b))


def _file_entries(shards: ShardSet, indexed_at: str) -> dict[str, FileEntry]:
    """The files.json entries of the files in the shards (what ``index`` would record)."""
    from .ingest.manifest import FileEntry

    entries = {}
    for src, e in shards.manifest["files"].items():
        entry = FileEntry.from_json(e)
        if entry is None:
            path = manifest_path(shards.path)
            raise ShardCorruptedError(f"{path}: the entry of {src} is not readable", str(path))
        entry.indexed_at = indexed_at
        entries[src] = entry
    return entries


def _take(b: ShardBatch, rows: np.ndarray) -> ShardBatch:
    return ShardBatch(
        ids=[b.ids[i] for i in rows],
        texts=[b.texts[i] for i in rows],
        metadatas=[b.metadatas[i] for i in rows],
        vectors=b.vectors[rows],
    )
