"""Masked next token prediction (LLM2Vec step 2): the frozen causal LM head predicts the
masked token at position i from the bidirectional model's output at position i-1.

Batches are blocks of token ids (`data.mntp_batches`); the mask of each micro-batch is drawn
from a generator seeded by (seed, step, micro), so a resumed run masks exactly as an
uninterrupted one. See `losses.mask_tokens` for the 80/10/10 and all-mask modes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import torch

from ...errors import InvalidInputError
from .. import data as data_mod
from ..config import MNTPConfig
from ..losses import mask_tokens
from ..modeling import MNTPModel, input_embeddings, load_lm_head
from .base import MakeBatches, MicroStep, Objective, register_objective

if TYPE_CHECKING:
    from ...encoder import LLM2Vec


@register_objective
class MNTPObjective(Objective[MNTPConfig]):
    config_class = MNTPConfig

    def prepare_base(self, encoder: LLM2Vec) -> None:
        self.lm_head = load_lm_head(encoder)  # before LoRA: read from the base checkpoint

    def build_module(self, encoder: LLM2Vec) -> torch.nn.Module:
        cfg, tok = self.cfg, encoder.tokenizer
        token = cfg.mask_token or tok.mask_token or "_"
        ids = cast("list[int]", tok.convert_tokens_to_ids([token]))  # a list in, a list out
        mask_id = ids[0] if ids else None
        if mask_id is None or mask_id == tok.unk_token_id:
            encoded = tok(token, add_special_tokens=False)["input_ids"]
            if len(encoded) != 1:
                raise InvalidInputError(
                    f"mask token {token!r} is not a single token of this tokenizer; choose one with --mask-token"
                )
            mask_id = encoded[0]
        self.mask_token, self.mask_token_id = token, int(mask_id)
        self.special_ids = torch.tensor(sorted(set(tok.all_special_ids)), dtype=torch.long)
        self.vocab_size = int(input_embeddings(encoder.model).weight.shape[0])
        return MNTPModel(encoder.model, self.lm_head)

    def batches(self, encoder: LLM2Vec, stats: data_mod.DataStats) -> MakeBatches:
        return data_mod.mntp_batches(self.cfg.data, encoder.tokenizer, self.cfg, stats)

    def start_fields(self) -> dict:
        return {"mask_token": self.mask_token}

    def micro_step(self, step: MicroStep, batch: Any) -> tuple[float, int]:
        cfg = self.cfg
        ids = torch.tensor(batch, dtype=torch.long)
        special = torch.isin(ids, self.special_ids)
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step.step * 101 + step.micro)
        inputs, labels = mask_tokens(
            ids,
            special,
            cfg.mask_probability,
            self.mask_token_id,
            self.vocab_size,
            cfg.masking,
            gen,
        )
        with step.no_sync():
            with step.autocast():
                loss = step.module(
                    inputs.to(step.device),
                    torch.ones_like(inputs).to(step.device),
                    labels.to(step.device),
                )
            step.backward(loss * step.scale)
        return float(loss.detach()), int(ids.numel())
