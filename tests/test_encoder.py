"""Encoder behaviour on tiny random models: pooling, instructions, batching, bad input, I/O."""

from __future__ import annotations

import json
import threading
import warnings

import numpy as np
import pytest
import torch

from llm2vec_retrieval import POOLING_MODES, LLM2Vec, get_instruction

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Proteins fold.",
    "Retrieval finds documents that answer a question, even long and winding ones like this.",
]


def manual_text_mean(encoder: LLM2Vec, instruction: str, text: str) -> torch.Tensor:
    """Mean of the hidden states over the last len(tokenize(text)) positions, by hand."""
    full = f"{instruction.strip()} {text}" if instruction else text
    ids = encoder.tokenizer(full, return_tensors="pt")["input_ids"]
    n_text = len(encoder.tokenizer(text, add_special_tokens=False)["input_ids"])
    with torch.inference_mode():
        hidden = encoder.model(input_ids=ids).last_hidden_state[0]
    return hidden[-n_text:].mean(0)


@pytest.mark.parametrize("mode", POOLING_MODES)
def test_every_pooling_mode_is_batch_invariant(tiny_llama, mode):
    enc = LLM2Vec.from_pretrained(tiny_llama, pooling_mode=mode, dtype="float32")
    together = enc.encode(TEXTS, show_progress_bar=False)
    alone = torch.stack([enc.encode([t], show_progress_bar=False)[0] for t in TEXTS])
    assert together.shape == (3, enc.embedding_dim) and together.dtype == torch.float32
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


def test_instruction_tokens_are_not_pooled(tiny_encoder):
    instruction = get_instruction("SciFact")
    got = tiny_encoder.encode([[instruction, TEXTS[0]]], show_progress_bar=False)[0]
    torch.testing.assert_close(
        got, manual_text_mean(tiny_encoder, instruction, TEXTS[0]), atol=1e-5, rtol=1e-5
    )
    # ...but the instruction still conditions the text tokens (bidirectional attention sees it).
    plain = tiny_encoder.encode([TEXTS[0]], show_progress_bar=False)[0]
    assert not torch.allclose(got, plain)


def test_skip_instruction_false_pools_everything(tiny_llama):
    enc = LLM2Vec.from_pretrained(tiny_llama, skip_instruction=False, dtype="float32")
    ids = enc.tokenizer("Find: " + TEXTS[1], return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        expected = enc.model(input_ids=ids).last_hidden_state[0].mean(0)
    torch.testing.assert_close(
        enc.encode([["Find:", TEXTS[1]]], show_progress_bar=False)[0],
        expected,
        atol=1e-5,
        rtol=1e-5,
    )


def test_separator_in_user_text_is_just_text(tiny_encoder):
    """Upstream splits on '!@#$%^&*()'; we never split user text."""
    text = "price !@#$%^&*() list"
    got = tiny_encoder.encode([["Find:", text]], show_progress_bar=False)[0]
    torch.testing.assert_close(
        got, manual_text_mean(tiny_encoder, "Find:", text), atol=1e-5, rtol=1e-5
    )


def test_queries_get_instruction_documents_do_not(tiny_encoder):
    q = tiny_encoder.encode_queries(TEXTS[:2], task="scifact", normalize=False)
    d = tiny_encoder.encode_documents(TEXTS[:2], normalize=False)
    pairs = tiny_encoder.encode(
        [[get_instruction("SciFact"), t] for t in TEXTS[:2]], show_progress_bar=False
    )
    np.testing.assert_allclose(q, pairs.numpy(), atol=1e-5)
    np.testing.assert_allclose(
        d, tiny_encoder.encode(TEXTS[:2], show_progress_bar=False).numpy(), atol=1e-5
    )
    normed = tiny_encoder.encode_documents(TEXTS)
    assert normed.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(normed, axis=1), 1.0, atol=1e-5)


