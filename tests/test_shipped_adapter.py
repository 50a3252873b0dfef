"""The adapter shipped inside the package (no model weights needed: these run in the fast suite).

What the default loads and how it scores is covered by the slow tests in test_default_model.py.
"""

from __future__ import annotations

import json

import pytest

from llm2vec_retrieval import DEFAULT_MODEL, SHIPPED_ADAPTERS, sources

MAX_BYTES = 20 * 1000 * 1000  # issue 7: at most 20 MB inside the package


@pytest.fixture(params=sorted(SHIPPED_ADAPTERS))
def adapter(request):
    return request.param, sources.shipped_adapter_dir(request.param)


def test_default_model_is_a_shipped_adapter_on_an_embedded_base():
    assert DEFAULT_MODEL in SHIPPED_ADAPTERS
    assert SHIPPED_ADAPTERS[DEFAULT_MODEL] in sources.EMBEDDED_MODELS
    assert sources.resolve_model_path(None) == str(sources.shipped_adapter_dir(DEFAULT_MODEL))
    assert sources.embedded_name(None) == DEFAULT_MODEL


def test_official_layout_and_size(adapter):
    name, folder = adapter
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert total <= MAX_BYTES, f"{name}: {total / 1e6:.1f} MB"
    for required in (
        "adapter_config.json",
        "adapter_model.safetensors",
        "llm2vec_config.json",
        "README.md",
    ):
        assert (folder / required).is_file(), required
    cfg = json.loads((folder / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA"
    assert cfg["base_model_name_or_path"] == SHIPPED_ADAPTERS[name]
    assert sources.read_adapter_base(str(folder)) == SHIPPED_ADAPTERS[name]
    official = json.loads((folder / "llm2vec_config.json").read_text())
    assert set(official) == {"pooling_mode", "max_length", "doc_max_length", "skip_instruction"}
    assert not list(folder.glob("*.pkl")) and not list(folder.glob("*.bin"))


def test_weights_are_lora_pairs_for_every_layer(adapter):
    from safetensors import safe_open

    name, folder = adapter
    cfg = json.loads((folder / "adapter_config.json").read_text())
    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as fh:
        keys = list(fh.keys())
        shapes = {k: fh.get_slice(k).get_shape() for k in keys}
    a_keys = [k for k in keys if ".lora_A." in k]
    assert len(a_keys) * 2 == len(keys)
    assert {k.split(".lora_A.")[0].rsplit(".", 1)[-1] for k in a_keys} == set(cfg["target_modules"])
    assert all(shapes[k][0] == cfg["r"] for k in a_keys)
    assert all(shapes[k.replace(".lora_A.", ".lora_B.")][1] == cfg["r"] for k in a_keys)


def test_card_records_training_and_scores(adapter):
    name, folder = adapter
    card = (folder / "README.md").read_text()
    for needle in ("MNTP", "SimCSE", "supervised", "SciFact", "STS-B", "english-sentences", "snli"):
        assert needle in card, needle
    configs = json.loads((folder / "training_configs.json").read_text())
    # v1's three stages, then the supervised stage retrained on the supervised-pairs mix
    assert [c["stage"] for c in configs] == ["mntp", "simcse", "supervised", "supervised"]
