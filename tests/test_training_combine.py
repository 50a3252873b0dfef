"""Folding a chain of stage adapters into one (llm2vec_retrieval.training.combine) on a tiny model."""

from __future__ import annotations

import json

import pytest
import torch

from llm2vec_retrieval.testing import make_tiny_checkpoint
from llm2vec_retrieval.training.combine import combine_adapters
from llm2vec_retrieval.training.modeling import load_training_base

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")
TEXTS = ["The quick brown fox jumps over the lazy dog.", "cells, genes and proteins", "2024"]


def _adapter(
    base: str, out, r: int, alpha: float, seed: int, targets=("q_proj", "v_proj", "down_proj")
):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    torch.manual_seed(seed)
    model = AutoModel.from_pretrained(base)
    cfg = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), init_lora_weights=False)
    peft_model = get_peft_model(model, cfg)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.mul_(0.5)
    peft_model.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    work = tmp_path_factory.mktemp("combine")
    base = str(make_tiny_checkpoint(work / "base", "llama"))
    first = _adapter(base, work / "a1", r=4, alpha=8, seed=1)
    second = _adapter(
        base, work / "a2", r=8, alpha=8, seed=2, targets=("q_proj", "k_proj", "down_proj")
    )
    return base, [first, second], work


def _embed(base, adapters):
    enc = load_training_base(base, adapters)
    return enc.encode(TEXTS, show_progress_bar=False)


def test_exact_combination_equals_merging_in_order(chain):
    base, adapters, work = chain
    info = combine_adapters(adapters, work / "exact")
    assert info["rank"] == 12 and info["relative_error"]["max"] == 0.0
    cfg = json.loads((work / "exact" / "adapter_config.json").read_text())
    assert cfg["r"] == cfg["lora_alpha"] == 12
    assert set(cfg["target_modules"]) == {"q_proj", "k_proj", "v_proj", "down_proj"}
    expected = _embed(base, adapters)
    got = _embed(base, [str(work / "exact")])
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4)
    # and it differs from the base: the adapters do something
    assert not torch.allclose(_embed(base, []), expected, atol=1e-3)


def test_truncated_rank_is_the_best_low_rank_approximation(chain):
    from safetensors.torch import load_file

    base, adapters, work = chain
    info = combine_adapters(adapters, work / "r3", rank=3)
    assert info["rank"] == 3
    weights = load_file(str(work / "r3" / "adapter_model.safetensors"))
    a1, a2 = (load_file(f"{a}/adapter_model.safetensors") for a in adapters)
    key = next(k for k in weights if "layers.0.self_attn.q_proj.lora_A" in k)
    stem = key.rsplit(".lora_A", 1)[0]
    full = (
        2.0 * a1[f"{stem}.lora_B.weight"] @ a1[f"{stem}.lora_A.weight"]
        + 1.0 * a2[f"{stem}.lora_B.weight"] @ a2[f"{stem}.lora_A.weight"]
    )
    approx = weights[f"{stem}.lora_B.weight"] @ weights[f"{stem}.lora_A.weight"]
    s = torch.linalg.svdvals(full.double())
    best = float((s[3:].pow(2).sum() / s.pow(2).sum()).sqrt())
    err = float(torch.linalg.norm(full - approx) / torch.linalg.norm(full))
    assert err == pytest.approx(best, rel=1e-3, abs=1e-6)
    assert 0 < info["relative_error"]["mean"] <= info["relative_error"]["max"] < 1
    # still loads and encodes
    assert _embed(base, [str(work / "r3")]).shape[0] == len(TEXTS)


def test_bf16_storage_and_recorded_base(chain):
    base, adapters, work = chain
    info = combine_adapters(adapters, work / "bf16", dtype="bfloat16", base_model="my-base")
    from safetensors.torch import load_file

    assert all(
        t.dtype == torch.bfloat16
        for t in load_file(str(work / "bf16" / "adapter_model.safetensors")).values()
    )
    assert (
        json.loads((work / "bf16" / "adapter_config.json").read_text())["base_model_name_or_path"]
        == "my-base"
    )
    assert info["bytes"] < (work / "exact" / "adapter_model.safetensors").stat().st_size


def test_clear_errors(chain, tmp_path):
    base, adapters, work = chain
    with pytest.raises(ValueError, match="at least one"):
        combine_adapters([], tmp_path / "x")
    with pytest.raises(ValueError, match="Valid choices"):
        combine_adapters(adapters, tmp_path / "x", dtype="int8")
    with pytest.raises(ValueError, match="rank"):
        combine_adapters(adapters, tmp_path / "x", rank=0)
    with pytest.raises(FileNotFoundError, match="not a LoRA adapter"):
        combine_adapters([base], tmp_path / "x")
    with pytest.raises(ValueError, match="not empty"):
        combine_adapters(adapters, work / "exact")


def test_cli_combine(chain, capsys):
    from llm2vec_retrieval.cli import main

    base, adapters, work = chain
    rc = main(
        [
            "combine",
            "--adapter",
            *adapters,
            "--output",
            str(work / "cli"),
            "--rank",
            "4",
            "--dtype",
            "float16",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "rank 4" in out and "float16" in out
    assert (work / "cli" / "combined_from.json").is_file()


def test_cli_combine_json(chain, capsys):
    """Issue 25.4: --json prints the result as one JSON document (what the line says, typed)."""
    import json

    from llm2vec_retrieval.cli import main

    base, adapters, work = chain
    args = ["combine", "--adapter", *adapters, "--output", str(work / "cli-json")]
    assert main([*args, "--rank", "4", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["rank"] == 4 and doc["output"] == str(work / "cli-json")
    assert doc["adapters"] == list(adapters) and doc["relative_error"]["max"] >= 0
