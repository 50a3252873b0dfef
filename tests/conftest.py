"""Shared fixtures: tiny random checkpoints built in code (no network, milliseconds)."""

from __future__ import annotations

import os
import threading

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# `search` starts no warm encoder process unless a test asks for one (tests/test_warm.py)
os.environ.setdefault("LLM2VEC_RETRIEVAL_WARM", "0")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """Factory: tiny_checkpoint(arch="llama") -> path of a cached tiny random checkpoint."""
    from llm2vec_retrieval.testing import make_tiny_checkpoint

    made: dict[str, str] = {}

    def make(arch: str = "llama") -> str:
        if arch not in made:
            made[arch] = str(make_tiny_checkpoint(tmp_path_factory.mktemp(f"tiny-{arch}"), arch))
        return made[arch]

    return make


@pytest.fixture(scope="session")
def tiny_llama(tiny_checkpoint):
    return tiny_checkpoint("llama")


@pytest.fixture(scope="session")
def tiny_encoder(tiny_llama):
    from llm2vec_retrieval import LLM2Vec

    return LLM2Vec.from_pretrained(tiny_llama, dtype="float32")  # tests compare fp32 numbers


class WatchedLock:
    """A re-entrant lock that sets `waiting` when a caller finds it held and starts to wait.

    A test that checks "this call waits for the lock" holds it, starts the call in a thread and
    waits on `waiting`: no sleep, and the call provably reached the lock before the test looks.
    """

    def __init__(self, waiting: threading.Event | None = None):
        self._lock = threading.RLock()
        self.waiting = waiting if waiting is not None else threading.Event()
        self.waiters: list[threading.Thread] = []  # the threads that found it held, in order

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self._lock.acquire(blocking=False):
            return True
        if not blocking:
            return False
        self.waiters.append(threading.current_thread())
        self.waiting.set()
        return self._lock.acquire(timeout=timeout)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@pytest.fixture
def watched_lock(monkeypatch):
    """Factory: watched_lock(obj, event=None) puts a WatchedLock on obj.lock for this test."""

    def install(obj: object, waiting: threading.Event | None = None) -> WatchedLock:
        lock = WatchedLock(waiting)
        monkeypatch.setattr(obj, "lock", lock)
        return lock

    return install
