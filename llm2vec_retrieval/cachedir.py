"""Where this package keeps what it computes once: dequantized models (`sources`), merged
adapters (`merge_cache`) and weight-file digests (`fingerprint`).

Not here: what goes into the cache (each of those modules owns its own entries) and clearing
it (`llm2vec-retrieval cache clear`, cli/cache.py).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CACHE_ENV", "cache_dir"]

CACHE_ENV = "LLM2VEC_RETRIEVAL_CACHE"


def cache_dir() -> Path:
    """Cache root: $LLM2VEC_RETRIEVAL_CACHE, else $XDG_CACHE_HOME/llm2vec_retrieval, else ~/.cache/..."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "llm2vec_retrieval"
