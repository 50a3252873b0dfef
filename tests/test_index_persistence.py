"""Saving and loading IndexStore: round trips, corruption, fingerprints, killed saves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faiss")

from llm2vec_retrieval.index import (  # noqa: E402
    DimensionMismatchError,
    FingerprintMismatchError,
    IndexCorruptedError,
    IndexStore,
)
from llm2vec_retrieval.index.persistence import manifest_checksum  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DIM = 24
N = 300
FP = {
    "model": "tiny",
    "adapter_sha256": "ab12",
    "pooling": "mean",
    "max_length": 512,
    "normalize": True,
}
KIND_PARAMS = {
    "flat": {},
    "hnsw": {"M": 8, "ef_construction": 40},
    "ivf_flat": {"train_threshold": 150},
    "ivf_sq8": {"train_threshold": 150},
    "ivf_pq": {"train_threshold": 150, "pq_nbits": 5},
    "binary": {"rescore_factor": 5},
}


@pytest.fixture(autouse=True, scope="module")
def _one_omp_thread():
    """Tiny k-means runs far faster on one thread (OpenMP spin-waits on busy cores)."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def data(n=N, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((8, DIM))
    return (centers[rng.integers(0, 8, n)] + 0.3 * rng.standard_normal((n, DIM))).astype(np.float32)


def build(kind, n=N, metric="cosine", fingerprint=FP, **extra):
    x = data(n)
    s = IndexStore(
        DIM, kind=kind, metric=metric, fingerprint=fingerprint, **{**KIND_PARAMS[kind], **extra}
    )
    s.add(
        [f"d{i}" for i in range(n)],
        x,
        texts=[f"t{i} é ✓" for i in range(n)],
        metadatas=[{"i": i, "even": i % 2 == 0, "nested": {"a": [i, "x"]}} for i in range(n)],
    )
    return s, x


def same_results(a, b, q, k=8, filter=None):
    ra, rb = a.search_batch(q, k=k, filter=filter), b.search_batch(q, k=k, filter=filter)
    for x, y in zip(ra, rb, strict=True):
        assert [h.id for h in x] == [h.id for h in y]
        np.testing.assert_allclose([h.score for h in x], [h.score for h in y], atol=1e-5)
        assert [(h.text, h.metadata) for h in x] == [(h.text, h.metadata) for h in y]


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("kind", list(KIND_PARAMS))
def test_round_trip_per_kind(tmp_path, kind, metric):
    s, x = build(kind, metric=metric)
    s.delete(["d3", "d4"])
    s.add(["d5"], x[6:7], texts=["upserted"])  # an upsert (a tombstone on hnsw)
    s.save(tmp_path / "ix")
    t = IndexStore.load(tmp_path / "ix", fingerprint=FP)
    assert (t.kind, t.metric, t.dim, t.fingerprint, t.params) == (
        s.kind,
        s.metric,
        s.dim,
        FP,
        s.params,
    )
    assert t.ids == s.ids and len(t) == N - 2 and t.is_trained == s.is_trained
    assert t.get(["d5"])[0].text == "upserted"
    np.testing.assert_allclose(t.vectors(["d1", "d7"]), s.vectors(["d1", "d7"]), atol=1e-6)
    q = data(12, seed=5)
    same_results(s, t, q)
    same_results(s, t, q, filter={"even": True})
    m = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    for key in (
        "format_version",
        "kind",
        "metric",
        "dim",
        "count",
        "params",
        "fingerprint",
        "created_at",
        "library_version",
        "faiss_version",
        "files",
        "manifest_sha256",
    ):
        assert key in m
    assert m["count"] == N - 2 and m["fingerprint"] == FP
    # loaded stores keep working: add, delete, save again, load again
    t.add(["new"], -x[0:1], metadatas=[{"fresh": True}])
    assert t.delete(["d0", "d1"]) == 2
    t.save(tmp_path / "ix")
    u = IndexStore.load(tmp_path / "ix")
    assert len(u) == N - 3 and "new" in u and "d0" not in u
    assert u.search(-x[0], k=1, filter={"fresh": True})[0].id == "new"
    same_results(t, u, q)


