"""The lexical half of a hybrid index: BM25 over the stored texts, keyed by internal ids.

Tokenization and scoring are bm25s's (Lucene BM25, k1=1.5, b=0.75, English stopwords,
Snowball English stemmer from PyStemmer): the settings of the BM25 baseline in
``benchmarks/quality.py``, so a store searched in ``lexical`` mode scores exactly as that
baseline does (nDCG@10 0.686 on SciFact).

What is kept: each document's stemmed tokens as ids into one growing vocabulary (the
source of truth, cheap to update), and bm25s's score matrix built from them. BM25 scores
depend on the whole corpus (document frequencies, average length), so an add or delete
marks the matrix stale and the next search rebuilds it from the kept tokens (no
re-tokenization). A saved index stores both, so loading needs no rebuild.

Not here: fusion with the vector scores (``fusion.py``) and the store's locking (the
store calls in under its lock).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..text import repair_surrogates

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


class LexicalIndex:
    """BM25 over documents keyed by int64 internal ids (the store's)."""

    def __init__(self, settings: dict[str, Any] | None = None):
        self.settings = dict(settings or SETTINGS)
        if self.settings.get("library") != "bm25s" or self.settings.get("method") != "lucene":
            raise ValueError(f"unsupported lexical settings {self.settings!r}")
        self.tokenizer = Tokenizer(self.settings)
        self._vocab: dict[str, int] = {}
        self._tokens: dict[int, np.ndarray] = {}  # iid -> int32 token ids, insertion order
        self._retriever: Any = None
        self._row_iids = np.empty(0, np.int64)  # score-matrix row -> iid
        self._row_of: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._tokens)

    # -- mutation ---------------------------------------------------------------------
    def _ids(self, tokens: list[str]) -> np.ndarray:
        vocab = self._vocab
        return np.fromiter((vocab.setdefault(t, len(vocab)) for t in tokens), np.int32, len(tokens))

    def tokenize(self, texts: Sequence[str | None]) -> list[list[str]]:
        """Tokens of each text; call before changing anything, then ``add`` them."""
        return self.tokenizer(list(texts))

    def add(self, iids: Sequence[int], tokens: Sequence[list[str]]) -> None:
        """Index tokenized texts under new iids (the store removes replaced iids itself)."""
        for iid, toks in zip(iids, tokens, strict=True):
            self._tokens[int(iid)] = self._ids(toks)
        self._retriever = None

    def remove(self, iids: Sequence[int]) -> None:
        for iid in iids:
            self._tokens.pop(int(iid), None)
        self._retriever = None

    # -- scoring ----------------------------------------------------------------------
    def _build(self) -> None:
        bm25s, _ = _bm25s()
        retriever = bm25s.BM25(method="lucene", k1=self.settings["k1"], b=self.settings["b"])
        # rows in iid order: a tie is broken the same way before and after a reload
        self._row_iids = np.sort(np.fromiter(self._tokens, np.int64, len(self._tokens)))
        retriever.scores = None
        if any(len(t) for t in self._tokens.values()):  # no tokens at all: nothing can score
            # every vocabulary id is a column (ids of deleted documents have df 0 and never score)
            retriever.scores = retriever.build_index_from_ids(
                list(range(len(self._vocab))),
                [self._tokens[i].tolist() for i in self._row_iids.tolist()],
                show_progress=False,
            )
        self._retriever = retriever
        self._row_of = {int(i): r for r, i in enumerate(self._row_iids.tolist())}

    def _ensure(self) -> None:
        if self._retriever is None:
            self._build()

    def query_ids(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Known token ids of each query text (unknown words cannot score and are dropped)."""
        vocab = self._vocab
        return [
            np.asarray([vocab[t] for t in toks if t in vocab], np.int32)
            for toks in self.tokenizer(list(texts))
        ]

    def scores(self, query_ids: np.ndarray) -> np.ndarray:
        """BM25 score of every document (in ``row_iids`` order) for one tokenized query."""
        self._ensure()
        n = len(self._row_iids)
        if n == 0 or len(query_ids) == 0 or self._retriever.scores is None:
            return np.zeros(n, np.float32)
        return np.asarray(self._retriever.get_scores_from_ids(query_ids), np.float32)

    @property
    def row_iids(self) -> np.ndarray:
        self._ensure()
        return self._row_iids

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
        self._ensure()
        rows_allowed = None
        if allowed is not None:
            rows_allowed = np.fromiter(
                (self._row_of[int(i)] for i in allowed), np.int64, len(allowed)
            )
            rows_allowed.sort()
        out_s = np.full((len(texts), k), -np.inf, np.float32)
        out_i = np.full((len(texts), k), -1, np.int64)
        for r, qids in enumerate(self.query_ids(texts)):
            s = self.scores(qids)
            rows = np.arange(len(s)) if rows_allowed is None else rows_allowed
            s = s[rows]
            hit = np.flatnonzero(s > 0)
            if len(hit) > k:
                hit = hit[np.argpartition(-s[hit], k - 1)[:k]]
            hit = hit[np.lexsort((hit, -s[hit]))]  # best first; ties by row, i.e. by iid
            if not positive_only and len(hit) < k:  # then the non-matching ones, by iid
                hit = np.concatenate([hit, np.flatnonzero(s <= 0)[: k - len(hit)]])
            out_s[r, : len(hit)] = s[hit]
            out_i[r, : len(hit)] = self._row_iids[rows[hit]]
        return out_s, out_i

    # -- persistence --------------------------------------------------------------------
    def snapshot(self) -> tuple[list[str], dict[str, np.ndarray]]:
        """(vocabulary in id order, arrays): ``iids`` (int64, ascending), each one's
        ``tokens`` (int32, concatenated) and ``offsets`` (int64, len(iids) + 1), and
        bm25s's score matrix (``data``, ``indices``, ``indptr``; rows in ``iids`` order)."""
        self._ensure()
        iids = self._row_iids
        parts = [self._tokens[int(i)] for i in iids]
        offsets = np.zeros(len(parts) + 1, np.int64)
        np.cumsum([len(p) for p in parts], out=offsets[1:])
        tokens = np.concatenate(parts) if parts else np.empty(0, np.int32)
        arrays = {"iids": iids, "tokens": tokens.astype(np.int32, copy=False), "offsets": offsets}
        sc = self._retriever.scores
        if sc is not None:
            arrays.update(
                data=np.asarray(sc["data"]),
                indices=np.asarray(sc["indices"]),
                indptr=np.asarray(sc["indptr"]),
            )
        vocab = [""] * len(self._vocab)
        for t, i in self._vocab.items():
            vocab[i] = t
        return vocab, arrays

    @classmethod
    def restore(
        cls,
        settings: dict[str, Any],
        vocab: list[str],
        arrays: dict[str, np.ndarray],
        live: np.ndarray,
    ) -> LexicalIndex:
        """Inverse of ``snapshot``; ``live``: the store's iids, which the saved ones must
        equal. ValueError on inconsistent data."""
        lex = cls(settings)
        iids = arrays["iids"]
        if iids.shape != (len(live),) or not np.array_equal(iids, np.sort(live)):
            raise ValueError("its documents are not the docstore's")
        if len(set(vocab)) != len(vocab):
            raise ValueError("duplicate tokens in the vocabulary")
        lex._vocab = {t: i for i, t in enumerate(vocab)}
        tokens, offsets = arrays["tokens"], arrays["offsets"]
        if (
            offsets.shape != (len(iids) + 1,)
            or offsets[0] != 0
            or offsets[-1] != len(tokens)
            or (np.diff(offsets) < 0).any()
        ):
            raise ValueError("token offsets do not match the documents")
        if len(tokens) and (tokens.min() < 0 or tokens.max() >= len(vocab)):
            raise ValueError("token ids out of the vocabulary")
        lex._tokens = {
            int(i): tokens[offsets[j] : offsets[j + 1]] for j, i in enumerate(iids.tolist())
        }
        if "data" in arrays and len(iids):
            bm25s, _ = _bm25s()
            indptr = arrays["indptr"]
            if (
                indptr.shape != (len(vocab) + 1,)
                or indptr[-1] != len(arrays["data"])
                or len(arrays["indices"]) != len(arrays["data"])
            ):
                raise ValueError("the BM25 score matrix does not match the vocabulary")
            if len(arrays["indices"]) and (
                arrays["indices"].min() < 0 or arrays["indices"].max() >= len(iids)
            ):
                raise ValueError("the BM25 score matrix does not match the documents")
            retriever = bm25s.BM25(method="lucene", k1=settings["k1"], b=settings["b"])
            retriever.scores = {
                "data": arrays["data"],
                "indices": arrays["indices"],
                "indptr": indptr,
                "num_docs": len(iids),
            }
            retriever.nonoccurrence_array = (
                None  # Lucene BM25 has none (as build_index_from_ids sets)
            )
            lex._retriever = retriever
            lex._row_iids = np.asarray(iids, np.int64)
            lex._row_of = {int(i): r for r, i in enumerate(lex._row_iids.tolist())}
        return lex
