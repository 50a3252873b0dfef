"""Token-window chunking with overlap, using the tokenizer's character offsets.

Every chunk is an exact substring of its text (``text[start:end]``), cut at token
boundaries and trimmed of surrounding whitespace; a window holds at most
``chunk_tokens`` tokens and consecutive windows share ``overlap`` tokens.

`chunk_spans` tokenizes whole texts at once (the reference). `iter_chunks` gives the same
chunks with memory bounded by ``window_chars`` whatever the text's size: a long text (a
string, or a file read through `CharSource`) is tokenized in windows of that many
characters that overlap; consecutive windows are joined at the first token where both
agree on the token and the next few (its offsets and ids), at least an eighth of a window
(at most 16,384 characters) away from both windows' edges, where cutting the text does
not change how it tokenizes. The result equals tokenizing the whole text at once (tested
against `chunk_spans` on texts spanning many windows) unless cutting the text changes its
tokens that far away (a single pre-token, such as a run of one character, longer than
that). A text with no agreement near a window's end makes the window grow; past
``_MAX_GROWTH`` windows it is cut at a token boundary without that check. `iter_chunks` also gives, after each chunk, the `Position`
where chunking continues, so that an interrupted file can be resumed there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import InvalidInputError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

#: Characters tokenized at once by `iter_chunks` (the memory bound of chunking a file).
#: At its peak a window costs about 0.9 KB per token (the tokenizer's encoding, then ids and
#: offsets as Python lists, of the current window and the next one): on dense text (one
#: token per character, byte-level BPE on mixed text) 64 Ki characters keep chunking
#: within about 50 MB; 256 Ki took 190 MB (issue 23.9). Smaller is not slower: the
#: windows' overlap is a fixed share of a window (2/8) up to 128 Ki characters.
DEFAULT_WINDOW_CHARS = 1 << 16
_SYNC_TOKENS = 4  # tokens that must agree after a join point
_MAX_GROWTH = 8  # a window that finds no join point grows up to this many windows


@dataclass(frozen=True)
class Span:
    start: int  # character offsets into the segment text
    end: int
    tokens: int  # tokens of the window (before whitespace trimming)


def check_chunking(chunk_tokens: int, overlap: int) -> None:
    if chunk_tokens < 1:
        raise InvalidInputError(f"--chunk-tokens must be at least 1, got {chunk_tokens}")
    if overlap < 0 or overlap >= chunk_tokens:
        raise InvalidInputError(
            f"--overlap must be in [0, chunk-tokens), got {overlap} with chunk-tokens {chunk_tokens}"
        )


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


def chunk_spans(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], chunk_tokens: int, overlap: int
) -> list[list[Span]]:
    """Spans of each text (one batched tokenizer call)."""
    if not texts:
        return []
    enc = tokenizer(
        list(texts), add_special_tokens=False, return_offsets_mapping=True, verbose=False
    )
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


# ---------------------------------------------------------------------- streaming
class CharSource(Protocol):
    """What `iter_chunks` reads a long text from (e.g. a text-mode file opened with
    ``newline=""``): ``read(n)`` returns the next (up to) n characters, "" at the end."""

    def read(self, n: int, /) -> str: ...


@dataclass(frozen=True)
class Position:
    """Where chunking of a file continues: segment ``segment``, at the window that starts
    with token ``token`` of that segment's text, whose first character is ``char`` (and
    after ``same`` earlier tokens that start there too: byte-level tokenizers can split one
    character into several tokens)."""

    segment: int = 0
    token: int = 0
    char: int = 0
    same: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"segment": self.segment, "token": self.token, "char": self.char, "same": self.same}

    @classmethod
    def from_dict(cls, data: Any) -> Position | None:
        try:
            pos = cls(
                int(data["segment"]),
                int(data["token"]),
                int(data["char"]),
                int(data.get("same", 0)),
            )
        except (TypeError, KeyError, ValueError, AttributeError):
            return None
        return pos if min(pos.segment, pos.token, pos.char, pos.same) >= 0 else None


class ResumeError(Exception):
    """Chunking cannot continue at the given position (the text is not what it was)."""


@dataclass(frozen=True)
class Chunk:
    segment: int  # index of the segment (text) the chunk comes from
    span: Span
    text: str  # the chunk's text: segment text[span.start:span.end]
    next: Position  # where chunking continues after this chunk's window


class _Text:
    """A text of which the characters [base, end) are in memory."""

    def __init__(self, source: str | CharSource):
        self._read: Callable[[int], str] | None
        if isinstance(source, str):
            self.buf, self.eof, self._read = source, True, None
        else:
            self.buf, self.eof, self._read = "", False, source.read
        self.base = 0

    @property
    def end(self) -> int:
        return self.base + len(self.buf)

    def fill(self, upto: int) -> None:
        while not self.eof and self.end < upto:
            assert self._read is not None  # a str source is at eof from the start
            piece = self._read(max(upto - self.end, 1 << 16))
            if piece:
                self.buf += piece
            else:
                self.eof = True

    def slice(self, a: int, b: int) -> str:
        return self.buf[a - self.base : b - self.base]

    def forget(self, upto: int) -> None:
        """Drop characters before ``upto`` (kept for a string: it is in memory anyway);
        characters not read yet are read and dropped."""
        if self._read is None or upto <= self.base:
            return
        if upto <= self.end:
            self.buf, self.base = self.buf[upto - self.base :], upto
            return
        self.base, self.buf = self.end, ""
        while not self.eof and self.base < upto:  # skipping ahead (resume)
            piece = self._read(min(upto - self.base, 1 << 20))
            if piece:
                self.base += len(piece)
            else:
                self.eof = True


class _Window:
    __slots__ = ("start", "end", "final", "ids", "offs")

    def __init__(self, tokenizer, text: _Text, a: int, b: int):
        text.fill(b)
        b = min(b, text.end)
        self.start, self.end = a, b
        self.final = text.eof and b >= text.end
        enc = tokenizer(
            text.slice(a, b), add_special_tokens=False, return_offsets_mapping=True, verbose=False
        )
        self.ids = enc["input_ids"]
        self.offs = [(s + a, e + a) for s, e in enc["offset_mapping"]]


def _join(cur: _Window, nxt: _Window, t0: int, limit: int, after: int) -> tuple[int, int] | None:
    """Indices (i in cur, j in nxt) of the first token, starting after char ``after`` and
    before ``limit``, where both windows agree on it and the `_SYNC_TOKENS` - 1 next ones."""
    first: dict[int, int] = {}
    for i in range(t0, len(cur.offs)):
        s = cur.offs[i][0]
        if s >= limit:
            break
        first.setdefault(s, i)
    for j in range(1, len(nxt.offs)):
        s = nxt.offs[j][0]
        if s >= limit:
            break
        if s <= after or nxt.offs[j - 1][0] == s:
            continue
        found = first.get(s)
        if found is None:
            continue
        i = found
        if i + _SYNC_TOKENS > len(cur.offs) or j + _SYNC_TOKENS > len(nxt.offs):
            continue
        if all(
            cur.ids[i + k] == nxt.ids[j + k]
            and cur.offs[i + k] == nxt.offs[j + k]
            and cur.offs[i + k][0] < limit
            for k in range(_SYNC_TOKENS)
        ):
            return i, j
    return None


class _Tokens:
    """The tokens of one text in order, as offsets, computed window by window."""

    def __init__(
        self, tokenizer, text: _Text, window: int, token: int = 0, char: int = 0, same: int = 0
    ):
        self.tokenizer, self.text, self.window = tokenizer, text, window
        self.edge = max(1, min(window // 8, 16384))
        self.index = token  # absolute index of cur.offs[t0]
        self.cur: _Window | None  # None once the last window is handed out
        if char == 0 and token == 0:
            self.cur, self.t0 = _Window(tokenizer, text, 0, window), 0
            return
        # Resume: tokenize from two points before `char`; where they agree, both are right.
        early = max(0, char - 4 * self.edge)
        late = max(0, char - 2 * self.edge)
        text.forget(early)
        cur = _Window(tokenizer, text, early, late + window)
        start_ok = 0 if early == 0 else None
        if start_ok is None and late > early:
            nxt = _Window(tokenizer, text, late, late + window)
            limit = nxt.end if nxt.final else nxt.end - self.edge
            found = _join(cur, nxt, 0, min(limit, char + 1), late)
            if found is not None:
                cur, start_ok = nxt, found[1]
        at = None if start_ok is None else self._first_at(cur, start_ok, char, same)
        if at is None:
            raise ResumeError(f"no token starts at character {char}")
        self.cur, self.t0 = cur, at

    @staticmethod
    def _first_at(w: _Window, t0: int, char: int, same: int) -> int | None:
        """Index of the token after the ``same`` first ones starting at ``char``."""
        for i in range(t0, len(w.offs)):
            if w.offs[i][0] == char:
                if i + same < len(w.offs) and w.offs[i + same][0] == char:
                    return i + same
                return None
            if w.offs[i][0] > char:
                return None
        return None

    @property
    def keep_from(self) -> int:
        assert self.cur is not None, "no window left: keep up to the text's end"
        return self.cur.start

    def next_batch(self) -> tuple[int, list[tuple[int, int]]] | None:
        """(absolute index of the first token, offsets) of the next run of tokens; None at the end."""
        cur, t0 = self.cur, self.t0
        if cur is None:
            return None
        if cur.final:
            self.cur = None
            return self.index, cur.offs[t0:]
        growth = 1
        while True:
            limit = cur.end - self.edge
            a = max(cur.end - 2 * self.edge, cur.start + 1)
            nxt = _Window(self.tokenizer, self.text, a, a + self.window)
            found = _join(cur, nxt, t0, limit, a)
            if found is not None:
                break
            if growth < _MAX_GROWTH:  # no join point: a longer window, same start
                growth += 1
                cur = _Window(
                    self.tokenizer, self.text, cur.start, cur.start + growth * self.window
                )
                if cur.final:
                    self.cur = None
                    return self.index, cur.offs[t0:]
                continue
            # Cut anyway at the last token before the edge (pathological text only).
            i = max(t0, max((k for k, o in enumerate(cur.offs) if o[0] < limit), default=t0))
            if i == t0:
                i = min(t0 + 1, len(cur.offs))
            a = cur.offs[i][0] if i < len(cur.offs) else cur.end
            nxt = _Window(self.tokenizer, self.text, a, a + self.window)
            found = (i, 0)
            break
        i, j = found
        first, batch = self.index, cur.offs[t0:i]
        self.index += i - t0
        self.cur, self.t0 = nxt, j
        return first, batch


class _Windower:
    """Turns a stream of token offsets into chunk windows (as `windows` cuts them)."""

    def __init__(self, chunk_tokens: int, overlap: int, start: int = 0):
        self.chunk, self.step = chunk_tokens, chunk_tokens - overlap
        self.s = start  # start of the next window
        self.base = start  # absolute index of offs[0]
        self.n = start  # tokens seen
        self.offs: list[tuple[int, int]] = []

    def oldest_char(self) -> int | None:
        return self.offs[0][0] if self.offs else None

    def _window(self, s: int, e: int) -> tuple[int, int, int, tuple[int, int] | None]:
        o = self.offs[s - self.base : e - self.base]
        k = s + self.step - self.base  # the next window's first token
        if k >= e - self.base:
            return o[0][0], max(x[1] for x in o), e - s, None
        char, same = self.offs[k][0], 0
        while k - same - 1 >= 0 and self.offs[k - same - 1][0] == char:
            same += 1
        return o[0][0], max(x[1] for x in o), e - s, (char, same)

    def feed(self, offsets: list[tuple[int, int]]) -> list[tuple]:
        self.offs.extend(offsets)
        self.n += len(offsets)
        out = []
        while self.n >= self.s + self.chunk:
            out.append((self.s, *self._window(self.s, self.s + self.chunk)))
            self.s += self.step
            drop = self.s - self.base
            if drop > 0:
                del self.offs[:drop]
                self.base = self.s
        return out

    def finish(self) -> list[tuple]:
        if self.n == 0 or (self.s > 0 and self.s - self.step + self.chunk >= self.n):
            return []
        if self.s >= self.n:
            return []
        return [(self.s, *self._window(self.s, self.n))]


def _trim(text: _Text, start: int, end: int) -> tuple[int, int]:
    piece = text.slice(start, end)
    left = len(piece) - len(piece.lstrip())
    right = len(piece.rstrip())
    return (start + left, start + right) if right > left else (start, start)


def iter_chunks(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str | CharSource],
    chunk_tokens: int,
    overlap: int,
    *,
    window_chars: int = DEFAULT_WINDOW_CHARS,
    start: Position | None = None,
) -> Iterator[Chunk]:
    """The chunks of ``texts`` in order (the spans `chunk_spans` gives), tokenizing at most
    about ``window_chars`` characters at a time. Short strings are tokenized in batches.

    ``start``: continue at a `Position` given by an earlier chunk's ``next``;
    `ResumeError` (raised before the first chunk) when that is not possible.
    """
    check_chunking(chunk_tokens, overlap)
    if window_chars < 64:
        raise InvalidInputError(f"window_chars must be at least 64, got {window_chars}")
    start = start or Position()
    if start.segment > len(texts):
        raise ResumeError(f"segment {start.segment} of {len(texts)}")
    first = _open(tokenizer, texts, start, window_chars) if start.segment < len(texts) else None
    return _iter_chunks(tokenizer, texts, chunk_tokens, overlap, window_chars, start, first)


def _open(tokenizer, texts, start: Position, window: int):
    """A long (or read) text's token stream, prepared now so that resuming fails early."""
    source = texts[start.segment]
    if isinstance(source, str) and len(source) <= window:
        return None  # tokenized whole with its batch, where the position is checked
    text = _Text(source)
    return text, _Tokens(tokenizer, text, window, start.token, start.char, start.same)


