"""The warm query encoder of `search` (issue 26.5): real processes, a real Unix socket.

A first dense/hybrid `search` starts a helper that keeps the model loaded; later searches ask
it for the query vector without importing torch. It never answers for another model, exits
after its idle time or on SIGTERM, and a helper that is gone, killed or answering nonsense
never breaks a search (a new one starts, or the model loads here after a one-line note)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("faiss")

pytestmark = pytest.mark.slow  # each test starts several Python processes

QUERY = "rivers flood"
TORCH_PROBE = (
    "import sys\nfrom llm2vec_retrieval import cli\n"
    "rc = cli.main(sys.argv[1:])\n"
    "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)\n"
    "raise SystemExit(rc)\n"
)


@pytest.fixture
def setup(tiny_llama, tmp_path):
    """A model folder of its own (the tests change it), an index of it, and the environment
    of a user whose searches may start a warm encoder (runtime dir under tmp_path)."""
    from llm2vec_retrieval import cli
    from llm2vec_retrieval.testing import make_small_corpus

    model = tmp_path / "model"
    shutil.copytree(tiny_llama, model)
    idx = tmp_path / "idx"
    corpus = make_small_corpus(tmp_path)
    assert cli.main(["index", str(corpus), "--index", str(idx), "--model", str(model)]) == 0
    run = Path(tempfile.mkdtemp(prefix="l2v-")).resolve()  # short: a socket path is <= 107 bytes
    env = {
        **os.environ,
        "XDG_RUNTIME_DIR": str(run),
        "LLM2VEC_RETRIEVAL_WARM": "1",
        "LLM2VEC_RETRIEVAL_WARM_IDLE": "120",
    }
    started: list[int] = []
    yield {
        "model": model,
        "idx": idx,
        "env": env,
        "run": run / "llm2vec_retrieval",
        "pids": started,
    }
    for pid in started:  # whatever a test left running
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    shutil.rmtree(run, ignore_errors=True)


def search(setup, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-c", TORCH_PROBE, "search", "--index", str(setup["idx"]), QUERY]
    argv += ["-k", "3", "--json", "--dtype", "float32", *extra]
    done = subprocess.run(
        argv, env=env or setup["env"], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    found = re.search(r"starting a warm encoder \(pid (\d+)\)", done.stderr)
    if found:
        setup["pids"].append(int(found.group(1)))
    return done


def started_pid(done: subprocess.CompletedProcess) -> int | None:
    found = re.search(r"starting a warm encoder \(pid (\d+)\)", done.stderr)
    return int(found.group(1)) if found else None


def wait_gone(pid: int, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def results(done: subprocess.CompletedProcess) -> list:
    return [(r["id"], round(r["score"], 5)) for r in json.loads(done.stdout)["results"]]


def test_first_search_starts_it_later_ones_reuse_it_without_torch(setup):
    local = search(setup, "--no-warm")
    assert "warm encoder" not in local.stderr and "TORCH" in local.stderr.splitlines()[-1]
    assert not setup["run"].exists() or not list(setup["run"].glob("*.sock"))

    first = search(setup)
    pid = started_pid(first)
    assert pid is not None and f"encoding the query in the warm encoder (pid {pid}" in first.stderr
    assert results(first) == results(local)

    second = search(setup)
    assert started_pid(second) is None
    assert f"encoding the query in the warm encoder (pid {pid}, float32)" in second.stderr
    assert second.stderr.splitlines()[-1] == "NO-TORCH"  # the model stayed in the helper
    assert results(second) == results(local)
    assert json.loads(second.stdout)["results"] == json.loads(local.stdout)["results"]

    sockets = list(setup["run"].glob("warm-*.sock"))
    assert len(sockets) == 1
    assert stat.S_IMODE(sockets[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(setup["run"].stat().st_mode) == 0o700

    # the environment variable turns it off: the model loads here
    off = search(setup, env={**setup["env"], "LLM2VEC_RETRIEVAL_WARM": "0"})
    assert "warm encoder" not in off.stderr and off.stderr.splitlines()[-1] == "TORCH"

    os.kill(pid, signal.SIGTERM)  # a clean exit removes the socket
    assert wait_gone(pid)
    assert not sockets[0].exists()


def test_idle_exit_and_a_killed_helper_is_replaced(setup):
    first = search(setup)
    pid = started_pid(first)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # no clean-up: its socket stays behind
    assert wait_gone(pid)
    (sock,) = setup["run"].glob("warm-*.sock")
    assert sock.exists()

    env = {**setup["env"], "LLM2VEC_RETRIEVAL_WARM_IDLE": "2"}
    second = search(setup, env=env)
    new = started_pid(second)
    assert new is not None and new != pid  # the dead one was replaced
    assert results(second) == results(first)
    assert wait_gone(new, timeout=90)  # exits after 2 s without a request
    assert not sock.exists()
    log = sock.with_suffix(".log").read_text()
    assert "idle for 2 s: exiting" in log and "stopped" in log


def test_a_helper_answering_nonsense_means_a_local_search_with_a_note(setup):
    from llm2vec_retrieval import warm
    from llm2vec_retrieval.ingest import IndexFolder
    from llm2vec_retrieval.ingest.searcher import search_embedder

    spec = search_embedder(IndexFolder(setup["idx"]).read_manifest())
    os.environ["XDG_RUNTIME_DIR"] = setup["env"]["XDG_RUNTIME_DIR"]
    try:
        key = warm.helper_key(spec, "float32")
        path = warm.runtime_dir() / f"warm-{key}.sock"
    finally:
        del os.environ["XDG_RUNTIME_DIR"]
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()
    asked: list[bytes] = []

    def answer_garbage() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):  # a client may hang up first
                asked.append(conn.recv(1 << 16))
                conn.sendall(b"\x00\x00\x00\x05hello")  # a frame that is not JSON

    threading.Thread(target=answer_garbage, daemon=True).start()
    try:
        done = search(setup)
    finally:
        server.close()
    notes = [line for line in done.stderr.splitlines() if "warm encoder" in line]
    assert len(notes) == 1 and notes[0].startswith(f"note: the warm encoder at {path} is unusable")
    assert notes[0].endswith("loading the model here instead")
    assert done.stderr.splitlines()[-1] == "TORCH" and results(done)
    assert asked and b'"op": "hello"' in asked[0]


def test_a_helper_of_a_changed_model_is_not_used(setup):
    """The model's weights rewritten in place (its folder's time unchanged: same helper
    name) and the index rebuilt with them: the helper's fingerprint differs from the index's,
    so the model loads here, the helper is told to stop, and the next search starts anew."""
    from llm2vec_retrieval.testing import make_tiny_checkpoint

    first = search(setup)
    pid = started_pid(first)
    assert pid is not None
    other = make_tiny_checkpoint(setup["model"].parent / "other", seed=1)
    model = setup["model"]
    folder_time = model.stat().st_mtime_ns
    for f in Path(other).glob("*.safetensors"):
        (model / f.name).write_bytes(f.read_bytes())  # in place: the folder time stays
    os.utime(model, ns=(folder_time, folder_time))
    corpus = setup["idx"].parent / "corpus"
    argv = ["index", str(corpus), "--index", str(setup["idx"]), "--model", str(model)]
    # another process: this one keeps the encoder it loaded for the first index in memory
    rebuilt = subprocess.run(
        [sys.executable, "-m", "llm2vec_retrieval", *argv, "--rebuild"],
        env=setup["env"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert rebuilt.returncode == 0, rebuilt.stderr

    second = search(setup)
    assert f"note: the warm encoder (pid {pid}) serves another model than index" in second.stderr
    assert second.stderr.splitlines()[-1] == "TORCH"
    assert wait_gone(pid)  # told to stop
    local = search(setup, "--no-warm")
    assert results(second) == results(local)
    third = search(setup)
    assert started_pid(third) not in (None, pid) and results(third) == results(local)
