"""What identifies an embedder, in one place: its fingerprint, the content digests of its
weight folders, and the one comparison of a saved fingerprint with the embedder in use.

- `encoder_fingerprint(encoder)`: what determines an `LLM2Vec`'s vectors (model name and
  weight digests, pooling, instructions, lengths, dimension). The compute dtype is left out
  on purpose: float32 and bfloat16 vectors of one model agree closely, so an index built in
  one is searched in the other. The integrations' embeddings wrappers pass the instructions
  and normalisation they actually use (``**overrides``).
- `embedder_fingerprint(embedder)`: the fingerprint of any embedder that describes itself
  (``fingerprint() -> dict``), else None: the evaluation cache's key and what the
  integrations record in a saved index.
- `folder_digest`: sha256 over the whole of every weight file of a folder, with file hashes
  remembered by `DigestCache` (keyed by path and stat) so an unchanged file is read once.
- `check_fingerprint`: a saved fingerprint against the one in use (store load, the
  integrations, the indexer, shards, vector-database loads), with the errors it raises.

Not here: where a fingerprint is saved (the index store's manifest, shards, collections).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._io import JSONReadError, atomic_write_json, read_json, sha256_and_size
from .cachedir import cache_dir
from .errors import UserError

logger = logging.getLogger(__name__)

__all__ = [
    "DIGEST_PATTERNS",
    "DigestCache",
    "DimensionMismatchError",
    "FingerprintMismatchError",
    "UnverifiedEmbedderError",
    "as_saved",
    "check_fingerprint",
    "default_digest_cache",
    "embedder_fingerprint",
    "encoder_fingerprint",
    "fingerprint_diff",
    "folder_digest",
]


# ------------------------------------------------------------------ embedder fingerprints
def encoder_fingerprint(encoder: Any, **overrides: Any) -> dict[str, Any]:
    """What determines an `LLM2Vec` encoder's vectors: compare two to know whether indexes
    are compatible. ``overrides`` replace the encoder's own settings with those a wrapper
    uses (``query_instruction``, ``document_instruction``, ``normalize``)."""
    source, cfg = encoder.source, encoder.config
    fp = {
        "model": source.get("model"),
        "model_digest": source.get("model_digest"),
        "adapter_digest": source.get("adapter_digest"),
        "pooling_mode": cfg.pooling_mode,
        "bidirectional": cfg.enable_bidirectional,
        "skip_instruction": cfg.skip_instruction,
        "query_instruction": cfg.query_instruction,
        "document_instruction": cfg.document_instruction,
        "normalize": cfg.normalize,
        "max_length": cfg.max_length,
        "doc_max_length": cfg.doc_max_length,
        "dim": encoder.embedding_dim,
    }
    fp.update(overrides)
    return fp


def embedder_fingerprint(embedder: Any) -> dict | None:
    """The embedder's ``fingerprint()`` dict, or None when it has none (or returns None):
    an embedder without one cannot be told apart from another."""
    fp = getattr(embedder, "fingerprint", None)
    if fp is None or not callable(fp):
        return None
    value = fp()
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError(f"fingerprint() must return a dict, got {type(value).__name__}")
    return value


# ------------------------------------------------------------------ content digests
DIGEST_PATTERNS = ("*.safetensors", "*.bin", "config.json")
DIGEST_CACHE_FILE = "digests.json"  # under cache_dir()


class DigestCache:
    """sha256 of whole files, remembered in memory and, with `path`, in a JSON file.

    An entry is keyed by the file's absolute path and used while the file's size,
    mtime_ns, ctime_ns and inode are unchanged. ctime and inode catch a rewrite that keeps
    size and mtime (``cp -p``, ``rsync -a``, archives with fixed timestamps): nobody can
    set them back. The file is JSON (never pickle), replaced atomically, merged with what
    other processes wrote meanwhile; an unreadable or malformed file is ignored and
    rewritten. `hashed` counts the files actually read.
    """

    FORMAT = 1

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else None
        self.hashed = 0
        self._entries: dict[str, list] | None = None
        self._new: dict[str, list] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _stat_key(path: str) -> list[int]:
        st = os.stat(path)
        return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]

    def sha256(self, file: str | os.PathLike) -> str:
        """The hex sha256 of the whole file (read only when no entry matches its stat)."""
        path = os.path.abspath(file)
        key = self._stat_key(path)
        with self._lock:
            entry = self._loaded().get(path)
        if entry is not None and entry[:4] == key:
            return entry[4]
        digest, size = sha256_and_size(path)
        self.hashed += 1
        if size == key[0] and self._stat_key(path) == key:  # not changed while being read
            with self._lock:
                self._loaded()[path] = self._new[path] = [*key, digest]
        return digest

    def save(self) -> None:
        """Write the new entries to the file (a no-op without any, or without a file)."""
        with self._lock:
            if self.path is None or not self._new:
                return
            merged = {**self._read(), **self._new}
            self._new.clear()
            kept = {p: e for p, e in merged.items() if _still_valid(p, e)}
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_json(self.path, {"format": self.FORMAT, "files": kept}, sort_keys=True)
            except OSError as exc:  # a read-only cache folder costs a re-hash next time
                logger.debug("digest cache %s not written: %s", self.path, exc)

    def _loaded(self) -> dict[str, list]:
        if self._entries is None:
            self._entries = self._read()
        return self._entries

    def _read(self) -> dict[str, list]:
        if self.path is None:
            return {}
        try:
            data = read_json(self.path)
        except (OSError, JSONReadError):
            return {}
        files = (
            data.get("files")
            if isinstance(data, dict) and data.get("format") == self.FORMAT
            else None
        )
        if not isinstance(files, dict):
            return {}
        return {p: e for p, e in files.items() if _well_formed(e)}


def _well_formed(entry: object) -> bool:
    return (
        isinstance(entry, list)
        and len(entry) == 5
        and all(type(v) is int for v in entry[:4])
        and isinstance(entry[4], str)
        and len(entry[4]) == 64
        and all(c in "0123456789abcdef" for c in entry[4])
    )


def _still_valid(path: str, entry: list) -> bool:
    try:
        return DigestCache._stat_key(path) == entry[:4]
    except OSError:
        return False


_DIGEST_CACHES: dict[Path, DigestCache] = {}


def default_digest_cache() -> DigestCache:
    """The process's `DigestCache`, kept in ``cache_dir()/digests.json``."""
    path = cache_dir() / DIGEST_CACHE_FILE
    return _DIGEST_CACHES.setdefault(path, DigestCache(path))


