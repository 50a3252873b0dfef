"""Searching an index folder: rebuild its embedder, load its store, answer queries."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from .folder import IndexFolder, IndexFolderError, embedder_spec, load_encoder


@dataclass
class Result:
    rank: int
    id: str
    score: float
    source: str | None
    chunk: int | None
    text: str
    metadata: dict[str, Any]

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
        }


class Searcher:
    """An index folder opened for search.

    The embedder is the one recorded in the folder unless ``model``/``adapter`` are given;
    its fingerprint must match the store's (FingerprintMismatchError otherwise, unless
    ``allow_mismatch``).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        model: str | None = None,
        adapter: str | None = None,
        allow_mismatch: bool = False,
        encoder: Any = None,
    ):
        import warnings

        from ..index import IndexStore

        self.folder = IndexFolder(path)
        self.manifest = self.folder.read_manifest()
        if not self.folder.has_store():
            raise IndexFolderError(f"index {self.folder.path} has no committed chunks yet; run `llm2vec-retrieval index` on it")
        spec = dict(self.manifest["embedder"])
        if model is not None or adapter is not None:
            spec = embedder_spec(model if model is not None else spec.get("model"),
                                 adapter if adapter is not None else spec.get("adapter"))
        self.encoder = encoder if encoder is not None else load_encoder(spec)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a mismatch allowed by the user needs no second warning
            self.store = IndexStore.load(self.folder.store_path, fingerprint=self.encoder.fingerprint(),
                                         allow_fingerprint_mismatch=allow_mismatch)

    @property
    def query_instruction(self) -> str:
        recorded = self.manifest.get("query_instruction")
        return recorded if recorded is not None else self.encoder.config.query_instruction

    def encode_query(self, query: str, instruction: str | None = None):
        return self.encoder.encode_queries([query], instruction=self.query_instruction if instruction is None else instruction)[0]

    def search_vector(self, vector, k: int = 5, filter: Any = None) -> list[Result]:
        hits = self.store.search(vector, k=k, filter=filter)
        return [
            Result(rank, h.id, h.score, h.metadata.get("source"), h.metadata.get("chunk"), h.text or "", h.metadata)
            for rank, h in enumerate(hits, 1)
        ]

    def search(self, query: str, k: int = 5, filter: Any = None, instruction: str | None = None) -> list[Result]:
        from ..index import compile_filter

        compile_filter(filter)  # a bad filter fails before the query is encoded
        return self.search_vector(self.encode_query(query, instruction), k=k, filter=filter)


def snippet(text: str, width: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3].rstrip() + "..."
