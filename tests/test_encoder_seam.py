"""The encoder's public seam: tokenize -> Features -> forward, its one lock, no private use."""

from __future__ import annotations

import re
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from llm2vec_retrieval import LLM2Vec
from llm2vec_retrieval.encoder import SEPARATOR, Features

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Proteins fold.",
    "",
    "Retrieval finds documents that answer a question, even long and winding ones like this.",
]


def seam(encoder: LLM2Vec, inputs) -> np.ndarray:
    with torch.inference_mode():
        return encoder.forward(encoder.tokenize(inputs)).numpy()


def test_tokenize_forward_equal_encode_for_documents_and_queries(tiny_encoder):
    docs = tiny_encoder.encode_documents(TEXTS, normalize=False)
    np.testing.assert_allclose(seam(tiny_encoder, TEXTS), docs, atol=1e-5, rtol=1e-5)
    instruction = "Given a question, retrieve passages that answer it:"
    queries = tiny_encoder.encode_queries(TEXTS, instruction=instruction, normalize=False)
    pairs = [(instruction, t) for t in TEXTS]
    np.testing.assert_allclose(seam(tiny_encoder, pairs), queries, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["eos_token", "weighted_mean"])
def test_seam_equals_encode_in_other_pooling_modes(tiny_llama, mode):
    enc = LLM2Vec.from_pretrained(
        tiny_llama, pooling_mode=mode, skip_instruction=False, dtype="float32"
    )
    pairs = [("Find:", t) for t in TEXTS]
    np.testing.assert_allclose(
        seam(enc, pairs), enc.encode(pairs, show_progress_bar=False).numpy(), atol=1e-5
    )


def test_features_shape_and_text_positions(tiny_encoder):
    feats = tiny_encoder.tokenize([("Find:", "hello world"), "hello world"])
    assert isinstance(feats, Features) and feats.truncated == 0
    assert set(feats) == {"input_ids", "attention_mask", "embed_mask"}
    assert feats["input_ids"].shape == feats["embed_mask"].shape
    n_text = len(tiny_encoder.tokenizer("hello world", add_special_tokens=False)["input_ids"])
    assert feats["embed_mask"].sum(dim=1).tolist() == [n_text, n_text]
    # the text positions are the row's last real tokens (right padding)
    for att, emb in zip(feats["attention_mask"], feats["embed_mask"], strict=True):
        length = int(att.sum())
        assert emb[length - n_text : length].all() and int(emb.sum()) == n_text
    assert feats.to("cpu").truncated == 0


def test_official_prepared_text_is_tokenized_as_is(tiny_encoder):
    prepared = f"Find: {SEPARATOR}hello world"
    expected = tiny_encoder.encode([["Find:", "hello world"]], show_progress_bar=False)
    np.testing.assert_allclose(seam(tiny_encoder, [prepared]), expected.numpy(), atol=1e-6)
    mixed = seam(tiny_encoder, ["plain text", prepared])
    np.testing.assert_allclose(mixed[1], expected[0].numpy(), atol=1e-5)


def test_truncation_is_counted_in_features_without_warning(tiny_llama):
    enc = LLM2Vec.from_pretrained(tiny_llama, doc_max_length=16, max_length=24, dtype="float32")
    long = "x" * 5000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert enc.tokenize(["short", long, long]).truncated == 2
        # 16 text tokens fit max_length alone, not with a long instruction
        assert enc.tokenize([("word " * 30, "short"), ("", "short")]).truncated == 1
        assert enc.tokenize([("word " * 30, long)]).truncated == 1  # cut twice, one input
    with pytest.warns(UserWarning, match="truncated"):
        enc.encode([long], show_progress_bar=False)


def test_forward_keeps_gradients(tiny_llama):
    enc = LLM2Vec.from_pretrained(tiny_llama, dtype="float32")
    out = enc.forward(enc.tokenize(["a text"]))
    assert out.requires_grad
    out.sum().backward()
    assert any(p.grad is not None for p in enc.model.parameters())


