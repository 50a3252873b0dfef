"""Searching an index folder: rebuild its embedder, load its store, answer queries.

Text searches run in ``DEFAULT_TEXT_MODE`` (hybrid: vectors + BM25, fused) unless a mode is
given; an index without a lexical part (built before hybrid search, or with --no-lexical)
answers in dense mode by default and says so in ``Searcher.notice``. An empty or
whitespace-only query is refused (ValueError); a lexical search returns only chunks that share
a word with the query, and ``Searcher.shortfall`` says why a result holds fewer than k."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..index.fusion import default_hybrid, recorded_hybrid, resolve_fusion
from ..index.store import DEFAULT_TEXT_MODE, MODES
from ..text import check_query
from .folder import REBUILD_KEY, IndexFolder, IndexFolderError, embedder_spec, encoder_from_spec


@dataclass
class Result:
    rank: int
    id: str
    score: float
    source: str | None
    chunk: int | None
    text: str
    metadata: dict[str, Any]
    dense_score: float | None = None
    lexical_score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "id": self.id,
            "score": self.score,
            "source": self.source,
            "chunk": self.chunk,
            "start": self.metadata.get("start"),
            "end": self.metadata.get("end"),
            "text": self.text,
            "metadata": self.metadata,
            "dense_score": self.dense_score,
            "lexical_score": self.lexical_score,
        }


class Searcher:
    """An index folder opened for search.

    The embedder is the one recorded in the folder unless ``model``/``adapter`` are given;
    its fingerprint must match the store's (FingerprintMismatchError otherwise, unless
    ``allow_fingerprint_mismatch``). ``dtype`` is the encoder's compute dtype ("auto", "float32",
    "bfloat16", "float16"; None: "auto"); it
    is not part of the fingerprint, so an index built in one dtype is searched in another.

    ``lexical_only``: open the index for lexical (BM25) searches only, without loading the
    embedder (torch and transformers stay unimported: a lexical search starts in well
    under a second); ``encoder`` is then None and the fingerprint is not checked, since
    no query vector is compared with the stored ones.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        model: str | None = None,
        adapter: str | None = None,
        allow_fingerprint_mismatch: bool = False,
        encoder: Any = None,
        dtype: Any = None,
        lexical_only: bool = False,
    ):
        import warnings

        from ..index import DimensionMismatchError, FingerprintMismatchError, IndexStore

        self.folder = IndexFolder(path)
        self.manifest = self.folder.read_manifest()
        if not self.folder.check_store():
            raise IndexFolderError(
                f"index {self.folder.path} has no committed chunks yet; run `llm2vec-retrieval index` on it"
            )
        self.lexical_only = lexical_only
        if lexical_only:
            self.encoder = None
            self.store = IndexStore.load(self.folder.store_path)
            return
        spec = dict(self.manifest["embedder"])
        if model is not None or adapter is not None:
            spec = embedder_spec(
                model if model is not None else spec.get("model"),
                adapter if adapter is not None else spec.get("adapter"),
            )
        self.encoder = encoder if encoder is not None else encoder_from_spec(spec, dtype)
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore"
            )  # a mismatch allowed by the user needs no second warning
            try:
                self.store = IndexStore.load(
                    self.folder.store_path,
                    fingerprint=self.encoder.fingerprint(),
                    allow_fingerprint_mismatch=allow_fingerprint_mismatch,
                )
            except (FingerprintMismatchError, DimensionMismatchError):
                if not self.manifest.get(REBUILD_KEY) or model is not None or adapter is not None:
                    raise
                # the manifest names the new embedder, the store is still the old one
                raise IndexFolderError(
                    f"a --rebuild of index {self.folder.path} was stopped before its first "
                    "commit; run `llm2vec-retrieval index` on it again to finish it"
                ) from None

    @property
    def query_instruction(self) -> str | None:
        """The instruction queries are encoded with (None: opened ``lexical_only`` and none
        recorded in the index)."""
        recorded = self.manifest.get("query_instruction")
        if recorded is not None or self.encoder is None:
            return recorded
        return self.encoder.config.query_instruction

    @property
    def hybrid_default(self) -> dict:
        """``{"fusion", "alpha"}`` hybrid searches use unless told: what the index records
        (set when it was made), else the package default (`index.fusion.DEFAULT_FUSION`)."""
        return recorded_hybrid(self.manifest) or default_hybrid()

    @property
    def default_mode(self) -> str:
        if self.lexical_only:
            return "lexical"
        return DEFAULT_TEXT_MODE if self.store.has_lexical else "dense"

    @property
    def notice(self) -> str | None:
        """A one-line hint when the index cannot use the default mode."""
        if self.store.has_lexical:
            return None
        return (
            f"{self.folder.path} has no lexical (BM25) part, so searches are dense only; run "
            "`llm2vec-retrieval index` on it again to add it (nothing is re-embedded)"
        )

    def check_mode(self, mode: str | None) -> str:
        """The mode to run (None: the default); ValueError for one this index cannot run."""
        mode = self.default_mode if mode is None else mode
        if mode not in MODES:
            raise ValueError(f"unknown search mode {mode!r}; valid modes: {', '.join(MODES)}")
        if self.lexical_only and mode != "lexical":
            raise ValueError(
                f"{self.folder.path} was opened for lexical search only (no embedder loaded), "
                f"so it cannot search in {mode} mode"
            )
        if mode != "dense" and not self.store.has_lexical:
            raise ValueError(
                self.notice.replace(
                    "so searches are dense only", f"so it cannot search in {mode} mode"
                )
            )
        return mode

    def encode_query(self, query: str, instruction: str | None = None):
        return self.encoder.encode_queries(
            [query], instruction=self.query_instruction if instruction is None else instruction
        )[0]

    def search_vector(
        self,
        vector,
        k: int = 5,
        filter: Any = None,
        *,
        text: str | None = None,
        mode: str = "dense",
        fusion: str | None = None,
        alpha: float | None = None,
    ) -> list[Result]:
        """Results for an encoded query (``vector``; None in lexical mode) and its ``text``.
        ``fusion``/``alpha`` None: the index's (`hybrid_default`)."""
        fusion, alpha = resolve_fusion(fusion, alpha, self.hybrid_default)
        hits = self.store.search(
            vector, k=k, filter=filter, text=text, mode=mode, fusion=fusion, alpha=alpha
        )
        return [
            Result(
                rank,
                h.id,
                h.score,
                h.metadata.get("source"),
                h.metadata.get("chunk"),
                h.text or "",
                h.metadata,
                h.dense_score,
                h.lexical_score,
            )
            for rank, h in enumerate(hits, 1)
        ]

    def search(
        self,
        query: str,
        k: int = 5,
        filter: Any = None,
        instruction: str | None = None,
        mode: str | None = None,
        fusion: str | None = None,
        alpha: float | None = None,
    ) -> list[Result]:
        """Results for a query text; ``mode`` None runs ``default_mode``, ``fusion``/``alpha``
        None the index's (`hybrid_default`). Lexical mode encodes nothing. ValueError for an
        empty or whitespace-only query."""
        from ..index import compile_filter

        check_query(query)
        mode = self.check_mode(mode)
        compile_filter(filter)  # a bad filter fails before the query is encoded
        vector = None if mode == "lexical" else self.encode_query(query, instruction)
        return self.search_vector(
            vector, k=k, filter=filter, text=query, mode=mode, fusion=fusion, alpha=alpha
        )

    def shortfall(self, found: int, k: int, mode: str, filtered: bool) -> str | None:
        """Why a search for ``k`` results found only ``found`` (None when it found k): in
        lexical mode only chunks that share a word with the query count; otherwise the
        filter or the index holds fewer chunks."""
        if found >= k:
            return None
        filter_part = " and match the filter" if filtered else ""
        if mode == "lexical":
            if found == 0:
                return (
                    f"0 of {k} requested: no chunk shares a word with the query{filter_part} "
                    "(common words such as 'the' are not searched)"
                )
            verb = "shares" if found == 1 else "share"
            return (
                f"{found} of {k} requested: only {found} chunk{'s' * (found != 1)} {verb} a "
                f"word with the query{filter_part}"
            )
        if filtered:
            what = "chunk matches" if found == 1 else "chunks match"
            return f"{found} of {k} requested: only {found} {what} the filter"
        return f"{found} of {k} requested: the index holds only {len(self.store)} chunks"


def snippet(text: str, width: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3].rstrip() + "..."
