"""A warm query encoder for `search` (issue 26.5): the model stays loaded between searches.

A `search` process that loads the model pays for importing torch and transformers and for
loading the weights (seconds) before it encodes one query. Here the first dense or hybrid
`search` starts a helper process that loads the index's model once, and every later `search`
with the same model and dtype asks it for the query vector over a Unix socket, so it imports
neither torch nor transformers. The searching process still opens the index itself, at every
search: the helper holds a model, never an index, so it cannot answer from a stale one.

- **Which helper**: one per (model, adapter, their folders' modification times, dtype,
  threads, package version): `helper_key`. Its socket, lock and log are
  ``warm-<key>.{sock,lock,log}`` in ``$XDG_RUNTIME_DIR/llm2vec_retrieval`` (else
  ``<cache>/run``; a folder only the user may enter, 0700; the socket is 0600). Before use
  the client checks the helper's key and dtype (`WarmEncoder`), and `Searcher` checks its
  fingerprint against the index's, as for a model loaded here.
- **Lifetime**: the helper exits after ``$LLM2VEC_RETRIEVAL_WARM_IDLE`` seconds without a
  request (default `DEFAULT_IDLE_S`), on SIGTERM/SIGINT, or when asked (`WarmEncoder.stop`);
  it removes its socket. One helper per key: it holds ``warm-<key>.lock`` (flock) while it
  lives, so a second one started at the same time exits at once.
- **Off**: ``search --no-warm``, or ``LLM2VEC_RETRIEVAL_WARM=0`` (also ``off``, ``false``,
  ``no``).
- **Failures**: a helper that cannot start, died, or answers nonsense raises
  `ServerUnavailableError` (one line); `search` then loads the model itself after a note.

Protocol (private to this module): a frame is a 4-byte big-endian length and a JSON object;
``{"op": "hello"}`` -> the helper's key, pid, dtype, fingerprint; ``{"op": "encode",
"queries": [...], "instruction": str | null, "normalize": bool | null}`` -> float32 vectors
in base64; ``{"op": "stop"}``.

Not here: which searches use the helper (`cli/search.py`) and the HTTP server
(`server/`), which serves many clients and an index; this helper serves one user's shell.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import hashlib
import json
import os
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .client import RemoteConfig, ServerUnavailableError

WARM_ENV = "LLM2VEC_RETRIEVAL_WARM"
IDLE_ENV = "LLM2VEC_RETRIEVAL_WARM_IDLE"
DEFAULT_IDLE_S = 600.0  # ten minutes without a search, then the helper exits
START_WAIT_S = 600.0  # the longest a first search waits for a starting helper (cold caches)
CALL_TIMEOUT_S = 30.0
PROTOCOL = 1
MAX_FRAME = 64 << 20
OFF_VALUES = ("0", "off", "false", "no")
EXIT_ANOTHER = 3  # the helper found another one holding its lock


class HelperGoneError(ServerUnavailableError):
    """Nothing listens on the helper's socket (it exited, or was killed and left it)."""


def enabled(no_warm: bool = False) -> bool:
    """Whether searches use a warm helper: not with ``--no-warm`` or ``$LLM2VEC_RETRIEVAL_WARM``
    set to 0/off/false/no."""
    return not no_warm and os.environ.get(WARM_ENV, "").strip().lower() not in OFF_VALUES


def idle_seconds() -> float:
    """The helper's idle timeout: ``$LLM2VEC_RETRIEVAL_WARM_IDLE`` (seconds, > 0), else
    `DEFAULT_IDLE_S`; a value that is not a positive number is a one-line error."""
    from .errors import UserError

    raw = os.environ.get(IDLE_ENV, "").strip()
    if not raw:
        return DEFAULT_IDLE_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise UserError(f"${IDLE_ENV} must be a number of seconds above 0, got {raw!r}")
    return value


def runtime_dir() -> Path:
    """The folder of the helpers' sockets, made 0700 if missing; one that others may enter
    or that another user owns is refused (OSError)."""
    from .cachedir import cache_dir

    xdg = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(xdg) / "llm2vec_retrieval" if xdg and os.path.isdir(xdg) else cache_dir() / "run"
    if len(str(base)) > 80:  # a Unix socket path holds at most 107 bytes
        base = Path("/tmp") / f"llm2vec_retrieval-{os.getuid()}"
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = base.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise OSError(f"{base} must belong to you and be closed to others (chmod 700)")
    return base