def _iter_chunks(tokenizer, texts, chunk_tokens, overlap, window, start: Position, first):
    i = start.segment
    while i < len(texts):
        source = texts[i]
        token0 = start.token if i == start.segment else 0
        if isinstance(source, str) and len(source) <= window:
            # A batch of short strings: one tokenizer call, each one exact.
            j, size = i, 0
            while (
                j < len(texts)
                and isinstance(texts[j], str)
                and len(texts[j]) <= window
                and (j == i or size + len(texts[j]) <= window)
            ):
                size += len(texts[j])
                j += 1
            enc = tokenizer(
                list(texts[i:j]),
                add_special_tokens=False,
                return_offsets_mapping=True,
                verbose=False,
            )
            for k, offsets in enumerate(enc["offset_mapping"]):
                seg = i + k
                t0 = token0 if seg == start.segment else 0
                if t0:
                    if t0 > len(offsets) or (t0 < len(offsets) and offsets[t0][0] != start.char):
                        raise ResumeError(f"segment {seg} does not have token {t0} at {start.char}")
                text = _Text(texts[seg])
                w = _Windower(chunk_tokens, overlap, t0)
                yield from _emit(seg, text, w, w.feed(list(offsets[t0:])) + w.finish())
            i = j
            continue
        if i == start.segment and first is not None:
            text, tokens = first
        else:
            text = _Text(source)
            tokens = _Tokens(tokenizer, text, window)
        w = _Windower(chunk_tokens, overlap, tokens.index)
        while True:
            batch = tokens.next_batch()
            if batch is None:
                break
            yield from _emit(i, text, w, w.feed(batch[1]))
            oldest = w.oldest_char()
            keep = tokens.keep_from if tokens.cur is not None else text.end
            text.forget(min(keep, oldest) if oldest is not None else keep)
        yield from _emit(i, text, w, w.finish())
        i += 1


def _emit(seg: int, text: _Text, w: _Windower, found) -> Iterator[Chunk]:
    for s, start, end, n_tokens, after in found:
        a, b = _trim(text, start, end)
        if after is None:
            nxt = Position(seg + 1, 0, 0)
        else:
            nxt = Position(seg, s + w.step, *after)
        if b > a:
            yield Chunk(seg, Span(a, b, n_tokens), text.slice(a, b), nxt)
