"""The command line in a child process, paused after each commit: how the kill tests reach
the moment right after an ``index`` commit or a recorded ``encode-corpus`` shard (the
product has no hook for it).

    python tests/hooked_cli.py index-commit SECONDS index SOURCE --index DIR ...
    python tests/hooked_cli.py shard-commit SECONDS encode-corpus SOURCE --output DIR ...

After each commit that wrote something it prints ``llm2vec-index-commit: N files, M chunks``
(after each shard the driver records: ``llm2vec-shard-commit: NAME``) to stderr, then
sleeps SECONDS; the rest of the arguments go to ``llm2vec_retrieval.cli.main``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _announce(line: str, seconds: float) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
    time.sleep(seconds)


def pause_after_index_commits(seconds: float) -> None:
    from llm2vec_retrieval.ingest.committer import Committer

    commit = Committer.commit

    def hooked(self: Committer, final: bool = False) -> None:
        before = self.report.commits
        commit(self, final)
        if self.report.commits > before:
            line = f"llm2vec-index-commit: {len(self.state)} files, {len(self.store)} chunks"
            _announce(line, seconds)

    Committer.commit = hooked  # type: ignore[method-assign]


def pause_after_shard_commits(seconds: float) -> None:
    from llm2vec_retrieval.shards import ShardWriter

    commit = ShardWriter.commit

    def hooked(self: ShardWriter, name: str, *args, **kwargs) -> None:
        commit(self, name, *args, **kwargs)
        _announce(f"llm2vec-shard-commit: {name}", seconds)

    ShardWriter.commit = hooked  # type: ignore[method-assign]


HOOKS = {"index-commit": pause_after_index_commits, "shard-commit": pause_after_shard_commits}


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # this checkout's package, as `python -m` from ROOT
    hook, seconds, *cli_args = sys.argv[1:]
    HOOKS[hook](float(seconds))
    from llm2vec_retrieval.cli import main

    raise SystemExit(main(cli_args))
