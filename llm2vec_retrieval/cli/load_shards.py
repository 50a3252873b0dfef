"""`load-shards`: write encoded shards into PostgreSQL (pgvector), Qdrant or LanceDB."""

from __future__ import annotations

import argparse

from ..vectordb.loader import DEFAULT_BATCH_ROWS
from .common import Formatter, Subparsers, print_json, wrap


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "load-shards",
        formatter_class=Formatter,
        help="load encoded shards into a vector database",
        description=wrap(
            "Upsert the chunks of a shard folder (encode-corpus) into a vector database: "
            "ids, texts, metadata and vectors, in tables the database's LangChain and "
            "LlamaIndex stores read (docs/vector_databases.md). Loading again, or after a "
            "killed load, leaves one row per chunk. Needs the vectordb extra: "
            "pip install 'llm2vec-retrieval[vectordb]'."
        ),
    )
    p.add_argument("shards", metavar="SHARDS", help="shard folder")
    p.add_argument(
        "target",
        metavar="TARGET",
        help="postgresql://user:pass@host:port/db, qdrant:///folder, qdrant+http://host:port "
        "or lancedb:///folder",
    )
    p.add_argument("--collection", required=True, help="table / collection name ([a-z0-9_])")
    p.add_argument(
        "--batch-rows", type=int, default=DEFAULT_BATCH_ROWS, metavar="N", help="rows per upsert"
    )
    p.add_argument("--recreate", action="store_true", help="drop the collection first, then load")
    p.add_argument(
        "--allow-mismatch",
        action="store_true",
        help="load shards of another embedder into a collection anyway",
    )
    p.add_argument("--json", action="store_true", help="print JSON (docs/cli.md#json-output)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..vectordb import load_shards

    r = load_shards(
        args.shards,
        args.target,
        collection=args.collection,
        batch_rows=args.batch_rows,
        recreate=args.recreate,
        allow_fingerprint_mismatch=args.allow_mismatch,
    )
    if args.json:
        print_json(r.to_dict())
        return 0
    rate = r.rows / r.seconds if r.seconds > 0 else float("inf")
    print(
        f"loaded {r.rows} rows into {r.collection} at {r.target} in {r.seconds:.1f} s "
        f"({rate:.0f} rows/s); the collection holds {r.count} rows"
    )
    return 0
