"""`demo`: index the project's docs/ folder and search it (a similarity table without docs/)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import (
    Formatter,
    Subparsers,
    add_dtype_arg,
    eprint,
    print_results,
    reading_inputs,
    wrap,
)

DEMO_QUERIES = [
    "How do vaccines train the immune system?",
    "What makes a river flood?",
    "Which animal is fast and red?",
]
DEMO_DOCUMENTS = [
    "Vaccines expose the immune system to a harmless piece of a pathogen so it can respond faster later.",
    "Heavy rain and melting snow raise river levels until the water spills over the banks.",
    "The quick brown fox jumps over the lazy dog.",
    "A database index stores keys in sorted order to speed up lookups.",
]
# Questions the demo asks of the project's own docs/ folder.
DEMO_SEARCHES = [
    "How do I continue indexing after the process was killed?",
    "Which pooling modes can turn token states into one vector?",
]
PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def register(sub: Subparsers) -> None:
    demo = sub.add_parser(
        "demo",
        formatter_class=Formatter,
        help="index this project's docs/ and run two searches (the main job)",
        description=wrap(
            "Index the project's docs/ folder into .cache/demo-index (incremental: "
            "later runs reuse it) and run two searches on it."
        ),
    )
    demo.add_argument(
        "--model",
        default=None,
        help="model folder or embedded name (default: the embedded default)",
    )
    demo.add_argument(
        "--instruction", default=None, help="query instruction (default: the model's)"
    )
    demo.add_argument(
        "--index", default=None, help="index folder (default: .cache/demo-index in the project)"
    )
    demo.add_argument("--rebuild", action="store_true", help="re-index from scratch")
    add_dtype_arg(demo)
    demo.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Index the project's docs/ folder, then search it (falls back to a similarity table)."""
    docs = PROJECT_ROOT / "docs"
    if not any(docs.glob("*.md")):
        return similarity_table(args)
    from ..index import FingerprintMismatchError
    from ..ingest import Indexer, IndexFolder, IndexSettings, Searcher
    from ..ingest.indexer import summary

    index_dir = Path(args.index) if args.index else PROJECT_ROOT / ".cache" / "demo-index"
    folder = IndexFolder(index_dir)
    print(f"indexing {docs} into {folder.path}")
    settings = IndexSettings(model=args.model, root=str(PROJECT_ROOT), rebuild=args.rebuild)
    with reading_inputs():
        try:
            report = Indexer(folder, settings).run([docs])
        except FingerprintMismatchError:  # built with another model: start over
            settings.rebuild = True
            report = Indexer(folder, settings).run([docs])
    for src, reason in report.skipped:
        eprint(f"skipped {src}: {reason}")
    print(summary(report, folder, folder.read_manifest()))
    with reading_inputs():
        searcher = Searcher(folder.path, model=args.model)
    enc = searcher.encoder
    print(
        f"model: {enc.source.get('model')}  dim: {enc.embedding_dim}  pooling: {enc.config.pooling_mode}"
    )
    print(f"query instruction: {args.instruction or searcher.query_instruction!r}")
    print(f"search mode: {searcher.default_mode} (--mode of `search` picks another)")
    for query in DEMO_SEARCHES:
        print(f"\nsearch: {query}")
        print_results(searcher.search(query, k=3, instruction=args.instruction))
    print(f'\nsearch it yourself: llm2vec-retrieval search --index {folder.path} "your question"')
    return 0


def similarity_table(args: argparse.Namespace) -> int:
    """Encode queries (with an instruction) and documents; print their cosine similarities."""
    from ..ingest.folder import embedder_spec, encoder_from_spec

    with reading_inputs():
        encoder = encoder_from_spec(embedder_spec(args.model, None))
    print(
        f"model: {encoder.source.get('model')}  dim: {encoder.embedding_dim}  pooling: {encoder.config.pooling_mode}"
    )
    queries = encoder.encode_queries(DEMO_QUERIES, instruction=args.instruction)
    docs = encoder.encode_documents(DEMO_DOCUMENTS)
    scores = queries @ docs.T
    print(f"query instruction: {args.instruction or encoder.config.query_instruction!r}\n")
    header = "".join(f"  doc{j}" for j in range(len(DEMO_DOCUMENTS)))
    print(f"{'cosine':<48}{header}")
    for i, query in enumerate(DEMO_QUERIES):
        row = "".join(f"  {s:+.2f}" for s in scores[i])
        best = scores[i].argmax()
        print(f"{query[:46]:<48}{row}   best: doc{best}")
    print()
    for j, doc in enumerate(DEMO_DOCUMENTS):
        print(f"doc{j}: {doc}")
    return 0
