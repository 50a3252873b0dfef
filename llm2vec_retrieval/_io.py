"""File I/O that survives a crash, in one place: atomic writes, a staged directory swap,
sha256 of files, an inter-process lock, the one JSON reader; and row-wise L2 normalization.

Atomic write (`atomic_open`, `atomic_write_bytes`/`_text`/`_json`): the bytes go to a
unique temporary file in the target's directory (``tempfile``, so two processes never
share one), which is fsynced, given the mode a plain new file gets (0666 less the umask;
``mkstemp`` makes it 0600) and renamed over the target; then the directory is fsynced so
that the rename survives a power cut too. A reader sees the old file or the new one,
never a part of one.

Staged directory swap (`staged_dir`): a whole directory is written in a sibling
``.<name>.tmp-<pid>-<rand>``, fsynced (files and directories), then swapped in by two
renames through a backup ``.<name>.bak``. A process that dies between the two renames
leaves only the backup: readers find it with `locate_dir` and read it in place; only
the next writer moves it back (`restore_backup`). Temporary directories of dead
processes are removed by the next swap. Two writers swapping one path at the same time
are not supported: hold a `file_lock`.

JSON reader (`read_json`, `parse_json`): any malformed input, JSON nested deeper than the
parser goes included (Python raises RecursionError there), is one `JSONReadError` whose
``reason`` is a few words for a one-line message (``nested too deeply``, ``not a JSON
object``, ``UnicodeDecodeError``, ...).

Not here: what a file means or what to do when one is corrupt (the callers decide).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

BLOCK = 1 << 20  # read size when hashing


# ----------------------------------------------------------------- modes and fsync
def current_umask() -> int:
    """The process umask, read without changing it where the system allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no other way to read it: set and restore at once
    os.umask(mask)
    return mask


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a written file's data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a directory's entries (renames, new files); a no-op where directories cannot
    be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(root: str | os.PathLike[str]) -> None:
    """fsync every regular file and directory under `root` (symlinks are not followed)."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            p = os.path.join(dirpath, name)
            if os.path.isfile(p) and not os.path.islink(p):
                fsync_file(p)
        fsync_dir(dirpath)


# ----------------------------------------------------------------- atomic files
@contextlib.contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """A binary file to write; on a clean exit of the block it atomically replaces `path`
    (see the module docstring). An exception in the block leaves `path` as it was."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(
    path: str | os.PathLike,
    data: Any,
    *,
    indent: int | None = 2,
    sort_keys: bool = False,
    default: Callable[[Any], Any] | None = None,
) -> None:
    """`data` as UTF-8 JSON with a final newline. Strings with lone surrogates (e.g. a
    non-UTF-8 file name) cannot be UTF-8: then every non-ASCII character is written as a
    ``\\u`` escape, which JSON readers turn back into the same string."""
    kwargs: dict[str, Any] = {"indent": indent, "sort_keys": sort_keys, "default": default}
    try:
        payload = (json.dumps(data, ensure_ascii=False, **kwargs) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        payload = (json.dumps(data, ensure_ascii=True, **kwargs) + "\n").encode("ascii")
    atomic_write_bytes(path, payload)


# ----------------------------------------------------------------- staged directory swap
def backup_path(path: str | os.PathLike) -> Path:
    """Where `staged_dir` keeps the previous directory between its two renames."""
    path = Path(path)
    return path.with_name(f".{path.name}.bak")


def _is_backup(bak: Path, marker: str | None) -> bool:
    return bak.is_dir() and (marker is None or (bak / marker).exists())


def locate_dir(path: str | os.PathLike, marker: str | None = None) -> Path:
    """The directory a reader reads: `path`, or its backup while only that exists (a swap
    died, or is, between its renames). `marker`: a file the backup must hold. Moves nothing."""
    path = Path(path)
    bak = backup_path(path)
    if not path.exists() and _is_backup(bak, marker):
        return bak
    return path


def restore_backup(path: str | os.PathLike, marker: str | None = None) -> None:
    """For a writer: if a swap died between its renames, put the backup back at `path`."""
    path = Path(path)
    bak = backup_path(path)
    if not path.exists() and _is_backup(bak, marker):
        os.rename(bak, path)
        fsync_dir(path.parent)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # no permission to signal it: it exists
        return True
    return True


def remove_stale_tmp(path: str | os.PathLike) -> None:
    """Remove the temporary directories `staged_dir` left for `path` in dead processes."""
    path = Path(path)
    prefix = f".{path.name}.tmp-"
    for p in path.parent.glob(f"{prefix}*"):
        pid_s = p.name[len(prefix) :].split("-", 1)[0]
        if pid_s.isdigit() and not _pid_alive(int(pid_s)):
            shutil.rmtree(p, ignore_errors=True)


@contextlib.contextmanager
def staged_dir(
    path: str | os.PathLike,
    *,
    marker: str | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> Iterator[Path]:
    """Yield an empty sibling directory of `path`; on a clean exit of the block it replaces
    `path` (see the module docstring). An exception in the block leaves `path` as it was.

    `marker`: a file every complete version holds (a backup without it is not one).
    `on_stage(name)` is called at ``before_swap``, ``backed_up`` and ``swapped`` (a test
    hook: kill the process there).
    """
    path = Path(path).absolute()
    stage = on_stage or (lambda name: None)
    path.parent.mkdir(parents=True, exist_ok=True)
    restore_backup(path, marker)
    remove_stale_tmp(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    bak = backup_path(path)
    tmp.mkdir()  # a plain mkdir: the umask decides its mode, as for any new directory
    try:
        yield tmp
        fsync_tree(tmp)
        stage("before_swap")
        if path.exists():
            if bak.exists():  # leftover of a swap that died after its second rename
                shutil.rmtree(bak)
            os.rename(path, bak)
            fsync_dir(path.parent)
            stage("backed_up")
        os.rename(tmp, path)
        fsync_dir(path.parent)
        stage("swapped")
    except BaseException:
        if not path.exists() and bak.exists():
            os.rename(bak, path)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(bak, ignore_errors=True)


# ----------------------------------------------------------------- hashing
def sha256_and_size(path: str | os.PathLike) -> tuple[str, int]:
    """(hex sha256, size) of a file read in blocks: both of the same bytes, even when the
    file changes meanwhile."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in blocks."""
    return sha256_and_size(path)[0]


# ----------------------------------------------------------------- JSON
class JSONReadError(ValueError):
    """Bytes or a file that are not the JSON asked for; ``reason`` says why in a few words."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def parse_json(data: bytes | str, *, want_object: bool = False) -> Any:
    """The JSON value in ``data`` (UTF-8 bytes or text); with ``want_object`` a dict.
    `JSONReadError` for anything else, also for JSON nested too deeply to parse."""
    try:
        value = json.loads(data.decode("utf-8") if isinstance(data, bytes) else data)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else type(exc).__name__
        raise JSONReadError(reason) from None
    if want_object and not isinstance(value, dict):
        raise JSONReadError("not a JSON object")
    return value


def read_json(path: str | os.PathLike, *, want_object: bool = False) -> Any:
    """`parse_json` of a file's bytes (OSError as ``open`` raises it)."""
    return parse_json(Path(path).read_bytes(), want_object=want_object)


# ----------------------------------------------------------------- lock
class LockedError(OSError):
    """Another process (or another lock object in this one) holds the lock."""


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on the file `path` (created if missing, left in place) for the
    block, or raise `LockedError` at once when it is held. ``filelock``: flock on POSIX,
    the Windows lock there. The lock goes with the process, so a killed holder frees it."""
    from filelock import FileLock, Timeout

    # an explicit mode: filelock 3.x would otherwise give 0644 whatever the umask
    mode = 0o666 & ~current_umask()
    lock = FileLock(os.fspath(path), timeout=0, mode=mode, thread_local=False)
    try:
        lock.acquire()
    except Timeout:
        raise LockedError(f"{path} is locked by another process") from None
    try:
        yield
    finally:
        lock.release()


# ----------------------------------------------------------------- vectors
def l2_normalize(x: Any) -> np.ndarray:
    """Rows (the last axis) of `x` scaled to unit L2 norm; zero rows stay zero. A new
    array; float input keeps its dtype, anything else becomes float32."""
    a = np.asarray(x)
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float32)
    norms = np.linalg.norm(a, axis=-1, keepdims=True)
    return a / np.where(norms > 0, norms, 1).astype(a.dtype)
