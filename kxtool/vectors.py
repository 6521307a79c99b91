"""Word vectors: one :class:`Vectors` type and the loaders that build it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Vectors:
    """A vocabulary and its ``(n, dim)`` float32 matrix (possibly memory-mapped).

    Row ``i`` of :attr:`matrix` is the vector of ``words[i]``. Files are usually sorted by
    frequency, so low ids are frequent words.
    """

    words: list[str]
    matrix: np.ndarray
    source: str = "<memory>"
    _index: dict[str, int] | None = field(default=None, repr=False)
    _norms: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.matrix.ndim != 2 or self.matrix.shape[0] != len(self.words):
            raise ValueError(
                f"matrix shape {self.matrix.shape} does not match {len(self.words)} words"
            )

    @property
    def index(self) -> dict[str, int]:
        """word -> row."""
        if self._index is None:
            self._index = {w: i for i, w in enumerate(self.words)}
        return self._index

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return word in self.index

    def __getitem__(self, word: str) -> np.ndarray:
        return self.matrix[self.index[word]]

    def norms(self) -> np.ndarray:
        """Euclidean norm of every row (float32, computed once)."""
        if self._norms is None:
            m = self.matrix
            out = np.empty(len(m), dtype=np.float32)
            step = 65536
            for s in range(0, len(m), step):
                block = np.asarray(m[s : s + step], dtype=np.float32)
                out[s : s + step] = np.sqrt(np.einsum("ij,ij->i", block, block))
            self._norms = out
        return self._norms

    def lookup(self, tokens: Iterable[str]) -> tuple[list[int], list[str]]:
        """Row ids of the known tokens (in order) and the list of unknown ones."""
        index = self.index
        ids: list[int] = []
        missing: list[str] = []
        for t in tokens:
            i = index.get(t)
            if i is None:
                missing.append(t)
            else:
                ids.append(i)
        return ids, missing

    def subset(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """The float32 rows ``rows`` as an in-memory array."""
        return np.asarray(self.matrix[np.asarray(rows, dtype=np.int64)], dtype=np.float32)
