"""What an `IndexStore` holds, as one value: the seam between the store and its persistence.

`IndexStore.snapshot()` yields a `StoreSnapshot` while it holds the store's lock (a save
reads it and writes files); `IndexStore.from_snapshot()` makes a store of one (a load
builds it from verified files). Neither side reads the other's attributes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .docstore import DocStore
    from .kinds import Backend
    from .lexical import LexicalIndex
    from .vectors import VectorSegments


@dataclass(frozen=True)
class StoreSnapshot:
    """A store's whole state. ``dim`` is None for a store that has had no vector yet
    (then ``backend`` is None too). ``docs``: the documents (`docstore.DocStore`: sealed
    segments and those added since); ``next_iid`` is the internal id the next added vector
    gets. ``backend`` is the FAISS side (its
    ``write``/``state``/``keeps_vectors``), ``lexical`` the BM25 part or None. ``extra``:
    the caller's metadata saved with the store (`IndexStore.save(extra=...)`).
    ``vectors``: a ``flat`` store's vectors in segments (`vectors.VectorSegments`), from
    which its FAISS index is built; its ``backend`` is then None until a search built it,
    and is not saved. None for the other kinds.

    Taken with `IndexStore.snapshot()`, the live objects are shared, not copied: read it
    inside that block only."""

    dim: int | None
    kind: str
    metric: str
    params: dict[str, Any]
    fingerprint: dict[str, Any] | None
    next_iid: int
    docs: DocStore
    backend: Backend | None
    lexical: LexicalIndex | None
    extra: dict[str, Any] = field(default_factory=dict)
    vectors: VectorSegments | None = None
    #: the ``manifest_sha256`` of the saved version a load read (None otherwise)
    version: str | None = None
    #: a loaded store's FAISS side, still on disk (``backend`` is then None): reads,
    #: verifies and returns it; `IndexStore` calls it on first use
    open_backend: Callable[[], Backend] | None = None

    @property
    def iids(self) -> np.ndarray:
        """The live documents' internal ids, ascending (the rows of a saved vectors file)."""
        return self.docs.live_iids()