def test_untrained_ivf_and_empty_round_trip(tmp_path):
    s, x = build("ivf_flat", n=100)  # below its threshold of 150
    assert not s.is_trained
    s.save(tmp_path / "a")
    assert (
        not (tmp_path / "a" / "index.faiss").exists() and (tmp_path / "a" / "vectors.npy").exists()
    )
    t = IndexStore.load(tmp_path / "a")
    same_results(s, t, data(5, seed=1))
    t.add([f"e{i}" for i in range(100)], data(100, seed=2))  # crosses the threshold after load
    assert t.is_trained and len(t) == 200
    t.save(tmp_path / "a")
    assert IndexStore.load(tmp_path / "a").is_trained
    for kind in KIND_PARAMS:
        e = IndexStore(DIM, kind=kind)
        e.save(tmp_path / f"empty-{kind}")
        f = IndexStore.load(tmp_path / f"empty-{kind}")
        assert len(f) == 0 and f.search(data(1)[0], k=3) == []
        f.add(["a"], data(1))
        assert f.search(data(1)[0], k=3)[0].id == "a"


def test_flat_has_no_float_copy_and_binary_does(tmp_path):
    build("flat")[0].save(tmp_path / "f")
    build("binary")[0].save(tmp_path / "b")
    assert not (tmp_path / "f" / "vectors.npy").exists()
    assert (tmp_path / "b" / "vectors.npy").exists()
    with open(tmp_path / "b" / "vectors.npy", "rb") as fh:  # a plain .npy, no pickle
        assert np.load(fh, allow_pickle=False).shape == (N, DIM)


# -- corruption ---------------------------------------------------------------------
def _flip(path: Path, where: float):
    b = bytearray(path.read_bytes())
    pos = min(len(b) - 1, int(len(b) * where))
    b[pos] ^= 0x5A
    path.write_bytes(bytes(b))


def _truncate(path: Path, where: float):
    b = path.read_bytes()
    path.write_bytes(b[: int(len(b) * where)])


CORRUPTIONS = [  # a file name, or how the name of one file ends / begins
    ("flat", ".vec.arr"),
    ("flat", ".docs.arr"),
    ("flat", "manifest.json"),
    ("hnsw", "index.faiss"),
    ("ivf_pq", "index.faiss"),
    ("ivf_sq8", "vectors.npy"),
    ("binary", "index.faiss"),
    ("binary", "vectors.npy"),
    ("binary", ".docs.arr"),
    ("flat", ".lex.arr"),
    ("hnsw", "vocab-"),
    ("flat", "deleted.arr"),
]


def _file(d: Path, name: str) -> Path:
    if (d / name).exists():
        return d / name
    (found,) = [p for p in d.iterdir() if p.name.endswith(name) or p.name.startswith(name)]
    return found


@pytest.mark.parametrize(
    "how", ["flip-start", "flip-middle", "flip-end", "truncate-half", "truncate-empty", "delete"]
)
@pytest.mark.parametrize("kind, name", CORRUPTIONS)
def test_corrupted_files_raise_index_corrupted(tmp_path, kind, name, how):
    """Every damage is found by `verify_store` (``info --verify``); `load` and a first dense
    search find it too, except a changed byte inside a segment file, which load
    memory-maps without reading (its size and header are checked; a record when read)."""
    from llm2vec_retrieval.index.persistence import verify_store

    s, _ = build(kind, n=200)
    s.save(tmp_path / "ix")
    s.delete(["d1", "d2"])  # marks in the saved segment
    s.save(tmp_path / "ix")
    target = _file(tmp_path / "ix", name)
    if how.startswith("flip"):
        _flip(target, {"flip-start": 0.0, "flip-middle": 0.5, "flip-end": 1.0}[how])
    elif how == "truncate-half":
        _truncate(target, 0.5)
    elif how == "truncate-empty":
        _truncate(target, 0.0)
    else:
        target.unlink()
    checks = [lambda: verify_store(tmp_path / "ix")]
    if not (target.name.endswith(".arr") and how in ("flip-middle", "flip-end")):
        # the FAISS files are read (and checksummed) on first use: a dense search
        checks.append(lambda: IndexStore.load(tmp_path / "ix").search(np.ones(DIM), k=1))
    for check in checks:
        with pytest.raises(IndexCorruptedError) as info:
            check()
        msg = str(info.value)
        assert target.name in msg and "\n" not in msg
        assert info.value.file is not None and info.value.file.endswith(target.name)


