"""The FastAPI app and the uvicorn runner of `llm2vec-retrieval serve` (the `serve` extra).

The only module of the project that imports FastAPI/uvicorn. ``create_app(service)`` wraps an
``EmbeddingService`` in routes; every response, errors included, is JSON in OpenAI's shapes:

``POST /v1/embeddings``  OpenAI-compatible (``/embeddings`` is an alias)
``POST /search``         search the index given with ``--index`` (``/v1/search`` is an alias)
``GET /v1/models``       the served model, and ``<model>:query`` (the same model embedding
                         queries); ``GET /v1/models/{id}`` one of them (404 otherwise)
``POST /embed``          text-embeddings-inference-compatible (its errors in TEI's shape)
``GET /info``            text-embeddings-inference's model and router settings
``GET /metrics``         Prometheus text format (``metrics.py``)
``GET /health``          status, model, dimension, compute dtype, index (its commit), queue;
                         with an API key, callers without it get ``{"status": "ok"}`` only
``GET /docs``            OpenAPI docs (``/openapi.json``)

Bodies are read and parsed here, not by FastAPI, so that size (413), malformed or too deeply
nested JSON (400) and field validation (422, by the service) each get their own answer. The
handlers never hold a thread while the model works: tokenization and response building run
in the thread pool, the wait for the micro-batcher is an awaited future, and a client that
disconnects meanwhile cancels its job.

``bind`` opens the listening socket before the model is loaded (a port in use fails fast);
``run`` serves it with uvicorn's h11 protocol plus what uvicorn lacks: a read deadline per
request (headers and body; 408 and close) and a cap on open connections (503 and close);
the keep-alive and graceful-shutdown timeouts are uvicorn's options, and SIGINT/SIGTERM stop
the server with ``run`` returning (signal handlers around a plain ``uvicorn.Server``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import http
import json
import logging
import signal
import socket
import sys
import threading
import time
from typing import Any

from . import (
    DEFAULT_KEEP_ALIVE,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_READ_TIMEOUT,
    INSTALL_HINT,
)

try:
    import h11
    import uvicorn
    from fastapi import Depends, FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.middleware.cors import CORSMiddleware
    from fastapi.responses import Response
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
    from pydantic import BaseModel
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.requests import ClientDisconnect
    from starlette.routing import Route
    from uvicorn.protocols.http.h11_impl import H11Protocol
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"the HTTP server needs FastAPI and uvicorn ({exc.name or exc} is missing): {INSTALL_HINT}"
    ) from exc

from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import ServerMetrics
from .schemas import (
    EmbeddingRequest,
    EmbeddingResponse,
    EmbedRequest,
    ErrorResponse,
    Health,
    Info,
    Model,
    ModelList,
    SearchBody,
    SearchResponse,
)
from .service import ApiError, EmbeddingService

logger = logging.getLogger("llm2vec_retrieval.server")


class BindError(OSError):
    """The listening socket could not be opened (port in use, not permitted, bad host)."""


class _Disconnected(Exception):
    """The client went away before its answer was ready."""


# ---------------------------------------------------------------------- responses
def _json_bytes(payload: Any) -> bytes:
    # "replace": a lone surrogate that slipped into a message must not turn a reply into a 500
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        _json_bytes(payload), status_code=status, media_type="application/json", headers=headers
    )


def _error(err: ApiError) -> Response:
    return _json(err.body(), err.status, err.headers or None)


def _raw_error(status: int, message: str, code: str) -> bytes:
    """A complete HTTP/1.1 error response, for the protocol layer (no ASGI cycle to answer)."""
    body = _json_bytes(ApiError(status, message, code=code).body())
    head = (
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


# ---------------------------------------------------------------------- app
_ERRORS = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in (
        (400, "bad JSON, or an input longer than the token limit"),
        (401, "missing or wrong API key (with --api-key)"),
        (413, "body or input count over the limits"),
        (422, "a field with a wrong type or value (`param` names it)"),
        (503, "timed out waiting for the model"),
    )
}


class _MetricsMiddleware:
    """Counts every answered request by route template and status, with its duration (pure
    ASGI: it sees the status the app sends, errors included). Paths matching no route count
    as ``other``."""

    def __init__(self, app: Any, metrics: ServerMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def sending(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", None) or "other"
            self.metrics.request(route, status, time.perf_counter() - start)


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


def create_app(
    service: EmbeddingService,
    *,
    api_key: str | None = None,
    cors_origins: list[str] | tuple[str, ...] = (),
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> FastAPI:
    """The ASGI app over ``service``. ``api_key``: required as ``Authorization: Bearer`` on
    every route but ``/health`` and the docs; ``/health`` then tells a caller without it
    only that the server is up, and a 404 does not list the routes (nothing about the host
    without the key). ``cors_origins``: origins allowed by CORS (none: no CORS headers at
    all)."""
    app = _new_app(cors_origins)
    auth = _ApiKey(api_key)
    _add_error_handlers(app, list_routes=api_key is None)
    _add_job_routes(app, service, auth.dependencies, max_body_bytes)
    _add_read_routes(app, service, auth)
    app.add_middleware(_MetricsMiddleware, metrics=service.metrics)
    return app


def _new_app(cors_origins: list[str] | tuple[str, ...]) -> FastAPI:
    """The bare app, with CORS for ``cors_origins`` (none: no CORS headers at all)."""
    from .. import __version__

    app = FastAPI(
        title="llm2vec-retrieval",
        version=__version__,
        description="LLM2Vec embeddings (OpenAI-compatible) and index search.",
        redoc_url=None,
    )
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )
    return app


class _ApiKey:
    """The API key check: ``dependencies`` of every route that needs the key (none without
    a key), and `allows` for ``/health``, which answers without it."""

    def __init__(self, api_key: str | None):
        self.api_key = api_key
        self.bearer = HTTPBearer(auto_error=False, description="the key given to `serve --api-key`")
        self.expected = (api_key or "").encode("utf-8")
        self.dependencies: list[Any] = []
        if api_key is not None:

            async def authorize(
                credentials: HTTPAuthorizationCredentials | None = Depends(self.bearer),  # noqa: B008
            ) -> None:
                if not self.key_ok(credentials):
                    raise ApiError(
                        401,
                        "missing or incorrect API key: send the header 'Authorization: Bearer <key>'",
                        code="invalid_api_key",
                        headers={"WWW-Authenticate": "Bearer"},
                    )

            self.dependencies = [Depends(authorize)]

    def key_ok(self, credentials: HTTPAuthorizationCredentials | None) -> bool:
        if self.api_key is None:
            return True
        given = (credentials.credentials if credentials is not None else "").encode(
            "utf-8", "replace"
        )
        return hmac.compare_digest(given, self.expected)

    async def allows(self, request: Request) -> bool:
        """Whether ``request`` may see what the key guards (always, without a key)."""
        return self.api_key is None or self.key_ok(await self.bearer(request))


def _add_error_handlers(app: FastAPI, list_routes: bool) -> None:
    """Every error in OpenAI's {"error": {...}} shape; a 404 lists the routes only with
    ``list_routes`` (with a key, a caller who may not have it learns nothing beyond /docs)."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return _error(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _error(_http_api_error(app, request, exc, list_routes))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        loc = exc.errors()[0].get("loc", ())
        field = str(loc[-1]) if loc else None
        return _error(ApiError(422, f"invalid '{field}'", param=field, code="invalid_value"))


