"""What SimCSE and supervised training share: InfoNCE over in-batch candidates, computed on
length-sorted chunks of `mini_batch_size` texts, with GradCache or one graph per batch.

A subclass says how a batch becomes groups of (instruction, text) pairs (`groups`); row i of
every group belongs to row i of the queries. Chunks of texts of similar length cut padding;
each group is embedded in its sorted order and put back in batch order before the loss
(indexing keeps the gradients).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

import torch

from ...config import EncoderConfig
from ..config import ContrastiveConfig
from ..gradcache import chunked, grad_cache_step
from ..losses import false_negative_mask, info_nce, listwise_kl
from ..modeling import Embedder, set_attention_dropout
from .base import MicroStep, Objective

if TYPE_CHECKING:
    from ...encoder import LLM2Vec

CC = TypeVar("CC", bound=ContrastiveConfig)


@dataclass
class Groups:
    """A batch as the contrastive loss sees it."""

    pairs: list[list[tuple[str, str]]]  # queries, positives[, negatives]: (instruction, text)
    q_texts: list[str]  # for false-negative masking by identical text
    cand_texts: list[str]  # positives then negatives, as the candidates are ordered
    margin: float | None  # false-negative margin (None: identical texts only)
    twice: bool = False  # SimCSE: the only group is encoded twice (two dropout masks)
    # listwise distillation: teacher similarities (queries x candidates), its temperature, weight
    teacher_scores: torch.Tensor | None = None
    teacher_temperature: float = 0.05
    distill_weight: float = 0.0


class ContrastiveObjective(Objective[CC]):
    config_class = ContrastiveConfig

    def encoder_kwargs(self) -> dict:
        cfg = self.cfg
        return {
            "pooling_mode": cfg.pooling_mode,
            "max_length": cfg.max_length,
            "doc_max_length": cfg.max_length,
        }

    def prepare_base(self, encoder: LLM2Vec) -> None:
        if self.cfg.attention_dropout is not None:
            set_attention_dropout(encoder.model, float(self.cfg.attention_dropout))

    def encoder_config(self, encoder: LLM2Vec) -> EncoderConfig:
        return EncoderConfig(
            pooling_mode=self.cfg.pooling_mode,
            skip_instruction=encoder.config.skip_instruction,
        )

    def build_module(self, encoder: LLM2Vec) -> torch.nn.Module:
        return Embedder(encoder)

    def groups(self, batch: Any) -> Groups:
        raise NotImplementedError

    def micro_step(self, step: MicroStep, batch: Any) -> tuple[float, int]:
        cfg = self.cfg
        embedder = cast(Embedder, step.unwrapped())  # what build_module returned
        g = self.groups(batch)
        chunking = cfg.mini_batch_size and cfg.mini_batch_size < len(batch)
        tokens = 0
        groups, inverse = [], []
        for pairs in g.pairs:
            order = (
                sorted(range(len(pairs)), key=lambda i: len(pairs[i][1]))
                if chunking
                else list(range(len(pairs)))
            )
            inverse.append(torch.argsort(torch.tensor(order)))
            chunks = []
            for piece in chunked([pairs[i] for i in order], cfg.mini_batch_size):
                feats, truncated = embedder.features(list(piece))
                step.stats.truncated_texts += truncated
                tokens += int(feats["attention_mask"].sum())
                chunks.append(feats)
            groups.append(chunks)
        if g.twice:  # one tokenization, two forward passes
            groups, inverse = [groups[0], groups[0]], [inverse[0], inverse[0]]
            tokens *= 2

        def embed(feats):
            with step.autocast():
                return step.module(**{k: v.to(step.device) for k, v in feats.items()}).float()

        def loss_fn(*embs):
            q, p, n = [e[inv.to(e.device)] for e, inv in zip(embs, inverse, strict=True)] + [
                None
            ] * (3 - len(embs))
            cands = p if n is None else torch.cat([p, n])
            mask = false_negative_mask(q, cands, g.margin, g.q_texts, g.cand_texts)
            loss = info_nce(q, p, n, cfg.temperature, mask)
            if g.teacher_scores is not None and g.distill_weight > 0:
                kl = listwise_kl(
                    q, cands, g.teacher_scores, cfg.temperature, g.teacher_temperature, mask
                )
                loss = loss + g.distill_weight * kl
            return loss

        if chunking and cfg.grad_cache:
            loss, _ = grad_cache_step(
                embed,
                groups,
                lambda *e: loss_fn(*e) * step.scale,
                backward=step.backward,
                no_sync=None if step.last else step.no_sync,
            )
            return float(loss) / step.scale, tokens
        with step.no_sync():
            embs = [torch.cat([embed(c) for c in chunks]) for chunks in groups]
            loss = loss_fn(*embs)
            step.backward(loss * step.scale)
        return float(loss.detach()), tokens
