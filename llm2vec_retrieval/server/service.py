"""The work behind the HTTP routes, independent of any web framework.

``EmbeddingService`` validates a request body (a dict, as parsed from JSON) completely before
anything is queued, turns it into (instruction, text) pairs with token counts, hands them to
the ``MicroBatcher`` (one model thread, fair token-budget batches) and builds the response
dict. Each route comes in two halves so an async caller can wait for the model without
holding a thread: ``prepare_*`` (validation, tokenizer; raises ``ApiError``) and ``*_response``
(post-processing); ``embeddings(body)`` / ``search(body)`` do both, blocking, which is handy
from Python and in tests.

Errors are ``ApiError(status, message, param, code)``: 422 for a field with a wrong type or
value (``param`` names it; an empty or whitespace-only text or query too), 413 for too many
inputs, 400 for an input longer than the token limit or a parameter the model does not
support (``dimensions`` on a model not trained for truncated vectors).

Two request shapes embed: OpenAI's ``/v1/embeddings`` (``prepare_embeddings``; the model id
``<name>:query`` embeds queries) and text-embeddings-inference's ``/embed`` (``prepare_embed``:
``inputs``, ``normalize``, ``truncate``, ``truncation_direction``, ``prompt_name``); both
become one ``EmbeddingJob``. Lone surrogates in any text (``"\\ud83d"`` sent as a JSON escape) are replaced by
U+FFFD with a warning, the project's policy for invalid Unicode (``llm2vec_retrieval.text``).
"""

from __future__ import annotations

import base64
import contextlib
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from pydantic import BaseModel, ValidationError

from .._io import l2_normalize
from ..hardware import compute_dtype
from ..index.request import SearchRequest, SearchRequestError
from ..text import blank_reason, repair_texts, warn_repaired
from . import (
    DEFAULT_BATCH_TOKENS,
    DEFAULT_BATCH_WAIT_MS,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_INPUTS,
    DEFAULT_REQUEST_TIMEOUT,
    FINGERPRINT_FIELD,
    QUERY_MODEL_SUFFIX,
)
from .batcher import MicroBatcher
from .live import IndexUnavailable, LiveIndex
from .metrics import ServerMetrics
from .schemas import EmbeddingRequest, EmbedRequest, SearchBody, describe

if TYPE_CHECKING:
    from ..encoder import LLM2Vec
    from ..ingest import Searcher

__all__ = ["ApiError", "EmbeddingJob", "EmbeddingService", "MicroBatcher", "SearchJob"]

_Body = TypeVar("_Body", bound=BaseModel)


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

    def tei_body(self) -> dict[str, Any]:
        """The error as text-embeddings-inference answers it (its clients read ``error`` as
        a string), plus ``param``."""
        if self.status in (429, 503):
            kind = "Overloaded"
        elif self.status >= 500:
            kind = "Backend"
        else:
            kind = "Validation"
        return {"error": self.message, "error_type": kind, "param": self.param}


def _validate(model: type[_Body], body: Any) -> _Body:
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
    normalize: bool  # L2-normalize the vectors


