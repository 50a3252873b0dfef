"""The server's Prometheus metrics (``GET /metrics``), in the text exposition format 0.0.4.

prometheus_client is not a dependency: the few series the server keeps are counters,
histograms and gauges with at most two labels, rendered here in a screenful of code. Every
update takes one lock (the HTTP handlers and the micro-batcher's thread both write).

Series (prefix ``llm2vec_``):

- ``requests_total{route, status}``: requests answered, by route template and HTTP status;
  paths that match no route count as ``route="other"`` (a scanner cannot grow the label set);
- ``request_duration_seconds{route}``: histogram of the time from request to response;
- ``embedded_inputs_total`` / ``embedded_tokens_total``: texts embedded and their tokens
  (the inputs' own tokens, as ``usage.prompt_tokens`` counts them), ``/search`` queries included;
- ``batch_size`` / ``batch_tokens``: histograms of the rows and tokens (instruction included)
  of each model call of the micro-batcher;
- ``queue_size``: jobs waiting for or inside the model now (a gauge read at scrape time).

Not here: per-client series, process metrics (CPU, memory), exemplars.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "llm2vec_"
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
BATCH_TOKEN_BUCKETS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 65536)


def _number(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: Sequence[tuple[str, str]]) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in pairs) + "}"


class _Histogram:
    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: Sequence[float]):
        self.bounds = tuple(bounds)
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                break
        self.sum += value
        self.count += 1

    def lines(self, name: str, labels: Sequence[tuple[str, str]]) -> list[str]:
        out, cumulative = [], 0
        for bound, n in zip(self.bounds, self.counts, strict=True):
            cumulative += n
            out.append(f"{name}_bucket{_labels([*labels, ('le', _number(bound))])} {cumulative}")
        out.append(f"{name}_bucket{_labels([*labels, ('le', '+Inf')])} {self.count}")
        out.append(f"{name}_sum{_labels(labels)} {_number(self.sum)}")
        out.append(f"{name}_count{_labels(labels)} {self.count}")
        return out


class ServerMetrics:
    """What ``/metrics`` reports; ``queue_size`` is read from the batcher at scrape time."""

    def __init__(self, queue_size: Callable[[], int] | None = None):
        self._lock = threading.Lock()
        self._queue_size = queue_size
        self._requests: dict[tuple[str, int], int] = {}
        self._durations: dict[str, _Histogram] = {}
        self.inputs = 0
        self.tokens = 0
        self._batch_size = _Histogram(BATCH_SIZE_BUCKETS)
        self._batch_tokens = _Histogram(BATCH_TOKEN_BUCKETS)

    def request(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            key = (route, int(status))
            self._requests[key] = self._requests.get(key, 0) + 1
            hist = self._durations.get(route)
            if hist is None:
                hist = self._durations[route] = _Histogram(DURATION_BUCKETS)
            hist.observe(max(seconds, 0.0))

    def embedded(self, inputs: int, tokens: int) -> None:
        with self._lock:
            self.inputs += int(inputs)
            self.tokens += int(tokens)

    def batch(self, rows: int, tokens: int) -> None:
        with self._lock:
            self._batch_size.observe(rows)
            self._batch_tokens.observe(tokens)

    def render(self) -> str:
        """The exposition text (every family with HELP and TYPE, one sample per line)."""
        p = PREFIX
        with self._lock:
            out = [
                f"# HELP {p}requests_total Requests answered, by route and HTTP status.",
                f"# TYPE {p}requests_total counter",
            ]
            for (route, status), n in sorted(self._requests.items()):
                out.append(
                    f"{p}requests_total{_labels([('route', route), ('status', str(status))])} {n}"
                )
            out += [
                f"# HELP {p}request_duration_seconds Time from request to response.",
                f"# TYPE {p}request_duration_seconds histogram",
            ]
            for route, hist in sorted(self._durations.items()):
                out += hist.lines(f"{p}request_duration_seconds", [("route", route)])
            out += [
                f"# HELP {p}embedded_inputs_total Texts embedded (search queries included).",
                f"# TYPE {p}embedded_inputs_total counter",
                f"{p}embedded_inputs_total {self.inputs}",
                f"# HELP {p}embedded_tokens_total Tokens of the texts embedded.",
                f"# TYPE {p}embedded_tokens_total counter",
                f"{p}embedded_tokens_total {self.tokens}",
                f"# HELP {p}batch_size Rows per model call of the micro-batcher.",
                f"# TYPE {p}batch_size histogram",
                *self._batch_size.lines(f"{p}batch_size", []),
                f"# HELP {p}batch_tokens Tokens (instructions included) per model call.",
                f"# TYPE {p}batch_tokens histogram",
                *self._batch_tokens.lines(f"{p}batch_tokens", []),
            ]
        queue = self._queue_size() if self._queue_size is not None else 0
        out += [
            f"# HELP {p}queue_size Jobs waiting for or inside the model.",
            f"# TYPE {p}queue_size gauge",
            f"{p}queue_size {queue}",
        ]
        return "\n".join(out) + "\n"
