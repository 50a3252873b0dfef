"""LLM2VecEmbedding: the LlamaIndex embedding API on a tiny random checkpoint (offline)."""

from __future__ import annotations

import asyncio
import os
import threading

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from llama_index.embeddings.llm2vec import LLM2VecEmbedding  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    from llm2vec_retrieval.testing import make_tiny_checkpoint

    return str(make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny0", "llama", seed=0))


@pytest.fixture(scope="module")
def embed(checkpoint) -> LLM2VecEmbedding:
    return LLM2VecEmbedding(model_name=checkpoint, embed_batch_size=4)


def test_embedding_basics(embed: LLM2VecEmbedding) -> None:
    q = embed.get_query_embedding("rivers")
    t = embed.get_text_embedding("rivers")
    assert len(q) == len(t) == embed.embedding_dim == 32
    assert not np.allclose(q, t)  # the query instruction is applied to queries only
    assert np.allclose(
        q, embed.encoder.encode_queries(["rivers"], embed.query_instruction)[0], atol=1e-5
    )
    assert embed.query_instruction == embed.encoder.config.query_instruction
    texts = [f"text {i}" for i in range(9)]
    batch = embed.get_text_embedding_batch(texts)  # batched by embed_batch_size
    assert np.allclose(batch, embed.encoder.encode_documents(texts), atol=1e-5)
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    custom = LLM2VecEmbedding(
        encoder=embed.encoder, query_instruction="Find:", text_instruction="Passage:"
    )
    assert np.allclose(
        custom.get_query_embedding("x"), embed.encoder.encode_queries(["x"], "Find:")[0], atol=1e-5
    )
    assert np.allclose(
        custom.get_text_embedding("x"),
        embed.encoder.encode_documents(["x"], "Passage:")[0],
        atol=1e-5,
    )
    assert custom.fingerprint() != embed.fingerprint()


def test_default_model_is_the_core_default(embed: LLM2VecEmbedding) -> None:
    """Issue 25: one default model name everywhere (it was "llm2vec-default" here)."""
    from llm2vec_retrieval import DEFAULT_MODEL

    assert LLM2VecEmbedding.model_fields["model_name"].default == DEFAULT_MODEL
    with pytest.warns(FutureWarning, match="deprecated"):
        old = LLM2VecEmbedding(model_name="llm2vec-default", encoder=embed.encoder)
    assert old.model_name == DEFAULT_MODEL


@pytest.mark.parametrize("query", ["", " \n"])
async def test_empty_query_is_a_one_line_value_error(embed: LLM2VecEmbedding, query: str) -> None:
    reason = "empty" if not query else "only whitespace"
    message = f"the query is {reason}: give the words to search for"
    with pytest.raises(ValueError) as err:
        embed.get_query_embedding(query)
    assert str(err.value) == message
    with pytest.raises(ValueError) as err:
        await embed.aget_query_embedding(query)
    assert str(err.value) == message
    assert len(embed.get_text_embedding(query)) == embed.embedding_dim  # documents may be empty


def test_embedding_missing_model(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        LLM2VecEmbedding(model_name=str(tmp_path / "missing"))


async def test_embedding_async_is_threaded(embed: LLM2VecEmbedding, monkeypatch) -> None:
    loop_thread = threading.get_ident()
    seen: list[int] = []
    original = embed.encoder.encode_documents

    def slow(*args, **kwargs):
        seen.append(threading.get_ident())
        # the loop keeps ticking while the encoder runs: wait for a tick made after this started
        ticked.clear()
        assert ticked.wait(30), "the event loop stood still while the encoder ran"
        return original(*args, **kwargs)

    monkeypatch.setattr(embed.encoder, "encode_documents", slow)
    ticks = 0
    ticked = threading.Event()

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1
            ticked.set()

    task = asyncio.create_task(ticker())
    try:
        vecs = await embed.aget_text_embedding_batch(["a", "b", "c"])
        one = await embed.aget_text_embedding("a")
    finally:
        task.cancel()
    assert len(vecs) == 3 and len(one) == 32
    assert seen and all(t != loop_thread for t in seen)
    assert ticks >= 1
    q = await embed.aget_query_embedding("a")
    assert np.allclose(q, embed.get_query_embedding("a"), atol=1e-5)


def test_bad_dtype(checkpoint: str) -> None:
    with pytest.raises(ValueError, match="valid choices: auto, float32, bfloat16, float16"):
        LLM2VecEmbedding(checkpoint, dtype="half-ish")


def test_missing_framework_gives_install_hint() -> None:
    from llm2vec_retrieval.testing import import_error_without

    message = import_error_without("llama_index.embeddings.llm2vec", "llama_index.core")
    assert "pip install ./integrations/llama-index-embeddings-llm2vec" in message
