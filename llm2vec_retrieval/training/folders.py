"""Write a whole output folder or nothing: build it beside the target, then swap it in."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from .._io import atomic_write_json, current_umask, staged_dir


@contextlib.contextmanager
def staged_folder(output: Path) -> Iterator[Path]:
    """Yield an empty sibling folder of `output`; on success it replaces `output`
    (`llm2vec_retrieval._io.staged_dir`: fsynced, swapped in through a backup).

    A crash or an exception inside the block leaves `output` as it was.
    """
    with staged_dir(output) as tmp:
        yield tmp
        # files copied in keep their source's mode; a model folder is for everyone
        _default_permissions(tmp)


def _default_permissions(folder: Path) -> None:
    umask = current_umask()
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def patch_json(path: Path, updates: dict) -> None:
    """Set `updates` in the JSON object stored at `path` (rewritten atomically, sorted keys)."""
    data = json.loads(path.read_text())
    data.update(updates)
    atomic_write_json(path, data, sort_keys=True)