def test_empty_inputs(tiny_encoder):
    assert tuple(tiny_encoder.encode([], show_progress_bar=False).shape) == (
        0,
        tiny_encoder.embedding_dim,
    )
    assert tiny_encoder.encode_documents([]).shape == (0, tiny_encoder.embedding_dim)
    vecs = tiny_encoder.encode(["", "   ", "x"], show_progress_bar=False)
    assert torch.isfinite(vecs).all()
    # An empty text pools over the tokens the model sees for it (BOS here), whatever its batch.
    torch.testing.assert_close(
        vecs[0], tiny_encoder.encode([""], show_progress_bar=False)[0], atol=1e-5, rtol=1e-5
    )
    assert np.isfinite(tiny_encoder.encode_queries([""], task="scifact")).all()


def test_generators_and_map_are_read_once(tiny_encoder):
    """Issue 14.1: an iterator used to be consumed by the input check, giving (0, dim)."""
    want_d = tiny_encoder.encode_documents(TEXTS)
    want_q = tiny_encoder.encode_queries(TEXTS, task="scifact")
    np.testing.assert_allclose(tiny_encoder.encode_documents(t for t in TEXTS), want_d, atol=1e-6)
    np.testing.assert_allclose(tiny_encoder.encode_documents(map(str, TEXTS)), want_d, atol=1e-6)
    np.testing.assert_allclose(
        tiny_encoder.encode_queries(iter(TEXTS), task="scifact"), want_q, atol=1e-6
    )
    np.testing.assert_allclose(tiny_encoder.encode_documents(tuple(TEXTS)), want_d, atol=1e-6)
    with pytest.raises(TypeError, match="iterable of strings, got int"):
        tiny_encoder.encode_documents(5)
    with pytest.raises(TypeError, match="text 1 is int"):
        tiny_encoder.encode_documents(t for t in ["ok", 3])


