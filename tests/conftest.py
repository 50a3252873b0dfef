"""Shared fixtures: tiny random checkpoints built in code (no network, milliseconds)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# `search` starts no warm encoder process unless a test asks for one (tests/test_warm.py)
os.environ.setdefault("LLM2VEC_RETRIEVAL_WARM", "0")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """Factory: tiny_checkpoint(arch="llama") -> path of a cached tiny random checkpoint."""
    from llm2vec_retrieval.testing import make_tiny_checkpoint

    made: dict[str, str] = {}

    def make(arch: str = "llama") -> str:
        if arch not in made:
            made[arch] = str(make_tiny_checkpoint(tmp_path_factory.mktemp(f"tiny-{arch}"), arch))
        return made[arch]

    return make


@pytest.fixture(scope="session")
def tiny_llama(tiny_checkpoint):
    return tiny_checkpoint("llama")


@pytest.fixture(scope="session")
def tiny_encoder(tiny_llama):
    from llm2vec_retrieval import LLM2Vec

    return LLM2Vec.from_pretrained(tiny_llama, dtype="float32")  # tests compare fp32 numbers
