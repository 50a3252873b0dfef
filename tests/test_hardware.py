"""The dtype chosen by hardware (issue 16.1): CPU flag parsing on sample /proc/cpuinfo texts,
the user's choices, the per-dtype encoder cache, and an index built in one dtype searched in
the other."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llm2vec_retrieval.hardware import (
    DTYPE_CHOICES,
    CpuFeatures,
    cpu_dtype,
    parse_cpuinfo,
    pick_dtype,
    read_cpu_features,
    resolve_dtype,
)

# Abridged /proc/cpuinfo texts (two processors each; only the first is read).
SAPPHIRE_RAPIDS = """processor	: 0
vendor_id	: GenuineIntel
model name	: Intel(R) Xeon(R) Processor
flags		: fpu sse2 avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile amx_int8
processor	: 1
flags		: fpu sse2 avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile amx_int8
"""
ZEN4 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n"
AVX2_ONLY = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx avx2 fma\n"
GRAVITON3 = """processor	: 0
BogoMIPS	: 2100.00
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics sve bf16 i8mm
CPU implementer	: 0x41
"""
GRAVITON2 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics\n"


def test_x86_flags():
    spr = parse_cpuinfo(SAPPHIRE_RAPIDS)
    assert spr.arch == "x86" and spr.bf16_flags == ["avx512_bf16", "amx_bf16"]
    assert cpu_dtype(spr) == ("bfloat16", "CPU has avx512_bf16, amx_bf16")
    assert cpu_dtype(parse_cpuinfo(ZEN4)) == ("bfloat16", "CPU has avx512_bf16")
    assert cpu_dtype(CpuFeatures("x86", frozenset({"amx_bf16"})))[0] == "bfloat16"
    name, reason = cpu_dtype(parse_cpuinfo(AVX2_ONLY))
    assert name == "float32"
    assert reason == (
        "CPU has no native bf16 (avx512_bf16/amx_bf16); bf16 would be emulated and ~10x slower"
    )


def test_arm_flags():
    g3 = parse_cpuinfo(GRAVITON3)
    assert g3.arch == "arm" and g3.bf16_flags == ["bf16"]
    assert cpu_dtype(g3) == ("bfloat16", "CPU has bf16")
    name, reason = cpu_dtype(parse_cpuinfo(GRAVITON2))
    assert name == "float32" and "ARMv8.6 bf16" in reason and "emulated" in reason
    # an x86 flag name on ARM (or the reverse) means nothing
    assert cpu_dtype(CpuFeatures("arm", frozenset({"avx512_bf16"})))[0] == "float32"
    assert cpu_dtype(CpuFeatures("x86", frozenset({"bf16"})))[0] == "float32"


def test_unknown_cpu_is_float32():
    assert cpu_dtype(None) == ("float32", "unknown CPU features")
    assert parse_cpuinfo("", "aarch64").arch == "arm"
    assert parse_cpuinfo("", "x86_64").arch == "x86"
    assert cpu_dtype(parse_cpuinfo("nothing useful", "riscv64")) == (
        "float32",
        "unknown CPU features",
    )


def test_this_machine_reads_without_error():
    features = read_cpu_features()
    assert features is None or features.arch in ("x86", "arm", "unknown")
    dtype, reason = pick_dtype()
    assert dtype in (torch.float32, torch.bfloat16) and reason
    assert resolve_dtype("auto").name == str(dtype).removeprefix("torch.")


def test_choices_and_messages():
    avx2 = parse_cpuinfo(AVX2_ONLY)
    spr = parse_cpuinfo(SAPPHIRE_RAPIDS)
    auto = resolve_dtype("auto", features=spr)
    assert (auto.name, auto.asked, auto.dtype) == ("bfloat16", "auto", torch.bfloat16)
    assert auto.describe() == (
        "encoding in bfloat16 (CPU has avx512_bf16, amx_bf16; --dtype float32 to override)"
    )
    assert (
        resolve_dtype("auto", features=avx2).describe().endswith("; --dtype bfloat16 to override)")
    )
    assert resolve_dtype("float32", features=spr).describe() == (
        "encoding in float32 (--dtype float32)"
    )
    assert auto.describe("dtype=").endswith('; dtype="float32" to override)')
    slow = resolve_dtype("bfloat16", features=avx2)  # honoured, with a warning
    assert slow.name == "bfloat16" and "emulated" in slow.caveat
    assert "warning: CPU has no native bf16" in slow.describe()
    assert resolve_dtype("bfloat16", features=spr).caveat is None
    assert resolve_dtype(torch.float16).name == "float16"
    assert resolve_dtype("BFloat16 ").name == "bfloat16"
    assert resolve_dtype(None, features=spr) == resolve_dtype("auto", features=spr)  # the default
    assert resolve_dtype(None, features=avx2).name == "float32"
    for bad in ("bogus", "fp32", torch.float64):  # torch.int8 is "int8" now
        with pytest.raises(ValueError) as exc:
            resolve_dtype(bad)
        assert ", ".join(DTYPE_CHOICES) in str(exc.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answer without a GPU")
def test_cuda_without_a_gpu_is_float32():
    assert resolve_dtype("auto", "cuda:0").name == "float32"
    assert pick_dtype(0)[0] == torch.float32  # a CUDA ordinal, as device_map takes it


def test_split_dtype_of_the_integrations():
    from llm2vec_retrieval.shared import split_dtype

    assert split_dtype("auto", {"device_map": "cpu"}) == ("auto", {"device_map": "cpu"})
    assert split_dtype("auto", {"torch_dtype": "bfloat16"}) == ("bfloat16", {})
    assert split_dtype("bfloat16", {"dtype": torch.bfloat16}) == (torch.bfloat16, {})
    with pytest.raises(ValueError, match="differ"):
        split_dtype("float32", {"dtype": "bfloat16"})


def _dtype_of(encoder) -> torch.dtype:
    return next(encoder.model.parameters()).dtype


def test_encoder_cache_is_per_dtype(tiny_llama, tmp_path):
    from llm2vec_retrieval.ingest import Indexer, IndexFolder, IndexSettings
    from llm2vec_retrieval.ingest.folder import embedder_spec, encoder_from_spec

    spec = embedder_spec(tiny_llama, None)
    default = encoder_from_spec(spec)  # no dtype given: "auto", the default everywhere
    assert _dtype_of(default) == resolve_dtype("auto").dtype
    fp32 = encoder_from_spec(spec, "float32")
    assert _dtype_of(fp32) == torch.float32
    bf16 = encoder_from_spec(spec, "bfloat16")
    assert _dtype_of(bf16) == torch.bfloat16 and bf16 is not fp32
    half = encoder_from_spec(spec, "float16")
    assert encoder_from_spec(spec, "float16") is half and _dtype_of(half) == torch.float16
    # the Indexer takes the dtype as an argument and says it once, before it first encodes
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(3):
        (corpus / f"{i}.txt").write_text(f"text number {i} about rivers")
    seen = []
    folder = IndexFolder(tmp_path / "idx")
    settings = IndexSettings(model=tiny_llama, root=str(tmp_path))
    indexer = Indexer(folder, settings, dtype="float16", on_encode=lambda: seen.append(1))
    assert indexer.run([corpus]).indexed and seen == [1]  # said once, for several files
    assert encoder_from_spec(spec, "float16") is half  # the Indexer loaded the same one
    again = Indexer(folder, settings, dtype="float16", on_encode=lambda: seen.append(2))
    assert again.run([corpus]).indexed == [] and seen == [1]  # nothing embedded: nothing said
    with pytest.raises(ValueError, match="valid choices"):
        encoder_from_spec(spec, "bogus")


def test_index_built_in_one_dtype_searches_in_the_other(tmp_path, tiny_llama):
    """The dtype is not part of the fingerprint: float32 and bfloat16 vectors of one model
    agree closely, so neither refuses the other's index (a different model still is)."""
    from llm2vec_retrieval.ingest import Indexer, IndexFolder, IndexSettings, Searcher

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    texts = {
        "a.txt": "Rivers flow into the sea after heavy rain.",
        "b.txt": "Vaccines train the immune system against a pathogen.",
        "c.txt": "The quick brown fox jumps over the lazy dog.",
    }
    for name, text in texts.items():
        (corpus / name).write_text(text)
    folder = IndexFolder(tmp_path / "idx")
    Indexer(folder, IndexSettings(model=tiny_llama, root=str(tmp_path)), dtype="float32").run(
        [corpus]
    )
    fp32 = Searcher(folder.path, dtype="float32")
    bf16 = Searcher(folder.path, dtype="bfloat16")  # no FingerprintMismatchError
    assert _dtype_of(bf16.encoder) == torch.bfloat16
    q32, q16 = fp32.encode_query("rivers and rain"), bf16.encode_query("rivers and rain")
    cos = float(np.dot(q32, q16) / (np.linalg.norm(q32) * np.linalg.norm(q16)))
    assert cos > 0.99, cos
    ids32 = [r.id for r in fp32.search("rivers and rain", k=3, mode="dense")]
    ids16 = [r.id for r in bf16.search("rivers and rain", k=3, mode="dense")]
    assert ids32[0] == ids16[0]
    # adding to the index in the other dtype is not refused either
    (corpus / "d.txt").write_text("Mountains rise above the clouds.")
    report = Indexer(folder, IndexSettings(), dtype="bfloat16").run([corpus])
    assert report.indexed == ["corpus/d.txt"]


