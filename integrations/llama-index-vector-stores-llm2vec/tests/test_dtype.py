"""`LLM2VecEmbedding(dtype=...)` (issue 16.1): "auto" by default, resolved by hardware;
explicit dtypes honoured; the store built with one dtype is queried with the other."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from llama_index.core.schema import TextNode  # noqa: E402
from llama_index.core.vector_stores.types import VectorStoreQuery  # noqa: E402
from llama_index.embeddings.llm2vec import LLM2VecEmbedding  # noqa: E402
from llama_index.vector_stores.llm2vec import LLM2VecVectorStore  # noqa: E402

from llm2vec_retrieval.hardware import resolve_dtype  # noqa: E402


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    from llm2vec_retrieval.testing import make_tiny_checkpoint

    return str(make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny", "llama"))


def _dtype(emb: LLM2VecEmbedding) -> torch.dtype:
    return next(emb.encoder.model.parameters()).dtype


def test_dtype_default_auto_and_explicit(ckpt: str, tmp_path) -> None:
    auto = LLM2VecEmbedding(ckpt)
    assert auto.dtype == "auto" and _dtype(auto) == resolve_dtype("auto").dtype
    fp32 = LLM2VecEmbedding(ckpt, dtype="float32")
    bf16 = LLM2VecEmbedding(ckpt, dtype="bfloat16")
    assert _dtype(fp32) == torch.float32 and _dtype(bf16) == torch.bfloat16
    texts = ["Rivers flow into the sea.", "Vaccines train the immune system."]
    nodes = [
        TextNode(text=t, id_=f"n{i}", embedding=fp32.get_text_embedding(t))
        for i, t in enumerate(texts)
    ]
    store = LLM2VecVectorStore(embed_model=fp32)
    store.add(nodes)
    store.persist(str(tmp_path / "store.json"))
    loaded = LLM2VecVectorStore.from_persist_path(str(tmp_path / "store.json"), embed_model=bf16)
    query = VectorStoreQuery(query_embedding=bf16.get_query_embedding(texts[0]), similarity_top_k=1)
    assert loaded.query(query).ids == ["n0"]