def _http_api_error(
    app: FastAPI, request: Request, exc: StarletteHTTPException, list_routes: bool
) -> ApiError:
    """Starlette's 404, 405 and other HTTP errors as `ApiError`s that say what to do."""
    method, path = request.method, request.url.path
    headers = dict(exc.headers or {})
    if exc.status_code == 404:
        routes = ", ".join(
            f"{'/'.join(sorted(r.methods - {'HEAD'}))} {r.path.replace(':path', '')}"
            for r in app.routes
            if isinstance(r, Route) and r.include_in_schema and r.methods
        )
        hint = f"routes: {routes}" if list_routes else "see /docs"
        return ApiError(
            404,
            f"unknown route {method} {path}; {hint}",
            code="not_found",
            type_="not_found_error",
            headers=headers,
        )
    if exc.status_code == 405:
        allow = headers.get("Allow") or headers.get("allow") or ""
        return ApiError(
            405,
            f"method {method} not allowed on {path}; use {allow}",
            code="method_not_allowed",
            headers=headers,
        )
    return ApiError(exc.status_code, str(exc.detail), headers=headers)


async def _guarded(work, tei: bool = False) -> Response:
    """``work()``'s response, or its error in OpenAI's shape (TEI's with ``tei``)."""
    try:
        return await work()
    except _Disconnected:
        return Response(status_code=400)  # nobody is listening any more
    except Exception as exc:
        if isinstance(exc, ApiError):
            err = exc
        else:  # a bug or a model failure: this request fails alone
            logger.error("request failed: %s: %s", type(exc).__name__, exc)
            err = ApiError(500, f"internal error: {type(exc).__name__}: {exc}")
        if tei:
            return _json(err.tei_body(), err.status, err.headers or None)
        return _error(err)


