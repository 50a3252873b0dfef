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
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import numpy as np

from .errors import UserError
from .server import API_KEY_ENV, FINGERPRINT_FIELD


class ServerUnavailableError(UserError):
    """No usable server at the address: unreachable, refused the key, or not ours."""


@dataclass(frozen=True)
class RemoteConfig:
    """The settings of the served encoder that a searcher reads."""

    query_instruction: str
    normalize: bool


class RemoteEncoder:
    """The encoder of a running `llm2vec-retrieval serve` at ``url`` (queries only)."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 30.0):
        parsed = urlparse(url if "://" in url else f"http://{url}")
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ServerUnavailableError(
                f"bad server address {url!r}: give one like http://127.0.0.1:8000"
            )
        self.url = f"{parsed.scheme}://{parsed.netloc}{parsed.path.rstrip('/')}"
        self.api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
        self.timeout = timeout
        card = self._model_card()
        self.model_name: str = card["id"]
        self._fingerprint: dict[str, Any] = dict(card[FINGERPRINT_FIELD])
        self.dtype: str | None = card.get("dtype")
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
        body: dict[str, Any] = {
            "input": list(queries),
            "input_type": "query",
            "encoding_format": "base64",
            "model": self.model_name,
        }
        if instruction is not None:
            body["instruction"] = instruction
        out = self._call("POST", "/v1/embeddings", body)
        rows = sorted(out["data"], key=lambda d: d["index"])
        vectors = [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in rows]
        return np.stack(vectors).astype(np.float32, copy=False)

    encode_query = encode_queries

    # ------------------------------------------------------------------ HTTP
    def _model_card(self) -> dict[str, Any]:
        listing = self._call("GET", "/v1/models")
        cards = listing.get("data") if isinstance(listing, dict) else None
        if not cards or FINGERPRINT_FIELD not in cards[0]:
            raise ServerUnavailableError(
                f"{self.url} is not an llm2vec-retrieval server (its /v1/models names no "
                "fingerprint); start one with `llm2vec-retrieval serve`"
            )
        return cards[0]

    def _call(self, method: str, route: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + route, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.api_key:
            request.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = _error_message(exc)
            if exc.code == 401:
                raise ServerUnavailableError(
                    f"{self.url} refused the API key ({detail}); set ${API_KEY_ENV} to the "
                    "key the server was started with"
                ) from None
            raise ServerUnavailableError(
                f"{self.url} answered {method} {route} with HTTP {exc.code}: {detail}"
            ) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServerUnavailableError(
                f"no llm2vec-retrieval server at {self.url} ({reason}); start one with "
                "`llm2vec-retrieval serve`"
            ) from None


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read())["error"]["message"])
    except Exception:  # not our JSON error shape
        return exc.reason or "no detail"
