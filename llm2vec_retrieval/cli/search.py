"""`search`: rank the chunks of an index for a query (dense, lexical or hybrid)."""

from __future__ import annotations

import argparse
import json
import os
from typing import TYPE_CHECKING

from ..errors import UserError
from ..hardware import compute_dtype
from ..index.filters import compile_filter, parse_filter_expressions
from ..server import SERVER_ENV
from ..text import check_query
from .common import (
    Formatter,
    Subparsers,
    add_index_arg,
    add_model_args,
    eprint,
    index_and_positionals,
    open_searcher,
    print_results,
    reading_inputs,
    say_dtype,
    wrap,
)

if TYPE_CHECKING:
    from ..ingest import Searcher


def register(sub: Subparsers) -> None:
    from ..index.fusion import FUSIONS
    from ..index.store import DEFAULT_ALPHA, DEFAULT_FUSION, DEFAULT_TEXT_MODE, MODES

    se = sub.add_parser(
        "search",
        formatter_class=Formatter,
        help="search an index folder",
        description=wrap(
            "Rank the chunks of an index for a query. The embedder and the query instruction are "
            "the ones recorded in the index unless given."
        ),
        usage="%(prog)s --index DIR QUERY [options]",
        epilog='examples:\n  llm2vec-retrieval search --index my-index "how do I resume indexing?" -k 3\n'
        "  llm2vec-retrieval search --index my-index \"pooling\" --filter source=docs/concepts.md --filter 'chunk>=2' --json",
    )
    add_index_arg(se)
    # `search DIR QUERY` (deprecated) fills both; `search --index DIR QUERY` fills `dir` only
    se.add_argument("dir", nargs="?", help=argparse.SUPPRESS)
    se.add_argument("query", nargs="?", metavar="QUERY", help="query text (required)")
    se.add_argument("-k", type=int, default=5, help="number of results")
    se.add_argument(
        "--filter",
        action="append",
        metavar="EXPR",
        help="metadata filter, repeatable (AND): key=value, key!=value, key>=n, key<=n, key>n, key<n",
    )
    se.add_argument("--json", action="store_true", help="print JSON")
    se.add_argument("--instruction", default=None, help="query instruction (default: the index's)")
    se.add_argument(
        "--mode",
        choices=MODES,
        default=None,
        help=f"dense (vectors), lexical (BM25) or hybrid (both, fused) (default: {DEFAULT_TEXT_MODE}, "
        "or dense on an index without a lexical part)",
    )
    se.add_argument(
        "--fusion",
        choices=FUSIONS,
        default=None,
        help="hybrid fusion: rrf or wrrf (reciprocal rank, k=60; wrrf weighted by --alpha), or "
        "alpha, tmm, zscore (--alpha * dense + (1 - --alpha) * BM25 over min-max, "
        "theoretical-min-max or z-score normalized scores) (default: the fusion the index "
        f"records; new indexes record {DEFAULT_FUSION})",
    )
    se.add_argument(
        "--alpha",
        type=float,
        default=None,
        help="weight of the dense part in a weighted fusion, 0-1 (given alone: the default fusion "
        f"if it is weighted, else alpha; default: the index's, new indexes {DEFAULT_ALPHA})",
    )
    add_model_args(se, "model folder or embedded name (default: the one recorded in the index)")
    se.add_argument(
        "--allow-mismatch",
        action="store_true",
        help="search even if the embedder's fingerprint differs from the index's",
    )
    se.add_argument(
        "--server",
        metavar="URL",
        default=None,
        help=f"encode the query on this running `llm2vec-retrieval serve` instead of loading the "
        f"model here (well under a second instead of seconds); used only if it serves the "
        f"index's model, else the model loads here (default: ${SERVER_ENV}, else none)",
    )
    se.set_defaults(func=run)