def _digest_files(folder: str, patterns: tuple[str, ...]) -> list[Path]:
    return sorted({p for pattern in patterns for p in Path(folder).glob(pattern) if p.is_file()})


def folder_digest(
    folder: str | os.PathLike | None,
    patterns: tuple[str, ...] = DIGEST_PATTERNS,
    cache: DigestCache | None = None,
) -> str | None:
    """A content digest of a checkpoint folder (16 hex characters): sha256 over the name
    and the sha256 of the whole of every file matching `patterns`. File hashes come from
    `cache` (default: `default_digest_cache`), so only new or changed files are read."""
    if folder is None or not os.path.isdir(folder):
        return None
    cache = cache if cache is not None else default_digest_cache()
    digest = hashlib.sha256()
    for path in _digest_files(os.fspath(folder), patterns):
        digest.update(os.fsencode(path.name) + b"\0" + cache.sha256(path).encode() + b"\n")
    cache.save()
    return digest.hexdigest()[:16]


# ------------------------------------------------------------------ comparison
class FingerprintMismatchError(ValueError, UserError):
    """The embedder fingerprint saved with an index differs from the one given to ``load``.

    ``differing_keys`` lists the keys whose values differ (or exist on one side only);
    ``stored`` and ``expected`` are the two fingerprints.
    """

    def __init__(self, stored: dict[str, Any], expected: dict[str, Any], differing_keys: list[str]):
        self.stored = stored
        self.expected = expected
        self.differing_keys = differing_keys
        details = "; ".join(
            f"{k}: saved {stored.get(k, '<absent>')!r} != given {expected.get(k, '<absent>')!r}"
            for k in differing_keys
        )
        super().__init__(
            f"embedder fingerprint mismatch on key(s) {', '.join(differing_keys)} ({details}); the vectors were made "
            "by another embedder configuration. Pass allow_fingerprint_mismatch=True to load anyway."
        )


