"""Supervised contrastive training on (query, positive[, hard negative]) examples: the
instruction goes on queries only; every positive and hard negative of the batch is a candidate
for every query, with false negatives masked (`losses.false_negative_mask`). With a
``distill_teacher``, the student's distribution over those candidates is also pulled towards
the teacher's (`losses.listwise_kl`, weight ``distill_weight``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import data as data_mod
from ..config import SupervisedConfig
from ..teacher import Teacher, teacher_folder
from .base import MakeBatches, register_objective
from .contrastive import ContrastiveObjective, Groups

if TYPE_CHECKING:
    from ...encoder import LLM2Vec


@register_objective
class SupervisedObjective(ContrastiveObjective[SupervisedConfig]):
    config_class = SupervisedConfig

    def __init__(self, cfg: SupervisedConfig):
        super().__init__(cfg)
        self._teacher: Teacher | None = None

    def teacher(self) -> Teacher | None:
        """The distillation teacher (loaded at first use), None without one."""
        if self.cfg.distill_teacher is None or self.cfg.distill_weight == 0:
            return None
        if self._teacher is None:
            self._teacher = Teacher(self.cfg.distill_teacher, max_seq_length=self.cfg.max_length)
        return self._teacher

    def check_data(self) -> None:
        super().check_data()
        if self.cfg.distill_teacher is not None:
            teacher_folder(self.cfg.distill_teacher)  # a bad name fails before the model loads

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
        q_texts = [ex.query for ex in batch]
        cand_texts = [ex.positive for ex in batch] + [
            ex.negative for ex in batch if ex.negative is not None
        ]
        teacher = self.teacher()
        return Groups(
            [q_pairs, p_pairs] + ([n_pairs] if n_pairs else []),
            q_texts=q_texts,
            cand_texts=cand_texts,
            margin=cfg.false_negative_margin,
            teacher_scores=None if teacher is None else teacher.similarities(q_texts, cand_texts),
            teacher_temperature=cfg.distill_temperature,
            distill_weight=cfg.distill_weight,
        )
