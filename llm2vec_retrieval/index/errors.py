"""Errors raised by the index store for its own files.

`IndexCorruptedError` is a `UserError` (a re-index fixes it): the command line prints it as
one line. The errors of a saved fingerprint that does not match the embedder in use
(`FingerprintMismatchError`, `DimensionMismatchError`, `UnverifiedEmbedderError`) live with
the comparison in `llm2vec_retrieval.fingerprint`.
"""

from __future__ import annotations

from ..errors import UserError


class IndexCorruptedError(RuntimeError, UserError):
    """A saved index is unreadable: a file is missing, truncated, corrupted or inconsistent.

    ``file`` names the offending file (a path string) when one is known.
    """

    def __init__(self, message: str, file: str | None = None):
        super().__init__(message)
        self.file = file
