"""`cache info` and `cache clear`: what the model cache holds, and freeing it.

The cache (`cachedir.cache_dir()`: $LLM2VEC_RETRIEVAL_CACHE, else
$XDG_CACHE_HOME/llm2vec_retrieval, else ~/.cache/llm2vec_retrieval) holds what the model
loader writes: `models/NAME` (an embedded or local GGUF model dequantized to safetensors),
`merged/ADAPTER-DTYPE-KEY` (the shipped adapter merged into its base, one per compute
dtype) and `digests.json` (content digests of model folders). Each of these is an entry;
another name starting with "." under `models/` or `merged/` is the leftover of an
interrupted write (`partial`), also an entry. The empty `.NAME.lock` files beside them are
not entries: they are never removed, since a process may hold one. Anything else at the top of the folder was not written
by the loader (a benchmark's cache, or files of a folder that is not a cache at all): it is
listed as `other`, and `cache clear` removes it only when it is named.

Everything in it is rebuilt on demand: a cleared entry costs the next load a dequantization
or a merge (seconds to minutes), nothing else. Not here: clearing while another process
writes the cache is not guarded (that process re-merges at its next load).
"""

from __future__ import annotations

import argparse
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import UserError
from .common import Formatter, Subparsers, eprint, print_json, wrap

#: The loader's folders of entries, and its files, at the top of the cache.
ENTRY_FOLDERS = {"models": "model", "merged": "merged"}
LOADER_FILES = {"digests.json": "digests"}


@dataclass(frozen=True)
class CacheEntry:
    """One thing in the cache: `name` relative to the cache root (POSIX), what `kind` it is
    (model, merged, digests, partial: an interrupted write, other: not the loader's), its size in bytes (symlinks are not followed), and a `detail` from its marker
    file when it has one (the dtype of a merge, the package of a model)."""

    name: str
    kind: str
    bytes: int
    detail: str | None = None


def tree_size(path: Path) -> int:
    """Bytes of the files under `path` (lstat: a symlink counts as itself)."""
    if path.is_symlink() or not path.is_dir():
        return path.lstat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):  # does not follow symlinked folders
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:  # removed meanwhile
                pass
    return total


def _detail(path: Path, kind: str) -> str | None:
    import json

    marker = {"merged": "merged.json", "model": ".complete"}.get(kind)
    if marker is None or path.is_symlink() or not (path / marker).is_file():
        return None
    try:
        info = json.loads((path / marker).read_text() or "{}")
    except (OSError, ValueError):
        return None
    if kind == "merged":
        return str(info.get("dtype", "")).removeprefix("torch.") or None
    return info.get("source") or info.get("hub_id")


def cache_entries(root: Path) -> list[CacheEntry]:
    """Every entry of the cache at `root` (empty when it does not exist), sorted by name."""
    if not root.is_dir():
        return []
    out = []
    for top in sorted(root.iterdir()):
        if top.name in ENTRY_FOLDERS and top.is_dir() and not top.is_symlink():
            for item in sorted(top.iterdir()):
                if item.name.startswith(".") and item.name.endswith(".lock"):
                    continue  # the lock of an entry: kept (see the module docstring)
                kind = "partial" if item.name.startswith(".") else ENTRY_FOLDERS[top.name]
                name = f"{top.name}/{item.name}"
                out.append(CacheEntry(name, kind, tree_size(item), _detail(item, kind)))
        else:
            out.append(CacheEntry(top.name, LOADER_FILES.get(top.name, "other"), tree_size(top)))
    return out


def entry_of(root: Path, name: str) -> CacheEntry:
    """The entry `name` names: as `cache info` lists it (`merged/...`) or a path to it.
    One-line errors for a path outside the cache or inside an entry, or no such entry."""
    root = root.resolve()
    given = Path(name).expanduser()
    candidates = [given] if given.is_absolute() else [root / given, Path.cwd() / given]
    for path in candidates:
        if not (path.exists() or path.is_symlink()):
            continue
        # resolve the folder it lies in, not the entry itself: a symlinked entry is removed
        # as a link, and `..` cannot lead out of the cache
        real = path.parent.resolve() / path.name
        if root != real and root not in real.parents:
            raise UserError(
                f"{name} is outside the cache {root}; cache clear removes only what is in it "
                "(`llm2vec-retrieval cache info` lists the entries)"
            )
        rel = real.relative_to(root).as_posix()
        for entry in cache_entries(root):
            if entry.name == rel:
                return entry
        raise UserError(
            f"{name} is not an entry of the cache {root} (a part of one, or the cache itself); "
            "name an entry as `llm2vec-retrieval cache info` lists it, or give no name to clear all"
        )
    raise UserError(
        f"no entry {name} in the cache {root}; `llm2vec-retrieval cache info` lists the entries"
    )


