"""`encode-corpus`: encode files and folders on Ray into parquet shards (resumable)."""

from __future__ import annotations

import argparse

from ..errors import UserError
from .common import (
    DeprecatedAlias,
    Formatter,
    Subparsers,
    add_model_args,
    eprint,
    print_json,
    reading_inputs,
    wrap,
)


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "encode-corpus",
        formatter_class=Formatter,
        help="encode a corpus on Ray into parquet shards",
        description=wrap(
            "Chunk and embed .txt, .md, .jsonl, .csv, .pdf and .parquet (one document per row) "
            "files on a Ray cluster into parquet shards: ids, texts, metadata and vectors exactly "
            "as `index` would store them. Each group of files becomes one shard, recorded in "
            "DIR/shards.json when it is finished: after a crash or Ctrl-C, run the same command "
            "again to encode only the rest. Turn shards into an index with `index-from-shards`."
        ),
        epilog="example: llm2vec-retrieval encode-corpus corpus/ --output shards/ --workers 2\n"
        "         llm2vec-retrieval encode-corpus s3-mount/ -o /shared/shards --ray-address auto",
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="files and folders to encode")
    p.add_argument(
        "--output",
        "-o",
        default=None,
        metavar="DIR",
        help="shard folder, created if missing (required)",
    )
    p.add_argument("--out", dest="output", action=DeprecatedAlias, new="--output DIR")
    p.add_argument(
        "--workers", type=int, default=1, help="encoder actors (one model each; one per GPU)"
    )
    p.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="address of a running Ray cluster (default: start a local Ray on this machine)",
    )
    p.add_argument(
        "--cpus-per-worker",
        type=int,
        default=None,
        metavar="N",
        help="CPUs (torch threads) each actor takes (default: this machine's CPUs / workers)",
    )
    add_model_args(p)
    p.add_argument("--chunk-tokens", type=int, default=256, help="tokens per chunk")
    p.add_argument("--overlap", type=int, default=32, help="tokens shared by consecutive chunks")
    p.add_argument("--text-field", default="text", help="field holding the text in .jsonl records")
    p.add_argument(
        "--text-column", default="text", help="column holding the text in .csv and .parquet files"
    )
    p.add_argument("--id-column", default="id", help="column holding the id in .parquet files")
    p.add_argument(
        "--query-instruction",
        default=None,
        help="instruction that `search` prepends to queries (default: the model's)",
    )
    p.add_argument(
        "--root",
        default=None,
        help="folder that `source` paths are relative to (default: the current folder)",
    )
    p.add_argument(
        "--follow-symlinks",
        action="store_true",
        help="follow symbolic links that lead outside the sources (default: skip them, with a note)",
    )
    p.add_argument("--shard-mb", type=float, default=16.0, help="input megabytes per shard (about)")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Ray Data's progress bars (default: off)",
    )
    p.add_argument("--json", action="store_true", help="print JSON (docs/cli.md#json-output)")
    p.set_defaults(func=run, says_dtype=False)


def run(args: argparse.Namespace) -> int:
    from ..distributed.runner import RAY_HINT, CorpusSettings

    if args.output is None:
        raise UserError("encode-corpus needs --output DIR (the shard folder)")
    try:
        from ..distributed import encode_corpus
        from ..distributed.runner import import_ray

        import_ray()  # before the model loads
    except ImportError as exc:
        if RAY_HINT not in str(exc):
            raise
        raise UserError(RAY_HINT) from exc
    settings = CorpusSettings(
        model=args.model,
        adapter=args.adapter,
        dtype=args.encoder_dtype,
        chunk_tokens=args.chunk_tokens,
        overlap=args.overlap,
        text_field=args.text_field,
        text_column=args.text_column,
        id_column=args.id_column,
        query_instruction=args.query_instruction,
        root=args.root,
        follow_symlinks=args.follow_symlinks,
        workers=args.workers,
        cpus_per_worker=args.cpus_per_worker,
        ray_address=args.ray_address,
        shard_bytes=max(1, int(args.shard_mb * (1 << 20))),
    )
    choice = getattr(args, "dtype_choice", None)
    if choice is not None:
        eprint(
            choice.describe("--dtype") + " (on CPU workers; GPU workers resolve auto for the GPU)"
        )
    with reading_inputs():
        report = encode_corpus(args.sources, args.output, settings, show_progress_bar=args.progress)
    for src, reason in report.skipped:
        eprint(f"skipped {src}: {reason}")
    for src, note in report.notes:
        eprint(f"note {src}: {note}")
    if args.json:
        print_json(
            {
                "shards_dir": args.output,
                "files": report.files,
                "shards": report.shards,
                "shards_before": report.shards_before,
                "chunks": report.chunks,
                "tokens": report.tokens,
                "seconds": round(report.seconds, 3),
                "skipped": [{"source": s, "reason": r} for s, r in report.skipped],
                "notes": [{"source": s, "note": n} for s, n in report.notes],
                "devices": report.devices,
            }
        )
        return 0
    rate = report.chunks / report.seconds if report.seconds else 0.0
    print(
        f"encoded {report.files} file(s) into {report.shards} shard(s) ({report.chunks} chunks, "
        f"{report.tokens:,} tokens) in {report.seconds:.1f}s ({rate:,.1f} chunks/s); "
        f"{report.shards_before} shard(s) were already done"
    )
    print(
        f"shards {args.output}: next, llm2vec-retrieval index-from-shards {args.output} --index DIR"
    )
    return 0
