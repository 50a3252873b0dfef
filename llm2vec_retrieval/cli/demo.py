"""`demo`: index a folder of documentation and search it (the main job).

In a source checkout the demo indexes the project's ``docs/`` folder; installed from a wheel
it indexes ``llm2vec_retrieval/demo_corpus``, a few short pages about the project that ship
in the package (``MANIFEST.in`` puts them in the wheel), so the two searches below have the
same kind of answer everywhere. The index goes to ``.cache/demo-index`` in the checkout, else
to ``demo-index`` under the cache root (``$LLM2VEC_RETRIEVAL_CACHE``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import (
    Formatter,
    Subparsers,
    add_dtype_arg,
    eprint,
    print_json,
    print_results,
    reading_inputs,
    say_dtype,
    wrap,
)

# Questions the demo asks of the documentation it indexes.
DEMO_SEARCHES = [
    "How do I continue indexing after the process was killed?",
    "Which pooling modes can turn token states into one vector?",
]
PACKAGE_DIR = Path(__file__).resolve().parents[1]
PROJECT_ROOT = PACKAGE_DIR.parent
#: the pages the demo indexes outside a source checkout (shipped in the package)
DEMO_CORPUS = PACKAGE_DIR / "demo_corpus"


def demo_sources() -> tuple[Path, Path, Path]:
    """(folder to index, root its source paths are relative to, default index folder).

    The project's ``docs/`` in a source checkout (a ``pyproject.toml`` of this project beside
    the package: a ``docs`` folder some other distribution put in site-packages is not
    ours), else the corpus shipped in the package."""
    from ..cachedir import cache_dir

    pyproject = PROJECT_ROOT / "pyproject.toml"
    docs = PROJECT_ROOT / "docs"
    if (
        pyproject.is_file()
        and 'name = "llm2vec-retrieval"' in pyproject.read_text(errors="replace")
        and any(docs.glob("*.md"))
    ):
        return docs, PROJECT_ROOT, PROJECT_ROOT / ".cache" / "demo-index"
    return DEMO_CORPUS, PACKAGE_DIR, cache_dir() / "demo-index"


def register(sub: Subparsers) -> None:
    demo = sub.add_parser(
        "demo",
        formatter_class=Formatter,
        help="index this project's documentation and run two searches (the main job)",
        description=wrap(
            "Index the project's docs/ folder (in a source checkout; installed: the short "
            "guide shipped in the package) into a demo index (incremental: later runs reuse "
            "it) and run two searches on it."
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
        "--index",
        default=None,
        help="index folder (default: .cache/demo-index in a checkout, else demo-index in the "
        "cache folder)",
    )
    demo.add_argument("--rebuild", action="store_true", help="re-index from scratch")
    demo.add_argument(
        "--json",
        action="store_true",
        help="print one JSON document (the index run and both searches' results); notes go to "
        "stderr",
    )
    add_dtype_arg(demo)
    demo.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Index the documentation, then search it."""
    from ..index import FingerprintMismatchError
    from ..ingest import Indexer, IndexFolder, IndexSettings, Searcher
    from ..ingest.indexer import summary

    docs, root, default_index = demo_sources()
    index_dir = Path(args.index) if args.index else default_index
    folder = IndexFolder(index_dir)
    say = eprint if args.json else print  # with --json, stdout holds the JSON document only
    say(f"indexing {docs} into {folder.path}")
    settings = IndexSettings(model=args.model, root=str(root), rebuild=args.rebuild)
    options = {"dtype": args.encoder_dtype, "on_encode": lambda: say_dtype(args)}
    with reading_inputs():
        try:
            report = Indexer(folder, settings, **options).run([docs])
        except FingerprintMismatchError:  # built with another model: start over
            settings.rebuild = True
            report = Indexer(folder, settings, **options).run([docs])
    for src, reason in report.skipped:
        eprint(f"skipped {src}: {reason}")
    say(summary(report, folder))
    with reading_inputs():
        searcher = Searcher(folder.path, model=args.model, dtype=args.encoder_dtype)
    say_dtype(args)  # next: the queries are encoded
    enc = searcher.encoder
    assert enc is not None  # opened with a model (not lexical-only)
    instruction = args.instruction or searcher.query_instruction
    if args.json:
        print_json(
            {
                "index": str(folder.path),
                "indexed": len(report.indexed),
                "unchanged": report.unchanged,
                "chunks": report.total_chunks,
                "model": enc.source.get("model"),
                "dim": enc.embedding_dim,
                "query_instruction": instruction,
                "mode": searcher.default_mode,
                "searches": [
                    {
                        "query": query,
                        "results": [
                            hit.to_dict()
                            for hit in searcher.search(query, k=3, instruction=args.instruction)
                        ],
                    }
                    for query in DEMO_SEARCHES
                ],
            }
        )
        return 0
    print(
        f"model: {enc.source.get('model')}  dim: {enc.embedding_dim}  pooling: {enc.config.pooling_mode}"
    )
    print(f"query instruction: {instruction!r}")
    print(f"search mode: {searcher.default_mode} (--mode of `search` picks another)")
    for query in DEMO_SEARCHES:
        print(f"\nsearch: {query}")
        print_results(searcher.search(query, k=3, instruction=args.instruction))
    print(f'\nsearch it yourself: llm2vec-retrieval search --index {folder.path} "your question"')
    return 0
