"""Write a whole output folder or nothing: build it beside the target, then swap it in."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def staged_folder(output: Path) -> Iterator[Path]:
    """Yield an empty sibling folder of `output`; on success it replaces `output` by a rename.

    A crash or an exception inside the block deletes the sibling and leaves `output` as it was.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
    try:
        yield tmp
        _default_permissions(tmp)  # mkdtemp makes it owner-only; a model folder is for everyone
        if output.exists():
            shutil.rmtree(output)
        os.replace(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _default_permissions(folder: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def patch_json(path: Path, updates: dict) -> None:
    """Set `updates` in the JSON object stored at `path` (rewritten with sorted keys)."""
    data = json.loads(path.read_text())
    data.update(updates)
    path.write_text(json.dumps(data, indent=2, sort_keys=True))
