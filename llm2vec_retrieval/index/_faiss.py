"""Lazy access to faiss, so that ``import llm2vec_retrieval`` never needs it."""

from __future__ import annotations

from typing import Any

FAISS_MISSING_MESSAGE = "faiss is not installed: pip install 'llm2vec-retrieval[faiss]'"


def get_faiss() -> Any:
    """Import and return the faiss module, or raise a clear ImportError."""
    try:
        import faiss
    except ImportError as exc:  # also raised when sys.modules["faiss"] is None
        raise ImportError(FAISS_MISSING_MESSAGE) from exc
    return faiss
