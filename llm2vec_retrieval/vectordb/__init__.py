"""Encoded shards -> vector databases: PostgreSQL + pgvector, Qdrant, LanceDB.

`load_shards(shards_dir, target, collection=...)` writes a shard folder
(`llm2vec_retrieval.shards`) into a database through its own client, in a layout that the
database's LangChain and LlamaIndex vector-store classes read (docs/vector_databases.md).
The database clients are imported only when a load starts
(``pip install 'llm2vec-retrieval[vectordb]'``).
"""

from __future__ import annotations

from .loader import DEFAULT_BATCH_ROWS, LoadResult, load_shards
from .rows import point_id
from .targets import SCHEMES, Target, check_collection, parse_target

__all__ = [
    "DEFAULT_BATCH_ROWS",
    "SCHEMES",
    "LoadResult",
    "Target",
    "check_collection",
    "load_shards",
    "parse_target",
    "point_id",
]
