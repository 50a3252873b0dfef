"""Searching an index folder: rebuild its embedder, load its store, answer queries.

Text searches run in ``DEFAULT_TEXT_MODE`` (hybrid: vectors + BM25, fused) unless a mode is
given; an index without a lexical part (built before hybrid search, or with --no-lexical)
answers in dense mode by default and says so in ``Searcher.notice``. An empty or
whitespace-only query is refused (ValueError); a lexical search returns only chunks that share
a word with the query, and ``Searcher.shortfall`` says why a result holds fewer than k."""

from __future__ import annotations

import os
from typing import Any

from ..index.fusion import default_hybrid, recorded_hybrid
from ..index.request import DEFAULT_TEXT_MODE, SearchHit, SearchRequest
from .folder import REBUILD_KEY, IndexFolder, IndexFolderError, embedder_spec, encoder_from_spec


def search_embedder(
    manifest: dict[str, Any], model: str | None = None, adapter: str | None = None
) -> dict[str, Any]:
    """The embedder spec (`folder.embedder_spec`) a search of an index uses: the one its
    ``manifest`` records, with ``model`` / ``adapter`` in place of the recorded ones."""
    spec = dict(manifest["embedder"])
    if model is None and adapter is None:
        return spec
    return embedder_spec(
        model if model is not None else spec.get("model"),
        adapter if adapter is not None else spec.get("adapter"),
    )


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
        manifest: dict[str, Any] | None = None,
    ):
        import warnings

        from ..index import DimensionMismatchError, FingerprintMismatchError, IndexStore

        self.folder = IndexFolder(path)
        # read here unless the caller read it already (the CLI, before loading anything)
        self.manifest = manifest if manifest is not None else self.folder.read_manifest()
        if not self.folder.check_store():
            raise IndexFolderError(
                f"index {self.folder.path} has no committed chunks yet; run `llm2vec-retrieval index` on it"
            )
        self.lexical_only = lexical_only
        if lexical_only:
            self.encoder = None
            self.store = IndexStore.load(self.folder.store_path)
            return
        self.encoder = (
            encoder
            if encoder is not None
            else encoder_from_spec(search_embedder(self.manifest, model, adapter), dtype)
        )
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
        return None if self.store.has_lexical else self._no_lexical_notice()

    def _no_lexical_notice(self) -> str:
        return (
            f"{self.folder.path} has no lexical (BM25) part, so searches are dense only; run "
            "`llm2vec-retrieval index` on it again to add it (nothing is re-embedded)"
        )

    def check_mode(self, mode: str | None) -> str:
        """The mode to run (None: the default); ValueError for one this index cannot run.
        (Whether ``mode`` is a mode at all is `SearchRequest`'s check.)"""
        mode = self.default_mode if mode is None else mode
        if self.lexical_only and mode != "lexical":
            raise ValueError(
                f"{self.folder.path} was opened for lexical search only (no embedder loaded), "
                f"so it cannot search in {mode} mode"
            )
        if mode != "dense" and not self.store.has_lexical:
            raise ValueError(
                self._no_lexical_notice().replace(
                    "so searches are dense only", f"so it cannot search in {mode} mode"
                )
            )
        return mode

    def prepare(self, request: SearchRequest) -> SearchRequest:
        """``request`` with what it leaves to this index filled in: the mode (`check_mode`:
        ValueError for one this index cannot run) and the fusion (`hybrid_default`)."""
        return request.resolve(self.check_mode(request.mode), self.hybrid_default)

    def encode_query(self, query: str, instruction: str | None = None):
        """The query's vector as the store takes it: a cosine store normalizes it (the one
        place a query vector is normalized), so the encoder leaves it raw there."""
        if self.encoder is None:
            raise ValueError(
                f"{self.folder.path} was opened for lexical search only (no embedder loaded), "
                "so it cannot encode a query"
            )
        return self.encoder.encode_queries(
            [query],
            instruction=self.query_instruction if instruction is None else instruction,
            normalize=False if self.store.metric == "cosine" else None,
        )[0]

    def search_vector(self, vector: Any, request: SearchRequest) -> list[SearchHit]:
        """Hits for a prepared request (`prepare`) and its encoded query (``vector``, from
        `encode_query`; None in lexical mode)."""
        return self.store.search(vector, request=request)

    def search(
        self,
        query: str | SearchRequest,
        k: int = 5,
        filter: Any = None,
        instruction: str | None = None,
        mode: str | None = None,
        fusion: str | None = None,
        alpha: float | None = None,
    ) -> list[SearchHit]:
        """Hits for a query text, or for a `SearchRequest` (then the other arguments are left
        out); ``mode`` None runs ``default_mode``, ``fusion``/``alpha`` None the index's
        (`hybrid_default`). Lexical mode encodes nothing. ValueError (`SearchRequestError`)
        for an empty or whitespace-only query or a bad k, mode, fusion, alpha or filter, before
        anything is encoded."""
        if isinstance(query, SearchRequest):
            request = query
        else:
            request = SearchRequest(query, k, mode, filter, fusion, alpha, instruction=instruction)
        text = request.query
        if text is None:
            raise ValueError("Searcher.search needs the query text (request.query)")
        request = self.prepare(request)
        vector = None if request.mode == "lexical" else self.encode_query(text, request.instruction)
        return self.search_vector(vector, request)

    def shortfall(self, found: int, request: SearchRequest) -> str | None:
        """Why a prepared request for ``k`` results found only ``found`` (None when it found
        k): in lexical mode only chunks that share a word with the query count; otherwise
        the filter or the index holds fewer chunks."""
        k, mode, filtered = request.k, request.mode, request.filter is not None
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