@dataclass
class SearchJob:
    request: SearchRequest  # checked once and resolved for the searcher's index
    searcher: Searcher  # the commit this request searches, from validation to response
    pairs: list[tuple[str, str]]  # empty for lexical mode (nothing to encode)
    tokens: list[int]
    prompt_tokens: int = 0  # the query's own tokens (0 in lexical mode)


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
        max_concurrent_requests: int = DEFAULT_MAX_CONNECTIONS,
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
        self.query_model_name = self.model_name + QUERY_MODEL_SUFFIX
        self.max_concurrent_requests = max_concurrent_requests
        self.max_inputs = max_inputs
        self.max_input_tokens = max_input_tokens or doc_max
        self.truncate = truncate
        self.query_instruction = (
            query_instruction if query_instruction is not None else encoder.config.query_instruction
        )
        self.request_timeout = request_timeout
        self.batcher = MicroBatcher(encoder, max_batch_tokens, batch_wait_ms)
        self.metrics = ServerMetrics(self.batcher.pending)
        self.batcher.on_batch = self.metrics.batch
        self.started = time.time()

    def close(self) -> None:
        self.batcher.close()

    @property
    def searcher(self) -> Searcher | None:
        """The ``Searcher`` of the commit loaded last (None without an index)."""
        return self.index.state[0].searcher if self.index is not None else None

    @staticmethod
    def _current_searcher(index: LiveIndex) -> Searcher:
        """The searcher of the commit on disk (reloaded when it changed); 503 when that
        commit cannot be served."""
        try:
            return index.current().searcher
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
            # transformers types decode() as str | list[str] for every input, with no
            # overloads; one sequence of ids decodes to a str
            return self.encoder.tokenizer.decode(ids)  # type: ignore[return-value]

    def _cut(self, text: str, limit: int, keep_end: bool = False) -> str:
        """``text`` cut after its first ``limit`` tokens (``--truncate``), or before its last
        ``limit`` ones with ``keep_end``."""
        with self._encoder_lock():
            enc = self.encoder.tokenizer(
                [text], add_special_tokens=False, return_offsets_mapping=True
            )
        offsets = enc["offset_mapping"][0]
        if len(offsets) <= limit:
            return text
        return text[offsets[-limit][0] :] if keep_end else text[: offsets[limit - 1][1]]

    def _check_lengths(
        self,
        texts: list[str],
        param: str,
        truncate: bool | None = None,
        keep_end: bool = False,
    ) -> tuple[list[str], list[int]]:
        """(texts, token counts): over-long texts refused (400), or cut when ``truncate``
        (None: the server's ``--truncate``)."""
        truncate = self.truncate if truncate is None else truncate
        counts = self.encoder.count_tokens(texts)
        limit = self.max_input_tokens
        out = list(texts)
        for i, n in enumerate(counts):
            if n <= limit:
                continue
            if not truncate:
                where = f"{param}[{i}]" if len(texts) > 1 or param != "query" else param
                raise ApiError(
                    400,
                    f"{where} is {n} tokens long; max_length is {limit} tokens "
                    "(shorten it, or start the server with --truncate to cut long inputs)",
                    param=param,
                    code="input_too_long",
                )
            out[i] = self._cut(texts[i], limit, keep_end)
            counts[i] = limit
        return out, counts

    def _items(self, raw: Any, param: str) -> tuple[list[Any], bool]:
        """(items, token_input) of an ``input``/``inputs`` value; 413 over ``max_inputs``."""
        token_input = isinstance(raw, list) and isinstance(raw[0], (int, list))
        if isinstance(raw, str) or (token_input and isinstance(raw[0], int)):
            items: list[Any] = [raw]
        else:
            items = list(raw)
        if len(items) > self.max_inputs:
            raise ApiError(
                413,
                f"'{param}' has {len(items)} items; at most {self.max_inputs} per request",
                param=param,
                code="too_many_inputs",
            )
        return items, token_input

    def _texts(
        self,
        items: list[Any],
        token_input: bool,
        single: bool,
        param: str,
        truncate: bool | None = None,
        keep_end: bool = False,
    ) -> tuple[list[str], list[int]]:
        """(texts, token counts) of validated items: token ids decoded (ids beyond the
        vocabulary 422), blank texts refused (422), long ones refused or cut."""
        truncate = self.truncate if truncate is None else truncate
        if not token_input:
            for i, t in enumerate(items):
                reason = blank_reason(t)
                if reason is not None:  # OpenAI refuses empty inputs too
                    where = param if single else f"{param}[{i}]"
                    raise ApiError(
                        422,
                        f"'{param}' must not be empty: {where} is {reason}",
                        param=param,
                        code="invalid_value",
                    )
            return self._check_lengths(list(items), param, truncate, keep_end)
        vocab = self.vocab_size
        texts: list[str] = []
        counts: list[int] = []
        for i, ids in enumerate(items):
            bad = next((t for t in ids if t >= vocab), None)
            if bad is not None:
                raise ApiError(
                    422,
                    f"'{param}' holds token id {bad}; the served tokenizer has {vocab} ids "
                    f"(0..{vocab - 1})",
                    param=param,
                    code="invalid_value",
                )
            if len(ids) > self.max_input_tokens:
                if not truncate:
                    raise ApiError(
                        400,
                        f"{param}[{i}] is {len(ids)} tokens long; max_length is "
                        f"{self.max_input_tokens} tokens (shorten it, or start the server "
                        "with --truncate to cut long inputs)",
                        param=param,
                        code="input_too_long",
                    )
                limit = self.max_input_tokens
                ids = ids[-limit:] if keep_end else ids[:limit]
            texts.append(self._decode(ids))
            counts.append(len(ids))
        return texts, counts

    def _job(
        self,
        texts: list[str],
        counts: list[int],
        instruction: str,
        *,
        model: str,
        normalize: bool,
        dimensions: int | None = None,
        encoding_format: str = "float",
    ) -> EmbeddingJob:
        extra = self._instruction_tokens(instruction) + 2  # instruction + special tokens
        return EmbeddingJob(
            pairs=[(instruction, t) for t in texts],
            tokens=[n + extra for n in counts],
            prompt_tokens=int(sum(counts)),
            dimensions=dimensions,
            encoding_format=encoding_format,
            model=model,
            normalize=normalize,
        )

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

    def info(self) -> dict[str, Any]:
        """``GET /info``: text-embeddings-inference's fields (``tokenization_workers`` 1: one
        tokenizer behind the encoder's lock), plus ``dim`` and ``prompts``."""
        from .. import __version__

        return {
            "model_id": self.model_name,
            "model_sha": None,
            "model_dtype": compute_dtype(self.encoder),
            "model_type": {"embedding": {"pooling": self.encoder.config.pooling_mode}},
            "max_concurrent_requests": self.max_concurrent_requests,
            "max_input_length": self.max_input_tokens,
            "max_batch_tokens": self.batcher.max_batch_tokens,
            "max_batch_requests": None,
            "max_client_batch_size": self.max_inputs,
            "auto_truncate": self.truncate,
            "tokenization_workers": 1,
            "version": __version__,
            "sha": None,
            "docker_label": None,
            "dim": self.encoder.embedding_dim,
            "prompts": self.prompts(),
        }

    def prompts(self) -> dict[str, str]:
        """The ``prompt_name``s of ``/embed`` besides the registry's task names."""
        return {
            "query": self.query_instruction,
            "document": self.encoder.config.document_instruction,
        }

    def _prompt(self, name: str) -> str:
        from ..instructions import get_instruction

        named = self.prompts()
        if name in named:
            return named[name]
        try:
            return get_instruction(name)
        except KeyError:
            raise ApiError(
                422,
                f"unknown 'prompt_name' {name!r}: use query, document or a task name of the "
                "instruction registry (SciFact, NQ, MSMARCO, ...)",
                param="prompt_name",
                code="invalid_value",
            ) from None

    def model_card(self, query: bool = False) -> dict[str, Any]:
        return {
            "id": self.query_model_name if query else self.model_name,
            "object": "model",
            "created": int(self.started),
            "owned_by": "llm2vec-retrieval",
            # extensions: what the id embeds by default, what a client needs to know the
            # vectors match an index's (`llm2vec_retrieval.client.RemoteEncoder`), the dtype
            "input_type": "query" if query else "document",
            FINGERPRINT_FIELD: self.encoder.fingerprint(),
            "dtype": compute_dtype(self.encoder),
        }

    def models(self) -> dict[str, Any]:
        """The served model (documents) first, then ``<name>:query`` (queries)."""
        return {"object": "list", "data": [self.model_card(), self.model_card(query=True)]}

    def model(self, model_id: str) -> dict[str, Any]:
        if model_id not in (self.model_name, self.query_model_name):
            raise ApiError(
                404,
                f"the model '{model_id}' does not exist; this server serves "
                f"'{self.model_name}' (and '{self.query_model_name}' for queries)",
                param="model",
                code="model_not_found",
            )
        return self.model_card(query=model_id == self.query_model_name)

    # -- embeddings
    def prepare_embeddings(self, body: Any) -> EmbeddingJob:
        """A ``/v1/embeddings`` body (OpenAI's) as a job."""
        req: EmbeddingRequest = _validate(EmbeddingRequest, body)
        items, token_input = self._items(req.input, "input")
        dim = self.encoder.embedding_dim
        if req.dimensions is not None and req.dimensions > dim:
            raise ApiError(
                422,
                f"'dimensions' must be an integer from 1 to {dim}, got {req.dimensions}",
                param="dimensions",
                code="invalid_value",
            )
        if req.dimensions is not None and not getattr(self.encoder.config, "matryoshka", False):
            raise ApiError(
                400,
                f"'dimensions' is not supported by {self.model_name}: it was not trained for "
                "truncated vectors (matryoshka is false in its config), so a cut vector would "
                "be a worse embedding; leave 'dimensions' out",
                param="dimensions",
                code="unsupported_parameter",
            )
        strings = [s for s in (req.instruction, req.model) if s is not None]
        if not token_input:
            strings += items
        repaired_strings, repaired = repair_texts(strings)
        warn_repaired(repaired, stacklevel=2, what="request field(s)")
        fixed = iter(repaired_strings)
        instruction = next(fixed) if req.instruction is not None else None
        model = next(fixed) if req.model is not None else None
        if not token_input:
            items = list(fixed)
        input_type = req.input_type
        if model == self.query_model_name:  # the query model id: queries by default
            if input_type == "document":
                raise ApiError(
                    422,
                    f"'input_type' is 'document' but the model '{model}' embeds queries; "
                    f"use the model '{self.model_name}' for documents, or drop 'input_type'",
                    param="input_type",
                    code="invalid_value",
                )
            input_type = "query"
        texts, counts = self._texts(items, token_input, isinstance(req.input, str), "input")
        if instruction is None:
            instruction = (
                self.query_instruction
                if input_type == "query"
                else self.encoder.config.document_instruction
            )
        return self._job(
            texts,
            counts,
            instruction,
            model=model or self.model_name,
            normalize=bool(self.encoder.config.normalize),
            dimensions=req.dimensions,
            encoding_format=req.encoding_format or "float",
        )

    def prepare_embed(self, body: Any) -> EmbeddingJob:
        """A ``/embed`` body (text-embeddings-inference's) as a job."""
        req: EmbedRequest = _validate(EmbedRequest, body)
        items, token_input = self._items(req.inputs, "inputs")
        if not token_input:
            items, repaired = repair_texts(items)
            warn_repaired(repaired, stacklevel=2, what="request field(s)")
        instruction = (
            self.encoder.config.document_instruction
            if req.prompt_name is None
            else self._prompt(req.prompt_name)
        )
        texts, counts = self._texts(
            items,
            token_input,
            isinstance(req.inputs, str),
            "inputs",
            truncate=req.truncate,
            keep_end=req.truncation_direction.lower() == "left",
        )
        return self._job(texts, counts, instruction, model=self.model_name, normalize=req.normalize)

    def _vectors(self, job: EmbeddingJob, vectors: np.ndarray) -> np.ndarray:
        self.metrics.embedded(len(vectors), job.prompt_tokens)
        return l2_normalize(vectors) if job.normalize else vectors

    def embeddings_response(self, job: EmbeddingJob, vectors: np.ndarray) -> dict[str, Any]:
        vectors = self._vectors(job, vectors)
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

    def embed_response(self, job: EmbeddingJob, vectors: np.ndarray) -> list[list[float]]:
        """``/embed``'s answer: one list of floats per input, as text-embeddings-inference."""
        return self._vectors(job, vectors).tolist()

    def embeddings(self, body: Any) -> dict[str, Any]:
        job = self.prepare_embeddings(body)
        return self.embeddings_response(job, self._wait(self.submit(job.pairs, job.tokens)))

    def embed(self, body: Any) -> list[list[float]]:
        job = self.prepare_embed(body)
        return self.embed_response(job, self._wait(self.submit(job.pairs, job.tokens)))

    # -- search
    def prepare_search(self, body: Any) -> SearchJob:
        """A ``/search`` body as a job: the body's types checked by `SearchBody`, the search
        itself by `SearchRequest` (once) and the served index (`Searcher.prepare`)."""
        index = self.index
        if index is None:
            raise ApiError(
                400,
                "no index loaded: start the server with --index DIR to use /search",
                code="no_index",
            )
        body_: SearchBody = _validate(SearchBody, body)
        fields = [body_.query] + ([body_.instruction] if body_.instruction is not None else [])
        fixed, repaired = repair_texts(fields)
        query = fixed[0]
        try:
            request = SearchRequest(
                query,
                body_.k,
                body_.mode,
                body_.filter,
                body_.fusion,
                body_.alpha,
                instruction=fixed[1] if body_.instruction is not None else None,
            )
        except SearchRequestError as exc:
            if exc.field == "query":  # a search for nothing has no right answer
                message = f"'query' must not be empty: query is {exc.reason}"
            elif exc.field == "filter":
                message = f"invalid 'filter': {exc}"
            else:
                message = str(exc)
            raise ApiError(422, message, param=exc.field, code="invalid_value") from None
        warn_repaired(repaired, stacklevel=2, what="request field(s)")
        searcher = self._current_searcher(index)
        try:
            request = searcher.prepare(request)
        except ValueError as exc:
            raise ApiError(422, str(exc), param="mode", code="invalid_value") from None
        pairs: list[tuple[str, str]] = []
        tokens: list[int] = []
        prompt_tokens = 0
        if request.mode != "lexical":  # BM25 alone needs no encoding
            instruction = (
                request.instruction
                if request.instruction is not None
                else searcher.query_instruction
            )
            # None only for a searcher opened lexical_only, whose `prepare` refused other modes
            assert instruction is not None, "no query instruction for a mode that encodes the query"
            texts, counts = self._check_lengths([query], "query")
            pairs = [(instruction, texts[0])]
            prompt_tokens = counts[0]
            tokens = [counts[0] + self._instruction_tokens(instruction) + 2]
        return SearchJob(
            request=request,
            searcher=searcher,
            pairs=pairs,
            tokens=tokens,
            prompt_tokens=prompt_tokens,
        )

    def search_response(self, job: SearchJob, vectors: np.ndarray | None) -> dict[str, Any]:
        req, vector = job.request, None
        if vectors is not None:
            self.metrics.embedded(len(vectors), job.prompt_tokens)
            # raw from the batcher: a cosine store normalizes it (the one normalization);
            # another metric gets what the encoder's config says, as a local search does
            cosine = job.searcher.store.metric == "cosine"
            vector = (vectors if cosine else self.finish_vectors(vectors))[0]
        results = job.searcher.search_vector(vector, req)
        return {
            "object": "search",
            "query": req.query,
            "model": self.model_name,
            "mode": req.mode,
            **req.fused(),  # say what was fused, as the CLI's --json does
            "results": [r.to_dict() for r in results],
        }

    def search(self, body: Any) -> dict[str, Any]:
        job = self.prepare_search(body)
        vectors = self._wait(self.submit(job.pairs, job.tokens)) if job.pairs else None
        return self.search_response(job, vectors)
