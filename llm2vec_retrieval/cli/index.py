"""`index`: chunk and embed files and folders into an index folder (incremental, resumable)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import (
    Formatter,
    Subparsers,
    add_model_args,
    eprint,
    mismatch,
    print_json,
    reading_inputs,
    say_dtype,
    wrap,
)


def register(sub: Subparsers) -> None:
    from ..index.kinds import KINDS

    idx = sub.add_parser(
        "index",
        formatter_class=Formatter,
        help="index files and folders into an index folder",
        description=wrap(
            "Chunk and embed .txt, .md, .jsonl, .csv and .pdf (with pypdf) files into an index "
            "folder. Re-running skips unchanged files, re-indexes changed ones and removes chunks of "
            "deleted files. Work is committed in groups: after a crash or Ctrl-C, run the same "
            "command again to continue."
        ),
        epilog="example: llm2vec-retrieval index docs/ notes.md --index my-index --chunk-tokens 200",
    )
    idx.add_argument("sources", nargs="+", metavar="SOURCE", help="files and folders to index")
    idx.add_argument(
        "--index", required=True, metavar="DIR", help="index folder (created if missing)"
    )
    add_model_args(idx)
    idx.add_argument(
        "--kind",
        choices=KINDS,
        default=None,
        help="FAISS index kind for a new index (default: flat)",
    )
    idx.add_argument(
        "--chunk-tokens", type=int, default=None, help="tokens per chunk (default 256)"
    )
    idx.add_argument(
        "--overlap", type=int, default=None, help="tokens shared by consecutive chunks (default 32)"
    )
    idx.add_argument(
        "--text-field",
        default=None,
        help="field holding the text in .jsonl records (default: text)",
    )
    idx.add_argument(
        "--text-column", default=None, help="column holding the text in .csv files (default: text)"
    )
    idx.add_argument(
        "--query-instruction",
        default=None,
        help="instruction that `search` prepends to queries (default: the model's)",
    )
    idx.add_argument(
        "--root",
        default=None,
        help="folder that `source` paths are relative to (default: the current folder, fixed at creation)",
    )
    idx.add_argument(
        "--rebuild", action="store_true", help="discard the existing index and start over"
    )
    idx.add_argument(
        "--commit-every",
        type=int,
        default=512,
        metavar="N",
        help="commit (save) after about N new chunks, at file boundaries (and inside large files)",
    )
    idx.add_argument(
        "--lexical",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep a BM25 index of the chunks beside the vectors, for lexical and hybrid search "
        "(default: yes for a new index, else as recorded; an index made before hybrid search "
        "gets it on its next run, without re-embedding)",
    )
    idx.add_argument("--json", action="store_true", help="print JSON (docs/cli.md#json-output)")
    idx.add_argument(
        "--follow-symlinks",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="follow symbolic links that lead outside the sources (default: no for a new "
        "index, else as recorded; such links are skipped with a note)",
    )
    prog = idx.add_mutually_exclusive_group()
    prog.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="always show the progress bar (default: only on a terminal)",
    )
    prog.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        default=None,
        help="never show the progress bar",
    )
    idx.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..index import FingerprintMismatchError
    from ..ingest import Indexer, IndexFolder, IndexSettings
    from ..ingest.folder import describe_embedder
    from ..ingest.indexer import summary

    folder = IndexFolder(args.index)
    settings = IndexSettings(
        model=args.model,
        adapter=args.adapter,
        kind=args.kind,
        chunk_tokens=args.chunk_tokens,
        overlap=args.overlap,
        text_field=args.text_field,
        text_column=args.text_column,
        query_instruction=args.query_instruction,
        root=args.root,
        rebuild=args.rebuild,
        commit_every=args.commit_every,
        lexical=args.lexical,
        follow_symlinks=args.follow_symlinks,
    )
    existed = folder.exists()
    indexer = Indexer(
        folder,
        settings,
        show_progress_bar=args.progress,
        dtype=args.encoder_dtype,
        on_encode=lambda: say_dtype(args),
    )
    try:
        with reading_inputs():
            report = indexer.run(args.sources)
    except FingerprintMismatchError as exc:
        raise mismatch(
            exc, args.index, "pass --rebuild to re-embed every file with this model"
        ) from None
    except KeyboardInterrupt:
        eprint(_interrupted(indexer.report.commits, folder.path, existed))
        return 130
    for src, reason in report.skipped:
        eprint(f"skipped {src}: {reason}")
    for src, note in report.notes:
        eprint(f"note {src}: {note}")
    if args.json:
        print_json(
            {
                "index": str(folder.path),
                "model": describe_embedder(report.manifest.embedder) if report.manifest else None,
                "indexed": report.indexed,
                "unchanged": report.unchanged,
                "removed": report.removed,
                "skipped": [{"source": s, "reason": r} for s, r in report.skipped],
                "notes": [{"source": s, "note": n} for s, n in report.notes],
                "chunks_added": report.chunks_added,
                "tokens": report.tokens,
                "commits": report.commits,
                "seconds": round(report.seconds, 3),
                "files": report.total_files,
                "chunks": report.total_chunks,
            }
        )
    else:
        print(summary(report, folder))
    if report.total_chunks == 0:
        eprint("warning: the index holds no chunks")
    return 0


def _interrupted(commits: int, path: Path, existed: bool) -> str:
    """What an index run stopped by Ctrl-C kept."""
    if commits:
        return (
            f"interrupted: the {commits} commit(s) of this run are kept in {path}; "
            "run the same command again to continue"
        )
    if existed:
        return (
            f"interrupted before anything was committed: {path} is as it was; "
            "run the same command again to continue"
        )
    return "interrupted before anything was committed: no index was written"