async def _wait_for(
    service: EmbeddingService, request: Request, pairs: list[tuple[str, str]], tokens: list[int]
):
    """The vectors of ``pairs`` from the micro-batcher; the job is dropped when the client
    goes away (`_Disconnected`) or the service's request timeout passes (503)."""
    fut = service.submit(pairs, tokens)
    waiter = asyncio.wrap_future(fut)
    gone = asyncio.ensure_future(_until_disconnect(request))
    try:
        done, _ = await asyncio.wait(
            {waiter, gone}, timeout=service.request_timeout, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        gone.cancel()
    if waiter in done:
        return waiter.result()
    fut.cancel()  # the batcher drops a cancelled job before its next piece
    waiter.cancel()
    if gone in done:
        raise _Disconnected
    raise ApiError(503, "timed out waiting for the model", code="timeout")


def _job_route(
    service: EmbeddingService,
    max_body_bytes: int,
    prepare,
    respond,
    tei: bool = False,
    optional_vectors: bool = False,
):
    """A POST route: parse the body, ``prepare`` the job (thread pool), wait for its
    vectors from the micro-batcher, render ``respond(job, vectors)`` (thread pool)."""

    async def route(request: Request) -> Response:
        async def work() -> Response:
            body = await _read_json(request, max_body_bytes)
            job = await run_in_threadpool(prepare, body)
            vectors = (
                await _wait_for(service, request, job.pairs, job.tokens)
                if job.pairs or not optional_vectors
                else None
            )
            data = await run_in_threadpool(lambda: _json_bytes(respond(job, vectors)))
            return Response(data, media_type="application/json")

        return await _guarded(work, tei=tei)

    return route


def _add_job_routes(
    app: FastAPI, service: EmbeddingService, dependencies: list[Any], max_body_bytes: int
) -> None:
    """The POST routes, which encode: /v1/embeddings, /search, /embed (and aliases)."""
    embeddings = _job_route(
        service, max_body_bytes, service.prepare_embeddings, service.embeddings_response
    )
    # lexical search needs no vectors
    search = _job_route(
        service,
        max_body_bytes,
        service.prepare_search,
        service.search_response,
        optional_vectors=True,
    )
    embed = _job_route(
        service, max_body_bytes, service.prepare_embed, service.embed_response, tei=True
    )
    post: dict[str, Any] = {"methods": ["POST"], "dependencies": dependencies, "responses": _ERRORS}
    app.add_api_route(
        "/v1/embeddings",
        embeddings,
        response_model=EmbeddingResponse,
        summary="Create embeddings (OpenAI-compatible)",
        openapi_extra=_body_schema(EmbeddingRequest),
        **post,
    )
    app.add_api_route("/embeddings", embeddings, include_in_schema=False, **post)
    app.add_api_route(
        "/search",
        search,
        response_model=SearchResponse,
        summary="Search the served index",
        openapi_extra=_body_schema(SearchBody),
        **post,
    )
    app.add_api_route("/v1/search", search, include_in_schema=False, **post)
    app.add_api_route(
        "/embed",
        embed,
        summary="Create embeddings (text-embeddings-inference-compatible)",
        openapi_extra=_body_schema(EmbedRequest),
        **post,
    )


def _add_read_routes(app: FastAPI, service: EmbeddingService, auth: _ApiKey) -> None:
    """The GET routes: models, info, metrics (behind the key) and health (open)."""

    async def info() -> Response:
        return _json(service.info())

    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type=METRICS_CONTENT_TYPE)

    async def models() -> Response:
        return _json(service.models())

    async def model(model_id: str) -> Response:
        return await _guarded(lambda: _async(service.model, model_id))

    async def health(request: Request) -> Response:
        details = await auth.allows(request)
        # in the thread pool: a new commit of the index is loaded there first
        return _json(await run_in_threadpool(service.health, details))

    get: dict[str, Any] = {"methods": ["GET"], "dependencies": auth.dependencies}
    app.add_api_route("/v1/models", models, response_model=ModelList, summary="List models", **get)
    app.add_api_route(
        "/v1/models/{model_id:path}",
        model,
        response_model=Model,
        summary="Retrieve a model",
        responses={404: {"model": ErrorResponse}},
        **get,
    )
    app.add_api_route("/info", info, response_model=Info, summary="Model info (TEI)", **get)
    app.add_api_route(
        "/metrics",
        metrics,
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {METRICS_CONTENT_TYPE: {}}}},
        **get,
    )
    app.add_api_route("/health", health, methods=["GET"], response_model=Health, summary="Health")


