"""`serve`: embeddings (OpenAI-compatible) and search over HTTP (FastAPI, the serve extra).

FastAPI and uvicorn are imported only when the command runs: the core imports no web framework.
"""

from __future__ import annotations

import argparse
import math
import os
import re

from ..errors import UserError
from .common import (
    Formatter,
    Subparsers,
    add_model_args,
    eprint,
    open_searcher,
    reading_inputs,
    say_dtype,
    wrap,
)


def register(sub: Subparsers) -> None:
    sv = sub.add_parser(
        "serve",
        formatter_class=Formatter,
        help="serve embeddings (OpenAI-compatible) and search over HTTP",
        description=wrap(
            "HTTP server (FastAPI + uvicorn, the serve extra): POST /v1/embeddings (OpenAI-compatible, "
            "plus input_type and instruction), POST /search (with --index), GET /v1/models, "
            "GET /health, OpenAPI docs at /docs. Requests are micro-batched by token budget."
        ),
        epilog="example: llm2vec-retrieval serve --index my-index --port 8000\n"
        '  curl -s localhost:8000/v1/embeddings -d \'{"input": ["hello"], "input_type": "query"}\'',
    )
    sv.error = _serve_error
    _add_serving_args(sv)
    _add_access_args(sv)
    _add_request_limits(sv)
    _add_batching_args(sv)
    _add_connection_args(sv)
    sv.add_argument("--access-log", action="store_true", help="log every request to stderr")
    sv.set_defaults(func=run, says_dtype=False)


def _add_serving_args(sv: argparse.ArgumentParser) -> None:
    """What is served and where: the index, the model, host and port, the reported name."""
    sv.add_argument(
        "--index",
        default=None,
        metavar="DIR",
        help="index folder for /search (its model is served)",
    )
    add_model_args(sv, "model to serve (default: the index's, else the embedded default)")
    sv.add_argument(
        "--host",
        type=_nonempty,
        default="127.0.0.1",
        help="address to bind (keep it local unless an --api-key is set)",
    )
    sv.add_argument(
        "--port", type=_int_in(0, 65535), default=8000, help="port (0 picks a free one)"
    )
    sv.add_argument(
        "--allow-mismatch", action="store_true", help="serve an index built with another embedder"
    )
    sv.add_argument(
        "--served-model-name",
        type=_nonempty,
        default=None,
        help="model name reported by the API (default: the model's)",
    )


def _add_access_args(sv: argparse.ArgumentParser) -> None:
    """Who may call: the API key and the CORS origins."""
    from ..server import API_KEY_ENV

    sv.add_argument(
        "--api-key",
        type=_nonempty,
        default=None,
        help=f"require 'Authorization: Bearer KEY' (401 without it; default: ${API_KEY_ENV}, "
        "else no key)",
    )
    sv.add_argument(
        "--cors-origin",
        type=_origin,
        action="append",
        default=[],
        metavar="ORIGIN",
        help="allow browser calls from this origin (repeatable; '*' for any; default: CORS off)",
    )


def _add_request_limits(sv: argparse.ArgumentParser) -> None:
    """How large one request may be."""
    from ..server import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_INPUTS

    sv.add_argument(
        "--max-body-bytes",
        type=_int_in(1),
        default=DEFAULT_MAX_BODY_BYTES,
        help="largest request body (413 above)",
    )
    sv.add_argument(
        "--max-inputs",
        type=_int_in(1),
        default=DEFAULT_MAX_INPUTS,
        help="most inputs per request (413 above)",
    )
    sv.add_argument(
        "--max-input-tokens",
        type=_int_in(1),
        default=None,
        help="longest input in tokens (400 above; default and maximum: the model's doc_max_length)",
    )
    sv.add_argument(
        "--truncate",
        action="store_true",
        help="cut long inputs to the limit instead of refusing them",
    )


def _add_batching_args(sv: argparse.ArgumentParser) -> None:
    """The micro-batcher's wait and token budget."""
    from ..server import DEFAULT_BATCH_TOKENS, DEFAULT_BATCH_WAIT_MS

    sv.add_argument(
        "--batch-wait-ms",
        type=_seconds(0.0, inclusive=True),
        default=DEFAULT_BATCH_WAIT_MS,
        help="how long an idle batcher waits for more requests",
    )
    sv.add_argument(
        "--batch-tokens",
        type=_int_in(1),
        default=DEFAULT_BATCH_TOKENS,
        help="token budget of one model batch; large requests are encoded in pieces of this "
        "size, interleaved with the others",
    )


