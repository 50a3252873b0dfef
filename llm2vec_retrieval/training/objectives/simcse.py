"""Unsupervised SimCSE (LLM2Vec step 3): each sentence is encoded twice with different dropout
masks; the other sentences of the batch are the negatives (InfoNCE, temperature 0.05)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import data as data_mod
from ..config import SimCSEConfig
from .base import MakeBatches, register_objective
from .contrastive import ContrastiveObjective, Groups

if TYPE_CHECKING:
    from ...encoder import LLM2Vec


@register_objective
class SimCSEObjective(ContrastiveObjective[SimCSEConfig]):
    config_class = SimCSEConfig

    def batches(self, encoder: LLM2Vec, stats: data_mod.DataStats) -> MakeBatches:
        return data_mod.simcse_batches(self.cfg.data, self.cfg, stats)

    def groups(self, batch: Any) -> Groups:
        texts = list(batch)
        return Groups([[("", t) for t in texts]], texts, texts, margin=None, twice=True)
