"""The one progress-bar factory: every bar in the package (encoding, indexing, loading
shards or rows into a database, training, mining) is a tqdm bar made here, on stderr, so
that stdout stays a command's result.

Not here: what a bar counts (each caller passes its total and unit).
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["progress_bar"]


def progress_bar(
    total: int | None, desc: str, unit: str, enabled: bool | None = None, **options: Any
) -> Any:
    """A tqdm bar of ``total`` ``unit``s labelled ``desc``. ``enabled``: True shows it, False
    hides it (a disabled bar: its methods do nothing), None shows it when stderr is a
    terminal. ``options`` go to tqdm (``initial``, ``unit_scale``, ...)."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        disable=None if enabled is None else not enabled,
        file=sys.stderr,
        dynamic_ncols=True,
        **options,
    )
