"""A dense float32 matrix keyed by internal int64 ids, with O(1) swap-remove."""

from __future__ import annotations

import numpy as np


class FloatStore:
    """Float vectors kept beside a FAISS index (for rescoring, exact search, retraining)."""

    def __init__(self, dim: int):
        self.dim = dim
        self._data = np.empty((0, dim), dtype=np.float32)
        self._iids = np.empty(0, dtype=np.int64)
        self._n = 0
        self._row: dict[int, int] = {}

    def __len__(self) -> int:
        return self._n

    def __contains__(self, iid: int) -> bool:
        return int(iid) in self._row

    def clear(self) -> None:
        FloatStore.__init__(self, self.dim)

    def _reserve(self, n: int) -> None:
        if n <= len(self._data):
            return
        cap = max(n, 2 * len(self._data), 64)
        data = np.empty((cap, self.dim), dtype=np.float32)
        data[: self._n] = self._data[: self._n]
        iids = np.empty(cap, dtype=np.int64)
        iids[: self._n] = self._iids[: self._n]
        self._data, self._iids = data, iids

    def add(self, iids: np.ndarray, x: np.ndarray) -> None:
        n = len(iids)
        if n == 0:
            return
        self._reserve(self._n + n)
        start = self._n
        self._data[start : start + n] = x
        self._iids[start : start + n] = iids
        for j, iid in enumerate(iids.tolist()):
            if iid in self._row:
                raise ValueError(f"internal id {iid} already stored")
            self._row[iid] = start + j
        self._n += n

    def remove(self, iids: np.ndarray) -> int:
        removed = 0
        for iid in np.asarray(iids, dtype=np.int64).tolist():
            row = self._row.pop(iid, None)
            if row is None:
                continue
            last = self._n - 1
            if row != last:
                moved = int(self._iids[last])
                self._data[row] = self._data[last]
                self._iids[row] = moved
                self._row[moved] = row
            self._n -= 1
            removed += 1
        if self._n < len(self._data) // 4 and len(self._data) > 1024:  # give memory back
            self._data = self._data[: max(self._n * 2, 64)].copy()
            self._iids = self._iids[: len(self._data)].copy()
        return removed

    def rows(self, iids: np.ndarray) -> np.ndarray:
        row = self._row
        return np.fromiter(
            (row[i] for i in np.asarray(iids, dtype=np.int64).tolist()),
            dtype=np.int64,
            count=len(iids),
        )

    def get(self, iids: np.ndarray) -> np.ndarray:
        """Vectors for iids (KeyError if one is missing), as a new (n, dim) array."""
        return self._data[self.rows(iids)]

    def all(self) -> tuple[np.ndarray, np.ndarray]:
        """(iids, vectors) views of everything stored, in storage order."""
        return self._iids[: self._n], self._data[: self._n]
