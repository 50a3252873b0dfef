"""Bidirectional attention per architecture, on tiny random configs built in code."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel

from llm2vec_retrieval.bidirectional import (
    enable_bidirectional,
    is_bidirectional,
    set_bidirectional,
)
from llm2vec_retrieval.testing import ARCHITECTURES

IMPLEMENTATIONS = ("eager", "sdpa")


def _load(path: str, impl: str):
    try:
        return AutoModel.from_pretrained(path, attn_implementation=impl, dtype=torch.float32).eval()
    except ValueError as exc:  # e.g. Gemma2 has no sdpa path in transformers
        pytest.skip(f"{impl} not available: {exc}")


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_first_token_sees_later_tokens(tiny_checkpoint, arch, impl):
    model = _load(tiny_checkpoint(arch), impl)
    assert not is_bidirectional(model), "a fresh decoder must start causal"
    enable_bidirectional(model)
    ids = torch.tensor([[1, 10, 20, 30, 40]])
    changed = ids.clone()
    changed[0, -1] = 50
    with torch.inference_mode():
        first = model(input_ids=ids).last_hidden_state[0, 0]
        first_changed = model(input_ids=changed).last_hidden_state[0, 0]
    assert not torch.allclose(first, first_changed)
    set_bidirectional(model, False)
    with torch.inference_mode():
        assert torch.allclose(
            model(input_ids=ids).last_hidden_state[0, 0],
            model(input_ids=changed).last_hidden_state[0, 0],
        )


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_left_and_right_padding_match_unpadded(tiny_checkpoint, arch, impl):
    model = _load(tiny_checkpoint(arch), impl)
    enable_bidirectional(model)
    ids = torch.tensor([[1, 11, 12, 13, 14, 15]])
    pad, n_pad = 3, 3
    right = torch.cat([ids, torch.full((1, n_pad), pad)], dim=1)
    left = torch.cat([torch.full((1, n_pad), pad), ids], dim=1)
    right_mask = torch.cat([torch.ones_like(ids), torch.zeros(1, n_pad, dtype=torch.long)], dim=1)
    left_mask = right_mask.flip(1)
    positions = torch.arange(ids.shape[1]).unsqueeze(0)
    with torch.inference_mode():
        alone = model(input_ids=ids).last_hidden_state[0]
        right_out = model(input_ids=right, attention_mask=right_mask).last_hidden_state[
            0, : ids.shape[1]
        ]
        left_pos = torch.cat([torch.zeros(1, n_pad, dtype=torch.long), positions], dim=1)
        left_out = model(
            input_ids=left, attention_mask=left_mask, position_ids=left_pos
        ).last_hidden_state[0, n_pad:]
    torch.testing.assert_close(right_out, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(left_out, alone, atol=1e-5, rtol=1e-5)


def test_encoder_refuses_when_switch_has_no_effect(tiny_llama, monkeypatch):
    """A model that ignores the switch must be refused, not silently left causal."""
    from llm2vec_retrieval import LLM2Vec, UnsupportedModelError, bidirectional

    monkeypatch.setattr(bidirectional, "set_bidirectional", lambda model, enabled=True: None)
    with pytest.raises(UnsupportedModelError, match="no effect"):
        LLM2Vec.from_pretrained(tiny_llama)
