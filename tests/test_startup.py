"""Fast start (issue 16.2): the merged-adapter cache of `merge_cache.load_merged`.

An official-layout adapter folder (adapter + the base named in adapter_config.json) is
merged into its base once per dtype and read back from the cache afterwards. The cached
merge must give the vectors of the uncached load, be invalidated by a changed adapter,
survive a damaged entry, and spare later processes the peft import.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from llm2vec_retrieval import LLM2Vec, cachedir, merge_cache, sources
from llm2vec_retrieval.hardware import resolve_dtype

TEXTS = ["how do I resume training", "Rivers flood after heavy rain."]


def _lora_folder(base: str, out, seed: int = 0) -> str:
    """An official MNTP-layout folder: a random LoRA adapter naming `base`, with its tokenizer."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    torch.manual_seed(seed)
    model = get_peft_model(
        AutoModel.from_pretrained(base),
        LoraConfig(
            r=4,
            lora_alpha=8,
            target_modules=["q_proj", "v_proj", "up_proj"],
            init_lora_weights=False,
        ),
    )
    model.save_pretrained(out)
    cfg_path = out / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = base
    cfg_path.write_text(json.dumps(cfg))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(base, name), out / name)
    return str(out)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private cache root; every adapter folder counts as shipped (merge cached)."""
    root = tmp_path / "cache"
    monkeypatch.setenv(cachedir.CACHE_ENV, str(root))
    monkeypatch.setattr(merge_cache, "caches_merge", lambda folder: True)
    return root


def _entries(root) -> list:
    merged = root / "merged"
    return (
        sorted(p.name for p in merged.iterdir() if not p.name.startswith("."))
        if merged.is_dir()
        else []
    )


def _encode(folder: str, dtype) -> np.ndarray:
    return LLM2Vec.from_pretrained(folder, torch_dtype=dtype).encode_queries(TEXTS)


def _uncached(folder: str, dtype, monkeypatch) -> np.ndarray:
    with monkeypatch.context() as m:
        m.setattr(merge_cache, "caches_merge", lambda f: False)
        return _encode(folder, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cached_merge_gives_the_uncached_vectors(tiny_llama, tmp_path, cache, monkeypatch, dtype):
    folder = _lora_folder(tiny_llama, tmp_path / "adapter")
    reference = _uncached(folder, dtype, monkeypatch)
    assert _entries(cache) == []

    built = _encode(folder, dtype)  # merges and writes the entry
    (entry,) = _entries(cache)
    assert f"-{str(dtype).removeprefix('torch.')}-" in entry
    info = json.loads((cache / "merged" / entry / merge_cache.MERGED_MARKER).read_text())
    assert info["dtype"] == str(dtype) and info["format"] == merge_cache.MERGED_FORMAT

    def no_merge(*a, **k):
        raise AssertionError("a cached merge must not merge again")

    monkeypatch.setattr(merge_cache, "apply_adapter", no_merge)
    loaded = LLM2Vec.from_pretrained(folder, torch_dtype=dtype)
    hit = loaded.encode_queries(TEXTS)
    np.testing.assert_array_equal(built, reference)
    np.testing.assert_array_equal(hit, reference)  # saved in the load dtype: bit for bit
    weights = dict(loaded.model.named_parameters())
    assert all(p.dtype == dtype and not p.requires_grad for p in weights.values())
    assert loaded.fingerprint() == LLM2Vec.from_pretrained(folder, torch_dtype=dtype).fingerprint()


def test_changed_adapter_makes_a_new_entry_and_drops_the_old(
    tiny_llama, tmp_path, cache, monkeypatch
):
    folder = _lora_folder(tiny_llama, tmp_path / "adapter", seed=0)
    first = _encode(folder, torch.float32)
    (old,) = _entries(cache)
    retrained = _lora_folder(tiny_llama, tmp_path / "retrained", seed=1)
    shutil.copy(
        os.path.join(retrained, "adapter_model.safetensors"),
        os.path.join(folder, "adapter_model.safetensors"),
    )

    second = _encode(folder, torch.float32)
    (new,) = _entries(cache)
    assert new != old
    assert not np.allclose(first, second)
    np.testing.assert_array_equal(second, _uncached(folder, torch.float32, monkeypatch))


def test_damaged_entry_is_merged_again(tiny_llama, tmp_path, cache, caplog):
    folder = _lora_folder(tiny_llama, tmp_path / "adapter")
    good = _encode(folder, torch.float32)
    (entry,) = _entries(cache)
    weights = cache / "merged" / entry / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])

    with caplog.at_level("WARNING", logger=merge_cache.__name__):
        again = _encode(folder, torch.float32)
    np.testing.assert_array_equal(again, good)
    assert "merging again" in caplog.text
    assert weights.stat().st_size > 100  # rewritten


def test_loads_that_could_change_the_weights_are_not_cached(tiny_llama, tmp_path, cache):
    folder = _lora_folder(tiny_llama, tmp_path / "adapter")
    LLM2Vec.from_pretrained(folder, device_map="cpu")
    assert _entries(cache) == []
    # "auto" is resolved by hardware before loading (issue 25): a fixed dtype, so cached
    LLM2Vec.from_pretrained(folder, torch_dtype="auto")
    (entry,) = _entries(cache)
    assert resolve_dtype("auto").name in entry


def test_unwritable_cache_still_loads(tiny_llama, tmp_path, cache, monkeypatch):
    folder = _lora_folder(tiny_llama, tmp_path / "adapter")
    cache.mkdir()
    (cache / "merged").write_text("not a folder")
    np.testing.assert_array_equal(
        _encode(folder, torch.float32), _uncached(folder, torch.float32, monkeypatch)
    )


def test_only_shipped_adapters_are_cached(tmp_path):
    assert merge_cache.caches_merge(sources.shipped_adapter_dir(sources.DEFAULT_MODEL))
    assert not merge_cache.caches_merge(tmp_path)


@pytest.mark.slow  # a second Python process importing torch and transformers (~9 s)
def test_a_cached_merge_loads_without_peft(tiny_llama, tmp_path, cache):
    """A second process reads the merged weights: peft (and its imports) stay out."""
    folder = _lora_folder(tiny_llama, tmp_path / "adapter")
    code = (
        "import sys, llm2vec_retrieval.merge_cache as L\n"
        "L.caches_merge = lambda f: True\n"
        "from llm2vec_retrieval import LLM2Vec\n"
        f"v = LLM2Vec.from_pretrained({folder!r}).encode_queries(['hi'])\n"
        "print('peft' in sys.modules, v.shape)\n"
    )
    env = {**os.environ, cachedir.CACHE_ENV: str(cache), "OMP_NUM_THREADS": "1"}
    runs = [
        subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
        )
        for _ in range(2)
    ]
    for run in runs:
        assert run.returncode == 0, run.stderr
    assert runs[0].stdout.split()[0] == "True"  # the first process merges
    assert runs[1].stdout.split()[0] == "False"


@pytest.mark.slow
def test_default_model_cached_merge_gives_the_uncached_query_vector(tmp_path, monkeypatch):
    """The real default (bf16, as `search` runs it here): cached merge == merge at load."""
    try:
        base = sources.resolve_model_path(sources.DEFAULT_BASE)
    except sources.ModelNotInstalledError as exc:
        pytest.skip(str(exc))
    root = tmp_path / "cache"
    (root / "models").mkdir(parents=True)
    os.symlink(base, root / "models" / sources.DEFAULT_BASE)  # the dequantized base, reused
    monkeypatch.setenv(cachedir.CACHE_ENV, str(root))
    with monkeypatch.context() as m:
        m.setattr(merge_cache, "caches_merge", lambda f: False)
        reference = LLM2Vec.from_pretrained(dtype=torch.bfloat16).encode_queries(TEXTS)
    built = LLM2Vec.from_pretrained(dtype=torch.bfloat16).encode_queries(TEXTS)
    assert len(_entries(root)) == 1
    hit = LLM2Vec.from_pretrained(dtype=torch.bfloat16).encode_queries(TEXTS)
    np.testing.assert_array_equal(built, reference)
    np.testing.assert_array_equal(hit, reference)


def test_report_has_a_startup_section(tmp_path):
    from benchmarks import report

    run = {"seconds": 4.5, "cpu_s": 3.0, "loadavg_before": [1.5, 1.0, 0.5]}
    data = {
        "benchmark": "startup",
        "command": "python -m benchmarks.startup --index X",
        "started": "2026-12-01T22:00:00",
        "query": "q",
        "results": {
            "search_warm": {
                "runs": [run, {**run, "seconds": 2.5}],
                "median_s": 3.5,
                "min_s": 2.5,
                "max_s": 4.5,
                "median_cpu_s": 3.0,
            },
            "serve_cold": run,
            "search_lexical_warm": {**run, "seconds": 0.75},
        },
        "phases_warm": {"import torch": 1.25},
    }
    (tmp_path / "startup_20261201-220000.json").write_text(json.dumps(data))
    newer = {  # a --no-cold run: its warm row wins, the cold row comes from the older file
        **data,
        "started": "2026-12-01T23:00:00",
        "command": "python -m benchmarks.startup --no-cold",
        "results": {"search_warm": data["results"]["search_warm"]},
    }
    (tmp_path / "startup_20261201-230000.json").write_text(json.dumps(newer))
    text = report.build_report(tmp_path, tmp_path / "RESULTS.md", tmp_path / "plots")
    section = text.split("## Start-up time of search and serve", 1)[1]
    assert "| serve | cold: empty cache" in section
    assert "| 1.5-1.5 | `startup_20261201-220000.json` |" in section
    assert "python -m benchmarks.startup --no-cold" in section
    assert (
        "| search | warm: merged model cached | 2 | 3.50 | 2.50 | 4.50 | 3.00 | 1.5-1.5 | `startup_20261201-230000.json` |"
        in section
    )
    assert "| serve | cold: empty cache" in section and "| import torch | 1.25 |" in section
    assert "| search --mode lexical | (no model loaded) | 1 | 0.75 |" in section
    assert "python -m benchmarks.startup --index X" in section


def _main_json(capsys, *args: str) -> dict:
    from llm2vec_retrieval import cli

    capsys.readouterr()
    assert cli.main(list(args)) == 0
    return json.loads(capsys.readouterr().out)


def test_lexical_search_loads_no_model(tiny_llama, tmp_path, capsys):
    """`search --mode lexical` answers from the BM25 part alone: same results as through the
    full searcher, even when the model folder is gone, and without importing torch."""
    pytest.importorskip("faiss")
    from llm2vec_retrieval import cli
    from llm2vec_retrieval.ingest import Searcher
    from llm2vec_retrieval.testing import make_small_corpus

    model = tmp_path / "model"
    shutil.copytree(tiny_llama, model)
    idx = tmp_path / "idx"
    corpus = make_small_corpus(tmp_path)
    assert cli.main(["index", str(corpus), "--index", str(idx), "--model", str(model)]) == 0
    args = ("search", str(idx), "rivers flood", "-k", "3", "--mode", "lexical", "--json")
    full = _main_json(capsys, *args)
    via_full = Searcher(idx).search("rivers flood", k=3, mode="lexical")
    shutil.rmtree(model)

    lexical_only = _main_json(capsys, *args)
    assert lexical_only["results"] == full["results"] == [r.to_dict() for r in via_full]
    assert lexical_only["results"] and lexical_only["mode"] == "lexical"
    with pytest.raises(ValueError, match="lexical search only"):
        Searcher(idx, lexical_only=True).check_mode("hybrid")
    assert cli.main(["search", str(idx), "rivers flood", "--mode", "dense"]) == 2  # needs the model

    code = (
        "import sys\nfrom llm2vec_retrieval import cli\n"
        f"rc = cli.main(['search', {str(idx)!r}, 'rivers', '--mode', 'lexical'])\n"
        "print('IMPORTED', rc, sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "IMPORTED 0 []"
