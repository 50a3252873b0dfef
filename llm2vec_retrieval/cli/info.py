"""`info`: describe an index folder from its manifests (no model, no FAISS)."""

from __future__ import annotations

import argparse
from typing import Any

from .common import (
    Formatter,
    Subparsers,
    add_index_arg,
    index_and_positionals,
    print_json,
    wrap,
)


def register(sub: Subparsers) -> None:
    info = sub.add_parser(
        "info",
        formatter_class=Formatter,
        help="describe an index folder",
        description=wrap(
            "Print an index's manifest: model, adapter, pooling, instruction, "
            "file and chunk counts, index kind and size on disk. Loads no model. "
            "With --verify, also check every file of the store against the checksum "
            "written with it (a search checks sizes and structure only)."
        ),
        usage="%(prog)s --index DIR [--json] [--verify]",
        epilog="example: llm2vec-retrieval info --index my-index --verify",
    )
    add_index_arg(info)
    info.add_argument("dir", nargs="?", help=argparse.SUPPRESS)  # `info DIR`, deprecated
    info.add_argument("--json", action="store_true", help="print JSON (docs/cli.md#info)")
    info.add_argument(
        "--verify",
        action="store_true",
        help="read every file of the store and check its sha256 (an error names a damaged file)",
    )
    info.set_defaults(func=run)


def index_info(path: str) -> dict[str, Any]:
    """What `info` shows, read from the folder's JSON files (no model, no FAISS). The store's
    manifest is checksum-verified as a load verifies it: `IndexCorruptedError` when edited."""
    from ..index.fusion import recorded_hybrid
    from ..index.persistence import load_manifest
    from ..ingest import IndexFolder
    from ..ingest.folder import describe_embedder

    folder = IndexFolder(path)
    manifest = folder.read_manifest()
    store: dict[str, Any] = {}
    if folder.check_store():  # a damaged store: one line naming what is missing
        try:
            store = load_manifest(folder.store_path)
        except FileNotFoundError:  # removed since: nothing is stored
            store = {}
    files = folder.read_files()
    fp = store.get("fingerprint") or {}
    instruction = manifest.get("query_instruction")
    return {
        "index": str(folder.path),
        "model": describe_embedder(manifest["embedder"]),
        "model_label": fp.get("model"),
        "model_path": manifest["embedder"].get("model_path"),
        "model_digest": fp.get("model_digest"),
        "adapter": manifest["embedder"].get("adapter"),
        "pooling": fp.get("pooling_mode"),
        "bidirectional": fp.get("bidirectional"),
        "query_instruction": instruction
        if instruction is not None
        else fp.get("query_instruction"),
        "encoded_in": manifest.get("encoded_in"),
        "dim": store.get("dim"),
        "kind": store.get("kind", manifest.get("kind")),
        "metric": store.get("metric", manifest.get("metric")),
        "lexical": store.get("lexical") is not None,
        "hybrid": recorded_hybrid(manifest),
        "files": len(files),
        "chunks": store.get("count", 0),
        "tokens": sum(int(e.get("tokens", 0)) for e in files.values()),
        "chunking": manifest.get("chunking"),
        "root": manifest.get("root"),
        "created_at": manifest.get("created_at"),
        "updated_at": manifest.get("updated_at"),
        "size_bytes": folder.size_on_disk(),
    }


def verify(path: str) -> dict[str, int]:
    """Check every file of the index's store against its checksum (`verify_store`);
    ``{"files", "bytes"}`` checked. `IndexCorruptedError` names a damaged file."""
    from ..index.persistence import verify_store
    from ..ingest import IndexFolder

    folder = IndexFolder(path)
    if not folder.check_store():
        return {"files": 0, "bytes": 0}
    return verify_store(folder.store_path)


def describe_hybrid(rec: dict | None) -> str:
    from ..index.fusion import WEIGHTED_FUSIONS, default_hybrid

    if rec is None:
        d = default_hybrid()
        return f"not recorded: the package default ({d['fusion']}, alpha {d['alpha']})"
    if rec["fusion"] in WEIGHTED_FUSIONS:
        return f"{rec['fusion']}, alpha {rec['alpha']} (dense weight)"
    return rec["fusion"]


def run(args: argparse.Namespace) -> int:
    folder, _ = index_and_positionals(args, "info", [args.dir], [])
    info = index_info(folder)
    if args.verify:
        info["verified"] = verify(folder)
    if args.json:
        print_json(info)
        return 0
    ch = info["chunking"] or {}
    rows = [
        ("index", info["index"]),
        ("model", info["model"]),
        ("model digest", info["model_digest"]),
        ("adapter", info["adapter"] or "-"),
        (
            "pooling",
            f"{info['pooling']} ({'bidirectional' if info['bidirectional'] else 'causal'})",
        ),
        ("query instruction", repr(info["query_instruction"])),
        ("encoded in", describe_dtypes(info["encoded_in"])),
        ("kind", f"{info['kind']} ({info['metric']}, dim {info['dim']})"),
        (
            "lexical (BM25)",
            "yes: dense, lexical and hybrid search"
            if info["lexical"]
            else "no: dense search only (run `index` again to add it)",
        ),
        ("hybrid fusion", describe_hybrid(info["hybrid"])),
        ("files", info["files"]),
        ("chunks", info["chunks"]),
        ("tokens", f"{info['tokens']:,}"),
        ("chunking", f"{ch.get('chunk_tokens')} tokens, overlap {ch.get('overlap')}"),
        ("root", info["root"]),
        ("created", info["created_at"]),
        ("updated", info["updated_at"]),
        ("size on disk", format_bytes(info["size_bytes"])),
    ]
    if "verified" in info:
        v = info["verified"]
        rows.append(
            ("verified", f"{v['files']} files, {format_bytes(v['bytes'])}: checksums match")
        )
    for key, value in rows:
        print(f"{key + ':':<19}{value}")
    return 0


def describe_dtypes(dtypes: list[str] | None) -> str:
    """The compute dtype(s) the chunks were embedded in, as `info` shows them."""
    if not dtypes:
        return "not recorded (built by an older version, or from shards)"
    if len(dtypes) == 1:
        return dtypes[0]
    return (
        f"{', '.join(dtypes)} (runs in different dtypes: close, not identical, vectors; "
        "`index --rebuild --dtype D` makes them one)"
    )


def format_bytes(n: float) -> str:
    """A size in B, KiB, MiB or GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