def test_random_garbage_never_reaches_faiss(tmp_path):
    """Same-size random bytes: the checksum rejects them before FAISS parses anything
    (FAISS can crash the interpreter on garbage, which would kill this test run)."""
    for kind in ("hnsw", "ivf_flat", "binary"):
        s, _ = build(kind, n=200)
        s.save(tmp_path / kind)
        p = tmp_path / kind / "index.faiss"
        p.write_bytes(np.random.default_rng(0).bytes(p.stat().st_size))
        loaded = IndexStore.load(tmp_path / kind)  # FAISS reads the index on first use
        with pytest.raises(IndexCorruptedError, match="index.faiss: checksum mismatch"):
            loaded.search(np.ones(DIM), k=1)


def test_manifest_edits_and_missing_dir(tmp_path):
    s, _ = build("flat", n=50)
    s.save(tmp_path / "ix")
    mp = tmp_path / "ix" / "manifest.json"
    m = json.loads(mp.read_text())
    m["count"] = 49  # valid JSON, edited: the manifest checksum catches it
    mp.write_text(json.dumps(m))
    with pytest.raises(IndexCorruptedError, match="manifest.json: checksum mismatch"):
        IndexStore.load(tmp_path / "ix")
    mp.write_text("{not json")
    with pytest.raises(IndexCorruptedError, match="manifest.json: not valid JSON"):
        IndexStore.load(tmp_path / "ix")
    mp.unlink()
    with pytest.raises(IndexCorruptedError, match="manifest.json: missing"):
        IndexStore.load(tmp_path / "ix")
    with pytest.raises(FileNotFoundError):
        IndexStore.load(tmp_path / "nowhere")


def test_deeply_nested_json_is_a_corrupt_index(tmp_path):
    """Issue 14.5: 100k brackets gave a RecursionError traceback instead of one line."""
    s, _ = build("flat", n=5)
    s.save(tmp_path / "ix")
    mp = tmp_path / "ix" / "manifest.json"
    good = mp.read_text()
    mp.write_text("[" * 100_000)
    with pytest.raises(
        IndexCorruptedError, match=r"manifest.json: not valid JSON \(nested too deeply\)"
    ):
        IndexStore.load(tmp_path / "ix")
    # a record nested too deeply, with checksums that match it (a forged save): it loads
    # (records are read when asked for) and reading it is a one-line error
    from llm2vec_retrieval.index.segments import read_arrays, write_arrays

    mp.write_text(good)
    m = json.loads(good)
    (name,) = [n for n in m["files"] if n.endswith(".docs.arr")]
    arrays = {k: np.array(v) for k, v in read_arrays(tmp_path / "ix" / name).items()}
    o = arrays["offsets"]
    forged = b"[" * 100_000 + b"\n"
    arrays["records"] = np.frombuffer(forged + arrays["records"][o[1] :].tobytes(), np.uint8)
    arrays["offsets"] = np.concatenate([[0], o[1:] - o[1] + len(forged)])
    with open(tmp_path / "ix" / name, "wb") as f:
        write_arrays(f, arrays)
    data = (tmp_path / "ix" / name).read_bytes()
    m["files"][name] = {
        "sha256": __import__("hashlib").sha256(data).hexdigest(),
        "bytes": len(data),
    }
    m["manifest_sha256"] = manifest_checksum(m)
    mp.write_text(json.dumps(m))
    t = IndexStore.load(tmp_path / "ix")
    assert [r.id for r in t.get(["d1"])] == ["d1"]
    with pytest.raises(
        IndexCorruptedError, match=r"docs\.arr: the record of internal id 0 is unreadable"
    ):
        t.get(["d0"])


def test_other_dimension_is_refused_even_when_mismatch_is_allowed(tmp_path):
    """Issue 14.8: an embedder of another dimension loaded with the mismatch allowed, then
    every search failed with a confusing shape error."""
    s, _ = build("flat", n=10, fingerprint={**FP, "dim": DIM})
    s.save(tmp_path / "ix")
    other = {**FP, "dim": DIM * 2}
    for allow in (False, True):
        with pytest.raises(DimensionMismatchError) as info:
            IndexStore.load(tmp_path / "ix", fingerprint=other, allow_fingerprint_mismatch=allow)
        msg = str(info.value)
        assert f"{DIM}-dimensional" in msg and f"{DIM * 2}-dimensional" in msg and "\n" not in msg
        assert (info.value.saved_dim, info.value.given_dim) == (DIM, DIM * 2)
        assert isinstance(info.value, FingerprintMismatchError)  # caught where those are
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = IndexStore.load(
            tmp_path / "ix",
            fingerprint={**other, "dim": DIM, "x": 1},
            allow_fingerprint_mismatch=True,
        )
    assert len(t) == 10  # same dimension: allowed as before


