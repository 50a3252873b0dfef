"""`cache info` and `cache clear` (issue 25): the model cache, in a private folder named by
$LLM2VEC_RETRIEVAL_CACHE, populated by real loads of a tiny model with a LoRA adapter merged
once per dtype (as the shipped default is), then listed and cleared."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from llm2vec_retrieval import LLM2Vec, cachedir, cli, merge_cache


def lora_folder(base: str, out: Path) -> str:
    """An official MNTP-layout folder: a random LoRA adapter naming `base`, with its tokenizer."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    get_peft_model(AutoModel.from_pretrained(base), config).save_pretrained(out)
    cfg = json.loads((out / "adapter_config.json").read_text())
    (out / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": base}))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(base, name), out / name)
    return str(out)


def du(path: Path) -> int:
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() or p.is_symlink())


@pytest.fixture
def cache(tiny_llama, tmp_path, monkeypatch) -> Path:
    """A cache with two merges of one adapter (float32, bfloat16), the digest file, a
    benchmark's folder (not the loader's) and a symlinked model folder."""
    root = tmp_path / "cache"
    monkeypatch.setenv(cachedir.CACHE_ENV, str(root))
    monkeypatch.setattr(merge_cache, "caches_merge", lambda folder: True)  # as for a shipped one
    adapter = lora_folder(tiny_llama, tmp_path / "adapter")
    for dtype in (torch.float32, torch.bfloat16):
        LLM2Vec.from_pretrained(adapter, torch_dtype=dtype)
    (root / "onnx-bench").mkdir()
    (root / "onnx-bench" / "model.onnx").write_bytes(b"x" * 1000)
    outside = tmp_path / "elsewhere"
    shutil.copytree(tiny_llama, outside)
    (root / "models").mkdir()
    os.symlink(outside, root / "models" / "linked")
    return root


def run(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = cli.main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def info(capsys) -> dict:
    rc, out, _ = run(capsys, "cache", "info", "--json")
    assert rc == 0
    return json.loads(out)


def test_cache_info_lists_every_entry_with_its_size(cache, capsys):
    data = info(capsys)
    merged = sorted(p.name for p in (cache / "merged").iterdir() if not p.name.startswith("."))
    assert len(merged) == 2  # one merge per dtype: the 2x of the issue
    names = {e["name"]: e for e in data["entries"]}
    assert {f"merged/{m}" for m in merged} | {
        "digests.json",
        "onnx-bench",
        "models/linked",
    } <= set(names)
    assert data["cache"] == str(cache) and data["exists"] is True
    assert {names[f"merged/{m}"]["detail"] for m in merged} == {"float32", "bfloat16"}
    assert {names[f"merged/{m}"]["kind"] for m in merged} == {"merged"}
    assert names["digests.json"]["kind"] == "digests"
    assert names["onnx-bench"]["kind"] == "other"
    for name, e in names.items():
        assert e["bytes"] == du(cache / name), name
    assert names["models/linked"]["bytes"] < 1000  # the link, not the model it points to
    assert data["total_bytes"] == sum(e["bytes"] for e in data["entries"]) == du(cache)
    assert set(data["entries"][0]) == {"name", "kind", "bytes", "detail"}

    rc, out, _ = run(capsys, "cache", "info")
    assert rc == 0 and out.startswith(f"cache {cache}:")
    assert all(name in out for name in names)
    assert out.strip().splitlines()[-1].startswith("total ") and "in 5 entries" in out


def test_cache_clear_one_entry(cache, capsys):
    before = info(capsys)
    entry = next(e for e in before["entries"] if e["detail"] == "bfloat16")
    rc, out, err = run(capsys, "cache", "clear", entry["name"], "--json")
    assert rc == 0 and err == ""
    assert json.loads(out) == {
        "cache": str(cache),
        "removed": [entry],
        "freed_bytes": entry["bytes"],
        "kept": [],
    }
    assert not (cache / entry["name"]).exists()
    after = info(capsys)
    assert [e for e in before["entries"] if e != entry] == after["entries"]
    # the float32 merge is named by its path this time; the text says what was freed
    other = next(e for e in after["entries"] if e["detail"] == "float32")
    rc, out, _ = run(capsys, "cache", "clear", str(cache / other["name"]))
    assert rc == 0 and out.startswith(f"removed {other['name']} (")
    assert out.strip().splitlines()[-1].startswith("freed ")
    # a symlinked entry: the link goes, what it points to stays
    target = (cache / "models" / "linked").resolve()
    assert run(capsys, "cache", "clear", "models/linked")[0] == 0
    assert not (cache / "models" / "linked").is_symlink() and (target / "config.json").is_file()


def test_cache_clear_refuses_what_is_not_an_entry(cache, tmp_path, capsys):
    before = info(capsys)
    (tmp_path / "precious.txt").write_text("keep me")
    merged = next(e["name"] for e in before["entries"] if e["kind"] == "merged")
    for name, says in (
        (str(tmp_path / "precious.txt"), "is outside the cache"),
        ("merged/../../precious.txt", "is outside the cache"),
        (str(tmp_path), "is outside the cache"),
        (f"{merged}/config.json", "is not an entry of the cache"),
        (".", "is not an entry of the cache"),
        ("merged/nothing-here", "no entry merged/nothing-here in the cache"),
    ):
        rc, out, err = run(capsys, "cache", "clear", name)
        assert rc == 2 and out == "" and says in err and len(err.splitlines()) == 1, (name, err)
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    assert info(capsys) == before


def test_cache_clear_everything_keeps_what_the_loader_did_not_write(cache, capsys):
    before = info(capsys)
    rc, out, err = run(capsys, "cache", "clear", "--json")
    data = json.loads(out)
    assert rc == 0
    removed = [e for e in before["entries"] if e["kind"] != "other"]
    assert data["removed"] == removed and data["freed_bytes"] == sum(e["bytes"] for e in removed)
    assert [e["name"] for e in data["kept"]] == ["onnx-bench"]
    assert "note: kept onnx-bench" in err
    assert [e["name"] for e in info(capsys)["entries"]] == ["onnx-bench"]
    assert not (cache / "models").exists() and not (cache / "digests.json").exists()
    # what is left of merged/: the empty lock files of the merges (a process may hold one)
    left = list((cache / "merged").iterdir()) if (cache / "merged").exists() else []
    assert all(p.name.endswith(".lock") and p.stat().st_size == 0 for p in left)
    # an empty (or missing) cache: nothing to free, not an error
    shutil.rmtree(cache)
    rc, out, _ = run(capsys, "cache", "clear")
    assert rc == 0 and out.strip() == f"freed 0 B in {cache}"
    assert info(capsys) == {"cache": str(cache), "exists": False, "entries": [], "total_bytes": 0}


def test_a_cleared_merge_is_made_again(cache, tiny_llama, tmp_path, capsys):
    """Clearing costs the next load a merge, nothing else."""
    adapter = str(tmp_path / "adapter")
    assert run(capsys, "cache", "clear")[0] == 0
    LLM2Vec.from_pretrained(adapter, torch_dtype=torch.float32)
    assert [e["detail"] for e in info(capsys)["entries"] if e["kind"] == "merged"] == ["float32"]