def remove_entry(root: Path, entry: CacheEntry) -> None:
    path = root / entry.name
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path)


def register(sub: Subparsers) -> None:
    from ..cachedir import CACHE_ENV

    cache = sub.add_parser(
        "cache",
        help="list or clear the model cache (dequantized and merged models)",
        description=wrap(
            "The model cache holds the dequantized GGUF models and the default adapter merged "
            f"into its base, once per compute dtype (${CACHE_ENV}, else "
            "$XDG_CACHE_HOME/llm2vec_retrieval, else ~/.cache/llm2vec_retrieval). "
            "Everything in it is rebuilt on demand."
        ),
    )
    cache_sub = cache.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    info = cache_sub.add_parser(
        "info",
        formatter_class=Formatter,
        help="list the entries of the cache, their sizes and the total",
        description=wrap("List every entry of the model cache with its size, and the total."),
        epilog="example: llm2vec-retrieval cache info --json",
    )
    info.add_argument("--json", action="store_true", help="print JSON (docs/cli.md#cache)")
    info.set_defaults(func=run_info)
    clear = cache_sub.add_parser(
        "clear",
        formatter_class=Formatter,
        help="remove the cache's entries (or one) and say what was freed",
        description=wrap(
            "Remove every entry the model loader wrote (models/, merged/, digests.json), or "
            "only ENTRY, and print what was freed. Asks nothing. Anything else in the cache "
            "folder is kept unless named. A path outside the cache is refused."
        ),
        epilog="examples:\n  llm2vec-retrieval cache clear\n"
        "  llm2vec-retrieval cache clear merged/gemma3-270m-llm2vec-float32-0123abcd",
    )
    clear.add_argument(
        "entry", nargs="?", metavar="ENTRY", help="one entry, as `cache info` lists it, or its path"
    )
    clear.add_argument("--json", action="store_true", help="print JSON (docs/cli.md#cache)")
    clear.set_defaults(func=run_clear)


def run_info(args: argparse.Namespace) -> int:
    from ..cachedir import cache_dir
    from .info import format_bytes

    root = cache_dir()
    entries = cache_entries(root)
    total = sum(e.bytes for e in entries)
    if args.json:
        print_json(
            {
                "cache": str(root),
                "exists": root.is_dir(),
                "entries": [asdict(e) for e in entries],
                "total_bytes": total,
            }
        )
        return 0
    if not entries:
        print(f"cache {root}: empty" + ("" if root.is_dir() else " (not created yet)"))
        return 0
    print(f"cache {root}:")
    width = max(len(e.name) for e in entries)
    for e in entries:
        detail = f" {e.detail}" if e.detail else ""
        print(f"  {e.name:<{width}}  {format_bytes(e.bytes):>10}  {e.kind}{detail}")
    print(
        f"total {format_bytes(total)} in {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}"
    )
    return 0


def run_clear(args: argparse.Namespace) -> int:
    from ..cachedir import cache_dir
    from .info import format_bytes

    root = cache_dir()
    if args.entry is not None:
        targets, kept = [entry_of(root, args.entry)], []
    else:
        entries = cache_entries(root)
        targets = [e for e in entries if e.kind != "other"]
        kept = [e for e in entries if e.kind == "other"]
    for entry in targets:
        try:
            remove_entry(root, entry)
        except OSError as exc:
            raise UserError(f"could not remove {root / entry.name}: {exc}") from exc
    if args.entry is None:
        for folder in ENTRY_FOLDERS:  # emptied: gone, as before the first load
            path = root / folder
            if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
                path.rmdir()
    freed = sum(e.bytes for e in targets)
    if kept:
        names = ", ".join(e.name for e in kept)
        eprint(
            f"note: kept {names}: not written by the model loader; `cache clear NAME` removes one"
        )
    if args.json:
        print_json(
            {
                "cache": str(root),
                "removed": [asdict(e) for e in targets],
                "freed_bytes": freed,
                "kept": [asdict(e) for e in kept],
            }
        )
        return 0
    for e in targets:
        print(f"removed {e.name} ({format_bytes(e.bytes)})")
    print(f"freed {format_bytes(freed)} in {root}")
    return 0
