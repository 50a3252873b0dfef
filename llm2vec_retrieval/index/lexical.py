"""The lexical half of a hybrid index: BM25 over the stored texts, keyed by internal ids.

Tokenization and scoring are bm25s's (Lucene BM25, k1=1.5, b=0.75, English stopwords,
Snowball English stemmer from PyStemmer): the settings of the BM25 baseline in
``benchmarks/quality.py``, so a store searched in ``lexical`` mode scores exactly as that
baseline does (nDCG@10 0.686 on SciFact).

Segments, as Lucene and Tantivy keep them: the documents of each commit are one immutable
segment (``segments.Segment``) holding their stemmed tokens as ids into one growing
vocabulary, and the postings built from them (term -> rows and term frequencies).
Deleting marks a document (``dead``); merging a run of segments rewrites it without the
marked ones. No score is precomputed: BM25 depends on the whole corpus (document
frequencies, average length), so the index keeps those statistics over the live
documents of every segment, updates them on each add and delete, and scores a query
from the postings of its terms with them. Each score is computed as bm25s computes it
(the idf in float32, the term-frequency part in float64, their product rounded to
float32, the terms summed in float32 in query order), so scores equal those of a
single bm25s index built from the live documents.

bm25s's own ``save``/``load`` is not used: it writes the score matrix (which a segment
cannot keep, the statistics change with every commit) and the vocabulary as JSON
beside it, and it cannot store segments or deletion marks; the arrays here are plain
numbers in ``segments``' array files (no pickle).

Segment arrays: ``iids`` (int64, ascending), ``lengths`` (int32, tokens per document),
``tokens`` (int32, each document's token ids, concatenated) with ``tok_offsets``
(int64, rows + 1), and the postings ``post_ptr`` (int64, one more than the vocabulary
had when the segment was made), ``post_rows`` (int32) and ``post_tf`` (int32).

Not here: fusion with the vector scores (``fusion.py``) and the store's locking (the
store calls in under its lock).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..text import repair_surrogates
from .segments import Segment, locate

LEXICAL_MISSING_MESSAGE = (
    "the lexical (BM25) index needs bm25s and PyStemmer: pip install 'llm2vec-retrieval[faiss]'"
)

#: The BM25 settings (those of the benchmark's BM25 baseline). Saved with the index.
SETTINGS: dict[str, Any] = {
    "library": "bm25s",
    "method": "lucene",
    "k1": 1.5,
    "b": 0.75,
    "stopwords": "en",
    "stemmer": "english",
    "lowercase": True,
}
SEGMENT_ARRAYS = ("iids", "lengths", "tokens", "tok_offsets", "post_ptr", "post_rows", "post_tf")


def _bm25s():
    try:
        import bm25s
        import Stemmer
    except ImportError as exc:
        raise ImportError(LEXICAL_MISSING_MESSAGE) from exc
    return bm25s, Stemmer


class Tokenizer:
    """Texts -> lists of stemmed tokens (bm25s's regex, stopwords and stemming)."""

    def __init__(self, settings: dict[str, Any] | None = None):
        bm25s, Stemmer = _bm25s()
        self.settings = dict(settings or SETTINGS)
        self._tokenize = bm25s.tokenize
        self._stemmer = (
            Stemmer.Stemmer(self.settings["stemmer"]) if self.settings["stemmer"] else None
        )

    def __call__(self, texts: Sequence[str | None]) -> list[list[str]]:
        if not texts:
            return []
        # lone surrogates (cut emoji in scraped text) cannot reach the C stemmer
        clean = ["" if not t else repair_surrogates(t) for t in texts]
        # bm25s.tokenize stems each batch's unique words once, so batches are cheap
        return self._tokenize(
            clean,
            lower=self.settings["lowercase"],
            stopwords=self.settings["stopwords"],
            stemmer=self._stemmer,
            return_ids=False,
            show_progress=False,
        )


def make_segment(name: str, iids: np.ndarray, docs: Sequence[np.ndarray], n_vocab: int) -> Segment:
    """A segment of documents (token-id arrays) under ascending ``iids``."""
    n = len(iids)
    lengths = np.fromiter((len(d) for d in docs), np.int32, n)
    tok_offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=tok_offsets[1:])
    tokens = np.concatenate(docs).astype(np.int32) if n else np.empty(0, np.int32)
    # postings: one (term, row) pair per distinct term of each document, with its count
    rows = np.repeat(np.arange(n, dtype=np.int64), lengths)
    key = tokens.astype(np.int64) * max(n, 1) + rows
    uniq, tf = np.unique(key, return_counts=True)
    terms = uniq // max(n, 1)
    post_ptr = np.zeros(n_vocab + 1, np.int64)
    np.cumsum(np.bincount(terms, minlength=n_vocab), out=post_ptr[1:])
    return Segment(
        name,
        {
            "iids": np.asarray(iids, np.int64),
            "lengths": lengths,
            "tokens": tokens,
            "tok_offsets": tok_offsets,
            "post_ptr": post_ptr,
            "post_rows": (uniq % max(n, 1)).astype(np.int32),
            "post_tf": tf.astype(np.int32),
        },
    )