def test_lone_surrogates_are_replaced_with_one_warning(tiny_encoder):
    """Issue 14.3: a lone surrogate (an escaped half emoji) made the tokenizer raise TypeError."""
    bad = ["cut emoji \ud83d here", "fine", "\udcff", "a pair \ud83d\ude00 joins"]
    fixed = ["cut emoji \ufffd here", "fine", "\ufffd", "a pair \U0001f600 joins"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = tiny_encoder.encode_documents(bad)
        got_q = tiny_encoder.encode_queries(bad, instruction="Find \udc80:")
        got_raw = tiny_encoder.encode(bad, show_progress_bar=False)
    messages = [str(w.message) for w in caught if issubclass(w.category, UnicodeWarning)]
    assert len(messages) == 3, messages  # one per call
    assert messages[0] == (
        "3 text(s) contained lone surrogates (invalid Unicode, e.g. a cut emoji); "
        "they were replaced by U+FFFD"
    )
    assert messages[1].startswith("4 text(s)")  # the instruction is repaired in every pair
    assert messages[2].startswith("3 text(s)")
    assert all(w.filename == __file__ for w in caught if issubclass(w.category, UnicodeWarning))
    np.testing.assert_allclose(got, tiny_encoder.encode_documents(fixed), atol=1e-6)
    np.testing.assert_allclose(
        got_q, tiny_encoder.encode_queries(fixed, instruction="Find \ufffd:"), atol=1e-6
    )
    np.testing.assert_allclose(
        got_raw.numpy(), tiny_encoder.encode(fixed, show_progress_bar=False).numpy(), atol=1e-6
    )
    assert tiny_encoder.count_tokens(bad) == tiny_encoder.count_tokens(fixed)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to repair: no warning
        tiny_encoder.encode_documents(fixed)


def test_single_string_is_one_text(tiny_encoder):
    """Upstream encodes each character of a bare string; we encode the string."""
    vec = tiny_encoder.encode("hello world", show_progress_bar=False)
    assert tuple(vec.shape) == (tiny_encoder.embedding_dim,)
    torch.testing.assert_close(
        vec, tiny_encoder.encode(["hello world"], show_progress_bar=False)[0]
    )


def test_long_text_without_spaces_is_cut_by_tokens(tiny_llama):
    enc = LLM2Vec.from_pretrained(tiny_llama, doc_max_length=16, dtype="float32")
    long = "x" * 5000  # upstream cuts by whitespace words and would leave nothing
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vec = enc.encode([long, long], show_progress_bar=False)
    assert sum("truncated" in str(w.message) for w in caught) == 1, "one warning per call"
    short = enc.encode(["x" * 16], show_progress_bar=False)[0]
    assert torch.isfinite(vec).all()
    assert not torch.allclose(vec[0], enc.encode([""], show_progress_bar=False)[0])
    n = len(enc.tokenizer("x" * 5000, add_special_tokens=False)["input_ids"][:16])
    cut_text = enc.tokenizer.decode(
        enc.tokenizer("x" * 5000, add_special_tokens=False)["input_ids"][:n]
    )
    torch.testing.assert_close(
        vec[0], enc.encode([cut_text], show_progress_bar=False)[0], atol=1e-5, rtol=1e-5
    )
    assert short.shape == vec[0].shape


@pytest.mark.parametrize(
    "bad, error",
    [
        (None, TypeError),
        (["ok", None], TypeError),
        (["ok", 3.5], TypeError),
        ([["only one"]], ValueError),
        ([["a", "b", "c"]], ValueError),
        ([["a", 5]], ValueError),
    ],
)
def test_bad_input_is_a_clear_error(tiny_encoder, bad, error):
    with pytest.raises(error, match="item|text|sentences|got"):
        tiny_encoder.encode(bad, show_progress_bar=False)


def test_bad_settings(tiny_llama, tmp_path):
    with pytest.raises(ValueError, match="Valid pooling modes are: mean, weighted_mean"):
        LLM2Vec.from_pretrained(tiny_llama, pooling_mode="max")
    with pytest.raises(FileNotFoundError, match="does not exist|neither"):
        LLM2Vec.from_pretrained(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="Adapter path"):
        LLM2Vec.from_pretrained(tiny_llama, peft_model_name_or_path=str(tmp_path / "nope"))
    with pytest.raises(KeyError, match="Valid tasks are"):
        get_instruction("NoSuchTask")


def test_unsupported_architecture(tmp_path):
    from transformers import BertConfig, BertModel

    from llm2vec_retrieval import UnsupportedModelError
    from llm2vec_retrieval.testing import make_tiny_tokenizer

    BertModel(
        BertConfig(
            vocab_size=400,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
        )
    ).save_pretrained(tmp_path)
    make_tiny_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(UnsupportedModelError):
        LLM2Vec.from_pretrained(str(tmp_path))


def test_token_budget_bounds_every_batch(tiny_llama, monkeypatch):
    enc = LLM2Vec.from_pretrained(tiny_llama, max_batch_tokens=512, max_length=512, dtype="float32")
    seen = []
    forward = enc.model.forward

    def spy(*args, **kwargs):
        seen.append(tuple(kwargs["input_ids"].shape))
        return forward(*args, **kwargs)

    monkeypatch.setattr(enc.model, "forward", spy)
    texts = [("word " * n).strip() for n in range(1, 200, 7)]
    vecs = enc.encode(texts, batch_size=1000, show_progress_bar=False)
    assert len(vecs) == len(texts)
    assert all(rows * width <= 512 for rows, width in seen)
    assert len(seen) > 1


def test_threads_match_sequential(tiny_encoder):
    texts = [f"document number {i} about topic {i % 7}" for i in range(40)]
    expected = tiny_encoder.encode_documents(texts)
    results: dict[int, np.ndarray] = {}

    def work(k: int) -> None:
        results[k] = tiny_encoder.encode_documents(texts)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(4):
        np.testing.assert_allclose(results[k], expected, atol=1e-6)


def test_save_and_load_round_trip(tiny_llama, tmp_path):
    enc = LLM2Vec.from_pretrained(
        tiny_llama, pooling_mode="weighted_mean", query_instruction="Find it:", dtype="float32"
    )
    enc.save(tmp_path / "saved")
    official = json.loads((tmp_path / "saved" / "llm2vec_config.json").read_text())
    assert official == {
        "pooling_mode": "weighted_mean",
        "max_length": 512,
        "doc_max_length": 400,
        "skip_instruction": True,
    }
    again = LLM2Vec.from_pretrained(str(tmp_path / "saved"), dtype="float32")
    assert (
        again.config.pooling_mode == "weighted_mean"
        and again.config.query_instruction == "Find it:"
    )
    torch.testing.assert_close(
        enc.encode(TEXTS, show_progress_bar=False), again.encode(TEXTS, show_progress_bar=False)
    )


def _random_lora(base_path: str, out, seed: int = 0):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    torch.manual_seed(seed)
    base = AutoModel.from_pretrained(base_path)
    peft_model = get_peft_model(
        base,
        LoraConfig(
            r=4,
            lora_alpha=8,
            target_modules=["q_proj", "v_proj", "up_proj"],
            init_lora_weights=False,
        ),
    )
    peft_model.save_pretrained(out)
    return out


def test_peft_adapter_stacked_and_merged(tiny_llama, tmp_path):
    adapter = _random_lora(tiny_llama, tmp_path / "adapter")
    base = LLM2Vec.from_pretrained(tiny_llama, dtype="float32").encode(
        TEXTS, show_progress_bar=False
    )
    stacked = LLM2Vec.from_pretrained(
        tiny_llama, peft_model_name_or_path=str(adapter), dtype="float32"
    )
    merged = LLM2Vec.from_pretrained(
        tiny_llama, peft_model_name_or_path=str(adapter), merge_peft=True, dtype="float32"
    )
    a = stacked.encode(TEXTS, show_progress_bar=False)
    assert not torch.allclose(a, base)
    torch.testing.assert_close(
        a, merged.encode(TEXTS, show_progress_bar=False), atol=1e-5, rtol=1e-5
    )
    assert stacked.fingerprint()["adapter_digest"] is not None
    assert (
        stacked.fingerprint() != LLM2Vec.from_pretrained(tiny_llama, dtype="float32").fingerprint()
    )


def test_adapter_inside_base_folder_is_merged(tiny_llama, tmp_path):
    """Official MNTP checkpoints: config + adapter in one folder, base named in adapter_config.json."""
    import shutil

    folder = _random_lora(tiny_llama, tmp_path / "mntp")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(f"{tiny_llama}/{name}", folder / name)
    shutil.copy(f"{tiny_llama}/config.json", folder / "config.json")
    via_folder = LLM2Vec.from_pretrained(str(folder), dtype="float32").encode(
        TEXTS, show_progress_bar=False
    )
    via_peft = LLM2Vec.from_pretrained(
        tiny_llama, peft_model_name_or_path=str(folder), merge_peft=True, dtype="float32"
    )
    torch.testing.assert_close(
        via_folder, via_peft.encode(TEXTS, show_progress_bar=False), atol=1e-5, rtol=1e-5
    )


def test_causal_mode(tiny_llama):
    causal = LLM2Vec.from_pretrained(tiny_llama, enable_bidirectional=False, dtype="float32")
    bidir = LLM2Vec.from_pretrained(tiny_llama, dtype="float32")
    assert not torch.allclose(
        causal.encode(TEXTS, show_progress_bar=False), bidir.encode(TEXTS, show_progress_bar=False)
    )
    assert causal.fingerprint()["bidirectional"] is False


def test_bf16(tiny_llama):
    enc = LLM2Vec.from_pretrained(tiny_llama, torch_dtype=torch.bfloat16)
    ref = LLM2Vec.from_pretrained(tiny_llama, dtype="float32").encode_documents(TEXTS)
    got = enc.encode_documents(TEXTS)
    assert got.dtype == np.float32
    assert (got * ref).sum(1).min() > 0.99
