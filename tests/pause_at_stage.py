"""Test helper: run a Python command with the save stages pausing where a test asks.

``python tests/pause_at_stage.py STAGES:SECONDS [--until FILE] -m MODULE ARGS...`` (or
``-c CODE ARGS...``) runs the command after replacing the stage functions
(``pause_stage``) of `llm2vec_retrieval.index.persistence` and
`llm2vec_retrieval.ingest.committer`, which do nothing in the library, by one that, at each
stage named in ``STAGES`` (comma-separated, or ``*``), prints ``llm2vec-save-stage:
<stage>`` to stderr and sleeps ``SECONDS`` (or until ``FILE`` exists, if sooner): a test
waits for that line, then kills the process or reads beside it.
"""

from __future__ import annotations

import os
import runpy
import sys
import time


def pausing(spec: str, until: str | None = None):
    """The stage function for ``STAGES:SECONDS`` (and ``--until FILE``)."""
    stages, _, seconds = spec.rpartition(":")
    names = set(stages.split(","))

    def pause(stage: str) -> None:
        if stages == "*" or stage in names:
            sys.stderr.write(f"llm2vec-save-stage: {stage}\n")
            sys.stderr.flush()
            deadline = time.monotonic() + float(seconds or 0)
            while time.monotonic() < deadline and not (until and os.path.exists(until)):
                time.sleep(0.05)

    return pause


def install(spec: str, until: str | None = None) -> None:
    """Make the save stages of this process pause as ``spec`` says."""
    import llm2vec_retrieval.index.persistence as persistence
    import llm2vec_retrieval.ingest.committer as committer  # it imports the function by name

    persistence.pause_stage = committer.pause_stage = pausing(spec, until)


def main() -> None:
    spec, *args = sys.argv[1:]
    until = None
    if args[0] == "--until":
        until, args = args[1], args[2:]
    how, target, *rest = args
    sys.argv = [target, *rest]
    install(spec, until)
    if how == "-m":
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    elif how == "-c":
        sys.argv[0] = "-c"
        exec(compile(target, "<string>", "exec"), {"__name__": "__main__"})
    else:
        raise SystemExit("usage: pause_at_stage.py STAGES:SECONDS (-m MODULE | -c CODE) ARGS...")


if __name__ == "__main__":
    main()
