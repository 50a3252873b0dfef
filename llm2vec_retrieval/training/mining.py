"""Hard negatives for supervised contrastive training, mined with the project's own BM25.

For every example without a negative, the positives of the same data (one pool per
``source``) are searched with the anchor as a BM25 query (:mod:`llm2vec_retrieval.index.lexical`,
the index store's lexical part). The negative is the best-ranked candidate that is

- not a positive of that anchor (anchors repeat: one row per positive), nor the anchor
  itself, compared after normalizing case, punctuation and whitespace (duplicates of a
  positive are positives);
- scored below ``max_ratio`` x the BM25 score of the anchor's own positive. This is the
  "TopK-PercPos" rule of NV-Retriever (Moreira et al. 2024, arXiv 2407.15831, 95% there):
  a candidate that matches the anchor about as well as its labelled answer is more
  often an unlabelled positive than a negative.

Examples that already have a negative keep it; an anchor whose pool offers no candidate
keeps none (in-batch negatives still apply). Deterministic: no sampling.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np

from ..errors import InvalidInputError
from ..progress import progress_bar
from .data import Example

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def normalize_text(text: str) -> str:
    """Case-, punctuation- and whitespace-insensitive key used to spot duplicates."""
    return _NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip()


@dataclass
class MiningStats:
    examples: int = 0
    had_negative: int = 0
    mined: int = 0
    no_candidate: int = 0
    rejected_as_positive: int = 0  # candidates skipped: a positive or a duplicate of one
    rejected_by_ratio: int = 0  # candidates skipped: scored >= max_ratio x the positive

    def summary(self) -> str:
        return (
            f"{self.examples} examples: {self.had_negative} kept their negative, {self.mined} mined, "
            f"{self.no_candidate} without a candidate (skipped candidates: {self.rejected_as_positive} "
            f"positives or duplicates, {self.rejected_by_ratio} above the score ratio)"
        )


def mine_hard_negatives(
    examples: Iterable[Example],
    max_ratio: float = 0.95,
    depth: int = 30,
    show_progress_bar: bool = False,
) -> tuple[list[Example], MiningStats]:
    """Examples with a mined ``negative`` where they had none (see the module doc).

    ``depth``: BM25 candidates looked at per anchor. Sources are mined separately, so a
    negative always comes from the anchor's own data set.
    """

    if not 0.0 < max_ratio <= 1.0:
        raise InvalidInputError(f"max_ratio must be in (0, 1], got {max_ratio!r}")
    examples = list(examples)
    stats = MiningStats(examples=len(examples))
    by_source: dict[str, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        if ex.negative is not None:
            stats.had_negative += 1
        else:
            by_source[ex.source].append(i)
    out = list(examples)
    for source, rows in by_source.items():
        _mine_source(examples, out, rows, max_ratio, depth, stats, source, show_progress_bar)
    return out, stats


def _mine_source(examples, out, rows, max_ratio, depth, stats, source, progress) -> None:
    from ..index.lexical import LexicalIndex

    # the pool: every distinct positive text of this source; pool index = lexical iid = row
    pool: dict[str, int] = {}
    texts: list[str] = []
    keys: list[str] = []
    positives_of: dict[str, set[str]] = defaultdict(set)
    for ex in (examples[i] for i in rows):
        key = normalize_text(ex.positive)
        if key not in pool:
            pool[key] = len(texts)
            texts.append(ex.positive)
            keys.append(key)
        positives_of[normalize_text(ex.query)].add(key)
    lex = LexicalIndex()
    lex.add(range(len(texts)), lex.tokenize(texts))
    depth = min(depth, len(texts))
    batch = 512
    starts = range(0, len(rows), batch)
    for start in progress_bar(None, f"mining {source}", "batch", progress, iterable=starts):
        chunk = rows[start : start + batch]
        for i, qids in zip(chunk, lex.query_ids([examples[i].query for i in chunk]), strict=True):
            ex = examples[i]
            scores = lex.scores(qids)
            own = float(scores[pool[normalize_text(ex.positive)]])
            excluded = positives_of[normalize_text(ex.query)] | {normalize_text(ex.query)}
            top = (
                np.argpartition(-scores, depth - 1)[:depth]
                if len(scores) > depth
                else np.arange(len(scores))
            )
            top = top[np.argsort(-scores[top], kind="stable")]
            chosen = None
            for row in top.tolist():
                s = float(scores[row])
                if s <= 0:
                    break
                if keys[row] in excluded:
                    stats.rejected_as_positive += 1
                elif own > 0 and s >= max_ratio * own:
                    stats.rejected_by_ratio += 1
                else:
                    chosen = row
                    break
            if chosen is None:
                stats.no_candidate += 1
            else:
                stats.mined += 1
                out[i] = replace(ex, negative=texts[chosen])


__all__ = ["MiningStats", "mine_hard_negatives", "normalize_text"]