async def _async(fn, *args):
    return _json(fn(*args))


async def _until_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _read_json(request: Request, limit: int) -> Any:
    """The body parsed as JSON: 413 over ``limit`` bytes, 400 when it is not JSON."""
    announced = request.headers.get("content-length")
    too_large = False
    if announced is not None and announced.isdigit() and int(announced) > limit:
        too_large = True
    # A refused body is still read (up to a bound) before answering: closing a socket with
    # unread data resets it, and the client would not see the 413.
    bound = max(8 * limit, 8 << 20)
    body = bytearray()
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if not too_large:
                body += chunk
                if size > limit:
                    too_large, body = True, bytearray()
            if too_large and size >= bound:
                break
    except ClientDisconnect:
        raise _Disconnected from None
    if too_large:
        shown = f"{announced} bytes" if announced is not None else f"over {limit} bytes"
        raise ApiError(
            413,
            f"request body is {shown}; the limit is {limit} bytes",
            code="body_too_large",
            headers={"Connection": "close"},
        )
    try:
        return json.loads(body.decode("utf-8"))
    except RecursionError:
        raise ApiError(400, "request body is nested too deeply", code="bad_json") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(
            400,
            f"request body is not valid JSON ({type(exc).__name__}: {str(exc)[:120]})",
            code="bad_json",
        ) from None