def remote_searcher(args: argparse.Namespace, url: str) -> Searcher | None:
    """The index opened with the encoder of the server at ``url``; None (after a note saying
    why) when there is no usable server there or it serves another model than the index's."""
    from ..client import RemoteEncoder, ServerUnavailableError
    from ..index import DimensionMismatchError, FingerprintMismatchError
    from ..ingest import Searcher

    try:
        encoder = RemoteEncoder(url)
    except ServerUnavailableError as exc:
        eprint(f"note: {exc}; loading the model here instead")
        return None
    try:
        with reading_inputs():
            searcher = Searcher(
                args.dir, encoder=encoder, allow_fingerprint_mismatch=args.allow_mismatch
            )
    except (FingerprintMismatchError, DimensionMismatchError) as exc:
        keys = ", ".join(getattr(exc, "differing_keys", None) or ["dim"])
        eprint(
            f"note: the server at {encoder.url} serves another model than index {args.dir} "
            f"was built with (differs in: {keys}); loading the index's model here instead"
        )
        return None
    eprint(f"encoding the query on the server at {encoder.url} ({encoder.dtype or 'its dtype'})")
    return searcher


def run(args: argparse.Namespace) -> int:
    from ..index.fusion import WEIGHTED_FUSIONS, resolve_fusion
    from ..ingest import IndexFolder

    args.dir, (args.query,) = index_and_positionals(
        args, "search", [args.dir, args.query], ["QUERY"]
    )
    flt = parse_filter_expressions(args.filter)  # FilterSyntaxError: "bad filter ..."
    try:
        compile_filter(flt)  # checked before anything loads; the search compiles it again
    except ValueError as exc:
        raise UserError(f"bad filter: {exc}") from exc
    if args.k < 1:
        raise UserError(f"-k must be at least 1, got {args.k}")
    try:
        check_query(args.query)  # before anything loads: a search for nothing has no answer
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    IndexFolder(args.dir).read_manifest()  # a missing folder fails before the model loads
    if args.alpha is not None and not 0.0 <= args.alpha <= 1.0:
        raise UserError(f"--alpha must be in [0, 1], got {args.alpha}")
    if args.mode == "lexical":  # BM25 only: the embedder (torch, transformers) is never loaded
        from ..ingest import Searcher

        with reading_inputs():
            searcher = Searcher(args.dir, lexical_only=True)
    else:
        searcher = None
        server = args.server if args.server is not None else os.environ.get(SERVER_ENV)
        if server and args.model is None and args.adapter is None:
            searcher = remote_searcher(args, server)
        elif args.server is not None:
            eprint("note: --server is not used with --model or --adapter; loading that model here")
        if searcher is None:
            searcher = open_searcher(args)
    try:
        mode = searcher.check_mode(args.mode)
    except ValueError as exc:  # a mode the index cannot do (no lexical part)
        raise UserError(str(exc)) from exc
    if args.mode is None and searcher.notice:
        eprint(f"note: {searcher.notice}")
    fusion, alpha = resolve_fusion(args.fusion, args.alpha, searcher.hybrid_default)

    def query(s: Searcher):
        if mode != "lexical" and compute_dtype(s.encoder) is not None:
            say_dtype(args)  # a model loaded here encodes the query next
        return s.search(
            args.query,
            k=args.k,
            filter=flt,
            instruction=args.instruction,
            mode=mode,
            fusion=fusion,
            alpha=alpha,
        )

    try:
        results = query(searcher)
    except UserError as exc:
        from ..client import RemoteEncoder, ServerUnavailableError

        if not (
            isinstance(exc, ServerUnavailableError) and isinstance(searcher.encoder, RemoteEncoder)
        ):
            raise
        # the server went away, timed out or answered nonsense: as when it is not there
        eprint(f"note: {exc}; loading the model here instead")
        searcher = open_searcher(args)
        results = query(searcher)
    if args.json:
        out = {
            "query": args.query,
            "instruction": args.instruction
            if args.instruction is not None
            else searcher.query_instruction,
            "mode": mode,
            **(
                {"fusion": fusion, **({"alpha": alpha} if fusion in WEIGHTED_FUSIONS else {})}
                if mode == "hybrid"
                else {}
            ),
            "index": str(searcher.folder.path),
            "results": [r.to_dict() for r in results],
        }
        print(json.dumps(out, ensure_ascii=False, indent=2))
    else:
        print_results(results)
    short = searcher.shortfall(len(results), args.k, mode, filtered=flt is not None)
    if short:  # fewer than asked is said, never padded with non-matches
        if args.json:
            eprint(f"note: {short}")
        else:
            print(short)
    return 0
