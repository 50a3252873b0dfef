"""`search`: rank the chunks of an index for a query (dense, lexical or hybrid)."""

from __future__ import annotations

import argparse
import json
import os
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from ..hardware import compute_dtype
from ..index.filters import parse_filter_expressions
from ..server import SERVER_ENV
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
    from ..index.request import SearchRequest
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
    se.add_argument(
        "--no-warm",
        action="store_true",
        help="load the model in this process instead of using (or starting) the warm encoder "
        "that keeps it loaded between searches (default: use it unless "
        '$LLM2VEC_RETRIEVAL_WARM=0; see docs/cli.md, "Warm searches")',
    )
    se.set_defaults(func=run)


def request_from(args: argparse.Namespace) -> SearchRequest:
    """The search the flags ask for, checked once, before anything loads (one-line errors
    in the flags' words)."""
    from ..index.request import SearchRequest, SearchRequestError

    flt = parse_filter_expressions(args.filter)  # FilterSyntaxError: "bad filter ..."
    try:
        return SearchRequest(
            args.query,
            args.k,
            args.mode,
            flt,
            args.fusion,
            args.alpha,
            instruction=args.instruction,
        )
    except SearchRequestError as exc:
        words = {
            "k": f"-k must be at least 1, got {args.k}",
            "alpha": f"--alpha must be in [0, 1], got {args.alpha}",
            "filter": f"bad filter: {exc}",
        }
        raise UserError(words.get(exc.field, str(exc))) from None


def remote_searcher(args: argparse.Namespace, encoder: Any, manifest: dict) -> Searcher | None:
    """The index opened with ``encoder`` (a running server's or the warm helper's); None
    (after a note saying why) when it encodes with another model than the index's."""
    from ..index import DimensionMismatchError, FingerprintMismatchError
    from ..ingest import Searcher

    try:
        with reading_inputs():
            return Searcher(
                args.dir,
                encoder=encoder,
                allow_fingerprint_mismatch=args.allow_mismatch,
                manifest=manifest,
            )
    except (FingerprintMismatchError, DimensionMismatchError) as exc:
        keys = ", ".join(getattr(exc, "differing_keys", None) or ["dim"])
        eprint(
            f"note: {describe(encoder)} serves another model than index {args.dir} was built "
            f"with (differs in: {keys}); loading the index's model here instead"
        )
        return None


def describe(encoder: Any) -> str:
    from ..warm import WarmEncoder

    if isinstance(encoder, WarmEncoder):
        return f"the warm encoder (pid {encoder.pid})"
    return f"the server at {encoder.url}"


def server_searcher(args: argparse.Namespace, url: str, manifest: dict) -> Searcher | None:
    """The index searched through the server at ``url``; None (after a note) when there is no
    usable server there or it serves another model."""
    from ..client import RemoteEncoder, ServerUnavailableError

    try:
        encoder = RemoteEncoder(url)
    except ServerUnavailableError as exc:
        eprint(f"note: {exc}; loading the model here instead")
        return None
    searcher = remote_searcher(args, encoder, manifest)
    if searcher is not None:
        eprint(
            f"encoding the query on the server at {encoder.url} ({encoder.dtype or 'its dtype'})"
        )
    return searcher


def warm_searcher(args: argparse.Namespace, manifest: dict) -> Searcher | None:
    """The index searched through the warm helper of its model (started when there is none:
    this first search waits for it as it would for a model loaded here); None (after a note)
    when no helper can serve it. A helper with another model is stopped."""
    from .. import warm
    from ..client import ServerUnavailableError
    from ..ingest.searcher import search_embedder

    spec = search_embedder(manifest, args.model, args.adapter)
    dtype = args.dtype_choice.name if getattr(args, "dtype_choice", None) else "float32"

    def started(pid: int, log: Any) -> None:
        eprint(
            f"starting a warm encoder (pid {pid}) so the next searches skip loading the model; "
            f"it exits after {warm.idle_seconds():g} s idle (--no-warm or ${warm.WARM_ENV}=0: "
            "not used)"
        )

    try:
        encoder = warm.connect(spec, dtype, getattr(args, "threads", None), on_start=started)
    except ServerUnavailableError as exc:
        eprint(f"note: {exc}; loading the model here instead")
        return None
    searcher = remote_searcher(args, encoder, manifest)
    if searcher is None:
        encoder.stop()  # its model changed since it started: the next search starts a new one
    else:
        eprint(f"encoding the query in the warm encoder (pid {encoder.pid}, {encoder.dtype})")
    return searcher


def open_for_search(args: argparse.Namespace, manifest: dict) -> Searcher:
    """The searcher of a dense or hybrid search: through a server (--server or its variable),
    else the warm helper (unless --no-warm or its variable), else with the model loaded here."""
    from .. import warm

    searcher = None
    server = args.server if args.server is not None else os.environ.get(SERVER_ENV)
    if server and args.model is None and args.adapter is None:
        searcher = server_searcher(args, server, manifest)
    elif args.server is not None:
        eprint("note: --server is not used with --model or --adapter; loading that model here")
    if searcher is None and warm.enabled(args.no_warm):
        searcher = warm_searcher(args, manifest)
    return searcher if searcher is not None else open_searcher(args, manifest)


def run(args: argparse.Namespace) -> int:
    from ..client import ServerUnavailableError
    from ..ingest import IndexFolder

    args.dir, (args.query,) = index_and_positionals(
        args, "search", [args.dir, args.query], ["QUERY"]
    )
    request = request_from(args)  # checked before anything loads
    manifest = IndexFolder(args.dir).read_manifest()  # a missing folder fails before the model
    if args.mode == "lexical":  # BM25 only: the embedder (torch, transformers) is never loaded
        from ..ingest import Searcher

        with reading_inputs():
            searcher = Searcher(args.dir, lexical_only=True, manifest=manifest)
    else:
        searcher = open_for_search(args, manifest)
    try:
        request = searcher.prepare(request)
    except ValueError as exc:  # a mode the index cannot do (no lexical part)
        raise UserError(str(exc)) from exc
    if args.mode is None and searcher.notice:
        eprint(f"note: {searcher.notice}")

    def query(s: Searcher) -> list:
        if request.mode != "lexical" and compute_dtype(s.encoder) is not None:
            say_dtype(args)  # a model loaded here encodes the query next
        return s.search(request)

    try:
        results = query(searcher)
    except ServerUnavailableError as exc:
        from ..client import RemoteEncoder
        from ..warm import WarmEncoder

        if not isinstance(searcher.encoder, (RemoteEncoder, WarmEncoder)):
            raise
        # the server or helper went away, timed out or answered nonsense: as when not there
        eprint(f"note: {exc}; loading the model here instead")
        searcher = open_searcher(args, manifest)
        results = query(searcher)
    if args.json:
        out = {
            "query": args.query,
            "instruction": args.instruction
            if args.instruction is not None
            else searcher.query_instruction,
            "mode": request.mode,
            **request.fused(),
            "index": str(searcher.folder.path),
            "results": [r.to_dict() for r in results],
        }
        print(json.dumps(out, ensure_ascii=False, indent=2))
    else:
        print_results(results)
    short = searcher.shortfall(len(results), request)
    if short:  # fewer than asked is said, never padded with non-matches
        if args.json:
            eprint(f"note: {short}")
        else:
            print(short)
    return 0
