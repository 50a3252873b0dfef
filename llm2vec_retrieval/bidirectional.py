"""Bidirectional attention for decoder-only models, without copied modeling code.

transformers (>= 5.2) builds a bidirectional mask when `config.is_causal` is False,
for eager, sdpa and flex attention. We set that flag on the config (and its text
sub-config for multimodal wrappers) and on every attention module that carries an
`is_causal` attribute (sdpa falls back to it when no mask is materialised).
Then we *check* it: one forward pass on three tokens must change the first
token's output when the last token changes. A model that ignores the switch is
refused with `UnsupportedModelError` rather than silently staying causal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import torch

from .errors import UserError

if TYPE_CHECKING:
    from transformers import PretrainedConfig

# Architectures checked by the test suite on tiny random configs.
SUPPORTED_MODEL_TYPES = (
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma",
    "gemma2",
    "gemma3_text",
    "gemma3",
)


class UnsupportedModelError(ValueError, UserError):
    """The model cannot be used as an LLM2Vec encoder (e.g. bidirectional attention has no effect)."""


def _configs(model):
    config = model.config
    yield config
    for name in ("text_config", "decoder"):
        sub = getattr(config, name, None)
        if sub is not None and hasattr(sub, "to_dict"):
            yield sub


def set_bidirectional(model: torch.nn.Module, enabled: bool = True) -> None:
    """Switch `model` (a transformers PreTrainedModel) to non-causal attention, in place."""
    for config in _configs(model):
        config.is_causal = not enabled
    for module in model.modules():
        if (
            module is not model
            and hasattr(module, "is_causal")
            and isinstance(module.is_causal, bool)
        ):
            module.is_causal = not enabled


def is_bidirectional(model: torch.nn.Module) -> bool:
    """Probe: does the first token's output depend on a later token?"""
    params = next(model.parameters())
    if params.device.type == "meta":
        return True  # offloaded weights: cannot probe cheaply, trust the flags
    config = cast("PretrainedConfig", model.config)  # a transformers model's
    vocab = (
        config.get_text_config().vocab_size
        if hasattr(config, "get_text_config")
        else config.vocab_size
    )
    a = torch.tensor(
        [[min(5, vocab - 1), min(6, vocab - 1), min(7, vocab - 1)]], device=params.device
    )
    b = a.clone()
    b[0, -1] = min(8, vocab - 1)
    mask = torch.ones_like(a)
    with torch.inference_mode():
        out_a = _hidden(model, a, mask)[0, 0].float()
        out_b = _hidden(model, b, mask)[0, 0].float()
    return not torch.allclose(out_a, out_b, rtol=0, atol=0)


def _hidden(model, input_ids, attention_mask):
    out = model(input_ids=input_ids, attention_mask=attention_mask)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]


def enable_bidirectional(model: torch.nn.Module) -> None:
    """Make `model` bidirectional and verify it, or raise UnsupportedModelError."""
    set_bidirectional(model, True)
    if not is_bidirectional(model):
        set_bidirectional(model, False)
        model_type = getattr(model.config, "model_type", type(model).__name__)
        raise UnsupportedModelError(
            f"{model_type}: bidirectional attention has no effect with attn_implementation="
            f"{getattr(model.config, '_attn_implementation', None)!r}. Try attn_implementation='eager' or 'sdpa', "
            f"or pass enable_bidirectional=False. Checked architectures: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
