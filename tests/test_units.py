"""Small pure pieces: pooling maths, batching, config JSON, instruction registry."""

from __future__ import annotations

import pytest
import torch

from llm2vec_retrieval.batching import token_budget_batches
from llm2vec_retrieval.config import EncoderConfig
from llm2vec_retrieval.instructions import (
    INSTRUCTIONS,
    STS_INSTRUCTION,
    get_instruction,
    is_symmetric,
)
from llm2vec_retrieval.pooling import pool


def test_pooling_by_hand():
    hidden = torch.arange(2 * 4 * 1, dtype=torch.float32).reshape(2, 4, 1)  # rows: 0..3, 4..7
    attention = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    text = torch.tensor([[0, 1, 1, 0], [0, 0, 1, 1]])
    ids = torch.tensor([[9, 5, 6, 0], [7, 9, 5, 6]])
    assert pool(hidden, attention, text, "mean").flatten().tolist() == [1.5, 6.5]
    # weights 1,2 over the text tokens, normalised: (1*1 + 2*2)/3 and (1*6 + 2*7)/3
    torch.testing.assert_close(pool(hidden, attention, text, "weighted_mean").flatten(), torch.tensor([5 / 3, 20 / 3]))
    assert pool(hidden, attention, text, "last_token").flatten().tolist() == [2.0, 7.0]
    assert pool(hidden, attention, text, "bos_token", ids, 9).flatten().tolist() == [0.0, 5.0]
    with pytest.raises(ValueError, match="Valid pooling modes are"):
        pool(hidden, attention, text, "max")


def test_token_budget_batches():
    lengths = [5, 100, 7, 50, 50, 1]
    batches = token_budget_batches(lengths, max_batch_tokens=120, max_batch_size=3)
    assert sorted(i for b in batches for i in b) == list(range(6))
    for batch in batches:
        assert len(batch) <= 3
        assert max(lengths[i] for i in batch) * len(batch) <= 120 or len(batch) == 1
    assert batches[0][0] == 1  # longest first


def test_config_json_round_trip(tmp_path):
    cfg = EncoderConfig(pooling_mode="eos_token", query_instruction="Q:")
    cfg.save(tmp_path)
    assert EncoderConfig.from_dict(EncoderConfig.read_saved(tmp_path)) == cfg
    with pytest.raises(ValueError, match="Valid keys are"):
        EncoderConfig.from_dict({"pooling": "mean"})
    with pytest.raises(ValueError, match="positive integer"):
        EncoderConfig(max_length=0)


def test_instruction_registry():
    assert get_instruction("scifact") == "Given a scientific claim, retrieve documents that support or refute the claim:"
    assert get_instruction("STS-B") == get_instruction("STSBenchmark") == STS_INSTRUCTION
    assert is_symmetric("STSBenchmark") and not is_symmetric("SciFact")
    assert all(v.endswith(":") for v in INSTRUCTIONS.values())
