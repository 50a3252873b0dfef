"""The merged-adapter cache: a shipped adapter merged into its base once per dtype and kept
as safetensors, so that `search` and `serve` start without peft and without merging.

The cache key is the content digests of both folders (`fingerprint.folder_digest`), the
dtype and the library versions, so a retrained adapter or another base makes a new entry.
Entries are staged and swapped in atomically (`_io.staged_dir`) under a file lock.

Not here: where the adapter and the base come from (`sources`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
from pathlib import Path

from ._io import LockedError, atomic_write_json, file_lock, locate_dir, staged_dir
from .cachedir import cache_dir
from .fingerprint import folder_digest
from .sources import SHIPPED_ADAPTERS, apply_adapter, quiet_transformers

logger = logging.getLogger(__name__)

MERGED_FORMAT = 1  # bump when the cached merged folder layout changes
MERGED_MARKER = "merged.json"
# from_pretrained keyword arguments a cached merge can be loaded with: none changes the weights
_MERGE_CACHE_KWARGS = frozenset({"dtype", "attn_implementation"})


def caches_merge(adapter_folder: str | os.PathLike) -> bool:
    """Whether `load_merged` keeps the merge of this adapter folder on disk: the shipped
    adapters only (a user's adapter folders would each add a full model copy to the cache)."""
    folder = Path(adapter_folder).resolve()
    root = Path(__file__).resolve().parent / "adapters"
    return folder.parent == root and folder.name in SHIPPED_ADAPTERS


def merged_cache_key(adapter_folder: str, base_folder: str, dtype) -> str | None:
    """What a cached merge of `adapter_folder` into `base_folder` in `dtype` is stored under
    (24 hex characters), or None when a folder has no digest. Full-content digests of both
    folders (see `folder_digest`), the dtype and the versions of the libraries that merge
    and save."""
    adapter = folder_digest(adapter_folder, ("adapter_model.*", "adapter_config.json"))
    base = folder_digest(base_folder)
    if adapter is None or base is None:
        return None
    versions = []
    for dist in ("torch", "transformers", "peft", "safetensors"):
        try:
            versions.append(importlib.metadata.version(dist))
        except importlib.metadata.PackageNotFoundError:
            versions.append("-")
    text = json.dumps([MERGED_FORMAT, adapter, base, str(dtype), versions])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def merged_dir(adapter_folder: str, key: str, dtype) -> Path:
    """The cache folder of one merged model (see `load_merged`)."""
    dtype_name = str(dtype).removeprefix("torch.")
    return cache_dir() / "merged" / f"{Path(adapter_folder).name}-{dtype_name}-{key}"


def load_merged(adapter_folder: str, base_folder: str, hf_kwargs: dict, cache: bool | None = None):
    """The transformers `AutoModel` of `base_folder` with the PEFT adapter in `adapter_folder`
    merged into its weights.

    With `cache` (default: `caches_merge(adapter_folder)`) the merged weights are read from
    `merged_dir`, or merged once and saved there (safetensors, a JSON marker; staged and
    swapped in atomically; older merges of the same adapter and dtype are removed). The
    merge is cached per dtype, so the weights are bit for bit those of an uncached load in
    that dtype. Loads with other keyword arguments than dtype and attn_implementation
    (device_map, quantization ...) or an "auto" dtype merge in memory as before.
    """
    from transformers import AutoModel

    dtype = hf_kwargs.get("dtype")
    if cache is None:
        cache = caches_merge(adapter_folder)
    cache = (
        cache
        and set(hf_kwargs) <= _MERGE_CACHE_KWARGS
        and dtype is not None
        and not isinstance(dtype, str)
    )
    key = merged_cache_key(adapter_folder, base_folder, dtype) if cache else None
    if key is None:
        return apply_adapter(AutoModel.from_pretrained(base_folder, **hf_kwargs), adapter_folder)
    target = merged_dir(adapter_folder, key, dtype)
    found = locate_dir(target, MERGED_MARKER)
    if (found / MERGED_MARKER).is_file():
        try:
            info = json.loads((found / MERGED_MARKER).read_text())
            with quiet_transformers():
                model = AutoModel.from_pretrained(found, **hf_kwargs)
            model.config._name_or_path = info["name_or_path"]
            return model.requires_grad_(False)  # as peft leaves a merged model: frozen
        except Exception as exc:  # any unreadable entry (safetensors' own error too): merge again
            logger.warning("cached merged model %s unreadable (%s); merging again", found, exc)
    logger.warning(
        "Merging %s into its base once for %s (first use only; cached in %s)",
        Path(adapter_folder).name,
        dtype,
        target.parent,
    )
    with quiet_transformers():
        model = apply_adapter(AutoModel.from_pretrained(base_folder, **hf_kwargs), adapter_folder)
    _save_merged(model, target, adapter_folder, base_folder, dtype)
    return model


def _save_merged(model, target: Path, adapter_folder: str, base_folder: str, dtype) -> None:
    """Write `model` (just merged) to `target`; another process writing it meanwhile, or a
    cache folder that cannot be written, only costs the next load a merge."""
    info = {
        "format": MERGED_FORMAT,
        "adapter": os.path.abspath(adapter_folder),
        "base": os.path.abspath(base_folder),
        "dtype": str(dtype),
        "name_or_path": model.config._name_or_path,
    }
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(target.parent / f".{target.name}.lock"):
            with staged_dir(target, marker=MERGED_MARKER) as tmp:
                with quiet_transformers():
                    model.save_pretrained(tmp)
                atomic_write_json(tmp / MERGED_MARKER, info)
            model.config._name_or_path = info["name_or_path"]  # save_pretrained may rename
        prefix = target.name[: -len(target.name.rsplit("-", 1)[1])]
        for old in target.parent.glob(f"{prefix}*"):  # superseded merges of this adapter
            if old.is_dir() and old.name != target.name and not old.name.startswith("."):
                shutil.rmtree(old, ignore_errors=True)
    except LockedError:
        logger.info("%s is being written by another process; not cached here", target)
    except OSError as exc:
        logger.warning("merged model not cached in %s: %s", target, exc)
