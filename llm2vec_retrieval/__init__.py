"""llm2vec-retrieval: decoder-only LLMs as text encoders (LLM2Vec), for retrieval.

The public API is declared here once. The core imports no retrieval framework:
FAISS (`llm2vec_retrieval.index`), LangChain (`langchain_llm2vec`) and LlamaIndex
(`llama_index_llm2vec`) are optional extras imported where used.
"""

from .bidirectional import SUPPORTED_MODEL_TYPES, UnsupportedModelError
from .config import POOLING_MODES, EncoderConfig
from .encoder import LLM2Vec
from .instructions import DEFAULT_QUERY_INSTRUCTION, INSTRUCTIONS, STS_INSTRUCTION, get_instruction
from .loading import DEFAULT_MODEL, EMBEDDED_MODELS, ModelNotInstalledError, cache_dir

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_QUERY_INSTRUCTION",
    "EMBEDDED_MODELS",
    "INSTRUCTIONS",
    "POOLING_MODES",
    "STS_INSTRUCTION",
    "SUPPORTED_MODEL_TYPES",
    "EncoderConfig",
    "LLM2Vec",
    "ModelNotInstalledError",
    "UnsupportedModelError",
    "__version__",
    "cache_dir",
    "get_instruction",
]
