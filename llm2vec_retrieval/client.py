"""A running `llm2vec-retrieval serve` used as the encoder of queries (issue 16.2).

A new process that loads the model pays for importing torch and transformers and for
loading the weights (seconds) before its first query; a server already holds all that.
`RemoteEncoder` asks one over HTTP (the standard library's, so neither torch nor
transformers is imported): ``GET /v1/models`` for the served model's fingerprint, then
``POST /v1/embeddings`` with ``input_type: query``. It has the part of `LLM2Vec`'s interface
that `Searcher` uses (``fingerprint()``, ``config.query_instruction``, ``embedding_dim``,
``encode_queries``), so an index is searched with it exactly as with a local encoder,
fingerprint check included:

    from llm2vec_retrieval.client import RemoteEncoder
    from llm2vec_retrieval.ingest import Searcher
    searcher = Searcher("my-index", encoder=RemoteEncoder("http://127.0.0.1:8000"))

The vectors are the server's, in the server's dtype (a dtype is not part of the
fingerprint: an index built in float32 is searched with bfloat16 queries as with a local
encoder). The API key, when the server wants one, comes from ``api_key`` or
``$LLM2VEC_RETRIEVAL_API_KEY`` (the variable `serve` reads).

Each call has a total deadline, ``timeout`` seconds for connecting, sending and reading the
whole answer (a watchdog shuts the socket at the deadline, so a server that sends its answer
one byte at a time cannot hold the caller longer), and the answers are checked before use:
a model card without a fingerprint object, embeddings that are missing, of another count or
dimension, not finite, or not the base64 asked for, all raise ``ServerUnavailableError``
(one line), never a stray ``KeyError``; `search --server` then loads the model itself.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import http.client
import json
import os
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import numpy as np

from ._io import JSONReadError, parse_json
from .errors import UserError
from .server import API_KEY_ENV, FINGERPRINT_FIELD

DEFAULT_TIMEOUT = 30.0  # seconds for one whole call: connect, send and read the answer
MAX_ANSWER_BYTES = 64 << 20  # a larger answer is not one of ours
MAX_DIM = 1 << 16  # a larger embedding dimension in a model card is not one of ours


class ServerUnavailableError(UserError):
    """No usable server at the address: unreachable, too slow, refused the key, not ours,
    or its answer is malformed."""


@dataclass(frozen=True)
class RemoteConfig:
    """The settings of the served encoder that a searcher reads."""

    query_instruction: str
    normalize: bool


class RemoteEncoder:
    """The encoder of a running `llm2vec-retrieval serve` at ``url`` (queries only).

    ``timeout``: seconds one call may take in all (None: ``DEFAULT_TIMEOUT``)."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float | None = None):
        parsed = urlparse(url if "://" in url else f"http://{url}")
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ServerUnavailableError(
                f"bad server address {url!r}: give one like http://127.0.0.1:8000"
            )
        self._scheme, self._netloc = parsed.scheme, parsed.netloc
        self._path = parsed.path.rstrip("/")
        self.url = f"{parsed.scheme}://{parsed.netloc}{self._path}"
        self.api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
        self.timeout = DEFAULT_TIMEOUT if timeout is None else float(timeout)
        card = self._model_card()
        self.model_name: str = card["id"]
        self._fingerprint: dict[str, Any] = dict(card[FINGERPRINT_FIELD])
        dtype = card.get("dtype")
        self.dtype: str | None = dtype if isinstance(dtype, str) else None
        self.config = RemoteConfig(
            query_instruction=self._fingerprint.get("query_instruction") or "",
            normalize=bool(self._fingerprint.get("normalize", True)),
        )

    def __repr__(self) -> str:
        return f"RemoteEncoder({self.url!r}, model={self.model_name!r})"

    @property
    def embedding_dim(self) -> int:
        return int(self._fingerprint["dim"])

    def fingerprint(self) -> dict[str, Any]:
        """The served encoder's fingerprint (what `LLM2Vec.fingerprint` returns there)."""
        return dict(self._fingerprint)

    def encode_queries(
        self, queries: Sequence[str], instruction: str | None = None, **_: Any
    ) -> np.ndarray:
        """(n, dim) float32 query vectors from the server; ``instruction`` None: the served
        query instruction."""
        queries = list(queries)
        if not queries:
            return np.empty((0, self.embedding_dim), dtype=np.float32)
        body: dict[str, Any] = {
            "input": queries,
            "input_type": "query",
            "encoding_format": "base64",
            "model": self.model_name,
        }
        if instruction is not None:
            body["instruction"] = instruction
        return self._vectors(self._call("POST", "/v1/embeddings", body), len(queries))

    encode_query = encode_queries

    # ------------------------------------------------------------------ answers
    def _malformed(self, what: str, reason: str) -> ServerUnavailableError:
        return ServerUnavailableError(f"{self.url} sent a malformed answer to {what} ({reason})")

    def _model_card(self) -> dict[str, Any]:
        listing = self._call("GET", "/v1/models")
        cards = listing.get("data") if isinstance(listing, dict) else None
        card = cards[0] if isinstance(cards, list) and cards else None
        if not isinstance(card, dict) or FINGERPRINT_FIELD not in card:
            raise ServerUnavailableError(
                f"{self.url} is not an llm2vec-retrieval server (its /v1/models names no "
                "fingerprint); start one with `llm2vec-retrieval serve`"
            )
        fp = card[FINGERPRINT_FIELD]
        problem = None
        if not isinstance(card.get("id"), str) or not card["id"]:
            problem = "the model has no 'id'"
        elif not isinstance(fp, dict):
            problem = f"'{FINGERPRINT_FIELD}' is {type(fp).__name__}, not an object"
        elif type(fp.get("dim")) is not int or not 0 < fp["dim"] <= MAX_DIM:
            problem = f"the fingerprint's 'dim' is {str(fp.get('dim'))[:40]!r}"
        elif not isinstance(fp.get("query_instruction") or "", str):
            problem = "the fingerprint's 'query_instruction' is not text"
        if problem:
            raise self._malformed("GET /v1/models", problem)
        return card

    def _vectors(self, answer: Any, n: int) -> np.ndarray:
        """The (n, dim) float32 rows of an embeddings answer, every field checked."""
        what, dim = "POST /v1/embeddings", self.embedding_dim
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, list):
            raise self._malformed(what, "no 'data' list")
        if len(data) != n:
            raise self._malformed(what, f"{len(data)} embeddings for {n} queries")
        rows = np.empty((n, dim), dtype=np.float32)
        seen: set[int] = set()
        for item in data:
            i = item.get("index") if isinstance(item, dict) else None
            if type(i) is not int or not 0 <= i < n or i in seen:
                raise self._malformed(what, f"an embedding's 'index' is {str(i)[:20]!r}")
            emb = item.get("embedding")
            if not isinstance(emb, str):
                raise self._malformed(
                    what, f"an embedding is {type(emb).__name__}, not the base64 text asked for"
                )
            try:
                raw = base64.b64decode(emb, validate=True)
            except (binascii.Error, ValueError):
                raise self._malformed(what, "an embedding is not valid base64") from None
            if len(raw) != 4 * dim:
                raise self._malformed(
                    what, f"an embedding has {len(raw)} bytes; {dim} float32 values are {4 * dim}"
                )
            vector = np.frombuffer(raw, dtype="<f4")
            if not np.isfinite(vector).all():
                raise self._malformed(what, "an embedding holds NaN or infinite values")
            rows[i] = vector
            seen.add(i)
        return rows

    # ------------------------------------------------------------------ HTTP
    def _call(self, method: str, route: str, body: Any = None) -> Any:
        """The parsed JSON answer of one request, all of it within ``self.timeout``."""
        what = f"{method} {route}"
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        kind = (
            http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        )
        conn = kind(self._netloc, timeout=self.timeout)
        expired = threading.Event()

        def expire() -> None:  # the deadline: unblock whatever read or write is waiting
            expired.set()
            sock = conn.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

        watchdog = threading.Timer(self.timeout, expire)
        watchdog.daemon = True
        watchdog.start()
        try:
            conn.connect()
            if expired.is_set():  # the deadline passed while connecting (no socket to shut)
                raise TimeoutError
            conn.request(method, self._path + route, body=data, headers=headers)
            response = conn.getresponse()
            status, payload = response.status, _read_at_most(response, MAX_ANSWER_BYTES)
        except (OSError, http.client.HTTPException) as exc:
            if expired.is_set() or isinstance(exc, TimeoutError):
                raise self._too_slow(what) from None
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ServerUnavailableError(
                f"no llm2vec-retrieval server at {self.url} ({reason}); start one with "
                "`llm2vec-retrieval serve`"
            ) from None
        finally:
            watchdog.cancel()
            conn.close()
        if expired.is_set():
            raise self._too_slow(what)
        if payload is None:
            raise self._malformed(what, f"longer than {MAX_ANSWER_BYTES} bytes")
        if status != 200:
            detail = _error_message(payload, response.reason)
            if status == 401:
                raise ServerUnavailableError(
                    f"{self.url} refused the API key ({detail}); set ${API_KEY_ENV} to the "
                    "key the server was started with"
                )
            raise ServerUnavailableError(f"{self.url} answered {what} with HTTP {status}: {detail}")
        try:
            return parse_json(payload)
        except JSONReadError:
            raise self._malformed(what, "not JSON") from None

    def _too_slow(self, what: str) -> ServerUnavailableError:
        return ServerUnavailableError(f"{self.url} did not answer {what} within {self.timeout:g} s")


def _read_at_most(response: http.client.HTTPResponse, limit: int) -> bytes | None:
    """The body, or None once it is longer than ``limit`` bytes (the rest is not read)."""
    chunks: list[bytes] = []
    size = 0
    while chunk := response.read(1 << 16):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _error_message(payload: bytes, reason: str) -> str:
    try:
        return str(json.loads(payload)["error"]["message"]).splitlines()[0][:300]
    except Exception:  # not our JSON error shape
        return reason or "no detail"
