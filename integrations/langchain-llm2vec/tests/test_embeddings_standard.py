"""langchain-tests standard suites for LLM2VecEmbeddings, on a real (tiny) encoder."""

from __future__ import annotations

import asyncio
import atexit
import functools
import os
import shutil
import tempfile
import threading

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from langchain_llm2vec import LLM2VecEmbeddings  # noqa: E402
from langchain_tests.integration_tests import EmbeddingsIntegrationTests  # noqa: E402
from langchain_tests.unit_tests import EmbeddingsUnitTests  # noqa: E402


@functools.cache
def tiny_checkpoint(seed: int = 0) -> str:
    """A tiny random llama checkpoint (dim 32), built once per test session."""
    from llm2vec_retrieval.testing import make_tiny_checkpoint

    root = tempfile.mkdtemp(prefix="lc-llm2vec-")
    atexit.register(shutil.rmtree, root, True)
    return str(make_tiny_checkpoint(os.path.join(root, f"tiny{seed}"), "llama", seed=seed))


class TestLLM2VecEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[LLM2VecEmbeddings]:
        return LLM2VecEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"model": tiny_checkpoint()}


class TestLLM2VecEmbeddingsIntegration(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[LLM2VecEmbeddings]:
        return LLM2VecEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"model": tiny_checkpoint()}


# -- beyond the standard suites ------------------------------------------------------


@pytest.fixture(scope="module")
def emb() -> LLM2VecEmbeddings:
    # float32: the checks below compare vectors at 1e-5 across batch sizes, which bfloat16
    # (what dtype="auto" picks on a CPU with native bf16) does not keep: padding changes the
    # matmul shapes and so the rounding (differences around 1e-4)
    return LLM2VecEmbeddings(model=tiny_checkpoint(), dtype="float32")


def test_dimension_and_normalisation(emb: LLM2VecEmbeddings) -> None:
    import numpy as np

    docs = np.array(emb.embed_documents(["alpha", "beta gamma"]))
    assert docs.shape == (2, emb.embedding_dim) == (2, 32)
    assert np.allclose(np.linalg.norm(docs, axis=1), 1.0, atol=1e-5)
    raw = LLM2VecEmbeddings(encoder=emb.encoder, normalize=False).embed_documents(["alpha"])
    assert not np.isclose(np.linalg.norm(raw[0]), 1.0)
    assert emb.embed_documents([]) == []


def test_instructions(emb: LLM2VecEmbeddings) -> None:
    import numpy as np

    # Default query instruction is the encoder's; queries and documents differ.
    assert emb.query_instruction == emb.encoder.config.query_instruction
    assert emb.document_instruction == emb.encoder.config.document_instruction
    q = np.array(emb.embed_query("alpha"))
    d = np.array(emb.embed_documents(["alpha"])[0])
    assert not np.allclose(q, d)
    expected = emb.encoder.encode_queries(["alpha"], emb.query_instruction)[0]
    assert np.allclose(q, expected, atol=1e-5)
    # A custom query instruction is used.
    other = LLM2VecEmbeddings(encoder=emb.encoder, query_instruction="Find the river:")
    expected = emb.encoder.encode_queries(["alpha"], "Find the river:")[0]
    assert np.allclose(other.embed_query("alpha"), expected, atol=1e-5)
    # A document instruction is used for documents only.
    other = LLM2VecEmbeddings(encoder=emb.encoder, document_instruction="Passage:")
    expected = emb.encoder.encode_documents(["alpha"], "Passage:")[0]
    assert np.allclose(other.embed_documents(["alpha"])[0], expected, atol=1e-5)
    assert other.fingerprint()["document_instruction"] == "Passage:"
    assert other.fingerprint() != emb.fingerprint()


def test_embed_queries_matches_embed_query(emb: LLM2VecEmbeddings) -> None:
    import numpy as np

    batch = emb.embed_queries(["one", "two"])
    assert np.allclose(batch[1], emb.embed_query("two"), atol=1e-5)


def test_batch_size_does_not_change_vectors(emb: LLM2VecEmbeddings) -> None:
    import numpy as np

    texts = [f"text number {i} " * (i + 1) for i in range(7)]
    small = LLM2VecEmbeddings(encoder=emb.encoder, batch_size=2).embed_documents(texts)
    big = emb.embed_documents(texts)
    assert np.allclose(small, big, atol=1e-5)


async def test_async_runs_off_the_event_loop(emb: LLM2VecEmbeddings, monkeypatch) -> None:
    """aembed_* run the encoder in a worker thread: the loop keeps ticking meanwhile."""
    loop_thread = threading.get_ident()
    seen: list[int] = []
    original = emb.encoder.encode_documents

    def slow(*args, **kwargs):
        seen.append(threading.get_ident())
        # the loop keeps ticking while the encoder runs: wait for a tick made after this started
        ticked.clear()
        assert ticked.wait(30), "the event loop stood still while the encoder ran"
        return original(*args, **kwargs)

    monkeypatch.setattr(emb.encoder, "encode_documents", slow)
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
        vectors = await emb.aembed_documents(["a", "b"])
    finally:
        task.cancel()
    assert len(vectors) == 2
    assert seen and seen[0] != loop_thread
    assert ticks >= 1


async def test_async_matches_sync(emb: LLM2VecEmbeddings) -> None:
    import numpy as np

    a, b = await asyncio.gather(emb.aembed_query("x"), emb.aembed_documents(["y", "z"]))
    assert np.allclose(a, emb.embed_query("x"), atol=1e-5)
    assert np.allclose(b, emb.embed_documents(["y", "z"]), atol=1e-5)


def test_missing_model_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        LLM2VecEmbeddings(model=str(tmp_path / "does-not-exist"))
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        LLM2VecEmbeddings(model="some-org/some-model")


def test_path_objects_are_accepted() -> None:
    from pathlib import Path

    emb = LLM2VecEmbeddings(model_name=Path(tiny_checkpoint()))
    assert emb.model_name == tiny_checkpoint()
