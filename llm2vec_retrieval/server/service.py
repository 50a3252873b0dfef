"""The work behind the HTTP routes, independent of any web framework.

``EmbeddingService`` validates a request body (a dict, as parsed from JSON) completely before
anything is queued, turns it into (instruction, text) pairs with token counts, hands them to
the ``MicroBatcher`` (one model thread, fair token-budget batches) and builds the response
dict. Each route comes in two halves so an async caller can wait for the model without
holding a thread: ``prepare_*`` (validation, tokenizer; raises ``ApiError``) and ``*_response``
(post-processing); ``embeddings(body)`` / ``search(body)`` do both, blocking, which is handy
from Python and in tests.

Errors are ``ApiError(status, message, param, code)``: 422 for a field with a wrong type or
value (``param`` names it), 413 for too many inputs, 400 for an input longer than the token
limit. Lone surrogates in any text (``"\\ud83d"`` sent as a JSON escape) are replaced by
U+FFFD with a warning, the project's policy for invalid Unicode (``llm2vec_retrieval.text``).
"""

from __future__ import annotations

import base64
import contextlib
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import ValidationError

from .._io import l2_normalize
from ..hardware import compute_dtype
from ..text import repair_texts, warn_repaired
from . import (
    DEFAULT_BATCH_TOKENS,
    DEFAULT_BATCH_WAIT_MS,
    DEFAULT_MAX_INPUTS,
    DEFAULT_REQUEST_TIMEOUT,
    FINGERPRINT_FIELD,
)
from .batcher import MicroBatcher
from .live import IndexUnavailable, LiveIndex
from .schemas import EmbeddingRequest, SearchRequest, describe

if TYPE_CHECKING:
    from ..encoder import LLM2Vec
    from ..ingest import Searcher

__all__ = ["ApiError", "EmbeddingJob", "EmbeddingService", "MicroBatcher", "SearchJob"]


