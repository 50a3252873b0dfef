"""llm2vec_retrieval._io: atomic writes, the staged directory swap, sha256, the lock,
L2 normalization (issue 13.3)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from llm2vec_retrieval import _io


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_atomic_write_json_modes_and_surrogates(tmp_path):
    target = tmp_path / "x.json"
    old = os.umask(0o027)
    try:
        _io.atomic_write_json(target, {"b": 1, "a": "é"}, sort_keys=True)
    finally:
        os.umask(old)
    assert target.read_text(encoding="utf-8") == '{\n  "a": "é",\n  "b": 1\n}\n'
    assert target.stat().st_mode & 0o777 == 0o640  # a plain new file's mode, not mkstemp's 0600
    _io.atomic_write_json(target, {"name": "bad\udcff.txt", "é": 1})  # lone surrogate
    assert json.loads(target.read_text(encoding="ascii")) == {"name": "bad\udcff.txt", "é": 1}
    assert _leftovers(tmp_path) == []


def test_atomic_write_failure_keeps_the_old_file(tmp_path):
    target = tmp_path / "x.bin"
    _io.atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError), _io.atomic_open(target) as f:
        f.write(b"half")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []
    with pytest.raises(TypeError):
        _io.atomic_write_json(target, {"x": object()})
    assert target.read_bytes() == b"old"


def test_concurrent_atomic_writers_never_share_a_temp_file(tmp_path):
    """A fixed temp name (``x.json.tmp``) let two writers clobber each other's file."""
    target = tmp_path / "x.json"
    errors = []

    def write(n):
        try:
            for i in range(50):
                _io.atomic_write_json(target, {"writer": n, "i": i, "pad": "x" * 10_000})
        except Exception as exc:  # pragma: no cover - the failure being tested
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert json.loads(target.read_text())["i"] == 49
    assert _leftovers(tmp_path) == []


def test_staged_dir_swaps_a_whole_directory(tmp_path):
    target = tmp_path / "out"
    stages = []
    with _io.staged_dir(target, on_stage=stages.append) as tmp:
        (tmp / "a").write_text("1")
    assert stages == ["before_swap", "swapped"]  # nothing to back up the first time
    stages.clear()
    with _io.staged_dir(target, on_stage=stages.append) as tmp:
        (tmp / "b").write_text("2")
    assert stages == ["before_swap", "backed_up", "swapped"]
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    with pytest.raises(RuntimeError), _io.staged_dir(target) as tmp:
        (tmp / "c").write_text("3")
        raise RuntimeError("failed half way")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_staged_dir_after_a_kill_between_the_renames(tmp_path):
    """A swap killed between its two renames leaves only the backup: readers find it in
    place, the next writer puts it back first; temp dirs of dead processes go away."""
    target = tmp_path / "out"
    with _io.staged_dir(target, marker="m") as tmp:
        (tmp / "m").write_text("v1")
    os.rename(target, _io.backup_path(target))
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    stale = tmp_path / f".out.tmp-{int(dead.stdout)}-deadbeef"
    stale.mkdir()
    assert _io.locate_dir(target, "m") == _io.backup_path(target)
    assert _io.locate_dir(target, "other-marker") == target  # not a complete version
    assert _io.backup_path(target).is_dir()  # the reader moved nothing
    with _io.staged_dir(target, marker="m") as tmp:
        assert (target / "m").read_text() == "v1"  # put back before the new version is built
        (tmp / "m").write_text("v2")
    assert (target / "m").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_sha256(tmp_path):
    p = tmp_path / "f"
    data = os.urandom(3 * _io.BLOCK + 17)
    p.write_bytes(data)
    assert _io.sha256_file(p) == hashlib.sha256(data).hexdigest()
    assert _io.sha256_and_size(p) == (hashlib.sha256(data).hexdigest(), len(data))


HOLD = """
import sys
from llm2vec_retrieval._io import file_lock
with file_lock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.readline()
"""


@pytest.mark.integration  # real processes SIGKILLed; make test runs it, make test-fast skips it
def test_file_lock_excludes_other_processes_and_lock_objects(tmp_path):
    lock = tmp_path / ".lock"
    with _io.file_lock(lock):
        with pytest.raises(_io.LockedError), _io.file_lock(lock):
            pass
    with _io.file_lock(lock):  # released: free again
        pass
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(lock)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(_io.LockedError), _io.file_lock(lock):
            pass
        child.kill()  # a killed holder frees the lock
        child.wait(timeout=30)
        with _io.file_lock(lock):
            pass
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_l2_normalize():
    x = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    y = _io.l2_normalize(x)
    assert y.dtype == np.float32 and np.allclose(y, [[0.6, 0.8], [0.0, 0.0]])
    assert x[0, 0] == 3.0  # a new array
    assert np.allclose(_io.l2_normalize([3, 4]), [0.6, 0.8])  # 1-D, ints become float32
    assert _io.l2_normalize(np.ones((2, 3), dtype=np.float64)).dtype == np.float64


def test_indexer_refuses_a_folder_another_indexer_holds(tmp_path):
    from llm2vec_retrieval.ingest import Indexer, IndexFolder, IndexSettings
    from llm2vec_retrieval.ingest.folder import LOCK_FILE, IndexFolderError

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("hello")
    (tmp_path / "idx").mkdir()
    with _io.file_lock(tmp_path / "idx" / LOCK_FILE):
        indexer = Indexer(IndexFolder(tmp_path / "idx"), IndexSettings(model="unused"))
        with pytest.raises(IndexFolderError, match="another process is indexing"):
            indexer.run([tmp_path / "docs"])


# -- the one JSON reader (issue 24.3) -----------------------------------------------
def test_read_json_says_why_in_a_few_words(tmp_path):
    from llm2vec_retrieval._io import JSONReadError, parse_json, read_json

    path = tmp_path / "x.json"
    path.write_text('{"a": [1, 2]}')
    assert read_json(path, want_object=True) == {"a": [1, 2]}
    assert parse_json(b"[1]") == [1]
    for data, reason in (
        ("[" * 100_000, "nested too deeply"),
        ("{not json", "JSONDecodeError"),
        (b"\xff", "UnicodeDecodeError"),
    ):
        with pytest.raises(JSONReadError) as info:
            parse_json(data)
        assert info.value.reason == reason and isinstance(info.value, ValueError)
    with pytest.raises(JSONReadError, match="not a JSON object"):
        parse_json("[1, 2]", want_object=True)
    with pytest.raises(FileNotFoundError):
        read_json(tmp_path / "missing.json")
