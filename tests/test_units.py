"""Small pure pieces: pooling maths, batching, config JSON, instruction registry, content digests."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch

from llm2vec_retrieval import fingerprint, sources
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
    torch.testing.assert_close(
        pool(hidden, attention, text, "weighted_mean").flatten(), torch.tensor([5 / 3, 20 / 3])
    )
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
    assert (
        get_instruction("scifact")
        == "Given a scientific claim, retrieve documents that support or refute the claim:"
    )
    assert get_instruction("STS-B") == get_instruction("STSBenchmark") == STS_INSTRUCTION
    assert is_symmetric("STSBenchmark") and not is_symmetric("SciFact")
    assert all(v.endswith(":") for v in INSTRUCTIONS.values())


# -- content digests (issue 13.1) -----------------------------------------------------
MIB = 1 << 20


def _checkpoint(folder: Path, tail: bytes) -> Path:
    """A fake merged checkpoint: 3 MiB whose first MiB (the embedding matrix of a sorted
    safetensors file, which a LoRA merge never changes) is the same in every copy."""
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "model.safetensors").write_bytes(b"\x01" * MIB + tail * (2 * MIB // len(tail)))
    return folder


def test_folder_digest_covers_whole_files(tmp_path):
    """Two checkpoints differing only after the first MiB got one digest, so an index
    built with one loaded silently against the other."""
    a = _checkpoint(tmp_path / "a", b"\x02")
    b = _checkpoint(tmp_path / "b", b"\x03")
    cache = fingerprint.DigestCache()  # memory only
    assert (a / "model.safetensors").read_bytes()[:MIB] == (b / "model.safetensors").read_bytes()[
        :MIB
    ]
    da, db = fingerprint.folder_digest(a, cache=cache), fingerprint.folder_digest(b, cache=cache)
    assert da != db
    assert len(da) == 16 and int(da, 16) >= 0
    assert fingerprint.folder_digest(tmp_path / "missing") is None


def test_digest_cache_reads_each_file_once(tmp_path):
    folder = _checkpoint(tmp_path / "ckpt", b"\x02")
    cache_file = tmp_path / "cache" / "digests.json"
    cache = fingerprint.DigestCache(cache_file)
    first = fingerprint.folder_digest(folder, cache=cache)
    assert cache.hashed == 2  # config.json and model.safetensors
    assert fingerprint.folder_digest(folder, cache=cache) == first and cache.hashed == 2
    # another process (a fresh cache on the same file) reads nothing either
    again = fingerprint.DigestCache(cache_file)
    assert fingerprint.folder_digest(folder, cache=again) == first and again.hashed == 0
    saved = json.loads(cache_file.read_text())["files"]
    assert set(saved) == {str(folder / "config.json"), str(folder / "model.safetensors")}


def test_digest_cache_misses_a_rewrite_that_keeps_size_and_mtime(tmp_path):
    """The cache key holds ctime and inode besides size and mtime: a retrained file of the
    same size whose mtime was set back (cp -p, rsync -a, fixed archive timestamps) is read
    again, whether it replaced the file (new inode) or was written into it (new ctime)."""
    folder = _checkpoint(tmp_path / "ckpt", b"\x02")
    weights = folder / "model.safetensors"
    cache = fingerprint.DigestCache(tmp_path / "digests.json")
    seen = {fingerprint.folder_digest(folder, cache=cache)}
    for tail, in_place in ((b"\x04", False), (b"\x05", True)):
        st = weights.stat()
        time.sleep(0.05)  # past the kernel's timestamp granularity
        if in_place:
            with open(weights, "r+b") as f:
                f.seek(MIB)
                f.write(tail * (2 * MIB))
        else:
            replacement = tmp_path / "retrained.safetensors"
            replacement.write_bytes(b"\x01" * MIB + tail * (2 * MIB))
            os.replace(replacement, weights)
        os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
        now = weights.stat()
        assert (now.st_size, now.st_mtime_ns) == (st.st_size, st.st_mtime_ns)
        assert (now.st_ino == st.st_ino) == in_place
        digest = fingerprint.folder_digest(folder, cache=cache)
        assert digest not in seen
        seen.add(digest)
    assert cache.hashed == 4  # 2 files, then model.safetensors twice


def test_corrupt_digest_cache_is_ignored_and_rewritten(tmp_path):
    folder = _checkpoint(tmp_path / "ckpt", b"\x02")
    expected = fingerprint.folder_digest(folder, cache=fingerprint.DigestCache())
    cache_file = tmp_path / "digests.json"
    for garbage in ("{not json", "[" * 100_000, '{"format": 1, "files": {"x": [1]}}', "\xff"):
        cache_file.write_text(garbage, encoding="utf-8", errors="surrogateescape")
        cache = fingerprint.DigestCache(cache_file)
        assert fingerprint.folder_digest(folder, cache=cache) == expected and cache.hashed == 2
        assert len(json.loads(cache_file.read_text())["files"]) == 2
    # an entry that lies about a file's hash but has its current stat is believed: the
    # cache is keyed by the stat, never by content (so it reads nothing)
    data = json.loads(cache_file.read_text())
    data["files"][str(folder / "model.safetensors")][4] = "0" * 64
    cache_file.write_text(json.dumps(data))
    assert fingerprint.folder_digest(folder, cache=fingerprint.DigestCache(cache_file)) != expected


def test_a_digest_of_other_files_is_a_plain_mismatch(tmp_path):
    """Digests are compared as they are: no older digest scheme is recognised any more (the
    package was never released with one), so an index whose saved digest names other files
    is a one-line mismatch that says how to load it anyway."""
    from llm2vec_retrieval.fingerprint import FingerprintMismatchError, fingerprint_diff

    shipped = sources.shipped_adapter_dir(sources.DEFAULT_MODEL)
    current = fingerprint.folder_digest(shipped)
    old_fp = {"model": sources.DEFAULT_MODEL, "model_digest": "65aa107b6bea08d9", "dim": 640}
    assert fingerprint_diff(old_fp, {**old_fp, "model_digest": current}) == ["model_digest"]
    big = _checkpoint(tmp_path / "big", b"\x02")
    new = fingerprint.folder_digest(big)
    assert fingerprint_diff({"model_digest": new}, {"model_digest": new}) == []
    diff = fingerprint_diff({"model_digest": "0123456789abcdef"}, {"model_digest": new})
    assert diff == ["model_digest"]
    err = FingerprintMismatchError(
        {"model_digest": "0123456789abcdef"}, {"model_digest": new}, diff
    )
    assert "\n" not in str(err) and "allow_fingerprint_mismatch=True" in str(err)
    assert not hasattr(fingerprint, "legacy_folder_digest")


def test_the_index_store_does_not_import_the_weight_loader():
    """Issue 24.3: index/ compares fingerprints through `fingerprint`, which knows nothing
    of where weights come from (sources, merge_cache, models): no module of index/ or
    fingerprint.py imports them."""
    import ast

    import llm2vec_retrieval

    root = Path(llm2vec_retrieval.__file__).parent
    files = [*sorted((root / "index").glob("*.py")), root / "fingerprint.py"]
    loader = {"sources", "merge_cache", "models", "loading", "encoder"}
    found = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = {(node.module or "").rsplit(".", 1)[-1]} | {a.name for a in node.names}
                found += [f"{path.name}: {n}" for n in sorted(names & loader)]
    assert len(files) > 5 and found == []
