"""`UserError`: a failure the user can fix (a bad argument, a missing folder, a missing extra).

The command line prints a `UserError` as one line (`error: <message>`, exit code 2); any
other exception is a bug and prints its traceback. The core raises `UserError` (or a
subclass, e.g. `IndexCorruptedError` and `FingerprintMismatchError`) where a failure can only
come from what the user gave or has installed, with a message that says how to fix it.
"""

from __future__ import annotations


class UserError(Exception):
    """An error the user can fix; its message is one line that says how."""


class InvalidInputError(ValueError, UserError):
    """What the user gave is not valid: an argument, a setting, a config or data file's
    contents. A ValueError too, so ``except ValueError`` keeps catching it."""


class MissingInputError(FileNotFoundError, UserError):
    """A file or folder the user named does not exist or lacks what it must hold."""


class MissingExtraError(ImportError, UserError):
    """An optional package is not installed; the message names the pip command."""
