"""The index folder written by ``llm2vec-retrieval index``.

Layout of ``DIR/``::

    llm2vec-index.json   what built the index: embedder choice (model, adapter),
                         query instruction, chunking, index kind, root folder;
                         ``rebuild_unfinished`` while a --rebuild has not finished its
                         first commit (the next ``index`` run starts that rebuild over)
    files.json           one entry per indexed file: sha256 of its bytes, size,
                         chunk and token counts (rewritten after every commit), and
                         ``store_version``: the store version whose chunks are exactly
                         the entries' (a run that finds that version skips reading every
                         chunk's metadata; see ``ingest.plan.SourceChunks``)
    store/               the IndexStore (vectors, texts, metadata, manifest with
                         the embedder fingerprint), saved atomically
    .lock                held by a running ``index`` (one writer at a time)

Their contents are typed in :mod:`.manifest` (`IndexManifest`, `FileEntry`):
`load_manifest`/`save_manifest` and `load_files`/`save_files` read and write them
(`read_manifest`/`read_files` give the JSON itself).

All JSON, no pickle. Every JSON file is replaced atomically (write, fsync, rename), with
the mode a plain new file gets (0666 less the umask, as the store's files). While a save
of the store is between its two renames the store sits in ``.store.bak``: readers read it
there (`store_manifest_path`), only the next save moves it back.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._io import JSONReadError, atomic_write_json, read_json
from ..errors import UserError
from .manifest import REBUILD_KEY as REBUILD_KEY  # the searcher reads it from here
from .manifest import (
    FileEntry,
    IndexManifest,
    files_from_json,
    files_to_json,
    store_version_from_json,
)

if TYPE_CHECKING:
    from ..encoder import LLM2Vec

logger = logging.getLogger(__name__)

MANIFEST_FILE = "llm2vec-index.json"
FILES_FILE = "files.json"
STORE_DIR = "store"
LOCK_FILE = ".lock"
FORMAT = "llm2vec-retrieval-index"
FORMAT_VERSION = 1


class IndexFolderError(UserError):
    """The folder is missing, not an index, or unreadable (one-line message)."""


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def write_json_atomic(path: Path, data: Any) -> None:
    """Sorted, indented JSON written atomically (see `_io.atomic_write_json`)."""
    atomic_write_json(path, data, sort_keys=True)


def _read_json(path: Path, fix: str = "re-create the index with --rebuild") -> Any:
    """The JSON in ``path`` (`_io.read_json`); IndexFolderError saying why and ``fix``."""
    try:
        return read_json(path)
    except OSError as exc:
        reason = type(exc).__name__
    except JSONReadError as exc:
        reason = exc.reason
    raise IndexFolderError(f"{path} is unreadable ({reason}); {fix}") from None


class IndexFolder:
    """Paths and JSON files of one index folder."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST_FILE

    @property
    def files_path(self) -> Path:
        return self.path / FILES_FILE

    @property
    def store_path(self) -> Path:
        return self.path / STORE_DIR

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def require(self) -> None:
        """Raise IndexFolderError unless this is an index folder."""
        if not self.path.exists():
            raise IndexFolderError(
                f"index folder not found: {self.path} (create it with: llm2vec-retrieval index SOURCE --index {self.path})"
            )
        if not self.exists():
            raise IndexFolderError(
                f"{self.path} is not an llm2vec-retrieval index (no {MANIFEST_FILE})"
            )

    @property
    def store_backup_path(self) -> Path:
        return self.path / f".{STORE_DIR}.bak"

    def has_store(self) -> bool:
        return self.store_manifest_path() is not None

    def check_store(self) -> bool:
        """Whether a committed store is there (`has_store`); `IndexFolderError` naming what
        is missing when the store is damaged: ``store/`` without its manifest.json, or no
        store while files.json lists files (both only happen when files were removed)."""
        if self.has_store():
            return True
        fix = f"re-create it with `llm2vec-retrieval index SOURCE... --index {self.path} --rebuild`"
        if self.store_path.exists():
            raise IndexFolderError(
                f"{self.store_path / 'manifest.json'} is missing: the store of index "
                f"{self.path} is damaged; {fix}"
            )
        try:
            listed = len(self.read_files())
        except IndexFolderError:
            listed = 0
        if listed:
            raise IndexFolderError(
                f"{self.store_path} is missing although {FILES_FILE} lists {listed} file(s): "
                f"the index {self.path} is damaged; {fix}"
            )
        return False

    def store_manifest_path(self) -> Path | None:
        """The store's manifest.json: in ``store/``, or in ``.store.bak`` while a save that
        died between its renames left the store there (read in place; never moved here)."""
        for d in (self.store_path, self.store_backup_path):
            if (d / "manifest.json").is_file():
                return d / "manifest.json"
            if d == self.store_path and d.exists():
                return None
        return None

    def read_manifest(self) -> dict[str, Any]:
        self.require()
        data = _read_json(self.manifest_path)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise IndexFolderError(
                f"{self.manifest_path} is not an llm2vec-retrieval index manifest"
            )
        if data.get("format_version", 0) > FORMAT_VERSION:
            raise IndexFolderError(
                f"{self.manifest_path}: format_version {data.get('format_version')} is newer than this library reads ({FORMAT_VERSION})"
            )
        return data

    def write_manifest(self, data: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            self.manifest_path, {"format": FORMAT, "format_version": FORMAT_VERSION, **data}
        )

    def load_manifest(self) -> IndexManifest:
        """The manifest as `IndexManifest` (`read_manifest`'s checks)."""
        return IndexManifest.from_json(self.read_manifest())

    def save_manifest(self, manifest: IndexManifest) -> None:
        self.write_manifest(manifest.to_json())

    def read_files(self) -> dict[str, dict[str, Any]]:
        """The entries of files.json as JSON ({} when missing); IndexFolderError when
        unreadable. `load_files` gives them typed."""
        return {src: e.to_json() for src, e in self.load_files().items()}

    def load_files(self) -> dict[str, FileEntry]:
        """The usable entries of files.json ({} when missing); IndexFolderError when
        unreadable."""
        return self.load_files_and_version()[0]

    def load_files_and_version(self) -> tuple[dict[str, FileEntry], str | None]:
        """`load_files`, and the store version files.json records (None when none)."""
        if not self.files_path.is_file():
            return {}, None
        data = _read_json(
            self.files_path,
            "the store is intact: run `llm2vec-retrieval index` on this folder again to "
            "rebuild it from the store (files whose chunks are all stored are not "
            "re-embedded)",
        )
        return files_from_json(data), store_version_from_json(data)

    def write_files(self, files: dict[str, dict[str, Any]]) -> None:
        write_json_atomic(self.files_path, {"files": dict(sorted(files.items()))})

    def save_files(self, files: dict[str, FileEntry], store_version: str | None = None) -> None:
        """Write files.json; ``store_version``: the version of the store just saved, when
        the entries describe exactly its chunks."""
        write_json_atomic(self.files_path, files_to_json(files, store_version))

    def read_store_manifest(self) -> dict[str, Any] | None:
        """The store's own manifest.json (kind, count, fingerprint...) without loading FAISS."""
        for attempt in range(3):
            path = self.store_manifest_path()
            if path is None:
                return None
            try:
                data = _read_json(path)
                break
            except IndexFolderError:
                if attempt == 2 or path.is_file():  # unreadable, not moved by a save
                    raise
                time.sleep(0.05)
        return data if isinstance(data, dict) else None

    def size_on_disk(self) -> int:
        total = 0
        for dirpath, _, filenames in os.walk(self.path):
            for name in filenames:
                try:
                    total += os.path.getsize(os.path.join(dirpath, name))
                except OSError:
                    pass
        return total