# ---------------------------------------------------------------------- socket and server
def bind(host: str = "127.0.0.1", port: int = 8000, backlog: int = 2048) -> socket.socket:
    """Open the listening socket (before the model is loaded, so a busy port fails fast)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            what = "already in use" if exc.errno == errno.EADDRINUSE else "not permitted"
            raise BindError(exc.errno, f"cannot listen on {host}:{port}: port {what}") from None
        reason = exc.strerror or str(exc)
        raise BindError(exc.errno, f"cannot listen on {host}:{port}: {reason}") from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def _guarded_protocol(max_connections: int, read_timeout: float) -> type:
    class GuardedH11Protocol(H11Protocol):
        """uvicorn's h11 protocol plus a read deadline per request and a connection cap.

        uvicorn only times out idle keep-alive connections: a client that connects and sends
        nothing, or half a request, holds its connection forever. Here each request must
        arrive whole (headers and body) within ``read_timeout`` seconds of its first byte (or
        of the connection opening), else it gets a 408 and the connection is closed; a
        connection beyond ``max_connections`` open ones gets a 503 and is closed at once.

        Why a protocol class (uvicorn's supported ``Config(http=<class>)``) and not uvicorn's
        options or an ASGI middleware (checked against uvicorn 0.55):
        - no option bounds the time to receive a request: ``timeout_keep_alive`` starts only
          after a response (not when a connection opens) and stops at the next byte; the
          request-start/complete timeouts of uvicorn issue #157 were never implemented;
          ``h11_max_incomplete_event_size`` bounds the size of the headers, not their time.
        - ``limit_concurrency`` is checked only once a request's headers are complete (then a
          plain-text 503): connections that send nothing or half the headers, the ones that
          exhausted threads in issue 14.12, are never counted against it or refused.
        - an ASGI app or middleware is called only after the headers are parsed, so it cannot
          see a connection that is still sending them.
        ``backlog`` and ``limit_max_requests`` are no substitute either (the listen queue of a
        socket that ``bind`` opens itself; a request count after which the server exits).
        """

        _timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                self.connections.discard(self)
                transport.write(
                    _raw_error(
                        503,
                        f"too many open connections (the server's limit is {max_connections})",
                        "too_many_connections",
                    )
                )
                transport.close()
                return
            self._arm()

        def data_received(self, data: bytes) -> None:
            self._arm()
            super().data_received(data)
            self._settle()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._settle()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._timer is None:
                self._timer = self.loop.call_later(read_timeout, self._timed_out)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _settle(self) -> None:
            """Keep the clock running only while a request is partly received."""
            state = self.conn.their_state
            partial = state is h11.IDLE and bool(self.conn.trailing_data[0])
            if state is h11.SEND_BODY or partial:
                self._arm()
            else:
                self._disarm()

        def _timed_out(self) -> None:
            self._timer = None
            if self.transport.is_closing():
                return
            in_headers = self.conn.their_state is h11.IDLE
            cycle = self.cycle
            if in_headers or (cycle is not None and not cycle.response_started):
                self.transport.write(
                    _raw_error(
                        408,
                        f"the request did not arrive within {read_timeout:g} s (read timeout)",
                        "read_timeout",
                    )
                )
            if not in_headers and cycle is not None and not cycle.response_complete:
                cycle.disconnected = True  # the app's receive() sees a disconnect
                cycle.message_event.set()
            self.transport.close()

    return GuardedH11Protocol


def run(
    app: FastAPI,
    sock: socket.socket,
    *,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
    keep_alive: float = DEFAULT_KEEP_ALIVE,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    access_log: bool = False,
    graceful_timeout: float = 10.0,
) -> None:
    """Serve ``app`` on ``sock`` until SIGINT/SIGTERM, then finish in-flight requests."""
    config = uvicorn.Config(
        app,
        http=_guarded_protocol(max_connections, read_timeout),
        lifespan="off",
        log_level="warning",
        access_log=access_log,
        timeout_keep_alive=keep_alive,  # type: ignore[arg-type]
        timeout_graceful_shutdown=graceful_timeout,  # type: ignore[arg-type]
        proxy_headers=False,
        server_header=False,
    )
    if access_log:
        logging.getLogger("uvicorn.access").setLevel(logging.INFO)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("error: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    server = uvicorn.Server(config)
    with _stop_on_signals(server):
        server.run(sockets=[sock])


@contextlib.contextmanager
def _stop_on_signals(server: uvicorn.Server):
    """While serving, SIGINT and SIGTERM stop ``server`` gracefully and ``run`` returns
    (``serve`` then says "server stopped" and exits 0).

    Only public API: ``uvicorn.Server.run`` installs its own handlers while it serves, and
    once it has shut down it restores the handlers it found and raises the signal it caught
    again (``signal.raise_signal``; uvicorn's "cooperative signal handling", since 0.29, the
    `serve` extra's minimum), so that those run too: Python's default ones would raise
    KeyboardInterrupt (SIGINT) or end the process (SIGTERM). The handlers it finds are these,
    which only set ``server.should_exit`` (what uvicorn's own handler sets): the signal raised
    again is absorbed, and one that arrives before uvicorn installs its handlers (during
    startup) still stops the server. The previous handlers are restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach only the main thread; uvicorn installs none either
        return

    def stop(signum: int, frame: Any) -> None:
        server.should_exit = True

    handled = [signal.SIGINT, signal.SIGTERM]
    if hasattr(signal, "SIGBREAK"):  # Windows' Ctrl+Break, which uvicorn handles too
        handled.append(signal.SIGBREAK)
    previous = {sig: signal.signal(sig, stop) for sig in handled}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
