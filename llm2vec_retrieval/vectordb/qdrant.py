"""Shards -> Qdrant through qdrant-client: local mode (``QdrantClient(path=...)``) or a
server (``pip install 'llm2vec-retrieval[vectordb]'``).

One collection with one unnamed vector (cosine distance), which both
``langchain_qdrant.QdrantVectorStore`` (default ``vector_name=""``) and LlamaIndex's
``QdrantVectorStore`` (it detects the unnamed vector) query. Point ids are UUIDs derived
from our chunk ids (`rows.point_id`: Qdrant takes only integers and UUIDs), so upserts are
idempotent. Each payload carries both frameworks' keys:

- LangChain: ``page_content`` (the text) and ``metadata`` (our metadata dict, plus
  ``chunk_id``: LangChain gives only the point UUID, as ``metadata["_id"]``);
- LlamaIndex: ``_node_content`` (the TextNode JSON, its ``id_`` our chunk id),
  ``_node_type``, ``doc_id``/``document_id``/``ref_doc_id`` (the source file) and the
  metadata keys at the top level (LlamaIndex filters read them there).

The load's manifest is the collection's metadata (``metadata={"llm2vec_retrieval": ...}``).
"""

from __future__ import annotations

from typing import Any

from ..errors import UserError
from .rows import llama_node_json, point_id, ref_doc_id

META_KEY = "llm2vec_retrieval"
INSTALL = "pip install 'llm2vec-retrieval[vectordb]'  (qdrant-client)"
#: Payload keys the two frameworks own; a metadata key of that name stays in ``metadata``
#: only (not copied to the top level).
RESERVED = {
    "page_content",
    "metadata",
    "_node_content",
    "_node_type",
    "doc_id",
    "document_id",
    "ref_doc_id",
}
CHUNK_ID_KEY = "chunk_id"


def _client() -> Any:
    try:
        import qdrant_client
    except ImportError as exc:
        raise ImportError(f"loading into Qdrant needs qdrant-client: {INSTALL}") from exc
    return qdrant_client


def payload(chunk_id: str, text: str, metadata: dict[str, Any]) -> dict[str, Any]:
    """The payload of one point (see the module doc)."""
    ref = ref_doc_id(metadata)
    out = {k: v for k, v in metadata.items() if k not in RESERVED}
    out.update(
        page_content=text,
        metadata={**metadata, CHUNK_ID_KEY: chunk_id},
        _node_content=llama_node_json(chunk_id, text, metadata),
        _node_type="TextNode",
        doc_id=ref,
        document_id=ref,
        ref_doc_id=ref,
    )
    return out


class QdrantSink:
    """Writes shard batches into one Qdrant collection."""

    def __init__(self, location: str, collection: str, dimension: int, remote: bool = False):
        self.location = location
        self.remote = remote
        self.collection = collection
        self.dimension = int(dimension)
        self.client: Any = None

    def __enter__(self) -> QdrantSink:
        qc = _client()
        import os

        if self.remote:
            self.client = qc.QdrantClient(
                url=self.location, api_key=os.environ.get("QDRANT_API_KEY")
            )
        else:
            try:
                self.client = qc.QdrantClient(path=self.location)
            except RuntimeError as exc:  # local mode allows one client per folder
                raise UserError(f"cannot open Qdrant folder {self.location}: {exc}") from exc
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def read_meta(self) -> dict[str, Any] | None:
        if not self.client.collection_exists(self.collection):
            return None
        info = self.client.get_collection(self.collection)
        meta = (info.config.metadata or {}).get(META_KEY)
        if meta is None:
            raise UserError(
                f"Qdrant collection {self.collection} was not written by llm2vec-retrieval; "
                "choose another --collection or pass --recreate to replace it"
            )
        return meta

    def drop(self) -> None:
        if self.client.collection_exists(self.collection):
            self.client.delete_collection(self.collection)

    def create(self, meta: dict[str, Any]) -> None:
        models = _client().models
        if not self.client.collection_exists(self.collection):
            self.client.create_collection(
                self.collection,
                vectors_config=models.VectorParams(
                    size=self.dimension, distance=models.Distance.COSINE
                ),
                metadata={META_KEY: meta},
            )
        else:
            self.client.update_collection(self.collection, metadata={META_KEY: meta})

    def upsert(self, ids: list[str], texts: list[str], metadatas: list[dict], vectors: Any) -> None:
        models = _client().models
        self.client.upsert(
            self.collection,
            points=models.Batch(
                ids=[point_id(i) for i in ids],
                vectors=vectors.tolist(),
                payloads=[payload(i, t, m) for i, t, m in zip(ids, texts, metadatas, strict=True)],
            ),
            wait=True,
        )

    def count(self) -> int:
        return int(self.client.count(self.collection, exact=True).count)
