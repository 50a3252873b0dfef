"""HTTP embedding server (`llm2vec-retrieval serve`, the `serve` extra: FastAPI + uvicorn).

- ``batcher.py``: ``MicroBatcher``, the one thread that calls the model; fair token-budget
  batches across requests (no framework, numpy only).
- ``service.py``: ``EmbeddingService`` and ``ApiError``: validation and the work behind each
  route, as plain dicts (pydantic for validation, no web framework).
- ``live.py``: ``LiveIndex``, the served index, reopened when ``index`` commits to its folder.
- ``schemas.py``: the pydantic request/response models (OpenAI's embeddings shapes, and
  text-embeddings-inference's ``/embed`` and ``/info``).
- ``metrics.py``: ``ServerMetrics``, the Prometheus series of ``/metrics`` (no dependency).
- ``app.py``: the FastAPI app (``create_app``), the listening socket (``bind``) and the
  uvicorn runner with read timeouts and a connection cap (``run``). Only this module
  imports FastAPI/uvicorn.

Names are imported lazily so that ``import llm2vec_retrieval.server`` (the CLI's parser reads
the defaults below) pulls in neither pydantic nor a web framework.
"""

from __future__ import annotations

from typing import Any

DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_MAX_INPUTS = 256
DEFAULT_BATCH_WAIT_MS = 2.0
DEFAULT_BATCH_TOKENS = 8192
DEFAULT_READ_TIMEOUT = 30.0
DEFAULT_KEEP_ALIVE = 5.0
DEFAULT_MAX_CONNECTIONS = 512
DEFAULT_REQUEST_TIMEOUT = 300.0
API_KEY_ENV = "LLM2VEC_RETRIEVAL_API_KEY"
# where `search` finds a running server to encode its query (`llm2vec_retrieval.client`)
SERVER_ENV = "LLM2VEC_RETRIEVAL_SERVER"
# extension field of the model card: the served encoder's fingerprint
FINGERPRINT_FIELD = "llm2vec_fingerprint"
# the second model id of /v1/models: `<served name>:query` embeds queries (with the query
# instruction) for OpenAI clients that cannot send the `input_type` extension
QUERY_MODEL_SUFFIX = ":query"
INSTALL_HINT = "pip install 'llm2vec-retrieval[serve]'"

_LAZY = {
    "MicroBatcher": "batcher",
    "ApiError": "service",
    "EmbeddingService": "service",
    "EmbeddingJob": "service",
    "LiveIndex": "live",
    "ServerMetrics": "metrics",
    "create_app": "app",
    "bind": "app",
    "run": "app",
    "PortInUseError": "app",
}

__all__ = [
    "API_KEY_ENV",
    "FINGERPRINT_FIELD",
    "SERVER_ENV",
    "DEFAULT_BATCH_TOKENS",
    "DEFAULT_BATCH_WAIT_MS",
    "DEFAULT_KEEP_ALIVE",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_INPUTS",
    "DEFAULT_READ_TIMEOUT",
    "DEFAULT_REQUEST_TIMEOUT",
    "INSTALL_HINT",
    "QUERY_MODEL_SUFFIX",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
