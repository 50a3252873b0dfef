"""How one shard row is laid out for the LangChain and LlamaIndex store classes, shared by
the database writers (pure Python: no database client is imported here)."""

from __future__ import annotations

import json
import uuid
from typing import Any

#: uuid5 namespace of Qdrant point ids (Qdrant accepts only unsigned integers and UUIDs).
POINT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://llm2vec-retrieval/chunk-id")


def point_id(chunk_id: str) -> str:
    """The Qdrant point id of chunk ``chunk_id``: a UUID derived from it (the same on every
    load, so a second load overwrites instead of adding)."""
    return str(uuid.uuid5(POINT_NAMESPACE, chunk_id))


def ref_doc_id(metadata: dict[str, Any]) -> str:
    """LlamaIndex's ``ref_doc_id`` of a chunk: its source file (``"None"`` as LlamaIndex
    writes when there is none)."""
    source = metadata.get("source")
    return str(source) if source is not None else "None"


def llama_node_json(chunk_id: str, text: str, metadata: dict[str, Any]) -> str:
    """The ``_node_content`` JSON LlamaIndex stores for a `TextNode` (read back by
    ``metadata_dict_to_node``): id, text, metadata and the source document as relation."""
    node: dict[str, Any] = {
        "id_": chunk_id,
        "embedding": None,
        "metadata": metadata,
        "excluded_embed_metadata_keys": [],
        "excluded_llm_metadata_keys": [],
        "relationships": {},
        "text": text,
        "mimetype": "text/plain",
        "class_name": "TextNode",
    }
    ref = ref_doc_id(metadata)
    if ref != "None":  # NodeRelationship.SOURCE is "1", ObjectType.DOCUMENT is "4"
        node["relationships"]["1"] = {
            "node_id": ref,
            "node_type": "4",
            "metadata": {},
            "hash": None,
            "class_name": "RelatedNodeInfo",
        }
    return json.dumps(node, ensure_ascii=False)
