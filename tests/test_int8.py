"""`--dtype int8`: the linear layers quantized when the encoder loads (issue 26.4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llm2vec_retrieval import hardware, load_encoder
from llm2vec_retrieval.quantize import int8_unavailable, quantize_linears

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Retrieval finds documents that answer a question.",
    "Cells, proteins, genes and vaccines are studied in biology and medicine.",
    "Numbers like 1, 2, 3, 10, 100 and 2024 appear in text too.",
]


def _linears(model) -> tuple[int, int]:
    """(float nn.Linear count, dynamically quantized Linear count) in ``model``."""
    dyn = torch.ao.nn.quantized.dynamic.Linear
    quantized = sum(isinstance(m, dyn) for m in model.modules())
    plain = sum(type(m) is torch.nn.Linear for m in model.modules())
    return plain, quantized


def test_int8_encodes_close_to_float32_on_a_tiny_model(tiny_llama):
    fp32 = load_encoder(tiny_llama, dtype="float32")
    int8 = load_encoder(tiny_llama, dtype="int8")
    assert _linears(fp32.model)[1] == 0
    plain, quantized = _linears(int8.model)
    # every Linear of the 2 blocks (q, k, v, o, gate, up, down) is int8, none left float
    assert (plain, quantized) == (0, 14)
    assert hardware.compute_dtype(int8) == "int8" and hardware.compute_dtype(fp32) == "float32"
    a, b = fp32.encode_documents(TEXTS), int8.encode_documents(TEXTS)
    assert a.shape == b.shape and b.dtype == np.float32
    cos = (a * b).sum(axis=1)  # both L2-normalized
    # int8 weights (per channel) and activations (per call) on a random 32-wide model: the
    # vectors move a little, and far less than their distance to other texts' vectors
    assert cos.min() > 0.99, cos
    assert not np.allclose(a, b, atol=1e-6)  # it really ran the int8 kernels
    q = int8.encode_queries(["which animal jumps over the dog?"])
    assert q.shape == (1, a.shape[1])


def test_keep_leaves_named_blocks_in_float32(tiny_llama):
    from llm2vec_retrieval.quantize import decoder_blocks

    model = load_encoder(tiny_llama, dtype="float32").model
    blocks = decoder_blocks(model)
    assert blocks == ["layers.0", "layers.1"]
    quantize_linears(model, keep=blocks[:1])
    assert _linears(model.layers[0]) == (7, 0) and _linears(model.layers[1]) == (0, 7)
    with pytest.raises(ValueError, match="quantize a float32 model"):
        quantize_linears(load_encoder(tiny_llama, dtype="bfloat16").model)


def test_int8_without_cpu_kernels_or_on_a_gpu_is_one_line():
    assert int8_unavailable("cpu", engines=["x86", "fbgemm", "onednn"]) is None
    assert int8_unavailable("cpu", engines=["qnnpack"]) is None  # ARM's engine
    msg = int8_unavailable("cpu", engines=["none"])
    assert msg and "\n" not in msg and "no int8 CPU kernels" in msg and "--dtype" in msg
    for device in ("cuda", "cuda:1", 0):
        msg = int8_unavailable(device)
        assert msg and "CPU only" in msg and "\n" not in msg
        with pytest.raises(hardware.DtypeUnavailableError, match="CPU only"):
            hardware.resolve_dtype("int8", device)


@pytest.fixture
def no_int8_kernels(monkeypatch):
    """A torch build whose quantized engines are only "none", as without FBGEMM/oneDNN."""
    monkeypatch.setattr(type(torch.backends.quantized), "supported_engines", ["none"])
    assert torch.backends.quantized.supported_engines == ["none"]


def _corpus(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, text in enumerate(TEXTS):
        (corpus / f"t{i}.txt").write_text(text + "\n")
    return corpus


def test_int8_rejected_before_loading_where_kernels_lack(
    no_int8_kernels, tiny_llama, tmp_path, capsys
):
    from llm2vec_retrieval import LLM2Vec, cli

    with pytest.raises(hardware.DtypeUnavailableError, match="no int8 CPU kernels"):
        load_encoder(tiny_llama, dtype="int8")
    with pytest.raises(hardware.DtypeUnavailableError, match="no int8 CPU kernels"):
        LLM2Vec.from_pretrained(tiny_llama, dtype="int8")
    idx = tmp_path / "idx"
    args = ["index", str(_corpus(tmp_path)), "--index", str(idx), "--model", tiny_llama]
    assert cli.main([*args, "--dtype", "int8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: this torch build has no int8 CPU kernels")
    assert not idx.exists()  # rejected before anything was written


def test_cli_indexes_and_searches_in_int8(tiny_llama, tmp_path, capsys):
    import json

    from llm2vec_retrieval import cli

    idx = tmp_path / "idx"
    args = ["index", str(_corpus(tmp_path)), "--index", str(idx), "--model", tiny_llama]
    assert cli.main([*args, "--dtype", "int8"]) == 0
    assert "encoding in int8 (--dtype int8)" in capsys.readouterr().err
    # the index records the dtype that embedded it (the fingerprint leaves dtypes out, as
    # for bfloat16 vs float32: close vectors, one model)
    assert json.loads((idx / "llm2vec-index.json").read_text())["encoded_in"] == ["int8"]
    assert (
        cli.main(
            [
                "search",
                "--index",
                str(idx),
                "lazy dog",
                "--mode",
                "hybrid",
                "--dtype",
                "int8",
                "--json",
            ]
        )
        == 0
    )
    out, err = capsys.readouterr()
    assert "encoding in int8" in err
    results = json.loads(out)["results"]
    assert len(results) == len(TEXTS)
    assert sorted(r["text"].strip() for r in results) == sorted(TEXTS)


def test_auto_picks_int8_only_on_a_listed_cpu_class():
    measured = hardware.CpuFeatures(
        "x86", frozenset({"avx2", "avx512f", "avx512_bf16", "avx512_vnni"})
    )
    # the one class measured failed the rule: auto stays bfloat16 there
    assert hardware.INT8_AUTO_CPUS == ()
    assert hardware.cpu_dtype(measured)[0] == "bfloat16"
    amx = hardware.CpuFeatures("x86", frozenset({"avx512_bf16", "amx_bf16", "amx_int8"}))
    listed = (frozenset({"amx_int8"}),)
    name, reason = hardware.cpu_dtype(amx, int8_cpus=listed)
    assert name == "int8" and "amx_int8" in reason
    assert hardware.cpu_dtype(measured, int8_cpus=listed)[0] == "bfloat16"
    assert hardware.resolve_dtype("int8").name == "int8"
    assert hardware.resolve_dtype(torch.int8).name == "int8"


def test_benchmark_rule_needs_both_speed_and_quality():
    from benchmarks.int8 import decide, render

    def arm(tps):
        return {"tokens_per_s": tps, "tokens_per_cpu_s": tps, "seconds": [1.0]}

    report = {
        "threads": 1,
        "speed": {
            "documents": 2,
            "tokens": 600,
            "loadavg_1min_around_rounds": [1.0, 1.2],
            "arms": {
                "float32": arm(50.0),
                "bfloat16": arm(100.0),
                "int8": arm(160.0),  # fast, but loses 0.6 on one set
                "int8-keep-ends": arm(151.0),  # fast enough and close: passes
                "int8-per-tensor": arm(140.0),  # close but too slow
            },
        },
        "quality": {
            "float32": {"stsb-dev": 80.0, "wikiqa": 90.0},
            "bfloat16": {"stsb-dev": 80.0, "wikiqa": 90.0},
            "int8": {"stsb-dev": 79.4, "wikiqa": 90.1},
            "int8-keep-ends": {"stsb-dev": 79.6, "wikiqa": 89.5},
            "int8-per-tensor": {"stsb-dev": 80.0, "wikiqa": 90.0},
        },
    }
    d = decide(report)
    assert d["chosen_arm"] == "int8-keep-ends" and d["auto_picks_int8"]
    assert d["arms"]["int8"]["fails_because"] == ["stsb-dev -0.60 points (limit -0.5)"]
    assert d["arms"]["int8-per-tensor"]["fails_because"] == [
        "x1.40 bfloat16's tokens/s (needs x1.5)"
    ]
    del report["quality"]["int8-keep-ends"]  # a run cut short cannot pass an unscored arm
    d = decide(report)
    assert d["chosen_arm"] is None
    assert "dev sets not scored (run cut short)" in d["arms"]["int8-keep-ends"]["fails_because"]
    text = "\n".join(render(report))
    assert "| int8-keep-ends | 151 | x1.51 | 151 | not scored | not scored |" in text
    assert "auto does not pick int8" in text
