"""Models for training, built from the encoder's own loading, tokenization and pooling code.

- `load_training_base(cfg)`: `models.load_encoder` in float32 (the same supported-model checks, GGUF
  defaults, official MNTP-folder bases and bidirectional switch as inference), then the
  `init_adapter` folders merged in order (each stage starts from the previous stage's
  adapter merged into the base, as in the paper).
- `add_lora`: PEFT LoRA on the base *AutoModel* (e.g. `LlamaModel`) module tree, so the
  saved adapter keys are the ones `LLM2Vec.from_pretrained(base, peft_model_name_or_path=...)`
  loads (the official MNTP script also wraps the inner model).
- `Embedder`: the encoder's own `tokenize` and `forward` (as `LLM2Vec.encode` runs them),
  with gradients.
- `MNTPModel`: the inner model plus the checkpoint's causal LM head (tied to the input
  embeddings when the config ties them, e.g. SmolLM2; else `lm_head.weight` read from the
  checkpoint files). The head is frozen and never saved.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch

from .. import sources
from ..bidirectional import UnsupportedModelError
from ..config import EncoderConfig
from ..encoder import LLM2Vec
from ..errors import MissingInputError
from ..models import load_encoder
from .folders import patch_json
from .losses import mntp_loss

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PretrainedConfig, PreTrainedModel

    from .config import TrainConfig


# ---------------------------------------------------------------------- loading
def base_reference(model: str | None) -> str:
    """What to record as the adapter's base: an embedded name, or an absolute folder path."""
    if model is None:
        return sources.DEFAULT_BASE
    key = sources.embedded_name(model)
    if key is not None:
        return key
    return os.path.abspath(model) if os.path.exists(model) else model


def check_adapter_folder(path: str) -> None:
    if not os.path.isdir(path):
        raise MissingInputError(f"adapter folder {path} does not exist")
    if not (Path(path) / "adapter_config.json").is_file():
        raise MissingInputError(f"{path} holds no PEFT adapter (adapter_config.json is missing)")


def load_training_base(
    model: str | None,
    init_adapters: Sequence[str] = (),
    *,
    hf_kwargs: dict | None = None,
    **encoder_kwargs,
) -> LLM2Vec:
    """The encoder of `model` with `init_adapters` merged, bidirectional, in eval mode: a
    thin caller of `models.load_encoder` (the one way to get an encoder; never downloads).

    `model=None` is the default model's untrained base (`sources.DEFAULT_BASE`): training starts
    from a base, not from the shipped adapter (name `gemma3-270m-llm2vec` to continue from it).
    Loaded in float32 unless `hf_kwargs` names a dtype: training and export want full
    precision, whatever the encoder's default ("auto", bfloat16 on native-bf16 hardware).
    """
    if model is None:
        model = sources.DEFAULT_BASE
    for a in init_adapters:
        check_adapter_folder(a)
    hf_kwargs = dict(hf_kwargs or {})
    dtype = hf_kwargs.pop("dtype", hf_kwargs.pop("torch_dtype", torch.float32))
    encoder = load_encoder(model, dtype=dtype, **encoder_kwargs, **hf_kwargs)
    if init_adapters:
        for a in init_adapters:
            encoder.model = sources.apply_adapter(encoder.model, a)
        encoder.source["init_adapters"] = [os.path.abspath(a) for a in init_adapters]
    encoder.model.eval()
    return encoder


def set_attention_dropout(model: torch.nn.Module, p: float) -> None:
    """Attention dropout `p` on the config and on every attention module that cached it."""
    config = cast("PretrainedConfig", model.config)  # a transformers model's
    configs = [config]
    text = config.get_text_config() if hasattr(config, "get_text_config") else None
    if text is not None and text is not config:
        configs.append(text)
    if not any(hasattr(c, "attention_dropout") for c in configs):
        raise UnsupportedModelError(
            f"{getattr(config, 'model_type', '?')} has no attention_dropout setting; set attention_dropout to null"
        )
    for c in configs:
        if hasattr(c, "attention_dropout"):
            setattr(c, "attention_dropout", p)  # noqa: B010 (not every config class declares it)
    for module in model.modules():
        if isinstance(getattr(module, "attention_dropout", None), float):
            # a plain float the attention module cached (Module.__setattr__ is typed for tensors)
            setattr(module, "attention_dropout", p)  # noqa: B010


def add_lora(model: torch.nn.Module, cfg: TrainConfig) -> PeftModel:
    """Wrap `model` (the base AutoModel) in a PEFT LoRA model; only LoRA weights train."""
    from peft import LoraConfig, get_peft_model

    present = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
    }
    targets = [t for t in cfg.lora_target_modules if t in present]
    missing = [t for t in cfg.lora_target_modules if t not in present]
    if not targets:
        raise UnsupportedModelError(
            f"none of the LoRA target modules {list(cfg.lora_target_modules)} exist in this model; "
            f"its linear layers are named: {', '.join(sorted(present))}"
        )
    if missing:
        warnings.warn(
            f"LoRA target modules not found in this model, skipped: {missing}", stacklevel=2
        )
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,  # type: ignore[arg-type]  # peft annotates int; a float works
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        bias="none",
        task_type=None,
    )
    with warnings.catch_warnings():  # peft probes a deprecated transformers attribute
        warnings.filterwarnings(
            "ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning
        )
        return cast("PeftModel", get_peft_model(model, lora))  # not a mixed model: one adapter


