"""Parity with the official `llm2vec` 0.2.3 library (transformers 4.44.2), on tiny checkpoints.

The expected vectors in tests/fixtures/parity/expected.json were computed by the
official library itself (see tests/parity/generate_fixtures.py); this test needs only
those committed fixtures, not the official library.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "parity"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
CASES = EXPECTED["cases"]
TOKENIZATION = EXPECTED["tokenization"]
SEPARATOR = "!@#$%^&*()"  # the official library's instruction/text separator
RTOL = 1e-4


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # the matrices are tiny: one thread is faster than several fighting for the cores
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _relative_max_diff(ours: np.ndarray, official: np.ndarray) -> float:
    return float(np.abs(ours - official).max() / np.abs(official).max())


def _inputs(case):
    # JSON keeps [instruction, text] pairs as lists, plain texts as strings
    return [list(s) if isinstance(s, list) else s for s in case["inputs"]]


_LOADED: dict[tuple, object] = {}


def _model_for(case):
    """`LLM2Vec.from_pretrained` with the case's arguments.

    To keep the file fast, a model is loaded once per (checkpoint, adapter, merge,
    attention) and reused for later cases by setting the official attributes
    `pooling_mode` / `skip_instruction`; the first case of each group goes through
    from_pretrained with all its arguments.
    """
    from llm2vec_retrieval import LLM2Vec

    key = (case["checkpoint"], case["peft"], case["merge_peft"], case["enable_bidirectional"])
    if key not in _LOADED:
        model = LLM2Vec.from_pretrained(
            str(FIXTURES / case["checkpoint"]),
            peft_model_name_or_path=str(FIXTURES / case["peft"]) if case["peft"] else None,
            merge_peft=case["merge_peft"],
            enable_bidirectional=case["enable_bidirectional"],
            pooling_mode=case["pooling_mode"],
            skip_instruction=case["skip_instruction"],
            torch_dtype=torch.float32,
        )
        assert model.pooling_mode == case["pooling_mode"]
        assert model.skip_instruction == case["skip_instruction"]
        _LOADED[key] = model
    model = _LOADED[key]
    model.pooling_mode = case["pooling_mode"]
    model.skip_instruction = case["skip_instruction"]
    return model


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_encode_matches_official(case):
    model = _model_for(case)
    out = model.encode(_inputs(case), batch_size=case["batch_size"], show_progress_bar=False)
    assert isinstance(out, torch.Tensor)
    assert out.dtype == torch.float32
    official = np.asarray(case["output"], dtype=np.float64)
    ours = out.detach().cpu().double().numpy()
    assert ours.shape == official.shape
    diff = _relative_max_diff(ours, official)
    assert diff <= RTOL, f"{case['id']}: relative max difference {diff:.3e} > {RTOL:g}"


@cache
def _tokenizer(checkpoint: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(FIXTURES / checkpoint))
    tok.pad_token = tok.eos_token  # as the official library does
    tok.padding_side = "left"
    return tok


@pytest.mark.parametrize("tcase", TOKENIZATION, ids=[t["id"] for t in TOKENIZATION])
def test_fixture_tokenizer_matches_official(tcase):
    """The committed tokenizer gives the same ids under transformers 5 as under 4.44.2.

    (A check on the fixture itself: if this fails, every encode case above is suspect.)
    """
    tok = _tokenizer(tcase["checkpoint"])
    originals = ["".join(p.split(SEPARATOR)) for p in tcase["prepared_texts"]]
    feats = tok(originals, padding=True, return_tensors="pt")
    assert feats["input_ids"].tolist() == tcase["input_ids"]
    assert feats["attention_mask"].tolist() == tcase["attention_mask"]


def _official_embed_mask_rule(tok, prepared_texts, attention_mask):
    """The official rule: the last len(tokenize(text part alone)) positions count as text."""
    rows = []
    for text, att in zip(prepared_texts, attention_mask, strict=False):
        parts = text.split(SEPARATOR)
        n = len(tok(parts[1] if len(parts) > 1 else "", add_special_tokens=False)["input_ids"])
        row = [0] * len(att)
        if n:
            row[-n:] = [1] * n
        rows.append(row)
    return rows


@pytest.mark.parametrize("tcase", TOKENIZATION, ids=[t["id"] for t in TOKENIZATION])
def test_embed_mask_matches_official(tcase):
    """Which token positions count as text (pooled when skip_instruction=True)."""
    tok = _tokenizer(tcase["checkpoint"])
    # The recorded mask is what the official rule gives with this tokenizer ...
    assert (
        _official_embed_mask_rule(tok, tcase["prepared_texts"], tcase["attention_mask"])
        == tcase["embed_mask"]
    )

    # ... and our encoder puts the same tokens in each row and counts the same trailing
    # positions as text (the official mask is always a run of trailing real positions).
    model = _model_for(
        dict(
            checkpoint=tcase["checkpoint"],
            peft=None,
            merge_peft=False,
            enable_bidirectional=True,
            pooling_mode=tcase["pooling_mode"],
            skip_instruction=True,
        )
    )
    official_ids = [
        [i for i, a in zip(ids, att, strict=False) if a]
        for ids, att in zip(tcase["input_ids"], tcase["attention_mask"], strict=False)
    ]
    official_text_len = [sum(row) for row in tcase["embed_mask"]]
    feats = model.tokenize(tcase["prepared_texts"])  # both libraries' tokenize(prepared)
    ids = [
        [i for i, a in zip(r, att, strict=False) if a]
        for r, att in zip(
            feats["input_ids"].tolist(), feats["attention_mask"].tolist(), strict=False
        )
    ]
    text_len = feats["embed_mask"].sum(dim=-1).tolist()
    assert [list(r) for r in ids] == official_ids
    assert list(text_len) == official_text_len
