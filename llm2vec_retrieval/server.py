"""HTTP embedding server (`llm2vec-retrieval serve`): stdlib only.

Routes:

``POST /v1/embeddings``  OpenAI-compatible. Body: ``input`` (a string or a list of strings),
                         optional ``model`` (echoed back), ``dimensions`` (keep the first N
                         dimensions, re-normalized), ``encoding_format`` (``"float"`` or
                         ``"base64"``: little-endian float32 bytes), and two extensions:
                         ``input_type`` (``"document"``, the default, or ``"query"``: the
                         query instruction is prepended) and ``instruction`` (overrides it).
``POST /search``         ``{"query": "...", "k": 5, "filter": {...}, "instruction": ..., "mode":
                         "dense"|"lexical"|"hybrid", "fusion": "rrf"|"alpha", "alpha": 0.5}`` on
                         the index given with ``--index`` (``/v1/search`` is an alias); mode
                         defaults to hybrid (dense on an index without a lexical part).
``GET /health``          status, model, dimension, index size, queue length.
``GET /v1/models``       the one model served (OpenAI-compatible listing).

Requests from all connections go through one micro-batcher thread: it takes whatever is
queued (waiting up to ``batch_wait_ms`` for more, bounded by a token budget), encodes it
in one call and hands each request its rows. Errors are JSON
``{"error": {"message", "type", "param", "code"}}`` with a 4xx status: body too large
(413), too many inputs (413), an input longer than the token limit (400, unless the
server truncates), bad JSON or fields (400), unknown route (404), wrong method (405).
"""

from __future__ import annotations

import base64
import errno
import json
import queue
import signal
import socket
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_MAX_INPUTS = 256
DEFAULT_BATCH_WAIT_MS = 2.0
DEFAULT_BATCH_TOKENS = 8192
MAX_K = 1000


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        type_: str = "invalid_request_error",
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type_

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class PortInUseError(OSError):
    pass


# ---------------------------------------------------------------------- micro-batching
@dataclass
class _Job:
    pairs: list[tuple[str, str]]
    tokens: int
    future: Future


class MicroBatcher:
    """One thread that owns the model: batches queued requests and encodes them together."""

    def __init__(
        self,
        encoder,
        max_batch_tokens: int = DEFAULT_BATCH_TOKENS,
        wait_ms: float = DEFAULT_BATCH_WAIT_MS,
    ):
        self.encoder = encoder
        self.max_batch_tokens = max_batch_tokens
        self.wait = wait_ms / 1000.0
        self.queue: queue.Queue[_Job | None] = queue.Queue()
        self.batches = 0
        self.requests = 0
        self._thread = threading.Thread(target=self._loop, name="micro-batcher", daemon=True)
        self._thread.start()

    def submit(self, pairs: list[tuple[str, str]], tokens: int) -> Future:
        fut: Future = Future()
        self.queue.put(_Job(pairs, tokens, fut))
        return fut

    def close(self) -> None:
        self.queue.put(None)
        self._thread.join(timeout=10)

    def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        jobs, tokens = [first], first.tokens
        deadline = time.monotonic() + self.wait
        while tokens < self.max_batch_tokens:
            timeout = deadline - time.monotonic()
            try:
                job = self.queue.get_nowait() if timeout <= 0 else self.queue.get(timeout=timeout)
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            jobs.append(job)
            tokens += job.tokens
        return jobs, False

    def _loop(self) -> None:
        stop = False
        while not stop:
            first = self.queue.get()
            if first is None:
                break
            jobs, stop = self._collect(first)
            jobs = [j for j in jobs if j.future.set_running_or_notify_cancel()]
            if not jobs:
                continue
            pairs = [p for j in jobs for p in j.pairs]
            try:
                vectors = self.encoder.encode(
                    pairs,
                    batch_size=max(len(pairs), 1),
                    show_progress_bar=False,
                    convert_to_numpy=True,
                )
                vectors = np.asarray(vectors, dtype=np.float32).reshape(len(pairs), -1)
            except Exception as exc:  # every waiting request gets the error
                for j in jobs:
                    j.future.set_exception(exc)
                continue
            self.batches += 1
            self.requests += len(jobs)
            row = 0
            for j in jobs:
                j.future.set_result(vectors[row : row + len(j.pairs)])
                row += len(j.pairs)


def _normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


