"""`load_shards`: stream a shard folder into a vector database, batch by batch.

The order of a load: open the shards; connect; with ``recreate`` drop the collection;
read the manifest stored with the collection and refuse shards of another embedder
(`FingerprintMismatchError`) or dimension; create the collection and store this load's
manifest (before any row, so that a killed load is still guarded); upsert every batch
(idempotent per chunk id), its metadata made storable first (`rows.storable_metadata`:
integers beyond 64 bits as decimal strings, one note at the end); count the rows. The
writers live in one module per database.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import UserError
from ..fingerprint import check_fingerprint
from ..progress import progress_bar
from .rows import storable_metadata, wide_int_note
from .targets import Target, check_collection, parse_target

FORMAT = "llm2vec-retrieval-vectordb"
VERSION = 1
DEFAULT_BATCH_ROWS = 1024


@dataclass
class LoadResult:
    """What a load did: ``rows`` written (upserted) by this load, ``count`` of rows in the
    collection afterwards, ``seconds`` of the whole load, ``text_keys``: the metadata keys
    that held integers beyond 64 bits, stored as decimal strings (sorted)."""

    target: str
    collection: str
    rows: int
    count: int
    seconds: float
    text_keys: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def open_sink(target: Target, collection: str, dimension: int) -> Any:
    """The writer for ``target`` (the database's client is imported here, not before)."""
    if target.kind == "postgresql":
        from .postgres import PostgresSink

        return PostgresSink(target.location, collection, dimension)
    if target.kind == "qdrant":
        from .qdrant import QdrantSink

        return QdrantSink(target.location, collection, dimension, remote=target.remote)
    from .lance import LanceDBSink

    return LanceDBSink(target.location, collection, dimension)


def collection_meta(shards: Any) -> dict[str, Any]:
    """What is stored with a collection: the shards' embedder, fingerprint, dimension and
    query instruction (what a reader needs to embed queries the same way)."""
    m = shards.manifest
    return {
        "format": FORMAT,
        "version": VERSION,
        "embedder": m.get("embedder"),
        "fingerprint": shards.fingerprint,
        "dimension": shards.dimension,
        "query_instruction": m.get("query_instruction"),
        "shards": str(shards.path),
    }


def check_meta(
    stored: dict[str, Any], shards: Any, collection: str, allow_fingerprint_mismatch: bool
) -> None:
    """Refuse shards that do not belong in a collection loaded before."""
    if int(stored.get("dimension", shards.dimension)) != shards.dimension:
        raise UserError(
            f"collection {collection} holds {stored['dimension']}-dimensional vectors, these "
            f"shards {shards.dimension}; load into another collection or pass --recreate"
        )
    check_fingerprint(
        stored.get("fingerprint") or {},
        shards.fingerprint,
        allow_fingerprint_mismatch=allow_fingerprint_mismatch,
        path=f"collection {collection}",
        stacklevel=4,
    )


def load_shards(
    shards_dir: str | os.PathLike,
    target: str,
    *,
    collection: str,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    recreate: bool = False,
    allow_fingerprint_mismatch: bool = False,
    show_progress_bar: bool | None = None,
) -> LoadResult:
    """Write the shards in ``shards_dir`` into ``target`` (a URL: ``postgresql://...``,
    ``qdrant:///path``, ``qdrant+http://host:port``, ``lancedb:///path``) as
    ``collection``: ids, texts, metadata and vectors, upserted by chunk id (loading twice,
    or again after a killed load, leaves one row per chunk).

    A collection loaded before keeps the embedder fingerprint of its first load: shards
    of another embedder raise `FingerprintMismatchError` (``allow_fingerprint_mismatch``
    loads them anyway), another dimension a `UserError`. ``recreate`` drops the
    collection first. ``show_progress_bar``: a tqdm bar on stderr (None: when stderr is a terminal).
    """
    from ..shards import open_shards

    if batch_rows < 1:
        raise UserError(f"batch_rows must be at least 1, got {batch_rows}")
    check_collection(collection)
    parsed = parse_target(target)
    shards = open_shards(shards_dir)
    start = time.perf_counter()
    rows = 0
    with open_sink(parsed, collection, shards.dimension) as sink:
        if recreate:
            sink.drop()
        stored = sink.read_meta()
        if stored is not None:
            check_meta(stored, shards, collection, allow_fingerprint_mismatch)
        if hasattr(sink, "plan"):
            sink.plan(shards, batch_rows)
        # a collection keeps the manifest of its first load (also under allow_fingerprint_mismatch)
        sink.create(collection_meta(shards) if stored is None else stored)
        bar = progress_bar(shards.count, f"Loading into {parsed.kind}", "row", show_progress_bar)
        # LanceDB's plan names the keys that are text in every row (one type per column)
        planned_text = frozenset(getattr(sink, "text_keys", ()))
        text_keys: set[str] = set(planned_text)
        try:
            for b in shards.iter_batches(batch_rows):
                metadatas = []
                for m in b.metadatas:
                    stored, wide = storable_metadata(m, planned_text)
                    metadatas.append(stored)
                    text_keys |= wide
                sink.upsert(b.ids, b.texts, metadatas, b.vectors)
                rows += len(b)
                if bar is not None:
                    bar.update(len(b))
        finally:
            if bar is not None:
                bar.close()
        count = sink.count()
    if text_keys:
        print(wide_int_note(text_keys), file=sys.stderr)
    seconds = time.perf_counter() - start
    return LoadResult(parsed.describe(), collection, rows, count, seconds, sorted(text_keys))
