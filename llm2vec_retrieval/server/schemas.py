"""Pydantic models of the HTTP API: requests (validated) and responses (documented in /docs).

The embeddings models follow OpenAI's ``POST /v1/embeddings`` (``input`` as a string, a list
of strings, a list of token ids or a list of lists of token ids; ``encoding_format``;
``dimensions``; ``user``) plus two extensions, ``input_type`` and ``instruction``. Unknown
fields are refused, so a misspelt extension (``input_typ``) cannot silently change the
vectors. ``describe(ValidationError)`` turns pydantic's report into the one field name and
one-line message of a 422 error. Response models are used for the OpenAPI document only: the
routes serialise their responses themselves (large float arrays are faster that way).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from ..index.fusion import FUSIONS
from ..index.store import DEFAULT_ALPHA, DEFAULT_FUSION, MODES

MAX_K = 1000

TokenIds = Annotated[list[Annotated[StrictInt, Field(ge=0)]], Field(min_length=1)]
INPUT_HELP = (
    "a string, a non-empty list of strings, a non-empty list of token ids, "
    "or a non-empty list of such lists"
)


class EmbeddingRequest(BaseModel):
    """Body of ``POST /v1/embeddings``."""

    model_config = ConfigDict(extra="forbid")

    input: (
        StrictStr
        | Annotated[list[StrictStr], Field(min_length=1)]
        | TokenIds
        | Annotated[list[TokenIds], Field(min_length=1)]
    ) = Field(description=f"the text(s) to embed: {INPUT_HELP} (ids of the served tokenizer)")
    model: StrictStr | None = Field(None, description="echoed back in the response")
    encoding_format: Literal["float", "base64"] | None = Field(
        "float", description="`float` lists, or `base64` (little-endian float32 bytes)"
    )
    dimensions: StrictInt | None = Field(
        None,
        ge=1,
        description="keep the first N dimensions, re-normalized (1..dim); only for a model "
        "trained for it (`matryoshka` in its config), else 400",
    )
    user: StrictStr | None = Field(None, description="accepted for compatibility, ignored")
    input_type: Literal["query", "document"] | None = Field(
        None,
        description="extension: `document` (default, no instruction) or `query` "
        "(the query instruction is prepended); the model id `<model>:query` means `query`",
    )
    instruction: StrictStr | None = Field(
        None, description="extension: this instruction instead of the input type's"
    )


class EmbedRequest(BaseModel):
    """Body of ``POST /embed`` (text-embeddings-inference's route)."""

    model_config = ConfigDict(extra="forbid")

    inputs: (
        StrictStr
        | Annotated[list[StrictStr], Field(min_length=1)]
        | TokenIds
        | Annotated[list[TokenIds], Field(min_length=1)]
    ) = Field(description=f"the text(s) to embed: {INPUT_HELP}")
    normalize: StrictBool = Field(True, description="L2-normalize the vectors")
    truncate: StrictBool | None = Field(
        None,
        description="cut inputs longer than the token limit instead of refusing them "
        "(default: the server's --truncate)",
    )
    truncation_direction: Literal["right", "left", "Right", "Left"] = Field(
        "right", description="which end a cut input keeps: right cuts the end, left the start"
    )
    prompt_name: StrictStr | None = Field(
        None,
        description="`query` (the served query instruction), `document` (the document "
        "instruction, none by default) or a task name of the instruction registry (`SciFact`, "
        "`NQ`, ...); none: no instruction, as for a document",
    )


class SearchBody(BaseModel):
    """Body of ``POST /search``."""

    model_config = ConfigDict(extra="forbid")

    query: StrictStr = Field(description="the query text")
    k: StrictInt = Field(5, ge=1, le=MAX_K, description="how many results")
    filter: dict[str, Any] | None = Field(
        None, description="metadata filter in the store's filter language"
    )
    instruction: StrictStr | None = Field(
        None, description="query instruction (default: the index's)"
    )
    mode: Literal[tuple(MODES)] | None = Field(  # type: ignore[valid-type]
        None, description="dense, lexical or hybrid (default: hybrid when the index can)"
    )
    fusion: Literal[tuple(FUSIONS)] | None = Field(  # type: ignore[valid-type]
        None,
        description="how hybrid mode fuses the two rankings (default: the fusion the index "
        f"records; new indexes record {DEFAULT_FUSION!r})",
    )
    alpha: Annotated[float, Field(strict=True, ge=0.0, le=1.0, allow_inf_nan=False)] | None = Field(
        None,
        description="weight of the dense part in a weighted fusion (default: the index's; "
        f"new indexes record {DEFAULT_ALPHA})",
    )


# ---------------------------------------------------------------------- responses (docs)
class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    input_type: Literal["query", "document"] = Field(
        "document",
        description="extension: what the model id embeds by default (`<model>:query`: queries)",
    )
    llm2vec_fingerprint: dict[str, Any] | None = Field(
        None, description="extension: what determines the vectors (compare with an index's)"
    )
    dtype: str | None = Field(None, description="extension: the compute dtype")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


class SearchResult(BaseModel):
    rank: int
    id: str
    score: float
    source: str | None
    chunk: int | None
    start: int | None
    end: int | None
    text: str
    metadata: dict[str, Any]
    dense_score: float | None
    lexical_score: float | None


class SearchResponse(BaseModel):
    object: Literal["search"] = "search"
    query: str
    model: str
    mode: str
    results: list[SearchResult]


class IndexInfo(BaseModel):
    path: str
    chunks: int
    kind: str
    commit: str | None = Field(
        None, description="the store manifest's checksum of the commit served (new per commit)"
    )
    committed_at: str | None
    reloads: int = Field(description="commits loaded since the start (the index is reloaded)")
    error: str | None = Field(
        None, description="why the commit on disk cannot be served (/search answers 503)"
    )


class EmbeddingModelInfo(BaseModel):
    pooling: str


class ModelType(BaseModel):
    embedding: EmbeddingModelInfo


class Info(BaseModel):
    """``GET /info``: text-embeddings-inference's fields, plus ``dim`` and ``prompts``."""

    model_id: str
    model_sha: str | None
    model_dtype: str
    model_type: ModelType
    max_concurrent_requests: int
    max_input_length: int
    max_batch_tokens: int
    max_batch_requests: int | None
    max_client_batch_size: int
    auto_truncate: bool
    tokenization_workers: int
    version: str
    sha: str | None
    docker_label: str | None
    dim: int = Field(description="extension: the vector dimension")
    prompts: dict[str, str] = Field(
        description="extension: the `prompt_name`s of /embed besides the task names, and "
        "their instructions"
    )


class Health(BaseModel):
    """Everything but ``status`` is left out for a caller without the key (``--api-key``)."""

    status: str
    model: str | None = None
    dim: int | None = None
    dtype: str | None = None
    max_input_tokens: int | None = None
    max_inputs: int | None = None
    queue: int | None = None
    batches: int | None = None
    uptime_s: float | None = None
    index: IndexInfo | None = None


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail


# ---------------------------------------------------------------------- validation errors
def describe(errors: Sequence[Mapping[str, Any]]) -> tuple[str | None, str]:
    """(field, one-line message) for the first problem in pydantic's ``errors()`` list."""
    err = errors[0]
    loc = err.get("loc") or ()
    field = str(loc[0]) if loc else None
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return field, f"unknown field '{field}'"
    if kind == "missing":
        if field in ("input", "inputs"):
            return field, f"missing required field '{field}' ({INPUT_HELP})"
        return field, f"missing required field '{field}'"
    if field in ("input", "inputs"):
        return field, f"'{field}' must be {INPUT_HELP}"
    value = err.get("input")
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return field, f"invalid '{field}': {err.get('msg', 'invalid value')}, got {shown}"