class ApiError(Exception):
    """An error answered with ``status`` and OpenAI's error JSON."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        type_: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type_ or ("server_error" if status >= 500 else "invalid_request_error")
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def _validate(model: type, body: Any):
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object", code="bad_json")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        field, message = describe(exc.errors())
        raise ApiError(422, message, param=field, code="invalid_value") from None


@dataclass
class EmbeddingJob:
    """A validated embeddings request, ready for the batcher."""

    pairs: list[tuple[str, str]]
    tokens: list[int]  # per pair, for the batcher's budget (instruction included)
    prompt_tokens: int  # the inputs' tokens, for `usage`
    dimensions: int | None
    encoding_format: str
    model: str


@dataclass
class SearchJob:
    request: SearchRequest
    searcher: Searcher  # the commit this request searches, from validation to response
    mode: str
    pairs: list[tuple[str, str]]  # empty for lexical mode (nothing to encode)
    tokens: list[int]


class EmbeddingService:
    """Request validation and the work behind each route (independent of HTTP)."""

    def __init__(
        self,
        encoder: LLM2Vec,
        searcher: Searcher | LiveIndex | None = None,
        model_name: str | None = None,
        max_inputs: int = DEFAULT_MAX_INPUTS,
        max_input_tokens: int | None = None,
        truncate: bool = False,
        max_batch_tokens: int = DEFAULT_BATCH_TOKENS,
        batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS,
        query_instruction: str | None = None,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    ):
        doc_max = int(encoder.config.doc_max_length)
        if max_input_tokens is not None and max_input_tokens > doc_max:
            raise ValueError(
                f"--max-input-tokens {max_input_tokens} is above the model's doc_max_length "
                f"({doc_max} tokens), the longest text it encodes"
            )
        if max_inputs < 1:
            raise ValueError(f"max_inputs must be at least 1, got {max_inputs}")
        self.encoder = encoder
        # the served index, reopened when `index` commits to its folder (`live.py`)
        self.index = (
            LiveIndex(searcher)
            if searcher is not None and not isinstance(searcher, LiveIndex)
            else searcher
        )
        self.model_name = model_name or str(encoder.source.get("model") or "llm2vec")
        self.max_inputs = max_inputs
        self.max_input_tokens = max_input_tokens or doc_max
        self.truncate = truncate
        self.query_instruction = (
            query_instruction if query_instruction is not None else encoder.config.query_instruction
        )
        self.request_timeout = request_timeout
        self.batcher = MicroBatcher(encoder, max_batch_tokens, batch_wait_ms)
        self.started = time.time()

    def close(self) -> None:
        self.batcher.close()

    @property
    def searcher(self) -> Searcher | None:
        """The ``Searcher`` of the commit loaded last (None without an index)."""
        return self.index.state[0].searcher if self.index is not None else None

    def _current_searcher(self) -> Searcher:
        """The searcher of the commit on disk (reloaded when it changed); 503 when that
        commit cannot be served."""
        try:
            return self.index.current().searcher
        except IndexUnavailable as exc:
            raise ApiError(503, str(exc), code="index_unavailable") from None

    # ------------------------------------------------------------------ tokenizer helpers
    def _encoder_lock(self):
        # The encoder's one lock: the service's own decode/cut calls on its (Rust, not
        # thread-safe) tokenizer hold it too, or they could break a batch in flight.
        lock = getattr(self.encoder, "lock", None)
        return lock if lock is not None else contextlib.nullcontext()

    @property
    def vocab_size(self) -> int:
        return len(self.encoder.tokenizer)

    def _decode(self, ids: list[int]) -> str:
        with self._encoder_lock():
            return self.encoder.tokenizer.decode(ids)

    def _cut(self, text: str, limit: int) -> str:
        """``text`` cut after its first ``limit`` tokens (``--truncate``)."""
        with self._encoder_lock():
            enc = self.encoder.tokenizer(
                [text], add_special_tokens=False, return_offsets_mapping=True
            )
        offsets = enc["offset_mapping"][0]
        return text[: offsets[limit - 1][1]] if len(offsets) > limit else text

    def _check_lengths(self, texts: list[str], param: str) -> tuple[list[str], list[int]]:
        """(texts, token counts): over-long texts refused (400), or cut with ``truncate``."""
        counts = self.encoder.count_tokens(texts)
        limit = self.max_input_tokens
        out = list(texts)
        for i, n in enumerate(counts):
            if n <= limit:
                continue
            if not self.truncate:
                where = f"{param}[{i}]" if len(texts) > 1 or param == "input" else param
                raise ApiError(
                    400,
                    f"{where} is {n} tokens long; max_length is {limit} tokens "
                    "(shorten it, or start the server with --truncate to cut long inputs)",
                    param=param,
                    code="input_too_long",
                )
            out[i] = self._cut(texts[i], limit)
            counts[i] = limit
        return out, counts

    def _instruction_tokens(self, instruction: str) -> int:
        return self.encoder.count_tokens([instruction])[0] if instruction else 0

    # ------------------------------------------------------------------ model
    def submit(self, pairs: list[tuple[str, str]], tokens: list[int]) -> Future:
        """Queue pairs on the micro-batcher; the Future holds raw float32 vectors."""
        return self.batcher.submit(pairs, tokens)

    def _wait(self, fut: Future) -> np.ndarray:
        try:
            return fut.result(timeout=self.request_timeout)
        except TimeoutError:
            fut.cancel()
            raise ApiError(503, "timed out waiting for the model", code="timeout") from None

    def finish_vectors(self, vectors: np.ndarray) -> np.ndarray:
        return l2_normalize(vectors) if self.encoder.config.normalize else vectors

    # ------------------------------------------------------------------ routes
    def health(self, details: bool = True) -> dict[str, Any]:
        """Liveness and, with ``details``, what is served (``details`` False: only
        ``{"status": "ok"}``, for callers without the API key). With an index, it is
        first reloaded if a new commit is on disk (so the commit shown is the one served)."""
        if not details:
            return {"status": "ok"}
        out: dict[str, Any] = {
            "status": "ok",
            "model": self.model_name,
            "dim": self.encoder.embedding_dim,
            "dtype": compute_dtype(self.encoder),
            "max_input_tokens": self.max_input_tokens,
            "max_inputs": self.max_inputs,
            "queue": self.batcher.pending(),
            "batches": self.batcher.batches,
            "uptime_s": round(time.time() - self.started, 3),
            "index": None,
        }
        if self.index is not None:
            with contextlib.suppress(IndexUnavailable):
                self.index.current()
            served, error = self.index.state
            store = served.searcher.store
            out["index"] = {
                "path": str(self.index.folder.path),
                "chunks": len(store),
                "kind": store.kind,
                "commit": served.commit,
                "committed_at": served.committed_at,
                "reloads": self.index.reloads,
                "error": error,
            }
        return out

    def model_card(self) -> dict[str, Any]:
        return {
            "id": self.model_name,
            "object": "model",
            "created": int(self.started),
            "owned_by": "llm2vec-retrieval",
            # extensions: what a client needs to know the vectors match an index's
            # (`llm2vec_retrieval.client.RemoteEncoder`), and the compute dtype
            FINGERPRINT_FIELD: self.encoder.fingerprint(),
            "dtype": compute_dtype(self.encoder),
        }

    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [self.model_card()]}

    def model(self, model_id: str) -> dict[str, Any]:
        if model_id != self.model_name:
            raise ApiError(
                404,
                f"the model '{model_id}' does not exist; this server serves '{self.model_name}'",
                param="model",
                code="model_not_found",
            )
        return self.model_card()

    # -- embeddings
    def prepare_embeddings(self, body: Any) -> EmbeddingJob:
        req: EmbeddingRequest = _validate(EmbeddingRequest, body)
        raw = req.input
        token_input = isinstance(raw, list) and isinstance(raw[0], (int, list))
        if isinstance(raw, str) or (token_input and isinstance(raw[0], int)):
            items: list[Any] = [raw]
        else:
            items = list(raw)
        if len(items) > self.max_inputs:
            raise ApiError(
                413,
                f"'input' has {len(items)} items; at most {self.max_inputs} per request",
                param="input",
                code="too_many_inputs",
            )
        dim = self.encoder.embedding_dim
        if req.dimensions is not None and req.dimensions > dim:
            raise ApiError(
                422,
                f"'dimensions' must be an integer from 1 to {dim}, got {req.dimensions}",
                param="dimensions",
                code="invalid_value",
            )
        strings = [s for s in (req.instruction, req.model) if s is not None]
        if not token_input:
            strings += items
        repaired_strings, repaired = repair_texts(strings)
        warn_repaired(repaired, stacklevel=2, what="request field(s)")
        fixed = iter(repaired_strings)
        instruction = next(fixed) if req.instruction is not None else None
        model = next(fixed) if req.model is not None else None
        if token_input:
            vocab = self.vocab_size
            texts: list[str] = []
            counts: list[int] = []
            for i, ids in enumerate(items):
                bad = next((t for t in ids if t >= vocab), None)
                if bad is not None:
                    raise ApiError(
                        422,
                        f"'input' holds token id {bad}; the served tokenizer has {vocab} ids (0..{vocab - 1})",
                        param="input",
                        code="invalid_value",
                    )
                if len(ids) > self.max_input_tokens:
                    if not self.truncate:
                        raise ApiError(
                            400,
                            f"input[{i}] is {len(ids)} tokens long; max_length is "
                            f"{self.max_input_tokens} tokens (shorten it, or start the server "
                            "with --truncate to cut long inputs)",
                            param="input",
                            code="input_too_long",
                        )
                    ids = ids[: self.max_input_tokens]
                texts.append(self._decode(ids))
                counts.append(len(ids))
        else:
            texts = list(fixed)
            for i, t in enumerate(texts):
                if not t.strip():  # OpenAI refuses empty inputs too
                    where = "input" if isinstance(raw, str) else f"input[{i}]"
                    raise ApiError(
                        422,
                        f"'input' must not be empty: {where} is "
                        f"{'empty' if not t else 'only whitespace'}",
                        param="input",
                        code="invalid_value",
                    )
            texts, counts = self._check_lengths(texts, "input")
        if instruction is None:
            instruction = (
                self.query_instruction
                if req.input_type == "query"
                else self.encoder.config.document_instruction
            )
        extra = self._instruction_tokens(instruction) + 2  # instruction + special tokens
        return EmbeddingJob(
            pairs=[(instruction, t) for t in texts],
            tokens=[n + extra for n in counts],
            prompt_tokens=int(sum(counts)),
            dimensions=req.dimensions,
            encoding_format=req.encoding_format or "float",
            model=model or self.model_name,
        )

    def embeddings_response(self, job: EmbeddingJob, vectors: np.ndarray) -> dict[str, Any]:
        vectors = self.finish_vectors(vectors)
        if job.dimensions is not None and job.dimensions < vectors.shape[1]:
            vectors = l2_normalize(vectors[:, : job.dimensions])
        data = []
        for i, v in enumerate(vectors):
            if job.encoding_format == "base64":
                emb: Any = base64.b64encode(np.ascontiguousarray(v, dtype="<f4").tobytes()).decode(
                    "ascii"
                )
            else:
                emb = v.tolist()
            data.append({"object": "embedding", "index": i, "embedding": emb})
        return {
            "object": "list",
            "data": data,
            "model": job.model,
            "usage": {"prompt_tokens": job.prompt_tokens, "total_tokens": job.prompt_tokens},
        }

    def embeddings(self, body: Any) -> dict[str, Any]:
        job = self.prepare_embeddings(body)
        return self.embeddings_response(job, self._wait(self.submit(job.pairs, job.tokens)))

    # -- search
    def prepare_search(self, body: Any) -> SearchJob:
        if self.index is None:
            raise ApiError(
                400,
                "no index loaded: start the server with --index DIR to use /search",
                code="no_index",
            )
        req: SearchRequest = _validate(SearchRequest, body)
        from ..index import compile_filter

        try:
            compile_filter(req.filter)
        except ValueError as exc:
            raise ApiError(422, f"invalid 'filter': {exc}", param="filter") from None
        searcher = self._current_searcher()
        try:
            mode = searcher.check_mode(req.mode)
        except ValueError as exc:
            raise ApiError(422, str(exc), param="mode", code="invalid_value") from None
        fields = [req.query] + ([req.instruction] if req.instruction is not None else [])
        fixed, repaired = repair_texts(fields)
        warn_repaired(repaired, stacklevel=2, what="request field(s)")
        req.query = fixed[0]
        instruction = fixed[1] if req.instruction is not None else searcher.query_instruction
        pairs: list[tuple[str, str]] = []
        tokens: list[int] = []
        if mode != "lexical":  # BM25 alone needs no encoding
            texts, counts = self._check_lengths([req.query], "query")
            pairs = [(instruction, texts[0])]
            tokens = [counts[0] + self._instruction_tokens(instruction) + 2]
        return SearchJob(request=req, searcher=searcher, mode=mode, pairs=pairs, tokens=tokens)

    def search_response(self, job: SearchJob, vectors: np.ndarray | None) -> dict[str, Any]:
        req = job.request
        vector = None if vectors is None else self.finish_vectors(vectors)[0]
        results = job.searcher.search_vector(
            vector,
            k=req.k,
            filter=req.filter,
            text=req.query,
            mode=job.mode,
            fusion=req.fusion,
            alpha=float(req.alpha),
        )
        return {
            "object": "search",
            "query": req.query,
            "model": self.model_name,
            "mode": job.mode,
            "results": [r.to_dict() for r in results],
        }

    def search(self, body: Any) -> dict[str, Any]:
        job = self.prepare_search(body)
        vectors = self._wait(self.submit(job.pairs, job.tokens)) if job.pairs else None
        return self.search_response(job, vectors)