def _add_connection_args(sv: argparse.ArgumentParser) -> None:
    """Timeouts and the connection cap."""
    from ..server import (
        DEFAULT_KEEP_ALIVE,
        DEFAULT_MAX_CONNECTIONS,
        DEFAULT_READ_TIMEOUT,
        DEFAULT_REQUEST_TIMEOUT,
    )

    sv.add_argument(
        "--read-timeout",
        type=_seconds(0.0, inclusive=False),
        default=DEFAULT_READ_TIMEOUT,
        metavar="S",
        help="seconds for a request (headers and body) to arrive (408 and close after)",
    )
    sv.add_argument(
        "--keep-alive",
        type=_seconds(0.0, inclusive=False),
        default=DEFAULT_KEEP_ALIVE,
        metavar="S",
        help="seconds an idle keep-alive connection stays open",
    )
    sv.add_argument(
        "--max-connections",
        type=_int_in(1),
        default=DEFAULT_MAX_CONNECTIONS,
        help="open connections at most (503 and close above)",
    )
    sv.add_argument(
        "--request-timeout",
        type=_seconds(0.0, inclusive=False),
        default=DEFAULT_REQUEST_TIMEOUT,
        metavar="S",
        help="seconds a request may wait for the model (503 after)",
    )


def run(args: argparse.Namespace) -> int:
    from ..server import API_KEY_ENV, INSTALL_HINT, SERVER_ENV

    try:  # the serve extra, checked before anything slow
        from ..server import app as srv
    except ImportError as exc:
        if INSTALL_HINT not in str(exc):  # not the missing extra: a bug
            raise
        raise UserError(str(exc).splitlines()[0]) from exc
    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None
    if api_key is not None and (not api_key.strip() or api_key != api_key.strip()):
        raise UserError("the API key must be non-empty and have no surrounding whitespace")
    if args.index is not None:
        from ..ingest import IndexFolder

        IndexFolder(args.index).read_manifest()
    try:
        sock = srv.bind(args.host, args.port)
    except srv.BindError as exc:
        raise UserError(exc.strerror) from exc
    service = None
    try:
        searcher = index = None
        if args.index is not None:
            from ..ingest import IndexFolder
            from ..server.live import LiveIndex, signature

            args.dir = args.index
            opened = signature(IndexFolder(args.index))  # before the load: a commit meanwhile
            searcher = open_searcher(args)  # is picked up by the first request
            encoder = searcher.encoder
            assert encoder is not None  # open_searcher loads the model (never lexical-only)
            index = LiveIndex(
                searcher, opened=opened, allow_fingerprint_mismatch=args.allow_mismatch
            )
        else:
            from ..ingest.folder import embedder_spec, encoder_from_spec

            with reading_inputs():
                encoder = encoder_from_spec(
                    embedder_spec(args.model, args.adapter), args.encoder_dtype
                )
        try:
            service = srv.EmbeddingService(
                encoder,
                searcher=index,
                model_name=args.served_model_name,
                max_inputs=args.max_inputs,
                max_input_tokens=args.max_input_tokens,
                truncate=args.truncate,
                max_batch_tokens=args.batch_tokens,
                batch_wait_ms=args.batch_wait_ms,
                query_instruction=searcher.query_instruction if searcher is not None else None,
                request_timeout=args.request_timeout,
                max_concurrent_requests=args.max_connections,
            )
        except ValueError as exc:  # the service checks its settings (--max-input-tokens ...)
            raise UserError(str(exc)) from exc
        app = srv.create_app(
            service,
            api_key=api_key,
            cors_origins=args.cors_origin,
            max_body_bytes=args.max_body_bytes,
        )
        index_note = (
            f", index {searcher.folder.path} ({len(searcher.store)} chunks)" if searcher else ""
        )
        say_dtype(args)
        print(
            f"serving {service.model_name} (dim {encoder.embedding_dim}{index_note}) "
            f"on {srv.url_of(sock)}",
            flush=True,
        )
        eprint(
            "searches from the command line can use it: llm2vec-retrieval search --index "
            f"{searcher.folder.path if searcher else 'DIR'} QUERY --server {srv.url_of(sock)} "
            f"(or set ${SERVER_ENV})"
        )
        if args.host not in ("127.0.0.1", "localhost", "::1") and api_key is None:
            eprint(
                f"warning: listening on {args.host} without an API key "
                f"(--api-key or ${API_KEY_ENV}): anyone who reaches it can use it"
            )
        srv.run(
            app,
            sock,
            read_timeout=args.read_timeout,
            keep_alive=args.keep_alive,
            max_connections=args.max_connections,
            access_log=args.access_log,
        )
    finally:
        sock.close()
        if service is not None:
            service.close()
    eprint("server stopped")
    return 0


def _serve_error(message: str):
    """The serve parser's errors: one line, exit code 2 (argparse prints usage too)."""
    eprint(f"error: {message}")
    raise SystemExit(2)


def _int_in(low: int, high: int | None = None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            span = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be an integer {span}, got {text!r}")
        return value

    return parse


def _seconds(low: float, inclusive: bool):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        ok = math.isfinite(value) and (value >= low if inclusive else value > low)
        if not ok:
            bound = f"at least {low:g}" if inclusive else f"more than {low:g}"
            raise argparse.ArgumentTypeError(f"must be a number {bound}, got {text!r}")
        return value

    return parse


def _nonempty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _origin(text: str) -> str:
    if text != "*" and not re.fullmatch(r"https?://[^/\s?#]+", text):
        raise argparse.ArgumentTypeError(
            f"must be '*' or an origin like https://example.com:8080 (no path), got {text!r}"
        )
    return text
