"""llm2vec-retrieval: decoder-only LLMs as text encoders (LLM2Vec), for retrieval.

The public API is declared here once. Names that need torch/transformers are
imported on first use, so `llm2vec-retrieval --help` or `info` start fast. The core
imports no retrieval framework: FAISS (`llm2vec_retrieval.index`) is an optional extra;
LangChain (`langchain-llm2vec`) and LlamaIndex (`llama-index-embeddings-llm2vec`,
`llama-index-vector-stores-llm2vec`) are packages of their own under integrations/.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .cachedir import cache_dir
from .config import POOLING_MODES, EncoderConfig
from .instructions import DEFAULT_QUERY_INSTRUCTION, INSTRUCTIONS, STS_INSTRUCTION, get_instruction
from .sources import DEFAULT_MODEL, EMBEDDED_MODELS, SHIPPED_ADAPTERS, ModelNotInstalledError

__version__ = "0.1.0"

_LAZY = {
    "LLM2Vec": ".encoder",
    "UnsupportedModelError": ".bidirectional",
    "SUPPORTED_MODEL_TYPES": ".bidirectional",
    "load_encoder": ".models",
}

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_QUERY_INSTRUCTION",
    "EMBEDDED_MODELS",
    "INSTRUCTIONS",
    "POOLING_MODES",
    "SHIPPED_ADAPTERS",
    "STS_INSTRUCTION",
    "SUPPORTED_MODEL_TYPES",
    "EncoderConfig",
    "LLM2Vec",
    "ModelNotInstalledError",
    "UnsupportedModelError",
    "__version__",
    "cache_dir",
    "get_instruction",
    "load_encoder",
]

if TYPE_CHECKING:
    from .bidirectional import SUPPORTED_MODEL_TYPES, UnsupportedModelError
    from .encoder import LLM2Vec
    from .models import load_encoder


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'llm2vec_retrieval' has no attribute {name!r}")