# ---------------------------------------------------------------------- service
class EmbeddingService:
    """Request validation and the work behind each route (independent of HTTP)."""

    def __init__(
        self,
        encoder,
        searcher=None,
        model_name: str | None = None,
        max_inputs: int = DEFAULT_MAX_INPUTS,
        max_input_tokens: int | None = None,
        truncate: bool = False,
        max_batch_tokens: int = DEFAULT_BATCH_TOKENS,
        batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS,
        query_instruction: str | None = None,
        request_timeout: float = 300.0,
    ):
        self.encoder = encoder
        self.searcher = searcher
        self.model_name = model_name or str(encoder.source.get("model") or "llm2vec")
        self.max_inputs = max_inputs
        self.max_input_tokens = max_input_tokens or encoder.config.doc_max_length
        self.truncate = truncate
        self.query_instruction = (
            query_instruction if query_instruction is not None else encoder.config.query_instruction
        )
        self.request_timeout = request_timeout
        self.batcher = MicroBatcher(encoder, max(max_batch_tokens, 1), batch_wait_ms)
        self.started = time.time()

    def close(self) -> None:
        self.batcher.close()

    # -- helpers
    def _encode(self, pairs: list[tuple[str, str]], tokens: int) -> np.ndarray:
        fut = self.batcher.submit(pairs, tokens)
        vectors = fut.result(timeout=self.request_timeout)
        if self.encoder.config.normalize:
            vectors = _normalize(vectors)
        return vectors

    def _check_lengths(self, texts: list[str], param: str) -> list[int]:
        counts = self.encoder.count_tokens(texts)
        if not self.truncate:
            for i, n in enumerate(counts):
                if n > self.max_input_tokens:
                    where = f"{param}[{i}]" if len(texts) > 1 or param == "input" else param
                    raise ApiError(
                        400,
                        f"{where} is {n} tokens long; max_length is {self.max_input_tokens} tokens "
                        "(shorten it, or start the server with --truncate to cut long inputs)",
                        param=param,
                        code="input_too_long",
                    )
        return [min(n, self.max_input_tokens) for n in counts]

    # -- routes
    def health(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": "ok",
            "model": self.model_name,
            "dim": self.encoder.embedding_dim,
            "max_input_tokens": self.max_input_tokens,
            "max_inputs": self.max_inputs,
            "queue": self.batcher.queue.qsize(),
            "batches": self.batcher.batches,
            "uptime_s": round(time.time() - self.started, 3),
            "index": None,
        }
        if self.searcher is not None:
            out["index"] = {
                "path": str(self.searcher.folder.path),
                "chunks": len(self.searcher.store),
                "kind": self.searcher.store.kind,
            }
        return out

    def models(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {
                    "id": self.model_name,
                    "object": "model",
                    "created": int(self.started),
                    "owned_by": "llm2vec-retrieval",
                }
            ],
        }

    def embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        raw = body.get("input")
        if raw is None:
            raise ApiError(
                400, "missing required field 'input' (a string or a list of strings)", param="input"
            )
        if isinstance(raw, str):
            texts = [raw]
        elif isinstance(raw, list):
            if not raw:
                raise ApiError(400, "'input' is an empty list", param="input")
            if not all(isinstance(t, str) for t in raw):
                raise ApiError(
                    400,
                    "'input' must be a string or a list of strings (token arrays are not supported)",
                    param="input",
                )
            texts = raw
        else:
            raise ApiError(400, "'input' must be a string or a list of strings", param="input")
        if len(texts) > self.max_inputs:
            raise ApiError(
                413,
                f"'input' has {len(texts)} items; at most {self.max_inputs} per request",
                param="input",
                code="too_many_inputs",
            )
        input_type = body.get("input_type", "document")
        if input_type is None:
            input_type = "document"
        if input_type not in ("query", "document"):
            raise ApiError(
                400,
                f"'input_type' must be 'query' or 'document', got {input_type!r}",
                param="input_type",
            )
        instruction = body.get("instruction")
        if instruction is not None and not isinstance(instruction, str):
            raise ApiError(400, "'instruction' must be a string", param="instruction")
        if instruction is None:
            instruction = (
                self.query_instruction
                if input_type == "query"
                else self.encoder.config.document_instruction
            )
        fmt = body.get("encoding_format", "float") or "float"
        if fmt not in ("float", "base64"):
            raise ApiError(
                400,
                f"'encoding_format' must be 'float' or 'base64', got {fmt!r}",
                param="encoding_format",
            )
        dim = self.encoder.embedding_dim
        dimensions = body.get("dimensions")
        if dimensions is not None and (
            isinstance(dimensions, bool)
            or not isinstance(dimensions, int)
            or not 1 <= dimensions <= dim
        ):
            raise ApiError(
                400,
                f"'dimensions' must be an integer from 1 to {dim}, got {dimensions!r}",
                param="dimensions",
            )
        model = body.get("model")
        if model is not None and not isinstance(model, str):
            raise ApiError(400, "'model' must be a string", param="model")

        counts = self._check_lengths(texts, "input")
        vectors = self._encode([(instruction, t) for t in texts], sum(counts))
        if dimensions is not None and dimensions < dim:
            vectors = _normalize(vectors[:, :dimensions])
        data = []
        for i, v in enumerate(vectors):
            if fmt == "base64":
                emb: Any = base64.b64encode(np.ascontiguousarray(v, dtype="<f4").tobytes()).decode(
                    "ascii"
                )
            else:
                emb = v.tolist()
            data.append({"object": "embedding", "index": i, "embedding": emb})
        total = int(sum(counts))
        return {
            "object": "list",
            "data": data,
            "model": model or self.model_name,
            "usage": {"prompt_tokens": total, "total_tokens": total},
        }

    def search(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.searcher is None:
            raise ApiError(
                400,
                "no index loaded: start the server with --index DIR to use /search",
                code="no_index",
            )
        query = body.get("query")
        if not isinstance(query, str):
            raise ApiError(400, "missing or invalid field 'query' (a string)", param="query")
        k = body.get("k", 5)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise ApiError(400, f"'k' must be an integer from 1 to {MAX_K}, got {k!r}", param="k")
        flt = body.get("filter")
        if flt is not None and not isinstance(flt, dict):
            raise ApiError(400, "'filter' must be an object", param="filter")
        instruction = body.get("instruction")
        if instruction is not None and not isinstance(instruction, str):
            raise ApiError(400, "'instruction' must be a string", param="instruction")
        from .index import compile_filter

        try:
            compile_filter(flt)
        except ValueError as exc:
            raise ApiError(400, str(exc), param="filter") from None
        from .index.fusion import FUSIONS
        from .index.store import DEFAULT_ALPHA, DEFAULT_FUSION

        try:
            mode = self.searcher.check_mode(body.get("mode"))
        except ValueError as exc:
            raise ApiError(400, str(exc), param="mode") from None
        fusion = body.get("fusion", DEFAULT_FUSION)
        if fusion not in FUSIONS:
            raise ApiError(
                400, f"'fusion' must be one of {', '.join(FUSIONS)}, got {fusion!r}", param="fusion"
            )
        alpha = body.get("alpha", DEFAULT_ALPHA)
        if (
            isinstance(alpha, bool)
            or not isinstance(alpha, (int, float))
            or not 0.0 <= alpha <= 1.0
        ):
            raise ApiError(
                400, f"'alpha' must be a number from 0 to 1, got {alpha!r}", param="alpha"
            )
        if instruction is None:
            instruction = self.searcher.query_instruction
        vector = None
        if mode != "lexical":  # BM25 alone needs no encoding
            counts = self._check_lengths([query], "query")
            vector = self._encode([(instruction, query)], counts[0])[0]
        results = self.searcher.search_vector(
            vector, k=k, filter=flt, text=query, mode=mode, fusion=fusion, alpha=float(alpha)
        )
        return {
            "object": "search",
            "query": query,
            "model": self.model_name,
            "mode": mode,
            "results": [r.to_dict() for r in results],
        }


# ---------------------------------------------------------------------- HTTP
ROUTES = {
    "/v1/embeddings": ("POST", "embeddings"),
    "/embeddings": ("POST", "embeddings"),
    "/search": ("POST", "search"),
    "/v1/search": ("POST", "search"),
    "/health": ("GET", "health"),
    "/v1/models": ("GET", "models"),
}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "llm2vec-retrieval"
    disable_nagle_algorithm = True  # small replies must not wait for the client's delayed ACK
    server: EmbeddingHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if self.server.access_log:
            sys.stderr.write(f"{self.address_string()} - {format % args}\n")

    def _send(
        self, status: int, payload: dict[str, Any], extra_headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra_headers or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self._headers_buffer.append(b"\r\n")  # headers and body in one write
        self._headers_buffer.append(data)
        self.flush_headers()

    def _error(self, err: ApiError, extra_headers: dict[str, str] | None = None) -> None:
        self._send(err.status, err.body(), extra_headers)

    def _route(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        if len(path) > 1:
            path = path.rstrip("/")
        route = ROUTES.get(path)
        if route is None:
            self._drain_or_close()
            return self._error(
                ApiError(
                    404,
                    f"unknown route {method} {path}; routes: "
                    + ", ".join(f"{m} {p}" for p, (m, _) in ROUTES.items()),
                    code="not_found",
                    type_="not_found_error",
                )
            )
        allowed, name = route
        if method != allowed:
            self._drain_or_close()
            return self._error(
                ApiError(
                    405,
                    f"method {method} not allowed on {path}; use {allowed}",
                    code="method_not_allowed",
                ),
                {"Allow": allowed},
            )
        service = self.server.service
        try:
            if method == "GET":
                return self._send(200, getattr(service, name)())
            body = self._read_json()
            return self._send(200, getattr(service, name)(body))
        except ApiError as err:
            return self._error(err)
        except TimeoutError:
            return self._error(
                ApiError(
                    503, "timed out waiting for the model", type_="server_error", code="timeout"
                )
            )
        except Exception as exc:  # a bug or a model failure: 500 with a one-line message
            self.server.log_error(f"{type(exc).__name__}: {exc}")
            return self._error(
                ApiError(500, f"internal error: {type(exc).__name__}: {exc}", type_="server_error")
            )

    def _drain_or_close(self) -> None:
        """Read a small request body so the connection stays usable, else close it."""
        length = self.headers.get("Content-Length")
        try:
            n = int(length) if length is not None else 0
        except ValueError:
            n = -1
        if 0 < n <= self.server.max_body_bytes:
            self.rfile.read(n)
        elif n != 0 or self.headers.get("Transfer-Encoding"):
            self.close_connection = True

    def _discard(self, n: int) -> None:
        """Read and drop a refused body (up to a bound) so the client can read the error reply."""
        left = min(n, max(8 * self.server.max_body_bytes, 8 << 20))
        try:
            while left > 0:
                chunk = self.rfile.read(min(left, 1 << 16))
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            pass

    def _read_json(self) -> dict[str, Any]:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise ApiError(
                411,
                "chunked request bodies are not supported; send Content-Length",
                code="length_required",
            )
        length = self.headers.get("Content-Length")
        if length is None:
            self.close_connection = True
            raise ApiError(411, "missing Content-Length", code="length_required")
        try:
            n = int(length)
            if n < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            raise ApiError(400, f"bad Content-Length {length!r}") from None
        limit = self.server.max_body_bytes
        if n > limit:
            self.close_connection = True
            self._discard(n)
            raise ApiError(
                413, f"request body is {n} bytes; the limit is {limit} bytes", code="body_too_large"
            )
        raw = self.rfile.read(n)
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ApiError(
                400,
                f"request body is not valid JSON ({type(exc).__name__}: {str(exc)[:120]})",
                code="bad_json",
            ) from None
        if not isinstance(body, dict):
            raise ApiError(400, "request body must be a JSON object", code="bad_json")
        return body

    def do_GET(self) -> None:  # noqa: N802 - stdlib names
        self._route("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._route("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._route("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._route("DELETE")

    def do_PATCH(self) -> None:  # noqa: N802
        self._route("PATCH")


class EmbeddingHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        access_log: bool = False,
    ):
        host = address[0]
        if ":" in host:
            self.address_family = socket.AF_INET6
        try:
            super().__init__(address, _Handler)
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                what = "already in use" if exc.errno == errno.EADDRINUSE else "not permitted"
                raise PortInUseError(
                    exc.errno, f"cannot listen on {host}:{address[1]}: port {what}"
                ) from None
            raise
        self.max_body_bytes = max_body_bytes
        self.access_log = access_log
        self.service: EmbeddingService | None = None

    def log_error(self, msg: str) -> None:
        sys.stderr.write(f"error: {msg}\n")

    def handle_error(self, request, client_address) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return  # the client went away
        super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def bind(
    host: str = "127.0.0.1",
    port: int = 8000,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    access_log: bool = False,
) -> EmbeddingHTTPServer:
    """Bind the listening socket (fails fast on a port in use) before the model is loaded."""
    return EmbeddingHTTPServer((host, port), max_body_bytes=max_body_bytes, access_log=access_log)


def serve_forever(server: EmbeddingHTTPServer, service: EmbeddingService) -> None:
    """Serve until SIGINT/SIGTERM; then stop accepting, finish, and release the model thread."""
    server.service = service

    def stop(signum, frame):  # shutdown() blocks until serve_forever returns: call it from a thread
        threading.Thread(target=server.shutdown, daemon=True).start()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.server_close()
        service.close()