# ------------------------------------------------------------------ embedder
def embedder_spec(model: str | None, adapter: str | None) -> dict[str, Any]:
    """What to record so that search/serve can rebuild the same embedder.

    The dtype is not part of it: it is chosen per machine when the encoder loads, and
    vectors of the same model in float32 and bfloat16 agree closely enough to share an
    index (the store's fingerprint leaves the dtype out for the same reason)."""

    def local(p: str | None) -> str | None:
        if p is None:
            return None
        expanded = os.path.expanduser(p)
        return os.path.abspath(expanded) if os.path.exists(expanded) else None

    return {
        "model": model,
        "model_path": local(model),
        "adapter": adapter,
        "adapter_path": local(adapter),
    }


def encoder_from_spec(spec: dict[str, Any], dtype: Any = None) -> LLM2Vec:
    """The encoder an embedder spec records (`embedder_spec`): `models.load_encoder` with
    its per-process cache, on the recorded local paths when they still exist, else the
    names as given. ``dtype``: as `load_encoder` takes it (None: "auto")."""
    from ..models import load_encoder

    def pick(path_key: str, name_key: str) -> str | None:
        path = spec.get(path_key)
        return path if path and os.path.exists(path) else spec.get(name_key)

    return load_encoder(
        pick("model_path", "model"), pick("adapter_path", "adapter"), dtype=dtype, cache=True
    )


def describe_embedder(spec: dict[str, Any]) -> str:
    from ..sources import DEFAULT_MODEL

    text = spec.get("model") or f"{DEFAULT_MODEL} (default)"
    if spec.get("adapter"):
        text += f" + adapter {spec['adapter']}"
    return text
