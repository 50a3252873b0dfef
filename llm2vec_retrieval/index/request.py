"""A search's question and answer: `SearchRequest` (validated once) and `SearchHit`.

Every search path (the command line, `Searcher`, the server's ``/search``, the LangChain and
LlamaIndex integrations, ``IndexStore.search``) describes a search as one `SearchRequest`:
it is checked when it is made (k, mode, fusion, alpha, the filter, compiled once here into
`SearchRequest.predicate`, the query text) and passed down as it is; no layer below checks
or compiles it again. What depends on the index searched (the default mode, the fusion the
index records) is filled in by `SearchRequest.resolve`, which checks nothing new.

`SearchHit` is the one result type: the store makes it, `IndexStore.search` numbers it
(``rank``), and `SearchHit.to_dict` is the one dictionary shape the CLI's ``--json`` and the
server's ``/search`` print.

Not here: whether an index can run a mode (it may lack the BM25 part: `Searcher.check_mode`
and the store say so) and the query vector (made by an encoder, checked by the store).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..text import blank_reason
from .filters import Predicate, compile_filter
from .fusion import DEFAULT_RRF_K, FUSIONS, resolve_fusion

#: Search modes: vectors only, BM25 over the texts only, or both fused.
MODES = ("dense", "lexical", "hybrid")
#: What a text search (Searcher, CLI, server, LangChain, LlamaIndex) uses unless told
#: otherwise; ``IndexStore.search`` itself defaults to ``dense``, the one mode that needs no
#: text. Chosen with the fusion (``fusion.DEFAULT_FUSION``) by ``python -m
#: benchmarks.fusion_select`` on out-of-domain sets (docs/hybrid.md).
DEFAULT_TEXT_MODE = "hybrid"
#: Candidates taken from each list before hybrid fusion (at least k).
DEFAULT_HYBRID_CANDIDATES = 100
#: The metadata keys a hit shows as its location (top level of `SearchHit.to_dict`).
LOCATION_KEYS = ("source", "chunk", "start", "end")


class SearchRequestError(ValueError):
    """A search request that cannot run; ``field`` names the part at fault (``k``,
    ``mode``, ``fusion``, ``alpha``, ``rrf_k``, ``candidates``, ``filter``, ``query``,
    ``instruction``); for ``query``, ``reason`` is why it is blank (``"empty"``,
    ``"only whitespace"``)."""

    def __init__(self, field: str, message: str, reason: str | None = None):
        super().__init__(message)
        self.field = field
        self.reason = reason


def _is_int(v: Any) -> bool:
    import numpy as np

    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class SearchRequest:
    """One search, checked when made (`SearchRequestError`, a ValueError, naming the field).

    ``query``: the query text (None for a search by vector alone); a blank one is refused.
    ``mode``: ``dense``, ``lexical`` or ``hybrid`` (None: the searcher's default, see
    `resolve`). ``filter``: None, a dict in the filter language of
    :mod:`llm2vec_retrieval.index.filters`, or ``callable(metadata) -> bool``; compiled once
    into ``predicate``. ``fusion`` / ``alpha``: how hybrid mode fuses (None: the index's,
    else the package default; an ``alpha`` given alone asks for a weighted fusion).
    ``rrf_k``: the reciprocal-rank constant; ``candidates``: how deep each list is read
    before fusing. ``instruction``: the query instruction (None: the index's).
    """

    query: str | None = None
    k: int = 10
    mode: str | None = None
    filter: Any = None
    fusion: str | None = None
    alpha: float | None = None
    rrf_k: float = DEFAULT_RRF_K
    candidates: int = DEFAULT_HYBRID_CANDIDATES
    instruction: str | None = None
    predicate: Predicate | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        if not _is_int(self.k) or self.k < 1:
            raise SearchRequestError("k", f"k must be a positive integer, got {self.k!r}")
        if self.mode is not None and self.mode not in MODES:
            raise SearchRequestError(
                "mode", f"unknown search mode {self.mode!r}; valid modes: {', '.join(MODES)}"
            )
        if self.fusion is not None and self.fusion not in FUSIONS:
            raise SearchRequestError(
                "fusion", f"unknown fusion {self.fusion!r}; valid fusions: {', '.join(FUSIONS)}"
            )
        if self.alpha is not None and not (_is_number(self.alpha) and 0.0 <= self.alpha <= 1.0):
            raise SearchRequestError(
                "alpha", f"alpha must be a number in [0, 1], got {self.alpha!r}"
            )
        if not _is_number(self.rrf_k) or not self.rrf_k >= 0:
            raise SearchRequestError("rrf_k", f"rrf_k must be a number >= 0, got {self.rrf_k!r}")
        if not _is_int(self.candidates) or self.candidates < 1:
            raise SearchRequestError(
                "candidates", f"candidates must be a positive integer, got {self.candidates!r}"
            )
        for name in ("query", "instruction"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise SearchRequestError(
                    name, f"{name} must be a str (one query), got {type(value).__name__}"
                )
        if self.query is not None:
            reason = blank_reason(self.query)
            if reason is not None:  # a search for nothing has no right answer
                raise SearchRequestError(
                    "query", f"the query is {reason}: give the words to search for", reason
                )
        try:
            predicate = compile_filter(self.filter)
        except ValueError as exc:
            raise SearchRequestError("filter", str(exc)) from None
        object.__setattr__(self, "predicate", predicate)

    @property
    def resolved(self) -> bool:
        """Whether mode, fusion and alpha are all set (nothing left to the index)."""
        return None not in (self.mode, self.fusion, self.alpha)

    def resolve(self, default_mode: str, hybrid: Mapping[str, Any] | None = None) -> SearchRequest:
        """This request with what it leaves to the index filled in: ``mode`` None ->
        ``default_mode``; ``fusion`` / ``alpha`` by `fusion.resolve_fusion` from ``hybrid``
        (``{"fusion", "alpha"}`` an index records; None: the package default). The copy is
        not checked again (its filter is not compiled again)."""
        if self.resolved:
            return self
        fusion, alpha = resolve_fusion(self.fusion, self.alpha, dict(hybrid) if hybrid else None)
        out = copy.copy(self)
        object.__setattr__(out, "mode", self.mode or default_mode)
        object.__setattr__(out, "fusion", fusion)
        object.__setattr__(out, "alpha", float(alpha))
        return out

    def fused(self) -> dict[str, Any]:
        """What a hybrid search says it fused with (``{}`` in other modes): ``fusion``, and
        ``alpha`` for a weighted fusion. Call on a resolved request."""
        from .fusion import WEIGHTED_FUSIONS

        if self.mode != "hybrid":
            return {}
        return {
            "fusion": self.fusion,
            **({"alpha": self.alpha} if self.fusion in WEIGHTED_FUSIONS else {}),
        }


@dataclass
class SearchHit:
    """One search result. ``score``: larger is closer (see ``IndexStore.search``);
    ``rank``: its place in the result list, from 1.

    Hybrid hits also carry the two parts: ``dense_score`` and ``lexical_score`` (the
    cosine/ip/l2 score and the BM25 score; None where the document was not among that
    list's candidates)."""

    id: str
    score: float
    text: str | None
    metadata: dict[str, Any] = field(default_factory=dict)
    dense_score: float | None = None
    lexical_score: float | None = None
    rank: int = 0

    @property
    def source(self) -> str | None:
        return self.metadata.get("source")

    @property
    def chunk(self) -> int | None:
        return self.metadata.get("chunk")

    def to_dict(self) -> dict[str, Any]:
        """The one JSON shape of a hit: its location (``source``, ``chunk``, ``start``,
        ``end``: None when the metadata has none) at the top level, the rest of its metadata
        under ``metadata``."""
        return {
            "rank": self.rank,
            "id": self.id,
            "score": self.score,
            **{key: self.metadata.get(key) for key in LOCATION_KEYS},
            "text": self.text or "",
            "metadata": {k: v for k, v in self.metadata.items() if k not in LOCATION_KEYS},
            "dense_score": self.dense_score,
            "lexical_score": self.lexical_score,
        }


def number(hits: list[SearchHit]) -> list[SearchHit]:
    """``hits`` (best first) with their ``rank`` set, 1 to n."""
    for rank, hit in enumerate(hits, 1):
        hit.rank = rank
    return hits


__all__ = [
    "DEFAULT_HYBRID_CANDIDATES",
    "DEFAULT_TEXT_MODE",
    "LOCATION_KEYS",
    "MODES",
    "SearchHit",
    "SearchRequest",
    "SearchRequestError",
    "number",
]
