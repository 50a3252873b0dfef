"""Packed forward passes (llm2vec_retrieval.packing) give the padded path's vectors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from llm2vec_retrieval import LLM2Vec, packing
from llm2vec_retrieval.testing import ARCHITECTURES

# Lengths from 1 to ~60 tokens, so that batches mix short and long texts (padding), and a few
# texts fit the tiny sliding-window models' window of 4 tokens.
TEXTS = [
    "a",
    "b c",
    "Rivers flood after heavy rain in the spring.",
    "The immune system fights infections with antibodies made by white blood cells " * 3,
    "Proteins fold.",
    "Genes carry the instructions cells use to build proteins, " * 5,
    "x y z",
    "Snow melt feeds the mountain streams in early summer.",
]
SHORT = ["a", "b c", "x y", "q"]


class PackedCalls:
    """Counts forward passes that ran packed (wraps the real function)."""

    def __init__(self, monkeypatch):
        self.n = 0
        real = packing.packed_hidden

        def counted(*args, **kwargs):
            self.n += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(packing, "packed_hidden", counted)


def _pair(path, **kwargs):
    kwargs.setdefault("dtype", "float32")  # the comparisons below are fp32-tight
    return (
        LLM2Vec.from_pretrained(path, packing="off", max_batch_tokens=96, **kwargs),
        LLM2Vec.from_pretrained(path, packing="auto", max_batch_tokens=96, **kwargs),
    )


def _min_cos(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_packed_vectors_match_padded(arch, tiny_checkpoint, monkeypatch):
    padded, packed = _pair(tiny_checkpoint(arch))
    calls = PackedCalls(monkeypatch)
    for texts in (TEXTS, SHORT):
        ref = padded.encode_documents(texts, batch_size=4)
        got = packed.encode_documents(texts, batch_size=4)
        assert _min_cos(ref, got) > 0.99999
        q_ref = padded.encode_queries(texts, instruction="Find the passage", batch_size=4)
        q_got = packed.encode_queries(texts, instruction="Find the passage", batch_size=4)
        assert _min_cos(q_ref, q_got) > 0.99999
    assert padded.model.config._attn_implementation != packing.ATTENTION_NAME
    if packing.can_pack(packed.model):
        assert packing.enabled(packed.model)
        assert calls.n > 0  # the packed path ran (short batches at least, for windowed models)
    else:  # e.g. Gemma 2's logit soft-capping: padded batches, same vectors
        assert calls.n == 0


def test_packing_runs_for_the_benchmark_architecture(tiny_llama, monkeypatch):
    _, packed = _pair(tiny_llama)
    calls = PackedCalls(monkeypatch)
    packed.encode_documents(TEXTS, batch_size=4)
    batches = 4  # 8 texts, 4 rows at most per batch, within the token budget
    assert calls.n >= batches // 2
    assert packing.sliding_window(packed.model) is None


def test_window_longer_texts_fall_back_to_padded(tiny_checkpoint, monkeypatch):
    _, packed = _pair(tiny_checkpoint("gemma3_text"))  # sliding window of 4 tokens
    calls = PackedCalls(monkeypatch)
    packed.encode_documents([TEXTS[3]], batch_size=1)
    assert calls.n == 0
    packed.encode_documents(["a"], batch_size=1)
    assert calls.n == 1


def test_packed_causal_matches_padded(tiny_llama):
    padded, packed = _pair(tiny_llama, enable_bidirectional=False)
    ref = padded.encode_documents(TEXTS, batch_size=8)
    got = packed.encode_documents(TEXTS, batch_size=8)
    assert _min_cos(ref, got) > 0.99999


def test_forward_gradients_match(tiny_llama):
    padded, packed = _pair(tiny_llama)
    grads = []
    for enc in (padded, packed):
        enc.model.zero_grad()
        features = enc.tokenize(TEXTS)
        enc.forward(features).pow(2).sum().backward()
        grads.append(enc.model.get_input_embeddings().weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], rtol=1e-3, atol=1e-5)


def test_packing_mode_is_validated(tiny_llama):
    with pytest.raises(ValueError, match="Valid packing modes are: auto, on, off"):
        LLM2Vec.from_pretrained(tiny_llama, packing="yes")


def test_off_keeps_sdpa_and_save_writes_no_custom_attention(tiny_llama, tmp_path):
    _, packed = _pair(tiny_llama)
    packed.encode_documents(TEXTS[:2])
    assert packing.enabled(packed.model)
    packed.save(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert packing.ATTENTION_NAME not in json.dumps(saved)
    settings = json.loads((tmp_path / "saved" / "llm2vec_retrieval_config.json").read_text())
    assert settings["packing"] == "auto"
    reloaded = LLM2Vec.from_pretrained(tmp_path / "saved", packing="off")
    assert reloaded.model.config._attn_implementation == "sdpa"
    assert _min_cos(reloaded.encode_documents(TEXTS), packed.encode_documents(TEXTS)) > 0.99999