# -- fingerprints -----------------------------------------------------------------------
def test_fingerprint_mismatch_and_override(tmp_path):
    s, x = build("flat", n=50)
    s.save(tmp_path / "ix")
    other = {**FP, "pooling": "eos", "max_length": 256}
    with pytest.raises(FingerprintMismatchError) as info:
        IndexStore.load(tmp_path / "ix", fingerprint=other)
    assert info.value.differing_keys == ["max_length", "pooling"]
    assert "max_length" in str(info.value) and "pooling" in str(info.value)
    extra = {**FP, "instruction": "q:"}
    with pytest.raises(FingerprintMismatchError, match="instruction"):
        IndexStore.load(tmp_path / "ix", fingerprint=extra)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        t = IndexStore.load(tmp_path / "ix", fingerprint=other, allow_fingerprint_mismatch=True)
    assert len(t) == 50 and t.fingerprint == FP and any("fingerprint" in str(x.message) for x in w)
    assert IndexStore.load(tmp_path / "ix").fingerprint == FP  # no fingerprint given: no check
    IndexStore(DIM, fingerprint={"instructions": ["q", "d"], "max_length": 8}).save(
        tmp_path / "tup"
    )
    IndexStore.load(tmp_path / "tup", fingerprint={"instructions": ("q", "d"), "max_length": 8})
    IndexStore(DIM).save(tmp_path / "nofp")  # none saved: the given one is adopted, no check
    assert IndexStore.load(tmp_path / "nofp", fingerprint=other).fingerprint == other


def test_index_with_another_model_digest(tmp_path):
    """An index saved with the digest of other weight files is a one-line error saying what
    to do, and loads with allow_fingerprint_mismatch (a warning), keeping its own."""
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "model.safetensors").write_bytes(bytes(range(256)) * 8192)  # 2 MiB
    from llm2vec_retrieval import fingerprint

    now = {**FP, "model_digest": fingerprint.folder_digest(ckpt), "dim": DIM}
    old = {**now, "model_digest": "0123456789abcdef"}
    s, _ = build("flat", n=10, fingerprint=old)
    s.save(tmp_path / "ix2")
    with pytest.raises(FingerprintMismatchError) as info:
        IndexStore.load(tmp_path / "ix2", fingerprint=now)
    assert info.value.differing_keys == ["model_digest"]
    message = str(info.value)
    assert "\n" not in message and "allow_fingerprint_mismatch=True" in message
    with pytest.warns(UserWarning, match="loading anyway"):
        t = IndexStore.load(tmp_path / "ix2", fingerprint=now, allow_fingerprint_mismatch=True)
    assert t.fingerprint == old


# -- directory handling ---------------------------------------------------------------
def test_save_keeps_foreign_files_and_refuses_foreign_trees(tmp_path):
    s, _ = build("flat", n=20)
    d = tmp_path / "ix"
    d.mkdir()
    (d / "sidecar.json").write_text('{"a": 1}')  # an integration's file, before the first save
    s.save(d)
    s.add(["z"], data(1))
    s.save(d)
    assert json.loads((d / "sidecar.json").read_text()) == {"a": 1}
    assert len(IndexStore.load(d)) == 21
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ix"]  # no tmp/backup left
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    with pytest.raises(ValueError, match="refusing"):
        s.save(tree)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        s.save(tmp_path / "file")


def test_load_recovers_from_backup(tmp_path):
    """A save killed between its two renames leaves only `.ix.bak`: load reads it where it
    is (a reader moves nothing), the next save restores it."""
    s, _ = build("flat", n=30)
    s.save(tmp_path / "ix")
    os.rename(tmp_path / "ix", tmp_path / ".ix.bak")
    (tmp_path / ".ix.tmp-999999999-dead").mkdir()  # a dead process's half-written save
    t = IndexStore.load(tmp_path / "ix")
    assert len(t) == 30 and not (tmp_path / "ix").exists() and (tmp_path / ".ix.bak").is_dir()
    t.save(tmp_path / "ix")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ix"]


