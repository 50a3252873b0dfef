"""Packed forward passes: a batch's texts laid end to end, no padding, attention per text.

A padded batch spends compute on pad tokens in every linear layer and, in attention, on
(width x width) score blocks with a mask that keeps SDPA off its fastest CPU path. Packing
puts the real tokens of all rows into one sequence of shape (1, total tokens) with
position ids restarting at 0 for each text, and runs attention text by text
(`scaled_dot_product_attention` without a mask, causal or not as the layer says). Each text
sees exactly its own tokens at the positions it has in a padded batch, so the hidden states
are those of the padded forward up to float rounding.

The attention function is registered with transformers under `ATTENTION_NAME`; without
`cu_seq_lens_q` (any ordinary padded call, e.g. training) it is transformers' own SDPA
function, so a model switched to it behaves as with ``attn_implementation="sdpa"``.
"""

from __future__ import annotations

import torch

from .bidirectional import SUPPORTED_MODEL_TYPES

ATTENTION_NAME = "llm2vec_packed_sdpa"

# Architectures whose attention layers pass transformers' keyword arguments through to the
# attention function (checked by tests/test_speed_paths.py on tiny random models); not the
# multimodal Gemma 3 wrapper.
PACKABLE_MODEL_TYPES = tuple(t for t in SUPPORTED_MODEL_TYPES if t != "gemma3")


def packed_sdpa_attention(
    module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs
):
    """transformers attention function: per-text SDPA when the call is packed, else SDPA as usual."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    cu_seqlens = kwargs.get("cu_seq_lens_q")
    if cu_seqlens is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    is_causal = kwargs.get("is_causal")
    if is_causal is None:
        is_causal = getattr(module, "is_causal", True)
    gqa = query.shape[1] != key.shape[1]
    bounds = cu_seqlens.tolist()
    # (1, tokens, heads, head_dim), as transformers' SDPA function returns it; written per text
    out = query.new_empty((query.shape[0], query.shape[2], query.shape[1], value.shape[-1]))
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        out[:, start:end] = torch.nn.functional.scaled_dot_product_attention(
            query[:, :, start:end],
            key[:, :, start:end],
            value[:, :, start:end],
            dropout_p=dropout,
            scale=scaling,
            is_causal=bool(is_causal) and end - start > 1,
            enable_gqa=gqa,
        ).transpose(1, 2)
    return out, None


def register() -> None:
    """Make `ATTENTION_NAME` known to transformers (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, packed_sdpa_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION_NAME, sdpa_mask)


def _text_config(model):
    cfg = model.config
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


def can_pack(model) -> bool:
    """Is `model` an SDPA model of a checked architecture without logit soft-capping?"""
    cfg = _text_config(model)
    return (
        getattr(cfg, "model_type", None) in PACKABLE_MODEL_TYPES
        and getattr(model.config, "model_type", None) in PACKABLE_MODEL_TYPES
        and getattr(cfg, "_attn_implementation", None) in ("sdpa", ATTENTION_NAME)
        and getattr(cfg, "attn_logit_softcapping", None) is None
    )


def enable(model) -> bool:
    """Switch an eligible model's attention to the packed-capable SDPA function; True if done."""
    if not can_pack(model):
        return False
    register()
    model.set_attn_implementation(ATTENTION_NAME)
    return True


def enabled(model) -> bool:
    """Is `model` switched to the packed-capable attention function?"""
    return getattr(_text_config(model), "_attn_implementation", None) == ATTENTION_NAME


def sliding_window(model) -> int | None:
    """The smallest attention window of `model`'s layers (None: full attention everywhere)."""
    cfg = _text_config(model)
    if getattr(cfg, "use_sliding_window", True) is False:
        return None
    window = getattr(cfg, "sliding_window", None)
    return int(window) if window else None


def packable(model, attention_mask: torch.Tensor) -> bool:
    """Can this batch run packed: right padding only, every text within the attention window?"""
    if not enabled(model):
        return False
    lengths = attention_mask.sum(dim=1)
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    if not torch.equal(attention_mask.bool(), positions < lengths[:, None]):
        return False
    window = sliding_window(model)
    return window is None or int(lengths.max()) <= window


def packed_hidden(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Last hidden states (batch, width, hidden) of a right-padded batch, computed packed.

    Pad positions hold zeros. The caller checks `packable` first.
    """
    keep = attention_mask.bool()
    lengths = keep.sum(dim=1)
    device = input_ids.device
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32, device=device)
    cu[1:] = torch.cumsum(lengths, dim=0)
    positions = torch.arange(keep.shape[1], device=device).expand_as(keep)[keep]
    longest = int(lengths.max())
    out = model(
        input_ids=input_ids[keep].unsqueeze(0),
        position_ids=positions.unsqueeze(0),
        cu_seq_lens_q=cu,
        cu_seq_lens_k=cu,
        max_length_q=longest,
        max_length_k=longest,
    )
    flat = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    hidden = flat.new_zeros((*keep.shape, flat.shape[-1]))
    hidden[keep] = flat[0]
    return hidden