def helper_key(spec: Mapping[str, Any], dtype: str, threads: int | None = None) -> str:
    """The name of the helper for an embedder spec (`ingest.folder.embedder_spec`) in a dtype:
    a model or adapter folder changed since (its modification time) gets a new helper."""
    from . import __version__

    stamps = {}
    for key in ("model_path", "adapter_path"):
        path = spec.get(key)
        if isinstance(path, str):
            with contextlib.suppress(OSError):
                stamps[key] = os.stat(path).st_mtime_ns
    blob = json.dumps(
        [dict(spec), stamps, dtype, threads, __version__, sys.executable], sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _paths(key: str) -> tuple[Path, Path, Path]:
    base = runtime_dir()
    return base / f"warm-{key}.sock", base / f"warm-{key}.lock", base / f"warm-{key}.log"


# ---------------------------------------------------------------------- framing
def _send(sock: socket.socket, obj: Any) -> None:
    data = json.dumps(obj).encode()
    sock.sendall(struct.pack(">I", len(data)) + data)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise ConnectionError("the connection closed mid-answer")
        buf += chunk
    return bytes(buf)


def _recv(sock: socket.socket) -> Any:
    (n,) = struct.unpack(">I", _recv_exact(sock, 4))
    if n > MAX_FRAME:
        raise ValueError(f"a frame of {n} bytes")
    return json.loads(_recv_exact(sock, n))


# ---------------------------------------------------------------------- client
class WarmEncoder:
    """A running helper's encoder, with the part of `LLM2Vec`'s interface `Searcher` uses
    (``fingerprint()``, ``config``, ``embedding_dim``, ``encode_queries``). Made by
    `connect`; ServerUnavailableError (one line) whenever the helper fails."""

    def __init__(self, path: Path, key: str, dtype: str, timeout: float = CALL_TIMEOUT_S):
        self.path, self.key, self.timeout = path, key, timeout
        hello = self._call({"op": "hello"})
        problem = None
        if not isinstance(hello, dict) or hello.get("protocol") != PROTOCOL:
            problem = "not a warm encoder of this version"
        elif hello.get("key") != key:
            problem = f"it serves helper {str(hello.get('key'))[:20]!r}, not {key!r}"
        elif hello.get("dtype") != dtype:
            problem = f"it computes in {str(hello.get('dtype'))[:20]}, not {dtype}"
        elif not isinstance(hello.get("fingerprint"), dict) or type(hello.get("dim")) is not int:
            problem = "its hello has no fingerprint"
        if problem:
            raise self._broken(problem)
        self.pid = int(hello.get("pid") or 0)
        self.dtype = dtype
        self.idle_s = hello.get("idle_s")
        self._fingerprint = hello["fingerprint"]
        self.embedding_dim = int(hello["dim"])
        self.config = RemoteConfig(
            query_instruction=str(hello.get("query_instruction") or ""),
            normalize=bool(hello.get("normalize", True)),
        )

    def __repr__(self) -> str:
        return f"WarmEncoder({str(self.path)!r}, pid={getattr(self, 'pid', None)})"

    def _broken(self, reason: str) -> ServerUnavailableError:
        return ServerUnavailableError(f"the warm encoder at {self.path} is unusable ({reason})")

    def _call(self, request: dict[str, Any]) -> Any:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(str(self.path))
                _send(sock, request)
                answer = _recv(sock)
        except TimeoutError:
            raise self._broken(f"no answer within {self.timeout:g} s") from None
        except (FileNotFoundError, ConnectionRefusedError):
            raise HelperGoneError(f"the warm encoder at {self.path} is gone") from None
        except (OSError, ValueError, struct.error, RecursionError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise self._broken(reason) from None
        if isinstance(answer, dict) and answer.get("ok") is False:
            raise self._broken(f"it failed: {str(answer.get('error'))[:200]}")
        return answer

    def fingerprint(self) -> dict[str, Any]:
        return dict(self._fingerprint)

    def encode_queries(
        self,
        queries: list[str],
        instruction: str | None = None,
        normalize: bool | None = None,
        **_: Any,
    ) -> np.ndarray:
        """(n, dim) float32 query vectors; ``instruction`` None: the helper model's query
        instruction; ``normalize`` None: its config's."""
        queries = list(queries)
        answer = self._call(
            {"op": "encode", "queries": queries, "instruction": instruction, "normalize": normalize}
        )
        n, dim = len(queries), self.embedding_dim
        try:
            raw = base64.b64decode(answer["vectors"], validate=True)
        except (KeyError, TypeError, binascii.Error, ValueError):
            raise self._broken("an answer without base64 vectors") from None
        if len(raw) != 4 * n * dim:
            raise self._broken(f"{len(raw)} bytes for {n} vectors of {dim} float32 values")
        rows = np.frombuffer(raw, dtype="<f4").reshape(n, dim).astype(np.float32)
        if not np.isfinite(rows).all():
            raise self._broken("vectors with NaN or infinite values")
        return rows

    encode_query = encode_queries

    def stop(self) -> None:
        """Ask the helper to exit (best effort: a helper already gone is fine)."""
        with contextlib.suppress(ServerUnavailableError, OSError):
            _stop(self.path)


def _stop(path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5.0)
        sock.connect(str(path))
        _send(sock, {"op": "stop"})


def connect(
    spec: Mapping[str, Any],
    dtype: str,
    threads: int | None = None,
    start: bool = True,
    on_start: Any = None,
) -> WarmEncoder:
    """The warm encoder for ``spec`` in ``dtype``: the running helper, else (``start``) a new
    one, started in the background and waited for (it loads the model as this process would
    have). ``on_start(pid, log_path)`` is called when one is started. ServerUnavailableError
    when there is none and none starts."""
    key = helper_key(spec, dtype, threads)
    try:
        sock, lock, log = _paths(key)
    except OSError as exc:
        raise ServerUnavailableError(f"no folder for the warm encoder's socket ({exc})") from None
    if sock.exists():
        try:
            return WarmEncoder(sock, key, dtype)
        except HelperGoneError:  # killed: its socket stayed behind; a new one replaces it
            pass
        except ServerUnavailableError:
            with contextlib.suppress(ServerUnavailableError, OSError):
                _stop(sock)  # it answers nonsense: the next search starts a new one
            raise
    if not start:
        raise ServerUnavailableError(f"no warm encoder at {sock}")
    proc = _spawn(sock, lock, log, spec, dtype, threads)
    if on_start is not None:
        on_start(proc.pid, log)
    deadline = time.monotonic() + START_WAIT_S
    while time.monotonic() < deadline:
        if sock.exists():
            with contextlib.suppress(ServerUnavailableError):
                return WarmEncoder(sock, key, dtype)
        code = proc.poll()
        if code is not None and code != EXIT_ANOTHER:
            raise ServerUnavailableError(
                f"the warm encoder exited with status {code} while starting (its log: {log})"
            )
        if code == EXIT_ANOTHER and not _locked(lock):
            raise ServerUnavailableError(f"the warm encoder did not start (its log: {log})")
        time.sleep(0.05)
    raise ServerUnavailableError(f"the warm encoder did not start within {START_WAIT_S:g} s")


def _locked(lock: Path) -> bool:
    """Whether a helper holds ``lock`` (is starting or serving)."""
    import fcntl

    with open(lock, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def _spawn(
    sock: Path, lock: Path, log: Path, spec: Mapping[str, Any], dtype: str, threads: int | None
) -> subprocess.Popen:
    argv = [sys.executable, "-m", "llm2vec_retrieval.warm", "--socket", str(sock)]
    argv += ["--lock", str(lock), "--spec", json.dumps(dict(spec)), "--dtype", dtype]
    argv += ["--idle", str(idle_seconds()), "--key", sock.stem.removeprefix("warm-")]
    if threads is not None:
        argv += ["--threads", str(threads)]
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=fd,
            start_new_session=True,  # not killed by the shell's Ctrl-C aimed at `search`
            close_fds=True,
            # the folder holding this package: the helper imports the same code as its client
            cwd=str(Path(__file__).resolve().parents[1]),
        )
    finally:
        os.close(fd)


# ---------------------------------------------------------------------- helper process
class _Helper(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, encoder: Any, hello: dict[str, Any], idle_s: float):
        self.encoder, self.hello, self.idle_s = encoder, hello, idle_s
        self.last = time.monotonic()
        self.stopping = threading.Event()
        old = os.umask(0o177)  # the socket is born 0600
        try:
            super().__init__(path, _Handler)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)

    def watch(self) -> None:
        """Stops the server after ``idle_s`` without a request, or when asked to stop."""
        while not self.stopping.wait(0.2):
            if time.monotonic() - self.last > self.idle_s:
                print(f"idle for {self.idle_s:g} s: exiting", flush=True)
                break
        self.shutdown()


class _Handler(socketserver.BaseRequestHandler):
    server: _Helper

    def handle(self) -> None:
        srv = self.server
        srv.last = time.monotonic()
        try:
            self.request.settimeout(CALL_TIMEOUT_S)
            req = _recv(self.request)
            op = req.get("op") if isinstance(req, dict) else None
            if op == "hello":
                _send(self.request, {"ok": True, **srv.hello})
            elif op == "encode":
                _send(self.request, {"ok": True, "vectors": _encode(srv.encoder, req)})
            elif op == "stop":
                srv.stopping.set()  # first: the asker may close before it reads the reply
                _send(self.request, {"ok": True})
            else:
                _send(self.request, {"ok": False, "error": f"unknown op {str(op)[:40]!r}"})
        except (OSError, ValueError, struct.error) as exc:
            with contextlib.suppress(OSError):
                _send(self.request, {"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        srv.last = time.monotonic()


def _encode(encoder: Any, req: dict[str, Any]) -> str:
    queries, instruction, normalize = (
        req.get("queries"),
        req.get("instruction"),
        req.get("normalize"),
    )
    if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
        raise ValueError("'queries' must be a list of str")
    if instruction is not None and not isinstance(instruction, str):
        raise ValueError("'instruction' must be a str or null")
    if normalize is not None and not isinstance(normalize, bool):
        raise ValueError("'normalize' must be a bool or null")
    vectors = encoder.encode_queries(queries, instruction=instruction, normalize=normalize)
    return base64.b64encode(np.ascontiguousarray(vectors, dtype="<f4").tobytes()).decode("ascii")


def serve(args: argparse.Namespace) -> int:
    """The helper process: hold the lock, load the model, serve until idle or stopped."""
    import fcntl

    lock = open(args.lock, "a")  # noqa: SIM115 (held for the life of the process)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        print("another warm encoder holds the lock: exiting", flush=True)
        return EXIT_ANOTHER
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    from .hardware import compute_dtype
    from .ingest.folder import encoder_from_spec

    t0 = time.perf_counter()
    encoder = encoder_from_spec(json.loads(args.spec), args.dtype)
    encoder.encode_queries(["warm up"])  # the first call's one-time costs, before anyone waits
    hello = {
        "protocol": PROTOCOL,
        "key": args.key,
        "pid": os.getpid(),
        "dtype": compute_dtype(encoder),
        "dim": int(encoder.embedding_dim),
        "fingerprint": encoder.fingerprint(),
        "query_instruction": encoder.config.query_instruction,
        "normalize": bool(encoder.config.normalize),
        "idle_s": args.idle,
    }
    with contextlib.suppress(FileNotFoundError):
        os.unlink(args.socket)  # a helper killed before it could remove it (we hold the lock)
    server = _Helper(args.socket, encoder, hello, args.idle)
    inode = os.stat(args.socket).st_ino
    print(
        f"serving on {args.socket} (pid {os.getpid()}, loaded in {time.perf_counter() - t0:.1f} s)",
        flush=True,
    )
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: server.stopping.set())
    watcher = threading.Thread(target=server.watch, daemon=True)
    watcher.start()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        with contextlib.suppress(OSError):
            if os.stat(args.socket).st_ino == inode:  # still ours
                os.unlink(args.socket)
        print("stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m llm2vec_retrieval.warm", description=__doc__)
    p.add_argument("--socket", required=True)
    p.add_argument("--lock", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--spec", required=True, help="the embedder spec, JSON")
    p.add_argument("--dtype", required=True)
    p.add_argument("--idle", type=float, default=DEFAULT_IDLE_S)
    p.add_argument("--threads", type=int, default=None)
    return serve(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
