"""Errors raised by the index store.

All of them are `UserError`s (a re-index or another model fixes them): the command line
prints them as one line. `check_fingerprint` is the one place a saved embedder fingerprint
is compared with the embedder in use (store load, the integrations, the indexer, shards).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from typing import Any

from ..errors import UserError
from ..loading import compare_digest


class IndexCorruptedError(RuntimeError, UserError):
    """A saved index is unreadable: a file is missing, truncated, corrupted or inconsistent.

    ``file`` names the offending file (a path string) when one is known.
    """

    def __init__(self, message: str, file: str | None = None):
        super().__init__(message)
        self.file = file


class FingerprintMismatchError(ValueError, UserError):
    """The embedder fingerprint saved with an index differs from the one given to ``load``.

    ``differing_keys`` lists the keys whose values differ (or exist on one side only);
    ``stored`` and ``expected`` are the two fingerprints.
    """

    def __init__(self, stored: dict[str, Any], expected: dict[str, Any], differing_keys: list[str]):
        self.stored = stored
        self.expected = expected
        self.differing_keys = differing_keys
        # digests saved before whole weight files were hashed, of the files the embedder has now
        self.legacy_keys = [
            k
            for k in differing_keys
            if k in DIGEST_KEYS and compare_digest(stored.get(k), expected.get(k)) == "legacy"
        ]
        if self.legacy_keys and self.legacy_keys == differing_keys:
            super().__init__(
                f"the index's {' and '.join(differing_keys)} comes from an older llm2vec-retrieval "
                "that hashed only the first MiB of each weight file, which cannot tell whether "
                "the model was retrained since. Re-embed it with this model (CLI: `index` with "
                "--rebuild), or, if the weight files are unchanged since it was built, pass "
                "allow_fingerprint_mismatch=True (CLI: --allow-mismatch) to load it anyway."
            )
            return
        details = "; ".join(
            f"{k}: saved {stored.get(k, '<absent>')!r} != given {expected.get(k, '<absent>')!r}"
            for k in differing_keys
        )
        super().__init__(
            f"embedder fingerprint mismatch on key(s) {', '.join(differing_keys)} ({details}); the vectors were made "
            "by another embedder configuration. Pass allow_fingerprint_mismatch=True to load anyway."
        )


# Fingerprint keys holding `loading.folder_digest` values: compared with `compare_digest`, so
# that a digest saved by an older version still matches the files it names.
DIGEST_KEYS = frozenset({"model_digest", "adapter_digest"})


def _same(key: Any, stored: dict[str, Any], expected: dict[str, Any]) -> bool:
    if key not in stored or key not in expected:
        return False
    if stored[key] == expected[key]:
        return True
    return key in DIGEST_KEYS and compare_digest(stored[key], expected[key]) == "same"


def fingerprint_diff(stored: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """Keys whose values differ between two fingerprint dicts (sorted, as strings)."""
    keys = set(stored) | set(expected)
    return sorted((k for k in keys if not _same(k, stored, expected)), key=str)


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
        self.legacy_keys = []
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
        self.legacy_keys = []
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
    err = FingerprintMismatchError(saved, given, diff)
    if not allow_fingerprint_mismatch:
        raise err
    warnings.warn(f"loading anyway: {err}", stacklevel=stacklevel)
    return saved
