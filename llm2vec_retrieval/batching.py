"""Length-sorted, token-budget batches.

Texts are sorted longest first and cut into batches whose padded size
(rows x longest row) stays within `max_batch_tokens`, with at most `max_batch_size`
rows. Sorting keeps padding small; the budget bounds activation memory whatever
the corpus size. Longest first means the largest batch runs first, so an
out-of-memory error shows up at once rather than at the end.
"""

from __future__ import annotations

from collections.abc import Sequence


def token_budget_batches(
    lengths: Sequence[int], max_batch_tokens: int, max_batch_size: int
) -> list[list[int]]:
    """Return batches of indices into `lengths`, longest texts first."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        # The first (longest) row of a batch sets its padded width.
        width = lengths[current[0]] if current else lengths[index]
        if current and (
            (len(current) + 1) * width > max_batch_tokens or len(current) >= max_batch_size
        ):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches
