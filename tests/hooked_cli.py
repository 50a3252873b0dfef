"""Test helper: the command line in a child process, paused where a test asks (the product
has no hook for it): how the kill tests reach a save stage, the moment right after an
``index`` commit, or right after a recorded ``encode-corpus`` shard.

    python tests/hooked_cli.py stage STAGES:SECONDS [--until FILE] index SOURCE --index DIR ...
    python tests/hooked_cli.py index-commit SECONDS index SOURCE --index DIR ...
    python tests/hooked_cli.py shard-commit SECONDS encode-corpus SOURCE --output DIR ...

``stage``: the stage functions (``pause_stage``) of `llm2vec_retrieval.index.persistence`
and `llm2vec_retrieval.ingest.committer`, which do nothing in the library, are replaced by
one that, at each stage named in ``STAGES`` (comma-separated, or ``*``), prints
``llm2vec-save-stage: <stage>``. ``index-commit``: after each commit that wrote something,
``llm2vec-index-commit: N files, M chunks``. ``shard-commit``: after each shard the driver
records, ``llm2vec-shard-commit: NAME``. The line goes to stderr, then the process sleeps
SECONDS (or until FILE exists, if sooner): a test waits for the line, then kills the
process or reads beside it. The rest of the arguments go to ``llm2vec_retrieval.cli.main``.

In a process of its own making, a test installs a hook directly (``pause_at_stages(spec)``).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def index_command(
    pause: str | None = None, pause_after_commit: float | None = None, until: Path | None = None
) -> list[str]:
    """The command line that runs ``index`` (append its arguments): through this wrapper
    when a test asks for a pause (``pause``: ``STAGES:SECONDS``; ``pause_after_commit``:
    seconds after each commit; ``until``: a file that ends a pause), else the plain CLI."""
    hooked = [sys.executable, str(Path(__file__).resolve())]
    if pause_after_commit is not None:
        head = [*hooked, "index-commit", str(pause_after_commit)]
    elif pause is not None:
        head = [*hooked, "stage", pause]
    else:
        head = [sys.executable, "-m", "llm2vec_retrieval"]
    if until is not None:
        head += ["--until", str(until)]
    return [*head, "index"]


def _announce(line: str, seconds: float, until: str | None = None) -> None:
    """Print ``line`` to stderr, then sleep ``seconds`` (less when ``until`` appears)."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not (until and os.path.exists(until)):
        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))


def pause_at_stages(spec: str, until: str | None = None) -> None:
    """Pause this process's save stages as ``STAGES:SECONDS`` says."""
    import llm2vec_retrieval.index.persistence as persistence
    import llm2vec_retrieval.ingest.committer as committer  # it imports the function by name

    stages, _, seconds = spec.rpartition(":")
    names = set(stages.split(","))

    def pause(stage: str) -> None:
        if stages == "*" or stage in names:
            _announce(f"llm2vec-save-stage: {stage}", float(seconds or 0), until)

    persistence.pause_stage = committer.pause_stage = pause


def pause_after_index_commits(seconds: str, until: str | None = None) -> None:
    from llm2vec_retrieval.ingest.committer import Committer

    commit = Committer.commit

    def hooked(self: Committer, final: bool = False) -> None:
        before = self.report.commits
        commit(self, final)
        if self.report.commits > before:
            line = f"llm2vec-index-commit: {len(self.state)} files, {len(self.store)} chunks"
            _announce(line, float(seconds), until)

    Committer.commit = hooked  # type: ignore[method-assign]


def pause_after_shard_commits(seconds: str, until: str | None = None) -> None:
    from llm2vec_retrieval.shards import ShardWriter

    commit = ShardWriter.commit

    def hooked(self: ShardWriter, name: str, *args, **kwargs) -> None:
        commit(self, name, *args, **kwargs)
        _announce(f"llm2vec-shard-commit: {name}", float(seconds), until)

    ShardWriter.commit = hooked  # type: ignore[method-assign]


HOOKS = {
    "stage": pause_at_stages,
    "index-commit": pause_after_index_commits,
    "shard-commit": pause_after_shard_commits,
}


def main(argv: list[str]) -> int:
    hook, value, *cli_args = argv
    until = None
    if cli_args[:1] == ["--until"]:
        until, cli_args = cli_args[1], cli_args[2:]
    HOOKS[hook](value, until)
    from llm2vec_retrieval.cli import main as cli_main

    return cli_main(cli_args)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # this checkout's package, as `python -m` from ROOT
    raise SystemExit(main(sys.argv[1:]))