def test_trainer_embedder_uses_the_seam(tiny_encoder):
    from llm2vec_retrieval.training.modeling import Embedder

    pairs = [("Find:", t) for t in TEXTS]
    feats, truncated = Embedder(tiny_encoder).features(pairs)
    assert truncated == 0
    with torch.inference_mode():
        got = Embedder(tiny_encoder)(**feats).numpy()
    np.testing.assert_allclose(got, seam(tiny_encoder, pairs), atol=1e-6)


# ---------------------------------------------------------------------- the one lock
def test_threads_through_the_lock_match_serial(tiny_encoder):
    texts = [f"document number {i} about topic {i % 7}" for i in range(24)]
    pairs = [("Find:", t) for t in texts]
    serial = (tiny_encoder.encode_documents(texts), seam(tiny_encoder, pairs))
    results: dict[int, tuple] = {}
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for _ in range(3):
                with tiny_encoder.lock:  # re-entrant: tokenize/forward take it again inside
                    via_seam = seam(tiny_encoder, pairs)
                results[k] = (tiny_encoder.encode_documents(texts), via_seam)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    for k in range(2):
        np.testing.assert_allclose(results[k][0], serial[0], atol=1e-6)
        np.testing.assert_allclose(results[k][1], serial[1], atol=1e-6)


def test_encode_waits_for_the_lock_and_shared_alias_is_it(tiny_encoder, watched_lock):
    from llm2vec_retrieval.shared import encoder_lock

    assert encoder_lock(tiny_encoder) is tiny_encoder.lock
    moved = threading.Event()  # the call either finished or started waiting for the lock
    lock = watched_lock(tiny_encoder, moved)
    assert encoder_lock(tiny_encoder) is lock
    done = threading.Event()
    thread = threading.Thread(
        target=lambda: (tiny_encoder.encode_documents(["waiting"]), done.set(), moved.set())
    )
    with lock:
        thread.start()
        assert moved.wait(60)
        assert not done.is_set(), "encode ran while another caller held encoder.lock"
    thread.join(timeout=60)
    assert done.is_set()


def test_server_holds_the_encoder_lock_for_its_tokenizer_calls(tiny_encoder, watched_lock):
    from llm2vec_retrieval.server import EmbeddingService

    moved = threading.Event()  # the request either finished or started waiting for the lock
    lock = watched_lock(tiny_encoder, moved)
    service = EmbeddingService(tiny_encoder, truncate=True, max_input_tokens=4)
    try:
        out = []

        def call():
            out.append(service.embeddings({"input": "one two three four five six"}))
            moved.set()

        thread = threading.Thread(target=call)
        with lock:
            thread.start()
            assert moved.wait(60)
            assert not out, "the service tokenized while another caller held encoder.lock"
            assert lock.waiters == [thread]  # its tokenizer call waits, not only the batcher
        thread.join(timeout=60)
        assert out and len(out[0]["data"]) == 1
    finally:
        service.close()


# ---------------------------------------------------------------------- no private use
def test_no_module_outside_the_encoder_uses_its_private_members():
    names = {n for n in vars(LLM2Vec) if n.startswith("_") and not n.startswith("__")}
    names |= {"_tokenizer_lock", "_model_type"}  # instance attributes, old and current
    pattern = re.compile(r"\b(?!self\b|cls\b)\w+\.(" + "|".join(sorted(names)) + r")\b")
    found = []
    for top in ("llm2vec_retrieval", "benchmarks", "integrations"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if path == ROOT / "llm2vec_retrieval" / "encoder.py":
                continue
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if pattern.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, "\n".join(found)


def test_sentence_transformers_v5_names(tiny_encoder):
    """Issue 13.8: encode_query / encode_document as sentence-transformers v5 names them."""
    enc = tiny_encoder
    texts = ["rivers flood after rain", "cells make proteins"]
    np.testing.assert_array_equal(enc.encode_query(texts), enc.encode_queries(texts))
    np.testing.assert_array_equal(
        enc.encode_query("q", instruction="Find it"), enc.encode_queries("q", instruction="Find it")
    )
    np.testing.assert_array_equal(enc.encode_document(texts), enc.encode_documents(texts))
    assert enc.encode_query("one").ndim == 1
