"""Token-window chunking with overlap, using the tokenizer's character offsets.

Every chunk is an exact substring of its text (``text[start:end]``), cut at token
boundaries and trimmed of surrounding whitespace; a window holds at most
``chunk_tokens`` tokens and consecutive windows share ``overlap`` tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    start: int  # character offsets into the segment text
    end: int
    tokens: int  # tokens of the window (before whitespace trimming)


def check_chunking(chunk_tokens: int, overlap: int) -> None:
    if chunk_tokens < 1:
        raise ValueError(f"--chunk-tokens must be at least 1, got {chunk_tokens}")
    if overlap < 0 or overlap >= chunk_tokens:
        raise ValueError(f"--overlap must be in [0, chunk-tokens), got {overlap} with chunk-tokens {chunk_tokens}")


def windows(n_tokens: int, chunk_tokens: int, overlap: int) -> list[tuple[int, int]]:
    """Token index ranges [s, e) covering n_tokens with the given size and overlap."""
    check_chunking(chunk_tokens, overlap)
    if n_tokens <= 0:
        return []
    step = chunk_tokens - overlap
    out = []
    s = 0
    while True:
        e = min(s + chunk_tokens, n_tokens)
        out.append((s, e))
        if e >= n_tokens:
            return out
        s += step


def chunk_spans(tokenizer, texts: Sequence[str], chunk_tokens: int, overlap: int) -> list[list[Span]]:
    """Spans of each text (one batched tokenizer call)."""
    if not texts:
        return []
    enc = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    out = []
    for text, offsets in zip(texts, enc["offset_mapping"], strict=True):
        spans = []
        for s, e in windows(len(offsets), chunk_tokens, overlap):
            start, end = offsets[s][0], max(off[1] for off in offsets[s:e])
            while start < end and text[start].isspace():
                start += 1
            while end > start and text[end - 1].isspace():
                end -= 1
            if end > start:
                spans.append(Span(start, end, e - s))
        out.append(spans)
    return out
