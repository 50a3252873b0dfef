"""Micro-batching for the embedding server: one thread calls the model and schedules by tokens.

Each request is a job: a list of (instruction, text) pairs with a token count per pair. The
scheduler thread keeps the jobs it has admitted in round-robin order and builds every model
batch within a token budget (``max_batch_tokens``): each waiting job first gets an equal share
of the budget (at least one row when the row fits), then the leftover goes to the jobs in turn.
A large request is therefore encoded in budget-sized pieces, interleaved with the small requests
that arrive meanwhile: a small request waits for the batch in flight, not for the whole large
request. Jobs served in a batch move to the back of the order, so no job is skipped twice in a row.

A batch that raises is retried job by job, so a failing request fails alone and the others in its
batch still get their vectors. A job whose future was cancelled (its client went away or timed
out) is dropped before its next piece.

The batcher adds no lock: each model call is ``encoder.encode``, which holds the encoder's own
``lock`` (the one lock every caller of the encoder shares).

Left out: priorities, per-client quotas, and preempting a batch already inside the model.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import Any

import numpy as np

from . import DEFAULT_BATCH_TOKENS, DEFAULT_BATCH_WAIT_MS


class ServerShuttingDown(RuntimeError):
    """Set on jobs still waiting when the batcher is closed."""


class _Job:
    __slots__ = ("pairs", "tokens", "future", "done", "out")

    def __init__(self, pairs: list[tuple[str, str]], tokens: list[int], future: Future):
        self.pairs = pairs
        self.tokens = tokens
        self.future = future
        self.done = 0  # rows encoded so far
        self.out: np.ndarray | None = None

    @property
    def remaining_tokens(self) -> int:
        return sum(self.tokens[self.done :])


class MicroBatcher:
    """One thread that encodes queued jobs in fair, token-budgeted batches.

    ``submit(pairs, tokens)`` returns a Future of a float32 array (len(pairs), dim), the
    encoder's raw (not normalized) output. ``tokens`` is one count per pair, or one total
    spread evenly. ``wait_ms``: how long an idle batcher waits for more jobs before encoding.
    """

    def __init__(
        self,
        encoder: Any,
        max_batch_tokens: int = DEFAULT_BATCH_TOKENS,
        wait_ms: float = DEFAULT_BATCH_WAIT_MS,
    ):
        if max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens must be at least 1, got {max_batch_tokens}")
        self.encoder = encoder
        self.max_batch_tokens = int(max_batch_tokens)
        self.wait = max(float(wait_ms), 0.0) / 1000.0
        self.queue: queue.Queue[_Job | None] = queue.Queue()
        self.batches = 0  # model calls that succeeded
        self.requests = 0  # jobs completed
        self.failed = 0  # jobs failed
        # called after each successful model call with (rows, tokens): the server's metrics
        self.on_batch: Callable[[int, int], None] | None = None
        self._active: deque[_Job] = deque()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="micro-batcher", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public
    def submit(self, pairs: list[tuple[str, str]], tokens: int | list[int]) -> Future:
        fut: Future = Future()
        if isinstance(tokens, int):
            per = max(tokens // max(len(pairs), 1), 1)
            tokens = [per] * len(pairs)
        if len(tokens) != len(pairs):
            raise ValueError(f"{len(pairs)} pairs but {len(tokens)} token counts")
        if self._closed:
            fut.set_exception(ServerShuttingDown("the server is shutting down"))
            return fut
        if not pairs:
            fut.set_result(np.zeros((0, 0), dtype=np.float32))
            return fut
        self.queue.put(_Job(list(pairs), [max(int(t), 1) for t in tokens], fut))
        return fut

    def pending(self) -> int:
        """Jobs queued or partly encoded."""
        return self.queue.qsize() + len(self._active)

    def close(self) -> None:
        self._closed = True
        self.queue.put(None)
        self._thread.join(timeout=10)

    # ------------------------------------------------------------------ scheduling
    def _admit(self, job: _Job | None) -> bool:
        """Add a queued job to the round robin; False for the stop sentinel."""
        if job is None:
            return False
        if not job.future.done():  # cancelled while queued
            self._active.append(job)
        return True

    def _gather(self) -> bool:
        """Idle batcher, one job in hand: wait up to ``wait`` for more while under budget."""
        deadline = time.monotonic() + self.wait
        tokens = sum(j.remaining_tokens for j in self._active)
        while tokens < self.max_batch_tokens:
            timeout = deadline - time.monotonic()
            try:
                job = self.queue.get_nowait() if timeout <= 0 else self.queue.get(timeout=timeout)
            except queue.Empty:
                return True
            if job is None:  # the stop sentinel
                return False
            self._admit(job)
            tokens += job.remaining_tokens
        return True

    def _drain(self) -> bool:
        while True:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                return True
            if not self._admit(job):
                return False

    def _plan(self) -> list[tuple[_Job, int]]:
        """(job, end row) pieces of the next batch; rotates the served jobs to the back."""
        order = [j for j in self._active if not j.future.done()]
        if not order:
            self._active.clear()
            return []
        budget = self.max_batch_tokens
        share = max(budget // len(order), 1)
        ends: dict[int, int] = {}
        used = 0
        for pass_share in (share, budget):  # equal shares first, then the leftover in turn
            for idx, job in enumerate(order):
                end = ends.get(idx, job.done)
                taken = 0
                while end < len(job.pairs):
                    t = job.tokens[end]
                    if used > 0 and used + t > budget:
                        break  # full (an empty batch always takes its first row)
                    if taken > 0 and taken + t > pass_share:
                        break  # this job had its share in this pass
                    taken += t
                    used += t
                    end += 1
                if end > job.done:
                    ends[idx] = end
                if used >= budget:
                    break
            if used >= budget:
                break
        served = [order[i] for i in sorted(ends)]
        waiting = [j for i, j in enumerate(order) if i not in ends]
        self._active = deque(waiting + served)
        return [(order[i], ends[i]) for i in sorted(ends)]

    # ------------------------------------------------------------------ encoding
    def _encode(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        vectors = self.encoder.encode(
            pairs, batch_size=max(len(pairs), 1), show_progress_bar=False, convert_to_numpy=True
        )
        return np.asarray(vectors, dtype=np.float32).reshape(len(pairs), -1)

    def _deliver(self, job: _Job, end: int, rows: np.ndarray) -> None:
        if job.out is None:
            job.out = np.empty((len(job.pairs), rows.shape[1]), dtype=np.float32)
        job.out[job.done : end] = rows
        job.done = end
        if job.done == len(job.pairs):
            self._finish(job, result=job.out)

    def _finish(self, job: _Job, result: Any = None, error: BaseException | None = None) -> None:
        try:
            self._active.remove(job)
        except ValueError:
            pass
        try:
            if error is None:
                job.future.set_result(result)
                self.requests += 1
            else:
                job.future.set_exception(error)
                self.failed += 1
        except InvalidStateError:  # cancelled meanwhile
            pass

    def _run(self, pieces: list[tuple[_Job, int]]) -> None:
        pairs = [p for job, end in pieces for p in job.pairs[job.done : end]]
        try:
            vectors = self._encode(pairs)
        except Exception as exc:
            if len(pieces) == 1:
                self._finish(pieces[0][0], error=exc)
                return
            # Retry each job's piece alone: only the jobs whose own piece fails get the error.
            for job, end in pieces:
                try:
                    rows = self._encode(job.pairs[job.done : end])
                except Exception as own:
                    self._finish(job, error=own)
                else:
                    self._count(job.pairs[job.done : end], job.tokens[job.done : end])
                    self._deliver(job, end, rows)
            return
        self._count(pairs, [t for job, end in pieces for t in job.tokens[job.done : end]])
        row = 0
        for job, end in pieces:
            n = end - job.done
            self._deliver(job, end, vectors[row : row + n])
            row += n

    def _count(self, pairs: list[tuple[str, str]], tokens: list[int]) -> None:
        self.batches += 1
        if self.on_batch is not None:
            self.on_batch(len(pairs), int(sum(tokens)))

    def _loop(self) -> None:
        running = True
        while running:
            if not self._active:
                first = self.queue.get()
                running = self._admit(first) and self._gather()
            else:
                running = self._drain()
            pieces = self._plan()
            if pieces:
                self._run(pieces)
        # Closed: whatever is still queued or partly encoded fails fast.
        while True:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                break
            self._admit(job)
        for job in list(self._active):
            self._finish(job, error=ServerShuttingDown("the server is shutting down"))
