"""How one shard row is laid out for the LangChain and LlamaIndex store classes, shared by
the database writers (pure Python: no database client is imported here).

Integers beyond 64 bits. Shards hold metadata as JSON, whose integers have no size limit
(a .jsonl field of 2**70 stays exact); the databases do not: Arrow (LanceDB) and a Qdrant
server store at most a signed 64-bit integer (LanceDB raised OverflowError), and
PostgreSQL's json column keeps the digits but SQL on them (jsonb, the frameworks' filter
casts) reads a float. One policy for the three keeps a collection's content independent of
the database: every writer stores what `storable_metadata` returns:
a metadata value holding an integer outside [-2**63, 2**63 - 1] keeps its integers as
decimal strings (exact, and a list stays of one type); the load prints one note naming the
keys (`wide_int_note`). Nothing is refused and nothing is rounded.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Mapping
from typing import Any

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

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


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def holds_wide_int(value: Any) -> bool:
    """True when ``value`` is, or holds at any depth (lists, dicts), an integer outside the
    signed 64-bit range."""
    if _is_int(value):
        return not INT64_MIN <= value <= INT64_MAX
    if isinstance(value, (list, tuple)):
        return any(holds_wide_int(v) for v in value)
    if isinstance(value, Mapping):
        return any(holds_wide_int(v) for v in value.values())
    return False


def ints_as_text(value: Any) -> Any:
    """``value`` with every integer (not bool), at any depth, as its decimal string."""
    if _is_int(value):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [ints_as_text(v) for v in value]
    if isinstance(value, Mapping):
        return {k: ints_as_text(v) for k, v in value.items()}
    return value


def storable_metadata(
    metadata: dict[str, Any], text_keys: Collection[str] = ()
) -> tuple[dict[str, Any], set[str]]:
    """``metadata`` as the databases store it, and the keys whose values held an integer
    beyond 64 bits. The values of those keys, and of the keys in ``text_keys`` (LanceDB: a
    column has one type, so a key is text in every row once one row needs it), have their
    integers as decimal strings; other values are returned as they are (the dict itself
    when nothing changes)."""
    wide = {k for k, v in metadata.items() if holds_wide_int(v)}
    convert = wide.union(k for k in text_keys if k in metadata)
    if not convert:
        return metadata, wide
    return {k: ints_as_text(v) if k in convert else v for k, v in metadata.items()}, wide


def wide_int_note(keys: Collection[str]) -> str:
    """The one line a load prints when ``keys`` held integers beyond 64 bits."""
    names = ", ".join(sorted(keys))
    return (
        f"note: metadata key(s) {names} hold integers beyond 64 bits; stored exactly, as "
        "decimal strings (database integers have 64 bits)"
    )