def fingerprint_diff(stored: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """Keys whose values differ between two fingerprint dicts (sorted, as strings)."""
    keys = set(stored) | set(expected)
    return sorted(
        (k for k in keys if k not in stored or k not in expected or stored[k] != expected[k]),
        key=str,
    )


class DimensionMismatchError(FingerprintMismatchError):
    """The expected embedder makes vectors of another dimension than the saved index holds.

    Raised by ``load`` even with ``allow_fingerprint_mismatch``: such an index cannot be
    searched with that embedder at all. ``saved_dim`` and ``given_dim`` are the two
    dimensions; ``path`` the index.
    """

    def __init__(
        self,
        path: str,
        saved_dim: int,
        given_dim: int,
        stored: dict[str, Any],
        expected: dict[str, Any],
    ):
        self.path = path
        self.saved_dim = saved_dim
        self.given_dim = given_dim
        self.stored = stored
        self.expected = expected
        self.differing_keys = fingerprint_diff(stored, expected) if stored else ["dim"]
        ValueError.__init__(
            self,
            f"index {path} holds {saved_dim}-dimensional vectors but the embedder makes "
            f"{given_dim}-dimensional ones: it cannot be searched with this embedder (not even "
            "when a fingerprint mismatch is allowed); use the embedder it was built with, or "
            "re-index with this one",
        )


class UnverifiedEmbedderError(FingerprintMismatchError):
    """An index records the fingerprint of the embedder that made it, but the embedder given
    to load it has none (LangChain's ``FakeEmbeddings``, any third-party embeddings): nothing
    shows that its vectors are comparable with the stored ones, so it is refused unless
    ``allow_fingerprint_mismatch``. ``embedder`` names the given embedder."""

    def __init__(self, path: str, stored: dict[str, Any], embedder: str):
        self.path = path
        self.stored = stored
        self.expected = {}
        self.embedder = embedder
        self.differing_keys = sorted(stored, key=str)
        model = stored.get("model") or "an unnamed model"
        dim = stored.get("dim")
        dims = f", {dim} dimensions" if dim is not None else ""
        ValueError.__init__(
            self,
            f"index {path} was built with the embedder {model!r}{dims} but {embedder} has no "
            "fingerprint to compare with it, so its vectors may not match the stored ones: "
            "load it with the embeddings it was built with, or pass "
            f"allow_fingerprint_mismatch=True if {embedder} makes the same vectors",
        )


def as_saved(fingerprint: Mapping[str, Any]) -> dict[str, Any]:
    """A fingerprint as JSON stores it (tuples become lists, keys strings, other values
    their ``str``): what a saved one is compared with."""
    return json.loads(json.dumps(dict(fingerprint), default=str))


def check_fingerprint(
    saved: Mapping[str, Any] | None,
    given: Mapping[str, Any] | None,
    *,
    allow_fingerprint_mismatch: bool = False,
    saved_dim: int | None = None,
    path: str | os.PathLike | None = None,
    stacklevel: int = 2,
    unverified: str | None = None,
) -> dict[str, Any] | None:
    """The one comparison of a saved embedder fingerprint with the embedder in use.

    Nothing to compare (either side None): returns ``saved``. The same embedder: returns
    ``given`` as saved (digests written the current way replace older spellings).
    Different: `FingerprintMismatchError`, or with ``allow_fingerprint_mismatch`` a warning and
    ``saved`` is kept. ``saved_dim``: the dimension of the saved vectors; a ``given``
    fingerprint naming another ``dim`` raises `DimensionMismatchError` even with
    ``allow_fingerprint_mismatch`` (such vectors cannot be searched at all). ``path`` names the
    index in that message. ``stacklevel``: as ``warnings.warn`` counts it from here (2:
    the caller). ``unverified``: the name of an embedder in use that has no fingerprint
    (``given`` None, e.g. a LangChain ``FakeEmbeddings``): with a ``saved`` fingerprint it is
    refused (`UnverifiedEmbedderError`) unless ``allow_fingerprint_mismatch`` (a warning);
    without ``unverified``, a None ``given`` means "nothing to compare" (a lexical-only load).
    """
    if given is None:
        if saved is not None and unverified is not None:
            where = os.fspath(path) if path is not None else "the saved index"
            err = UnverifiedEmbedderError(where, dict(saved), unverified)
            if not allow_fingerprint_mismatch:
                raise err
            warnings.warn(f"loading anyway: {err}", stacklevel=stacklevel)
        return None if saved is None else dict(saved)
    given = as_saved(given)
    given_dim = given.get("dim")
    if (
        saved_dim is not None
        and isinstance(given_dim, int)
        and not isinstance(given_dim, bool)
        and given_dim != saved_dim
    ):
        where = os.fspath(path) if path is not None else "the saved index"
        raise DimensionMismatchError(where, saved_dim, given_dim, dict(saved or {}), given)
    if saved is None:
        return None
    saved = dict(saved)
    diff = fingerprint_diff(saved, given)
    if not diff:
        return given
    mismatch = FingerprintMismatchError(saved, given, diff)
    if not allow_fingerprint_mismatch:
        raise mismatch
    warnings.warn(f"loading anyway: {mismatch}", stacklevel=stacklevel)
    return saved