def test_dtype_names_are_parsed_in_one_table():
    """Issue 24.3: every dtype name (the encoder's, export's, combine's, the training CLI's)
    goes through hardware's table."""
    from llm2vec_retrieval.hardware import (
        DTYPES,
        WEIGHT_DTYPES,
        dtype_name,
        torch_dtype,
        weight_dtype,
    )

    assert dtype_name(" BFloat16 ") == "bfloat16" and dtype_name(torch.float16) == "float16"
    assert dtype_name("auto", allow_auto=True) == "auto"
    with pytest.raises(ValueError, match="valid choices: float32, bfloat16, float16"):
        dtype_name("auto")
    assert torch_dtype("float32") is torch.float32 and set(WEIGHT_DTYPES) <= set(DTYPES)
    assert weight_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(ValueError, match="Valid choices are: float32, bfloat16, float16"):
        weight_dtype("fp8")


def test_progress_bars_go_to_stderr_and_a_disabled_one_does_nothing(capsys):
    from llm2vec_retrieval.progress import progress_bar

    off = progress_bar(3, "Quiet", "item", enabled=False)
    off.update(3)
    off.close()
    on = progress_bar(3, "Loud", "item", enabled=True)
    on.update(3)
    on.close()
    out, err = capsys.readouterr()
    assert out == "" and "Loud" in err and "Quiet" not in err
    assert list(progress_bar(None, "Iter", "x", False, iterable=range(3))) == [0, 1, 2]
