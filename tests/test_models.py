"""`llm2vec_retrieval.load_encoder`: the one loader (issue 13.8)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llm2vec_retrieval import load_encoder
from llm2vec_retrieval.errors import MissingInputError, UserError
from llm2vec_retrieval.hardware import resolve_dtype


def test_unknown_model_is_a_one_line_user_error_and_never_a_download(tmp_path):
    with pytest.raises(MissingInputError, match="Models are never downloaded") as err:
        load_encoder("some-org/some-model")
    assert isinstance(err.value, UserError) and "\n" not in str(err.value)
    with pytest.raises(MissingInputError, match="adapter folder"):
        load_encoder(None, tmp_path / "missing-adapter")


@pytest.fixture
def cpu_with_bf16(monkeypatch):
    """This machine's CPU as one with native bf16 (avx512_bf16), whatever it really has."""
    from llm2vec_retrieval import hardware

    monkeypatch.setattr(
        hardware,
        "read_cpu_features",
        lambda: hardware.CpuFeatures("x86", frozenset({"avx512_bf16"})),
    )


@pytest.fixture
def cpu_without_bf16(monkeypatch):
    from llm2vec_retrieval import hardware

    monkeypatch.setattr(
        hardware, "read_cpu_features", lambda: hardware.CpuFeatures("x86", frozenset({"avx2"}))
    )


def test_dtype_default_is_auto_in_load_encoder_and_from_pretrained(tiny_llama, cpu_with_bf16):
    """Issue 25: one default everywhere; the Python API used to load float32."""
    from llm2vec_retrieval import LLM2Vec

    assert load_encoder(tiny_llama).model.dtype == torch.bfloat16
    assert LLM2Vec.from_pretrained(tiny_llama).model.dtype == torch.bfloat16
    assert LLM2Vec.from_pretrained(tiny_llama, dtype="auto").model.dtype == torch.bfloat16
    assert LLM2Vec.from_pretrained(tiny_llama, dtype="float32").model.dtype == torch.float32
    assert LLM2Vec.from_pretrained(tiny_llama, torch_dtype="float32").model.dtype == torch.float32


def test_dtype_auto_is_float32_without_native_bf16(tiny_llama, cpu_without_bf16):
    from llm2vec_retrieval import LLM2Vec

    assert load_encoder(tiny_llama).model.dtype == torch.float32
    assert LLM2Vec.from_pretrained(tiny_llama).model.dtype == torch.float32


def test_dtype_explicit_or_auto(tiny_llama):
    assert load_encoder(tiny_llama, dtype="float32").model.dtype == torch.float32
    assert load_encoder(tiny_llama, dtype="bfloat16").model.dtype == torch.bfloat16
    assert load_encoder(tiny_llama).model.dtype == resolve_dtype("auto").dtype  # no dtype: auto
    assert load_encoder(tiny_llama, torch_dtype=torch.bfloat16).model.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="pass the dtype once"):
        load_encoder(tiny_llama, dtype="float32", torch_dtype=torch.float32)


def test_cache_hands_back_one_encoder_per_arguments(tiny_llama, tiny_checkpoint):
    a = load_encoder(tiny_llama, dtype="float32", cache=True)
    assert load_encoder(tiny_llama, dtype="float32", cache=True) is a
    assert load_encoder(tiny_llama, dtype="float32") is not a  # without cache: a new one
    b = load_encoder(tiny_llama, dtype="bfloat16", cache=True)
    assert b is not a and load_encoder(tiny_llama, dtype="bfloat16", cache=True) is b
    texts = ["rivers flood", "cells divide"]
    np.testing.assert_allclose(
        a.encode_documents(texts),
        load_encoder(tiny_llama, dtype="float32").encode_documents(texts),
        atol=1e-6,
    )
