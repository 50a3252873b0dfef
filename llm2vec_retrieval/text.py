"""Repairing text that is not valid Unicode before it reaches a tokenizer or a file.

Python strings can hold lone surrogates (U+D800..U+DFFF): JSON escapes such as
``"\\ud83d"`` (an emoji cut in half by a scraper), or file names decoded with
``surrogateescape``. Rust tokenizers refuse them with a TypeError and UTF-8 writers with
a UnicodeEncodeError. The policy everywhere text enters the project (the encoder's
``encode*``, the ingest readers, the LangChain/LlamaIndex add paths): a surrogate pair
written as two code points becomes the character it stands for, and every other
surrogate becomes U+FFFD, with one warning per call saying how many texts were repaired.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable

_SURROGATE = re.compile("[\ud800-\udfff]")


def has_surrogates(text: str) -> bool:
    return not text.isascii() and _SURROGATE.search(text) is not None


def repair_surrogates(text: str) -> str:
    """``text`` with lone surrogates replaced by U+FFFD (the same object when it has none)."""
    if not has_surrogates(text):
        return text
    # UTF-16 joins a pair written as two code points and replaces each lone one.
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def repair_texts(texts: Iterable[str]) -> tuple[list[str], int]:
    """(repaired texts, how many were changed); non-strings pass through untouched."""
    out, repaired = [], 0
    for t in texts:
        if isinstance(t, str) and has_surrogates(t):
            t = repair_surrogates(t)
            repaired += 1
        out.append(t)
    return out, repaired


def repaired_message(count: int, what: str = "text(s)") -> str:
    return (
        f"{count} {what} contained lone surrogates (invalid Unicode, e.g. a cut emoji); "
        "they were replaced by U+FFFD"
    )


def warn_repaired(count: int, stacklevel: int = 3, what: str = "text(s)") -> None:
    """The one warning of a call that repaired ``count`` texts (none when count is 0)."""
    if count:
        warnings.warn(repaired_message(count, what), UnicodeWarning, stacklevel=stacklevel)


def blank_reason(text: str) -> str | None:
    """Why ``text`` cannot be a query: ``"empty"``, ``"only whitespace"``, or None when it
    holds something to search for."""
    if not text:
        return "empty"
    return "only whitespace" if not text.strip() else None


def check_query(text: str, what: str = "the query") -> str:
    """``text`` unchanged; a one-line ValueError when it is empty or only whitespace (a search
    for nothing has no right answer, so none is made up). The search paths (IndexStore's
    lexical and hybrid modes, ``Searcher``, the LangChain and LlamaIndex integrations) call it;
    the command line and the server word the same check as their own errors."""
    reason = blank_reason(text)
    if reason is not None:
        raise ValueError(f"{what} is {reason}: give the words to search for")
    return text