def enable_gradient_checkpointing(peft_model: PeftModel) -> None:
    base = cast("PreTrainedModel", peft_model.get_base_model())
    if not getattr(base, "supports_gradient_checkpointing", False):
        raise UnsupportedModelError(
            f"{type(base).__name__} does not support gradient checkpointing"
        )
    kwargs = {
        "use_reentrant": False
    }  # non-reentrant: works with frozen inputs, keeps RNG state for dropout
    enable = getattr(base, "activation_checkpointing_enable", None)  # transformers >= 5.x name
    if enable is not None:
        enable(activation_checkpointing_kwargs=kwargs)
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if hasattr(base, "config"):
        base.config.use_cache = False


def weights_folder(encoder: LLM2Vec) -> str:
    path = encoder.source.get("model_path")
    if not path:
        raise UnsupportedModelError("the encoder records no model_path: its weights cannot be read")
    inner = sources.read_adapter_base(path) if path and os.path.isdir(path) else None
    return sources.resolve_model_path(inner) if inner is not None else path


def input_embeddings(model: torch.nn.Module) -> torch.nn.Embedding:
    """The token embedding table of a transformers model."""
    return cast(torch.nn.Embedding, cast("PreTrainedModel", model).get_input_embeddings())


def load_lm_head(encoder: LLM2Vec) -> torch.nn.Linear:
    """The frozen causal LM head of the encoder's checkpoint (MNTP needs token predictions)."""
    model = cast("PreTrainedModel", encoder.model)
    config = (
        model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    )
    embeddings = input_embeddings(model)
    vocab, hidden = embeddings.weight.shape
    head = torch.nn.Linear(hidden, vocab, bias=False)
    if getattr(config, "tie_word_embeddings", False):
        head.weight = embeddings.weight  # shared and frozen: tied embeddings (e.g. SmolLM2, Gemma)
    else:
        folder = weights_folder(encoder)
        weight = _read_tensor(folder, "lm_head.weight")
        if weight is None:
            raise UnsupportedModelError(
                f"MNTP needs the causal LM head of the checkpoint, but {folder} has no lm_head.weight "
                "(a bare AutoModel checkpoint?). Train MNTP from the causal LM checkpoint."
            )
        if tuple(weight.shape) != (vocab, hidden):
            raise UnsupportedModelError(
                f"lm_head.weight has shape {tuple(weight.shape)}, expected {(vocab, hidden)}"
            )
        head.weight = torch.nn.Parameter(weight.to(embeddings.weight.dtype), requires_grad=False)
    head.weight.requires_grad_(False)
    return head.to(embeddings.weight.device)


def _read_tensor(weights: str, key: str) -> torch.Tensor | None:
    folder = Path(weights)
    files: list[Path] = []
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        name = weight_map.get(key) or next(
            (v for k, v in weight_map.items() if k.endswith("." + key)), None
        )
        if name:
            files.append(folder / name)
    files += sorted(folder.glob("*.safetensors"))
    from safetensors import safe_open

    for f in files:
        with safe_open(str(f), framework="pt") as fh:
            keys = list(fh.keys())
            match = key if key in keys else next((k for k in keys if k.endswith("." + key)), None)
            if match:
                return fh.get_tensor(match)
    for f in sorted(folder.glob("pytorch_model*.bin")):
        state = torch.load(f, map_location="cpu", weights_only=True, mmap=True)
        match = key if key in state else next((k for k in state if k.endswith("." + key)), None)
        if match:
            return state[match].clone()
    return None


# ---------------------------------------------------------------------- modules
class MNTPModel(torch.nn.Module):
    """inner (bidirectional, LoRA) model + frozen LM head -> shifted masked-token loss."""

    def __init__(self, model: torch.nn.Module, lm_head: torch.nn.Linear):
        super().__init__()
        self.model = model
        self.lm_head = lm_head

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return mntp_loss(hidden, labels, self.lm_head)


class Embedder(torch.nn.Module):
    """Text embeddings with gradients, formatted and pooled exactly as `LLM2Vec.encode`."""

    def __init__(self, encoder: LLM2Vec):
        super().__init__()
        self.model = encoder.model
        self._encoder = [encoder]  # not a submodule: the encoder holds the same model

    @property
    def encoder(self) -> LLM2Vec:
        return self._encoder[0]

    def features(self, pairs: list[tuple[str, str]]) -> tuple[dict, int]:
        """Tensors (CPU) for (instruction, text) pairs and how many texts were truncated."""
        features = self.encoder.tokenize(pairs)
        return dict(features), features.truncated

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, embed_mask: torch.Tensor
    ) -> torch.Tensor:
        features = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "embed_mask": embed_mask,
        }
        return self.encoder.forward(features)


# ---------------------------------------------------------------------- saving
def save_adapter(
    peft_model: PeftModel,
    encoder: LLM2Vec,
    directory: str | os.PathLike,
    base_ref: str,
    encoder_config: EncoderConfig,
) -> Path:
    """Official layout: adapter_config.json + adapter_model.safetensors, tokenizer, llm2vec_config.json."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(directory))
    patch_json(directory / "adapter_config.json", {"base_model_name_or_path": base_ref})
    encoder.tokenizer.save_pretrained(directory)
    encoder_config.save(directory)
    return directory
