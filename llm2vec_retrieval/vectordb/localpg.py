"""A throwaway PostgreSQL server for tests and benchmarks: ``initdb`` in a temporary folder,
``pg_ctl start`` on a unix socket (no TCP), stopped and removed on exit.

It uses the newest server under ``/usr/lib/postgresql`` (Debian's layout); as root it runs
the server as the ``postgres`` user (``initdb`` refuses root). `UserError` when PostgreSQL
or its pgvector extension is not installed (``bash tests/setup/install_pgvector.sh``, as
root on Debian, installs both).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import UserError

INSTALL_HINT = "run `bash tests/setup/install_pgvector.sh` as root (make test does it)"


def server_bindir() -> Path:
    """The bin folder of the newest installed server that has pgvector."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: [int(x) for x in p.parent.parent.name.split(".") if x.isdigit()],
    )
    if not versions:
        raise UserError(f"PostgreSQL is not installed: {INSTALL_HINT}")
    bindir = versions[-1].parent
    version = bindir.parent.name
    if not Path(f"/usr/share/postgresql/{version}/extension/vector.control").is_file():
        raise UserError(f"pgvector is not installed for PostgreSQL {version}: {INSTALL_HINT}")
    return bindir


@contextlib.contextmanager
def temporary_postgres(port: int | None = None, fsync: bool = False) -> Iterator[str]:
    """Start a server; yields its URL (database ``postgres``, trust authentication).
    ``fsync=False`` (tests) skips flushing to disk; benchmarks keep it on."""
    bindir = server_bindir()
    # not under a per-user private tmp dir: as root the server runs as postgres, which
    # must reach its data folder and socket
    base = Path(tempfile.mkdtemp(prefix="l2v-pg-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    as_user: list[str] = []
    user = os.environ.get("USER") or "postgres"
    if os.geteuid() == 0:
        as_user, user = ["runuser", "-u", "postgres", "--"], "postgres"
        shutil.chown(base, "postgres")
        shutil.chown(sock, "postgres")
    port = port or 20000 + os.getpid() % 20000

    def run(*cmd: str) -> None:
        subprocess.run([*as_user, *cmd], check=True, capture_output=True, timeout=120)

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8")
        opts = f"-k {sock} -p {port} -c listen_addresses='' -c fsync={'on' if fsync else 'off'}"
        log = str(base / "server.log")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-w", "-l", log, "start")
        try:
            yield f"postgresql://{user}@/postgres?host={sock}&port={port}"
        finally:
            subprocess.run(
                [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                capture_output=True,
                timeout=60,
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)
