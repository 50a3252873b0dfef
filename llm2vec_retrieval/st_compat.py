"""What sentence-transformers' encoder API adds to ours: quantization, similarity functions,
output conversion and named prompts, so that `LLM2Vec` answers the calls code written for
`SentenceTransformer` makes (`encode_query(..., convert_to_tensor=True)`, `similarity`, ...).

Each function states the sentence-transformers behaviour it reproduces (read from its source,
version 6.3, which tests/test_st_parity.py compares against); sentence-transformers itself is
never imported here.

- `quantize_embeddings(embeddings, precision, ranges=None, calibration_embeddings=None)`:
  ``util.quantize_embeddings``: float32, int8 and uint8 (per-dimension buckets between the
  minimum and maximum of the calibration embeddings, by default the embeddings themselves),
  binary and ubinary (sign bits packed 8 to a byte, binary offset by -128 into int8).
- `similarity(a, b, name)` / `similarity_pairwise(a, b, name)`: ``util.cos_sim``,
  ``dot_score``, ``euclidean_sim`` and ``manhattan_sim`` (negative distances, so larger is
  closer) and their ``pairwise_`` forms; always a float32 torch tensor.
- `convert_output(...)`: the type ``SentenceTransformer.encode`` returns for its
  ``convert_to_numpy`` / ``convert_to_tensor`` flags and a single or batch input.
- `Prompts`: ``model.prompts`` whose ``"query"`` and ``"document"`` entries are the encoder
  config's ``query_instruction`` and ``document_instruction``.

Not here: sparse tensors, multi-vector (late-interaction) scoring, multi-process pools.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, MutableMapping
from typing import Any

import numpy as np
import torch

__all__ = [
    "PRECISIONS",
    "SIMILARITY_FN_NAMES",
    "Prompts",
    "check_precision",
    "check_similarity_fn_name",
    "check_truncate_dim",
    "convert_output",
    "quantize_embeddings",
    "similarity",
    "similarity_pairwise",
]

logger = logging.getLogger(__name__)

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")
SIMILARITY_FN_NAMES = ("cosine", "dot", "euclidean", "manhattan")


# ---------------------------------------------------------------------- quantization
def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"Precision {precision!r} is not supported, must be one of {PRECISIONS}")
    return precision


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.float() if x.dtype == torch.bfloat16 else x).numpy()
    return np.asarray(x)


def _ranges(embeddings: np.ndarray, precision: str, calibration: np.ndarray | None) -> np.ndarray:
    """(2, dim): per-dimension minimum and maximum of the calibration embeddings."""
    if calibration is None:
        if embeddings.ndim == 1 or embeddings.shape[0] == 1:
            raise ValueError(
                f"Cannot compute {precision} quantization ranges from a single embedding: "
                "encode several texts at once, or call quantize_embeddings with `ranges` or "
                "`calibration_embeddings` from a representative set of embeddings"
            )
        if embeddings.shape[0] < 100:  # as sentence-transformers warns
            logger.warning(
                "%s quantization buckets computed from %d embeddings; ranges from more "
                "embeddings (quantize_embeddings' `ranges` or `calibration_embeddings`) are "
                "more stable",
                precision,
                len(embeddings),
            )
        calibration = embeddings
    return np.vstack((np.min(calibration, axis=0), np.max(calibration, axis=0)))


def quantize_embeddings(
    embeddings: torch.Tensor | np.ndarray | list,
    precision: str,
    ranges: np.ndarray | None = None,
    calibration_embeddings: np.ndarray | None = None,
) -> np.ndarray:
    """Float embeddings (n, dim) or (dim,) in a lower precision, as sentence-transformers'
    ``quantize_embeddings``.

    - ``float32``: a float32 copy.
    - ``int8`` / ``uint8``: dimension d's range ``[lo, hi]`` (``ranges[:, d]``, else the min and
      max of ``calibration_embeddings``, else of ``embeddings``: ValueError for one embedding)
      cut into 255 steps of ``(hi - lo) / 255`` (1 where ``hi == lo``); a value's bucket is
      ``floor((x - lo) / step)`` clipped to [0, 255]; int8 subtracts 128.
    - ``binary`` / ``ubinary``: the bits ``x > 0`` packed 8 to a byte along the last axis
      (``np.packbits``, so dim/8 rounded up); binary subtracts 128 and is int8, ubinary uint8.
    """
    if isinstance(embeddings, list):
        embeddings = np.array([_to_numpy(e) for e in embeddings])
    embeddings = _to_numpy(embeddings)
    check_precision(precision)
    if embeddings.dtype in (np.uint8, np.int8):
        raise ValueError("Embeddings to quantize must be float rather than int8 or uint8")
    if embeddings.ndim == 2 and embeddings.shape[0] == 0:
        dim = embeddings.shape[1]
        if precision.endswith("int8"):
            return np.zeros((0, dim), dtype=np.int8 if precision == "int8" else np.uint8)
        if precision.endswith("binary"):
            width = (dim + 7) // 8
            return np.zeros((0, width), dtype=np.int8 if precision == "binary" else np.uint8)
    if precision == "float32":
        return embeddings.astype(np.float32)
    if precision.endswith("int8"):
        if ranges is None:
            ranges = _ranges(embeddings, precision, calibration_embeddings)
        ranges = np.asarray(ranges).astype(np.float32, copy=False)
        starts = ranges[0, :]
        steps = (ranges[1, :] - starts) / 255
        steps = np.where(steps == 0, 1, steps)
        buckets = np.clip(np.floor((embeddings - starts) / steps), 0, 255)
        return buckets.astype(np.uint8) if precision == "uint8" else (buckets - 128).astype(np.int8)
    bits = np.packbits(embeddings > 0, axis=-1)
    return (bits - 128).astype(np.int8) if precision == "binary" else bits


# ---------------------------------------------------------------------- similarity
def check_similarity_fn_name(name: Any) -> str:
    """`name` (a string, or sentence-transformers' ``SimilarityFunction`` member) checked."""
    value = getattr(name, "value", name)
    if value not in SIMILARITY_FN_NAMES:
        raise ValueError(f"similarity_fn_name must be one of {SIMILARITY_FN_NAMES}, got {name!r}")
    return value


def _as_tensor(x: Any) -> torch.Tensor:
    """A tensor of `x` (lists of tensors or arrays are stacked), sub-float32 floats as float32:
    a matmul in bf16 rounds its scores into spurious ties."""
    if isinstance(x, list) and x and all(isinstance(e, torch.Tensor) for e in x):
        x = torch.stack(x)
    elif isinstance(x, list) and x and all(isinstance(e, np.ndarray) for e in x):
        x = torch.stack([torch.as_tensor(e) for e in x])
    elif isinstance(x, np.ndarray):
        x = torch.from_numpy(x) if x.flags.writeable else torch.tensor(x)
    elif not isinstance(x, torch.Tensor):
        x = torch.tensor(x)
    if torch.is_floating_point(x) and torch.finfo(x.dtype).bits < 32:
        x = x.float()
    return x


def _as_batch(x: Any) -> torch.Tensor:
    x = _as_tensor(x)
    return x.unsqueeze(0) if x.dim() == 1 else x


def similarity(a: Any, b: Any, name: str = "cosine") -> torch.Tensor:
    """(n, m) scores of every row of `a` against every row of `b` (a 1-D input is one row).

    cosine: ``a_i . b_j / (|a_i| |b_j|)``; dot: ``a_i . b_j``; euclidean and manhattan: minus
    the L2 and L1 distances (larger is always closer).
    """
    name = check_similarity_fn_name(name)
    a, b = _as_batch(a), _as_batch(b)
    if name == "cosine":
        a = torch.nn.functional.normalize(a, p=2, dim=-1)
        b = torch.nn.functional.normalize(b, p=2, dim=-1)
    if name in ("cosine", "dot"):
        return torch.mm(a, b.transpose(0, 1))
    return -torch.cdist(a, b, p=2.0 if name == "euclidean" else 1.0)


def similarity_pairwise(a: Any, b: Any, name: str = "cosine") -> torch.Tensor:
    """(n,) scores of ``a[i]`` against ``b[i]`` (0-d for two 1-D inputs), as `similarity`."""
    name = check_similarity_fn_name(name)
    a, b = _as_tensor(a), _as_tensor(b)
    if name == "cosine":
        a = torch.nn.functional.normalize(a, p=2, dim=-1)
        b = torch.nn.functional.normalize(b, p=2, dim=-1)
    if name in ("cosine", "dot"):
        return (a * b).sum(dim=-1)
    diff = a - b
    if name == "manhattan":
        return -torch.sum(torch.abs(diff), dim=-1)
    if not diff.is_floating_point():
        return -diff.square().sum(dim=-1).sqrt()
    return -torch.linalg.vector_norm(diff, dim=-1)


# ---------------------------------------------------------------------- output
def check_truncate_dim(truncate_dim: Any) -> int | None:
    if truncate_dim is None:
        return None
    if not isinstance(truncate_dim, int) or isinstance(truncate_dim, bool) or truncate_dim <= 0:
        raise ValueError(f"truncate_dim must be a positive integer or None, got {truncate_dim!r}")
    return truncate_dim


def convert_output(
    vectors: torch.Tensor,
    *,
    single: bool,
    precision: str = "float32",
    convert_to_numpy: bool = True,
    convert_to_tensor: bool = False,
    stacked: bool = False,
) -> np.ndarray | torch.Tensor | list[torch.Tensor]:
    """`vectors` (n, dim) float32 as ``SentenceTransformer.encode`` returns them.

    Quantized to `precision` over the whole batch first. Then ``convert_to_tensor``: one
    tensor (it wins over ``convert_to_numpy``); ``convert_to_numpy``: one array; neither: a
    list of 1-D tensors, or with `stacked` one tensor (the official llm2vec's `encode`). A
    single input gives its row alone (1-D).
    """
    check_precision(precision)
    out: Any = vectors
    if len(vectors) and precision != "float32":
        out = quantize_embeddings(vectors, precision)
    if convert_to_tensor or (stacked and not convert_to_numpy):
        out = torch.as_tensor(out)
    elif convert_to_numpy:
        out = _to_numpy(out)
    else:
        out = list(torch.from_numpy(out) if isinstance(out, np.ndarray) else out)
    return out[0] if single else out


# ---------------------------------------------------------------------- prompts
class Prompts(MutableMapping):
    """``model.prompts``: prompt name -> instruction, as sentence-transformers' dict.

    ``"query"`` and ``"document"`` are always present: they are ``config.query_instruction``
    and ``config.document_instruction`` (setting one sets the config; deleting one sets it
    to "", no instruction). Other names are kept here.
    """

    _CONFIGURED = {"query": "query_instruction", "document": "document_instruction"}

    def __init__(self, config: Any, extra: dict[str, str]):
        self._config = config
        self._extra = extra  # the encoder's own dict: this mapping is a live view

    def __getitem__(self, name: str) -> str:
        if name in self._CONFIGURED:
            return getattr(self._config, self._CONFIGURED[name])
        return self._extra[name]

    def __setitem__(self, name: str, prompt: str) -> None:
        if not isinstance(name, str) or not isinstance(prompt, str):
            raise TypeError(f"prompts map names to strings, got {name!r}: {prompt!r}")
        if name in self._CONFIGURED:
            setattr(self._config, self._CONFIGURED[name], prompt)
            self._config.validate()
        else:
            self._extra[name] = prompt

    def __delitem__(self, name: str) -> None:
        if name in self._CONFIGURED:
            self[name] = ""
        else:
            del self._extra[name]

    def __iter__(self) -> Iterator[str]:
        yield from self._CONFIGURED
        yield from self._extra

    def __len__(self) -> int:
        return len(self._CONFIGURED) + len(self._extra)

    def __repr__(self) -> str:
        return repr(dict(self))
