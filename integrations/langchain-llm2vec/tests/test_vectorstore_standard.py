"""langchain-tests standard suite (sync and async) for LLM2VecVectorStore."""

from __future__ import annotations

from collections.abc import Generator

import pytest
from langchain_core.vectorstores import VectorStore
from langchain_llm2vec import LLM2VecVectorStore
from langchain_tests.integration_tests import VectorStoreIntegrationTests


class TestLLM2VecVectorStoreFlat(VectorStoreIntegrationTests):
    """Exact (flat) index; the suite's own deterministic fake embeddings."""

    @property
    def has_sync(self) -> bool:
        return True

    @property
    def has_async(self) -> bool:
        return True

    @pytest.fixture()
    def vectorstore(self) -> Generator[VectorStore, None, None]:  # type: ignore[override]
        store = LLM2VecVectorStore(self.get_embeddings())
        yield store
        store.delete()  # everything


class TestLLM2VecVectorStoreHNSW(VectorStoreIntegrationTests):
    """The same suite on an approximate (HNSW) index."""

    @pytest.fixture()
    def vectorstore(self) -> Generator[VectorStore, None, None]:  # type: ignore[override]
        yield LLM2VecVectorStore(self.get_embeddings(), index_kind="hnsw")
