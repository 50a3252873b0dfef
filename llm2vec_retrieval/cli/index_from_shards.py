"""`index-from-shards`: build an index folder from encode-corpus shards (no encoding).

A command of its own rather than an option of `index`: `index` is incremental over source
files (model, chunking, commits), while this reads finished vectors once into a new folder;
none of `index`'s options but --kind and --lexical apply."""

from __future__ import annotations

import argparse
import json

from .common import (
    Formatter,
    Subparsers,
    add_index_arg,
    index_and_positionals,
    print_json,
    wrap,
)


def register(sub: Subparsers) -> None:
    from ..index.kinds import KINDS

    p = sub.add_parser(
        "index-from-shards",
        formatter_class=Formatter,
        help="build an index folder from encode-corpus shards",
        description=wrap(
            "Build the index folder `index` writes (searchable with `search`, `serve`, and "
            "updatable with `index` on the same sources) from the shards of `encode-corpus`, "
            "without encoding anything. Every shard's checksum is verified. IVF kinds are "
            "trained once, on a random sample of the vectors."
        ),
        usage="%(prog)s SHARDS --index DIR [options]",
        epilog="example: llm2vec-retrieval index-from-shards shards/ --index my-index --kind hnsw",
    )
    p.add_argument(
        "shards", nargs="?", metavar="SHARDS", help="shard folder written by encode-corpus"
    )
    # `index-from-shards SHARDS INDEX` (deprecated) fills it
    p.add_argument("legacy_index", nargs="?", help=argparse.SUPPRESS)
    add_index_arg(p, "new index folder")
    p.add_argument("--kind", choices=KINDS, default="flat", help="FAISS index kind")
    p.add_argument(
        "--params",
        default=None,
        metavar="JSON",
        help="kind parameters as JSON, e.g. '{\"nlist\": 4096}' (default: chosen for the count)",
    )
    p.add_argument(
        "--lexical",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep a BM25 index of the chunks beside the vectors (hybrid search)",
    )
    p.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar"
    )
    p.add_argument("--json", action="store_true", help="print JSON (docs/cli.md#json-output)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from ..ingest import IndexFolder
    from ..shards import build_index_from_shards

    index, (shards,) = index_and_positionals(
        args, "index-from-shards", [args.shards, args.legacy_index], ["SHARDS"], index_last=True
    )
    params = None
    if args.params:
        try:
            params = json.loads(args.params)
        except ValueError:
            raise UserError(f"--params is not JSON: {args.params!r}") from None
        if not isinstance(params, dict):
            raise UserError("--params must be a JSON object, e.g. '{\"nlist\": 4096}'")
    try:
        build_index_from_shards(
            shards,
            index,
            kind=args.kind,
            lexical=args.lexical,
            params=params,
            show_progress_bar=args.progress,
        )
    except ValueError as exc:  # a kind parameter the store refuses
        raise UserError(str(exc)) from exc
    folder = IndexFolder(index)
    files = folder.read_files()
    chunks = sum(int(e.get("chunks", 0)) for e in files.values())
    if args.json:
        print_json(
            {
                "index": str(folder.path),
                "shards": shards,
                "kind": args.kind,
                "lexical": args.lexical,
                "files": len(files),
                "chunks": chunks,
            }
        )
    else:
        print(
            f"index {folder.path}: {len(files)} files, {chunks} chunks ({args.kind}, from {shards})"
        )
    return 0
