"""The :class:`Vectors` type, its summary (:func:`vectors_info`), and the checks of a ``limit``
and of an input path that every entry point makes."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import KxError
from ..textio import os_error


@dataclass
class Vectors:
    """A vocabulary and its ``(n, dim)`` float32 matrix (possibly memory-mapped).

    Row ``i`` of :attr:`matrix` is the vector of ``words[i]``. Files are usually sorted by
    frequency, so low ids are frequent words. ``source`` names where the vectors came from,
    ``format`` how they were stored (``"word2vec"``, ``"glove"``, ``"word2vec-binary"``,
    ``"kxtool"``), ``cache_path`` the cache file that holds them (if any) and ``is_default`` is
    true for the built-in English set of :func:`default_vectors`.

    >>> v = Vectors(["a", "b"], np.array([[1, 0], [0, 2]], dtype=np.float32))
    >>> v.dim, len(v), "a" in v, v.index["b"], v.norms().tolist()
    (2, 2, True, 1, [1.0, 2.0])
    """

    words: list[str]
    matrix: np.ndarray
    source: str = "<memory>"
    _index: dict[str, int] | None = field(default=None, repr=False)
    _norms: np.ndarray | None = field(default=None, repr=False)
    is_default: bool = False
    format: str | None = None
    cache_path: str | None = None

    def __post_init__(self) -> None:
        if self.matrix.ndim != 2 or self.matrix.shape[0] != len(self.words):
            raise ValueError(
                f"matrix shape {self.matrix.shape} does not match {len(self.words)} words"
            )

    @property
    def index(self) -> dict[str, int]:
        """word -> row."""
        if self._index is None:
            self._index = dict(zip(self.words, range(len(self.words)), strict=True))
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

    def head(self, limit: int | None) -> Vectors:
        """The first ``limit`` words (all of them when ``limit`` is None or not smaller)."""
        if limit is None or limit >= len(self.words):
            return self
        return Vectors(
            self.words[:limit],
            self.matrix[:limit],
            source=self.source,
            is_default=self.is_default,
            format=self.format,
            cache_path=self.cache_path,
        )


def vectors_info(vectors: Vectors, *, sample: int = 10) -> dict[str, Any]:
    """A summary for reports: size, dimension, norm statistics and the first few words."""
    norms = vectors.norms()
    n = len(norms)
    stats: dict[str, float | None]
    if n:
        stats = {
            "min": float(norms.min()),
            "mean": float(norms.mean(dtype=np.float64)),
            "median": float(np.median(norms)),
            "max": float(norms.max()),
            "std": float(norms.std(dtype=np.float64)),
        }
    else:  # pragma: no cover - loaders never return empty sets
        stats = dict.fromkeys(("min", "mean", "median", "max", "std"))
    return {
        "source": vectors.source,
        "format": vectors.format,
        "words": n,
        "dim": vectors.dim,
        "is_default": vectors.is_default,
        "cache": vectors.cache_path,
        "norms": stats,
        "zero_vectors": int(np.count_nonzero(norms == 0)),
        "sample": list(vectors.words[: max(0, sample)]),
    }


def _check_limit(limit: int | None) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int | np.integer) or limit < 1:
        raise KxError(f"limit must be a positive number of words, not {limit!r}")
    return int(limit)


def _check_input(p: str) -> None:
    if os.path.isdir(p):
        raise KxError(f"cannot read vectors from {p!r}: it is a directory")
    try:
        st = os.stat(p)
    except OSError as e:
        raise os_error(e, p) from None
    if st.st_size == 0 and os.path.isfile(p):
        raise KxError(f"{p}: the vectors file is empty")