def check_segment(seg: Segment, n_vocab: int) -> str | None:
    """What is structurally wrong with a loaded segment (cheap checks), or None."""
    a = seg.arrays
    for name in SEGMENT_ARRAYS:
        if name not in a or a[name].ndim != 1 or a[name].dtype.kind != "i":
            return f"array {name!r} missing or not integers"
    n = len(a["iids"])
    if n and (np.diff(a["iids"]) <= 0).any():
        return "internal ids not ascending"
    o, p = a["tok_offsets"], a["post_ptr"]
    if len(a["lengths"]) != n or len(o) != n + 1 or o[0] != 0 or o[-1] != len(a["tokens"]):
        return "token offsets do not match the documents"
    if not np.array_equal(np.diff(o), a["lengths"]):
        return "token offsets do not match the lengths"
    if not 1 <= len(p) <= n_vocab + 1 or p[0] != 0 or p[-1] != len(a["post_rows"]):
        return "postings do not match the vocabulary"
    if len(a["post_tf"]) != len(a["post_rows"]) or (np.diff(p) < 0).any():
        return "postings are inconsistent"
    return None


class LexicalIndex:
    """BM25 over documents keyed by int64 internal ids (the store's)."""

    def __init__(self, settings: dict[str, Any] | None = None):
        self.settings = dict(settings or SETTINGS)
        if self.settings.get("library") != "bm25s" or self.settings.get("method") != "lucene":
            raise ValueError(f"unsupported lexical settings {self.settings!r}")
        self.tokenizer = Tokenizer(self.settings)
        self.k1, self.b = float(self.settings["k1"]), float(self.settings["b"])
        self.segments: list[Segment] = []
        self.dead: set[int] = set()  # iids of segment documents deleted since
        self._pending: dict[int, np.ndarray] = {}  # iid -> token ids, added since the last seal
        #: the vocabulary files, in id order: ``{"name", "count", "info", "source"}`` (as
        #: `Segment`'s); a save writes the tokens added since the last one as a new part
        self.vocab_parts: list[dict[str, Any]] = []
        self._terms: list[str] = []
        self._vocab: dict[str, int] | None = {}
        self._df = np.zeros(0, np.int64)  # live documents holding each term
        self._n = 0  # live documents
        self._total = 0  # their tokens
        self._cache: dict[str, Any] | None = None  # rows, iids, dead mask, pending segment

    def __len__(self) -> int:
        return self._n

    # -- vocabulary ---------------------------------------------------------------------
    @property
    def vocab(self) -> dict[str, int]:
        if self._vocab is None:
            self._vocab = {t: i for i, t in enumerate(self._terms)}
        return self._vocab

    @property
    def n_terms(self) -> int:
        return len(self._terms)

    @property
    def terms(self) -> list[str]:
        return self._terms

    def _ids(self, tokens: list[str]) -> np.ndarray:
        vocab, terms = self.vocab, self._terms
        out = np.empty(len(tokens), np.int32)
        for k, t in enumerate(tokens):
            i = vocab.get(t)
            if i is None:
                i = vocab[t] = len(terms)
                terms.append(t)
            out[k] = i
        return out

    # -- mutation -----------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str | None]) -> list[list[str]]:
        """Tokens of each text; call before changing anything, then ``add`` them."""
        return self.tokenizer(list(texts))

    def _count(self, docs: Sequence[np.ndarray], sign: int) -> None:
        if len(self._df) < len(self._terms):
            self._df = np.concatenate(
                [self._df, np.zeros(max(len(self._terms) - len(self._df), 1024), np.int64)]
            )
        for d in docs:
            self._df[np.unique(d)] += sign
            self._total += sign * len(d)
        self._n += sign * len(docs)
        self._cache = None

    def add(self, iids: Sequence[int], tokens: Sequence[list[str]]) -> None:
        """Index tokenized texts under new iids (the store removes replaced iids itself)."""
        docs = [self._ids(t) for t in tokens]
        for iid, d in zip(iids, docs, strict=True):
            self._pending[int(iid)] = d
        self._count(docs, +1)

    def remove(self, iids: Sequence[int]) -> None:
        gone = [d for d in (self._pending.pop(int(i), None) for i in iids) if d is not None]
        rest = np.asarray([int(i) for i in iids if int(i) not in self.dead], np.int64)
        segs, rows = locate(self.segments, rest)
        for j, r, iid in zip(segs.tolist(), rows.tolist(), rest.tolist(), strict=True):
            if j >= 0 and iid not in self.dead:
                a = self.segments[j].arrays
                gone.append(a["tokens"][a["tok_offsets"][r] : a["tok_offsets"][r + 1]])
                self.dead.add(iid)
        self._count(gone, -1)

    # -- scoring ------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        """Rows over every segment then the pending documents (in iid order): their iids,
        which are deleted, and the pending documents as a segment (rebuilt after changes)."""
        if self._cache is None:
            parts = list(self.segments)
            if self._pending:
                piids = np.fromiter(sorted(self._pending), np.int64, len(self._pending))
                parts.append(
                    make_segment(
                        "", piids, [self._pending[i] for i in piids.tolist()], len(self._terms)
                    )
                )
            iids = np.concatenate([s.iids for s in parts]) if parts else np.empty(0, np.int64)
            dead = np.zeros(len(iids), bool)
            if self.dead:
                dead = np.isin(iids, np.fromiter(self.dead, np.int64, len(self.dead)))
            self._cache = {"parts": parts, "iids": iids, "dead": dead}
        return self._cache

    def query_ids(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Known token ids of each query text (unknown words cannot score and are dropped)."""
        vocab = self.vocab
        return [
            np.asarray([vocab[t] for t in toks if t in vocab], np.int32)
            for toks in self.tokenizer(list(texts))
        ]

    def scores(self, query_ids: np.ndarray) -> np.ndarray:
        """BM25 score of every row (see `_state`; deleted rows score 0) for one query."""
        st = self._state()
        out = np.zeros(len(st["iids"]), np.float32)
        if self._n == 0 or len(query_ids) == 0:
            return out
        n, k1, b = self._n, self.k1, self.b
        avgdl = np.float64(self._total) / n  # as numpy's mean of the lengths
        qids = np.asarray(query_ids, np.int64)
        idf = [  # bm25s's Lucene idf, kept in float32 as its idf array is
            np.float32(math.log(1 + (n - int(df) + 0.5) / (int(df) + 0.5)))
            for df in self._df[qids].tolist()
        ]
        base = 0
        for seg in st["parts"]:
            a = seg.arrays
            ptr = a["post_ptr"]
            for t, w in zip(qids.tolist(), idf, strict=True):
                if t + 1 >= len(ptr) or ptr[t] == ptr[t + 1]:
                    continue
                rows = a["post_rows"][ptr[t] : ptr[t + 1]]
                tf = a["post_tf"][ptr[t] : ptr[t + 1]].astype(np.float32)
                dl = a["lengths"][rows]
                tfc = tf / (k1 * ((1 - b) + b * dl / avgdl) + tf)  # float64, as bm25s
                out[base + rows] += (np.float64(w) * tfc).astype(np.float32)
            base += len(seg)
        out[st["dead"]] = 0
        return out

    def top_k(
        self,
        texts: Sequence[str],
        k: int,
        allowed: np.ndarray | None = None,
        positive_only: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, iids), each (len(texts), k), best first; -1 / -inf pad the rows.

        ``allowed``: iids that may be returned (a pre-filter), None for all. Documents
        scoring 0 share no term with the query: they come after every scoring one (in
        the order they were added, an upsert counting as new), or not at all with
        ``positive_only``.
        """
        s, i, _ = self.top_k_and_scores(texts, k, allowed, positive_only)
        return s, i

    def top_k_and_scores(
        self,
        texts: Sequence[str],
        k: int,
        allowed: np.ndarray | None = None,
        positive_only: bool = False,
        also: Sequence[np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """`top_k`, plus the BM25 score of each iid in ``also[r]`` for query r (0 for an
        iid that shares no term with it, is deleted or unknown), from the same scoring
        pass: what hybrid search needs to score the dense side's candidates lexically."""
        st = self._state()
        all_iids, live = st["iids"], ~st["dead"]
        rows = np.flatnonzero(live)
        if allowed is not None:
            rows = rows[np.isin(all_iids[rows], np.asarray(allowed, np.int64))]
        out_s = np.full((len(texts), k), -np.inf, np.float32)
        out_i = np.full((len(texts), k), -1, np.int64)
        extra: list[np.ndarray] = []
        for r, qids in enumerate(self.query_ids(texts)):
            every = self.scores(qids)
            if also is not None:
                extra.append(self._scores_of(every, np.asarray(also[r], np.int64)))
            s = every[rows]
            hit = np.flatnonzero(s > 0)
            if len(hit) > k:
                hit = hit[np.argpartition(-s[hit], k - 1)[:k]]
            hit = hit[np.lexsort((hit, -s[hit]))]  # best first; ties by row, i.e. by iid
            if not positive_only and len(hit) < k:  # then the non-matching ones, by iid
                hit = np.concatenate([hit, np.flatnonzero(s <= 0)[: k - len(hit)]])
            out_s[r, : len(hit)] = s[hit]
            out_i[r, : len(hit)] = all_iids[rows[hit]]
        return out_s, out_i, extra

    def _scores_of(self, every: np.ndarray, iids: np.ndarray) -> np.ndarray:
        """The entries of a `scores` vector for the given iids (0 where unknown)."""
        st = self._state()
        if "order" not in st:
            st["order"] = np.argsort(st["iids"], kind="stable")
        order, all_iids = st["order"], st["iids"]
        out = np.zeros(len(iids), np.float32)
        if not len(all_iids) or not len(iids):
            return out
        pos = np.minimum(np.searchsorted(all_iids, iids, sorter=order), len(order) - 1)
        rows = order[pos]
        found = all_iids[rows] == iids
        out[found] = every[rows[found]]
        return out

    # -- segments -----------------------------------------------------------------------
    def seal(self, name: str) -> None:
        """Turn the documents added since the last seal into segment ``name``."""
        iids = np.fromiter(sorted(self._pending), np.int64, len(self._pending))
        docs = [self._pending[i] for i in iids.tolist()]
        self.segments.append(make_segment(name, iids, docs, len(self._terms)))
        self._pending.clear()
        self._cache = None

    def merge(self, start: int, end: int, name: str | None) -> None:
        """Replace segments [start, end) by one named ``name`` without their deleted
        documents (None: by nothing, when the store has no document of them left)."""
        run = self.segments[start:end]
        dead = np.fromiter(self.dead, np.int64, len(self.dead))
        iids, docs = [], []
        for seg in run:
            a = seg.arrays
            gone = np.isin(seg.iids, dead)
            self.dead.difference_update(seg.iids[gone].tolist())
            o = a["tok_offsets"]
            for r in np.flatnonzero(~gone).tolist():
                iids.append(int(seg.iids[r]))
                docs.append(a["tokens"][o[r] : o[r + 1]])
        merged = (
            []
            if name is None
            else [make_segment(name, np.asarray(iids, np.int64), docs, len(self._terms))]
        )
        self.segments[start:end] = merged
        self._cache = None

    @classmethod
    def opened(
        cls,
        settings: dict[str, Any],
        terms: list[str],
        vocab_parts: list[dict[str, Any]],
        segments: list[Segment],
        dead: set[int],
    ) -> LexicalIndex:
        """A lexical index over loaded segments and the vocabulary (``terms`` in id order,
        read from ``vocab_parts``); ``dead``: the store's deleted iids (those the segments
        hold are marked). The statistics are computed from the postings. ValueError on data
        that does not fit together."""
        lex = cls(settings)
        if sum(p["count"] for p in vocab_parts) != len(terms):
            raise ValueError("the vocabulary parts do not add up")
        lex.vocab_parts = vocab_parts
        lex._terms = terms
        lex._vocab = None  # built on first use
        lex.segments = segments
        nv = len(lex._terms)
        df = np.zeros(nv, np.int64)
        total = n = 0
        for seg in segments:
            msg = check_segment(seg, nv)
            if msg:
                raise ValueError(f"segment {seg.name}: {msg}")
            p = seg.arrays["post_ptr"]
            df[: len(p) - 1] += np.diff(p)
            total += int(seg.arrays["tok_offsets"][-1])
            n += len(seg)
        lex._df, lex._n, lex._total = df, n, total
        marked = np.fromiter(dead, np.int64, len(dead))
        segs, rows = locate(segments, marked)
        gone = []
        for j, r, iid in zip(segs.tolist(), rows.tolist(), marked.tolist(), strict=True):
            if j >= 0:
                a = segments[j].arrays
                gone.append(a["tokens"][a["tok_offsets"][r] : a["tok_offsets"][r + 1]])
                lex.dead.add(iid)
        lex._count(gone, -1)
        return lex

    @classmethod
    def from_tokens(
        cls,
        settings: dict[str, Any],
        terms: list[str],
        iids: np.ndarray,
        tokens: np.ndarray,
        offsets: np.ndarray,
    ) -> LexicalIndex:
        """An index holding documents as token ids (those of an older save: they become
        pending, sealed into a segment by the next save). ValueError on inconsistent data."""
        lex = cls(settings)
        if len(set(terms)) != len(terms):
            raise ValueError("duplicate tokens in the vocabulary")
        if (
            offsets.shape != (len(iids) + 1,)
            or offsets[0] != 0
            or offsets[-1] != len(tokens)
            or (np.diff(offsets) < 0).any()
        ):
            raise ValueError("token offsets do not match the documents")
        if len(tokens) and (tokens.min() < 0 or tokens.max() >= len(terms)):
            raise ValueError("token ids out of the vocabulary")
        lex._terms = list(terms)
        lex._vocab = None
        docs = [tokens[offsets[j] : offsets[j + 1]].astype(np.int32) for j in range(len(iids))]
        lex._pending = dict(zip(np.asarray(iids).tolist(), docs, strict=True))
        lex._count(docs, +1)
        return lex
