"""Pooling token states into one vector per text, with tensor operations only.

`pool_mask` marks the positions that belong to the text (instruction tokens and
padding are 0). Every mode works for any padding side: positions are found from
the masks, never assumed. The maths follows the official llm2vec 0.2.3 modes:
mean over text tokens; weighted_mean with weights 1..n over the text tokens in
order, normalised to sum to 1; eos_token/last_token take the last attended token;
bos_token takes the first BOS token (the first attended token if there is none).
"""

from __future__ import annotations

import torch

from .config import POOLING_MODES


def pool(
    hidden: torch.Tensor,  # (batch, seq, dim)
    attention_mask: torch.Tensor,  # (batch, seq) 1 for real tokens
    pool_mask: torch.Tensor,  # (batch, seq) 1 for tokens to pool over
    mode: str,
    input_ids: torch.Tensor | None = None,  # (batch, seq), needed for bos_token
    bos_token_id: int | None = None,
) -> torch.Tensor:  # (batch, dim), float32
    hidden = hidden.float()
    batch, seq, _ = hidden.shape
    if mode in ("mean", "weighted_mean"):
        mask = pool_mask.to(hidden.dtype)
        if mode == "weighted_mean":
            mask = torch.cumsum(mask, dim=1) * mask  # 1..n over the pooled positions
        weights = mask / mask.sum(dim=1, keepdim=True).clamp(min=1e-9)
        return torch.einsum("bs,bsd->bd", weights, hidden)
    positions = torch.arange(seq, device=hidden.device).expand(batch, seq)
    rows = torch.arange(batch, device=hidden.device)
    if mode in ("eos_token", "last_token"):
        last = torch.where(attention_mask.bool(), positions, -1).amax(dim=1)
        return hidden[rows, last]
    if mode == "bos_token":
        candidates = attention_mask.bool()
        if input_ids is not None and bos_token_id is not None:
            is_bos = candidates & (input_ids == bos_token_id)
            candidates = torch.where(is_bos.any(dim=1, keepdim=True), is_bos, candidates)
        first = torch.where(candidates, positions, seq).amin(dim=1)
        return hidden[rows, first]
    raise ValueError(
        f"Unknown pooling mode {mode!r}. Valid pooling modes are: {', '.join(POOLING_MODES)}"
    )
