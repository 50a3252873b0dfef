"""Supervised contrastive training on (query, positive[, hard negative]) examples: the
instruction goes on queries only; every positive and hard negative of the batch is a candidate
for every query, with false negatives masked (`losses.false_negative_mask`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import data as data_mod
from ..config import SupervisedConfig
from .base import MakeBatches, register_objective
from .contrastive import ContrastiveObjective, Groups

if TYPE_CHECKING:
    from ...encoder import LLM2Vec


@register_objective
class SupervisedObjective(ContrastiveObjective):
    config_class = SupervisedConfig

    def batches(self, encoder: LLM2Vec, stats: data_mod.DataStats) -> MakeBatches:
        return data_mod.supervised_batches(self.cfg.data, self.cfg, stats)

    def groups(self, batch: Any) -> Groups:
        cfg = self.cfg
        q_pairs = [
            (ex.instruction if ex.instruction is not None else cfg.instruction, ex.query)
            for ex in batch
        ]
        p_pairs = [("", ex.positive) for ex in batch]
        n_pairs = [("", ex.negative) for ex in batch if ex.negative is not None]
        return Groups(
            [q_pairs, p_pairs] + ([n_pairs] if n_pairs else []),
            q_texts=[ex.query for ex in batch],
            cand_texts=[ex.positive for ex in batch]
            + [ex.negative for ex in batch if ex.negative is not None],
            margin=cfg.false_negative_margin,
        )