# -- killed saves (real SIGKILL) ---------------------------------------------------------
CHILD = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    from llm2vec_retrieval.index import IndexStore
    path, kind, n0, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    rng = np.random.default_rng(0)
    dim = 64
    store = IndexStore(dim, kind=kind)
    def add_version(v, n, prefix="d"):
        store.add([f"{prefix}{i}" for i in range(n)], rng.standard_normal((n, dim)).astype(np.float32),
                  metadatas=[{"version": v}] * n)
    add_version(0, n0)
    store.save(path)
    print("saved 0", flush=True)
    if mode == "loop":  # every version upserts all n0 ids: a consistent state has one version
        v = 1
        while True:
            add_version(v, n0)
            store.save(path)
            print(f"saved {v}", flush=True)
            v += 1
    else:  # pause (then get killed) at one stage of the next save
        sys.path.insert(0, "tests")
        from hooked_cli import pause_at_stages
        pause_at_stages(mode + ":60")
        add_version(1, 10, prefix="x")
        store.save(path)
        print("saved 1", flush=True)
    """
)


def _spawn(tmp_path, kind, n0, mode):
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path / "ix"), kind, str(n0), mode],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
    )


def _wait_line(stream, prefix, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = stream.readline()
        if not line:
            raise AssertionError(f"child ended before {prefix!r}")
        if line.startswith(prefix):
            return line
    raise AssertionError(f"timeout waiting for {prefix!r}")


STAGES = {
    "index_written": False,
    "files_written": False,
    "before_swap": False,
    "backed_up": False,
    "swapped": True,
}


@pytest.mark.integration  # real processes SIGKILLed; make test runs it, make test-fast skips it
def test_save_killed_at_each_stage_keeps_an_index(tmp_path):
    """One child per save stage (run side by side), SIGKILLed while paused there: the
    index at the path is the previous one, or the new one once the swap is done."""
    children = {}
    try:
        for stage in STAGES:
            (tmp_path / stage).mkdir()
            children[stage] = _spawn(tmp_path / stage, "binary", 200, stage)
        for stage, child in children.items():
            _wait_line(child.stdout, "saved 0")
            _wait_line(child.stderr, f"llm2vec-save-stage: {stage}")
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
            assert child.returncode == -signal.SIGKILL
    finally:
        for child in children.values():
            if child.poll() is None:
                child.kill()
                child.wait()
    for stage, committed in STAGES.items():
        d = tmp_path / stage
        t = IndexStore.load(d / "ix")
        versions = {r.metadata["version"] for r in t.get(t.ids, include_vectors=False)}
        assert (len(t), versions) == ((210, {0, 1}) if committed else (200, {0})), stage
        t.add(["after"], np.ones((1, 64)))  # and the next save cleans up
        t.save(d / "ix")
        assert sorted(p.name for p in d.iterdir()) == ["ix"], stage
        assert len(IndexStore.load(d / "ix")) == len(t)


@pytest.mark.integration  # real processes SIGKILLed; make test runs it, make test-fast skips it
def test_save_killed_at_random_moments(tmp_path):
    """A child saves a ~5 MB flat index in a loop; SIGKILL it at random times."""
    rng = np.random.default_rng(42)
    for _ in range(2):
        child = _spawn(tmp_path, "flat", 20_000, "loop")
        last = -1
        try:
            line = _wait_line(child.stdout, "saved 0")
            last = 0
            time.sleep(float(rng.uniform(0.05, 0.6)))
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
            for line in child.stdout.read().splitlines():  # saves completed before the kill
                if line.startswith("saved "):
                    last = int(line.split()[1])
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        t = IndexStore.load(tmp_path / "ix")
        versions = {r.metadata["version"] for r in t.get(t.ids, include_vectors=False)}
        assert len(versions) == 1 and len(t) == 20_000, (versions, len(t))
        # the last completed save, or the one in flight if it got past its commit point
        assert versions.pop() in (last, last + 1)
        assert len(t.search(np.ones(64), k=3)) == 3


READER = textwrap.dedent(
    """
    import os, sys, time
    from llm2vec_retrieval.index import IndexStore
    path, trigger, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    print("ready", flush=True)
    while not os.path.exists(trigger):
        time.sleep(0.01)
    if mode == "once":
        print("loaded", len(IndexStore.load(path)), flush=True)
    else:  # load in a loop until the trigger goes away
        n = 0
        while os.path.exists(trigger):
            s = IndexStore.load(path)
            versions = {r.metadata["version"] for r in s.get(s.ids, include_vectors=False)}
            assert len(versions) == 1 and len(s) == int(mode), (versions, len(s))
            n += 1
        print("loads", n, flush=True)
    """
)


def _reader(tmp_path, trigger, mode):
    return subprocess.Popen(
        [sys.executable, "-c", READER, str(tmp_path / "ix"), str(trigger), mode],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
    )


@pytest.mark.integration  # a saving process beside a loading one; make test-fast skips it
def test_reader_never_moves_the_backup_of_a_save_in_progress(tmp_path):
    """Issue 14.7: a load during a save's swap used to rename `.ix.bak` back under the
    writer, whose own rename then failed ("Directory not empty"). Two real processes: the
    writer pauses with the old version in `.ix.bak`; the reader loads it in place."""
    trigger = tmp_path / "go"
    reader = _reader(tmp_path, trigger, "once")
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CHILD.replace(':60"', ':6"'),
            str(tmp_path / "ix"),
            "flat",
            "200",
            "backed_up",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
    )
    try:
        _wait_line(reader.stdout, "ready")
        _wait_line(writer.stdout, "saved 0")
        _wait_line(writer.stderr, "llm2vec-save-stage: backed_up")
        assert not (tmp_path / "ix").exists() and (tmp_path / ".ix.bak").is_dir()
        trigger.touch()
        assert _wait_line(reader.stdout, "loaded").split() == ["loaded", "200"]
        assert reader.wait(timeout=30) == 0
        assert not (tmp_path / "ix").exists() and (tmp_path / ".ix.bak").is_dir()  # not moved
        out, err = writer.communicate(timeout=60)
        assert writer.returncode == 0, err
        assert "saved 1" in out
    finally:
        for child in (reader, writer):
            if child.poll() is None:
                child.kill()
                child.wait()
    t = IndexStore.load(tmp_path / "ix")
    assert len(t) == 210
    assert sorted(p.name for p in tmp_path.iterdir()) == ["go", "ix"]


@pytest.mark.integration  # a saving process beside a loading one; make test-fast skips it
def test_loads_beside_a_saving_process_always_see_one_version(tmp_path):
    """A writer process saves new versions in a loop while a reader process loads in a loop:
    every load sees one whole version, and the writer never fails."""
    trigger = tmp_path / "go"
    reader = _reader(tmp_path, trigger, "2000")
    writer = _spawn(tmp_path, "flat", 2000, "loop")
    try:
        _wait_line(reader.stdout, "ready")
        _wait_line(writer.stdout, "saved 0")
        trigger.touch()
        time.sleep(4)
        trigger.unlink()
        out, err = reader.communicate(timeout=60)
        assert reader.returncode == 0, err
        assert int(out.split()[-1]) > 3
        assert writer.poll() is None, writer.stderr.read()  # still saving, never failed
    finally:
        for child in (reader, writer):
            if child.poll() is None:
                child.kill()
                child.wait()


def test_a_load_that_looks_between_a_saves_renames_reads_again(tmp_path, monkeypatch):
    """CI saw it once: the reader found neither the directory nor its backup because a save
    renamed them between its looks. A directory that is there again on a second look is read,
    not reported missing; a directory that is nowhere still is."""
    from llm2vec_retrieval.index import persistence

    s = IndexStore(DIM)
    s.add(["a", "b"], np.eye(2, DIM, dtype=np.float32), ["x", "y"])
    s.save(tmp_path / "ix")
    real, looks = persistence._locate, []

    def between_renames(path):
        looks.append(path)
        return tmp_path / "gone" if len(looks) == 1 else real(path)

    monkeypatch.setattr(persistence, "_locate", between_renames)
    assert len(IndexStore.load(tmp_path / "ix")) == 2
    assert len(looks) >= 2
    with pytest.raises(FileNotFoundError, match="no saved index"):
        IndexStore.load(tmp_path / "nothing")


def test_odd_text_round_trips(tmp_path):
    s = IndexStore(DIM)
    texts = ["line\nbreak", "lone \ud800 surrogate", "日本語 ✓", "", None]
    metas = [{"k": "\u2028"}, {"k": "\udfff"}, {"ключ": "значение"}, {}, {"n": None}]
    s.add([f"t{i}" for i in range(5)], data(5), texts=texts, metadatas=metas)
    s.save(tmp_path / "ix")
    t = IndexStore.load(tmp_path / "ix")
    assert [(r.text, r.metadata) for r in t.get(t.ids)] == list(zip(texts, metas, strict=True))


# -- issue 13.2: the store owns its state ------------------------------------------------
def test_extra_is_saved_inside_the_checksummed_manifest(tmp_path):
    from llm2vec_retrieval.index.persistence import load_manifest

    store = IndexStore(8)
    store.add(["a"], np.ones((1, 8), np.float32), ["alpha"])
    store.save(tmp_path / "s", extra={"app": {"mode": "hybrid", "n": 3}})
    assert load_manifest(tmp_path / "s")["extra"] == {"app": {"mode": "hybrid", "n": 3}}
    loaded = IndexStore.load(tmp_path / "s")
    assert loaded.extra == {"app": {"mode": "hybrid", "n": 3}}
    loaded.save(tmp_path / "s")  # extra=None keeps what was loaded
    assert IndexStore.load(tmp_path / "s").extra == {"app": {"mode": "hybrid", "n": 3}}
    # an edited extra breaks the manifest checksum, as any other edit does
    manifest = tmp_path / "s" / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"hybrid"', '"dense"'))
    with pytest.raises(IndexCorruptedError, match="checksum mismatch"):
        IndexStore.load(tmp_path / "s")
    with pytest.raises(ValueError, match="extra is not JSON-serializable"):
        store.save(tmp_path / "t", extra={"x": object()})


def test_dimension_is_fixed_by_the_first_add(tmp_path):
    store = IndexStore(None, "ivf_pq", fingerprint={"model": "m"})
    assert store.dim is None and store.search(np.ones(5), k=3) == []
    store.save(tmp_path / "empty")  # an empty store saves and loads without a dimension
    empty = IndexStore.load(tmp_path / "empty", fingerprint={"model": "m"})
    assert empty.dim is None and len(empty) == 0 and empty.kind == "ivf_pq"
    vecs = np.random.default_rng(0).normal(size=(20, 12)).astype(np.float32)
    empty.add([f"d{i}" for i in range(20)], vecs)
    assert empty.dim == 12 and empty.params["pq_m"] is not None and 12 % empty.params["pq_m"] == 0
    with pytest.raises(ValueError, match=r"shape \(n, 12\)"):
        empty.add(["x"], np.ones((1, 7), np.float32))
    empty.save(tmp_path / "full")
    again = IndexStore.load(tmp_path / "full")
    assert again.dim == 12 and again.ids == empty.ids
    np.testing.assert_allclose(again.vectors(["d3"]), empty.vectors(["d3"]))


def test_snapshot_round_trip_keeps_everything(tmp_path):
    store = IndexStore(4, "hnsw", fingerprint={"model": "m"})
    store.add(["a", "b", "c"], np.eye(4, dtype=np.float32)[:3], ["apple pear", "pear fig", None])
    store.delete(["b"])
    with store.snapshot() as snap:
        copy = IndexStore.from_snapshot(snap)
        assert snap.docs.ids() == ["a", "c"] and snap.next_iid == 3
    assert copy.ids == store.ids and copy.kind == "hnsw" and copy.fingerprint == {"model": "m"}
    q = np.array([1, 0, 0, 0], np.float32)
    assert [h.id for h in copy.search(q, k=2)] == [h.id for h in store.search(q, k=2)]
    assert [h.id for h in copy.search(text="apple", mode="lexical", k=2)] == ["a"]


def test_check_fingerprint_is_the_one_comparison():
    from llm2vec_retrieval.fingerprint import DimensionMismatchError, check_fingerprint

    saved = {"model": "a", "dim": 8}
    assert check_fingerprint(saved, None) == saved
    assert check_fingerprint(None, {"model": "a"}) is None
    assert check_fingerprint(saved, {"model": "a", "dim": 8}) == saved
    with pytest.raises(FingerprintMismatchError, match="model"):
        check_fingerprint(saved, {"model": "b", "dim": 8})
    with pytest.warns(UserWarning, match="loading anyway"):
        assert (
            check_fingerprint(saved, {"model": "b", "dim": 8}, allow_fingerprint_mismatch=True)
            == saved
        )
    with pytest.raises(DimensionMismatchError, match="8-dimensional"):
        check_fingerprint(
            saved, {"model": "a", "dim": 4}, saved_dim=8, allow_fingerprint_mismatch=True
        )
    # tuples compare as JSON saved them
    assert check_fingerprint({"shape": [1, 2]}, {"shape": (1, 2)}) == {"shape": [1, 2]}
