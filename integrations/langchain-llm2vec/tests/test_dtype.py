"""`LLM2VecEmbeddings(dtype=...)` (issue 16.1): "auto" by default, resolved by hardware
before the model loads (never handed to transformers as "auto"); explicit dtypes honoured."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from langchain_llm2vec import LLM2VecEmbeddings

from llm2vec_retrieval.hardware import resolve_dtype

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    from llm2vec_retrieval.testing import make_tiny_checkpoint

    return str(make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny", "llama"))


def _dtype(emb: LLM2VecEmbeddings) -> torch.dtype:
    return next(emb.encoder.model.parameters()).dtype


def test_dtype_default_auto_and_explicit(ckpt: str) -> None:
    auto = LLM2VecEmbeddings(model=ckpt)
    assert auto.dtype == "auto" and _dtype(auto) == resolve_dtype("auto").dtype
    fp32 = LLM2VecEmbeddings(model=ckpt, dtype="float32")
    bf16 = LLM2VecEmbeddings(model=ckpt, dtype=torch.bfloat16)
    assert _dtype(fp32) == torch.float32 and _dtype(bf16) == torch.bfloat16
    assert bf16.dtype == "bfloat16"
    a, b = np.array(fp32.embed_query("rivers")), np.array(bf16.embed_query("rivers"))
    assert a.dtype == b.dtype and float(a @ b) > 0.99  # normalized, close across dtypes
    # a dtype in model_kwargs (as before the field existed) still counts
    legacy = LLM2VecEmbeddings(model=ckpt, model_kwargs={"torch_dtype": "float16"})
    assert _dtype(legacy) == torch.float16


def test_bad_or_conflicting_dtype(ckpt: str) -> None:
    with pytest.raises(ValueError, match="valid choices: auto, float32, bfloat16, float16"):
        LLM2VecEmbeddings(model=ckpt, dtype="fp32")
    with pytest.raises(ValueError, match="differ"):
        LLM2VecEmbeddings(model=ckpt, dtype="float32", model_kwargs={"dtype": "bfloat16"})
