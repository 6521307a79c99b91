"""Word weights: a per-word factor on the transport mass of a document.

A document's mass is its word counts (nBOW); a weighting multiplies the count of each word by
a weight before the mass is normalised, so every metric and every mode (paired, all pairs,
search) sees the same weighted documents. With WRD the weight multiplies the norm as well
(mass = count x weight x norm, as in Yokoi et al. 2020). The transport problems are the same
problems over other masses, so they stay exact, and WCD and RWMD stay lower bounds.

- ``none``: every word weighs 1 (Kusner et al. 2015).
- ``idf``: ``ln((1 + N) / (1 + df(w))) + 1``, the smoothed inverse document frequency over
  ``N`` documents of which ``df(w)`` hold ``w`` (Sato et al. 2022 find TF-IDF-weighted WMD the
  best on average). It is never below 1, so no word loses all its mass.
- ``sif``: ``a / (a + p(w))``, the smooth inverse frequency of Arora et al. (2017), with
  ``p(w)`` the word's share of all tokens and ``a`` (:data:`DEFAULT_SIF_A`) its constant.
  ``p(w)`` comes from a word-frequency file, from the texts, or (``frequencies="rank"``) from
  Zipf's law over the vectors' word order, ``p = 1 / ((r + 1) H)`` for the word of rank ``r``
  (``H = ln n + 0.5772`` over ``n`` words): vectors files list the most frequent words first
  (GloVe, word2vec, fastText, the Tencent embeddings, kxtool's built-in vectors).

The counts come from the texts being compared (both sides of a paired or all-pairs run, the
corpus of a search) or from a file: a word-frequency file (``word count`` a line, for
``sif``) or a document-frequency file (``word df`` a line plus one ``<documents> N`` line, for
``idf``). Words are counted after tokenisation, stopword removal and out-of-vocabulary
backoff, so a weight is what the document's mass actually holds.
"""

from __future__ import annotations

import math
import os
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import KxError

WEIGHTINGS = ("none", "idf", "sif")
#: Arora et al.'s constant: with ``p(w)`` of 1e-3 a word keeps half its weight.
DEFAULT_SIF_A = 1e-3
#: The line of a document-frequency file that gives the number of documents.
DOCUMENTS_KEY = "<documents>"
#: ``frequencies`` values that are not files.
FREQ_TEXTS = "texts"
FREQ_RANK = "rank"


@dataclass(frozen=True)
class Weighting:
    """How to weigh words: ``scheme`` (``"none"``, ``"idf"``, ``"sif"``), ``sif_a``, and where
    the counts come from (``frequencies``: a word-frequency file for ``sif``, ``"rank"`` for
    Zipf's law over the vectors' order, ``"texts"`` or ``None`` for the texts;
    ``doc_frequencies``: a document-frequency file for ``idf``, ``None`` for the texts).

    >>> Weighting("sif", frequencies="counts.txt").needs_texts
    False
    >>> Weighting("idf").needs_texts
    True
    """

    scheme: str = "none"
    sif_a: float = DEFAULT_SIF_A
    frequencies: str | None = None
    doc_frequencies: str | None = None

    def __post_init__(self) -> None:
        if self.scheme not in WEIGHTINGS:
            raise KxError(
                f"unknown weighting {self.scheme!r} (choose from {', '.join(WEIGHTINGS)})"
            )
        if not (self.sif_a > 0 and math.isfinite(self.sif_a)):
            raise KxError(f"the SIF constant must be a positive number, not {self.sif_a!r}")

    @property
    def needs_texts(self) -> bool:
        """Whether the weights are counted from the texts (no file gives them)."""
        if self.scheme == "idf":
            return self.doc_frequencies is None
        if self.scheme == "sif":
            return self.frequencies in (None, FREQ_TEXTS)
        return False


@dataclass
class WordWeights:
    """Weights fitted to one set of vectors: ``values[i]`` is the weight of vocabulary row
    ``i`` (``None``: every weight is 1).

    >>> from kxtool.vectors import Vectors
    >>> v = Vectors(["a", "b"], np.eye(2, dtype=np.float32))
    >>> idf_weights(v, [np.array([0]), np.array([0, 1])]).values.round(4).tolist()
    [1.0, 1.4055]
    """

    scheme: str
    values: np.ndarray | None
    vectors: Any = None

    def of(self, ids: np.ndarray) -> np.ndarray | None:
        """The weights of vocabulary rows ``ids`` (``None`` when all are 1)."""
        return None if self.values is None else self.values[ids]


def as_weighting(weights: str | Weighting | WordWeights | None) -> Weighting | WordWeights:
    """A :class:`Weighting` from a scheme name, or the argument itself.

    >>> as_weighting("sif").scheme
    'sif'
    """
    if weights is None:
        return Weighting()
    if isinstance(weights, Weighting | WordWeights):
        return weights
    if isinstance(weights, str):
        return Weighting(weights)
    raise TypeError(f"weights must be a scheme name, Weighting or WordWeights, not {weights!r}")


def idf_weights(
    vectors: Any, docs_ids: Iterable[np.ndarray], *, documents: int | None = None
) -> WordWeights:
    """Smoothed IDF weights from the distinct vocabulary rows of each document.

    >>> from kxtool.vectors import Vectors
    >>> v = Vectors(["a", "b", "c"], np.eye(3, dtype=np.float32))
    >>> w = idf_weights(v, [np.array([0, 1]), np.array([0])])
    >>> w.values.round(4).tolist()  # a in both, b in one, c in none of the 2 documents
    [1.0, 1.4055, 2.0986]
    """
    df = np.zeros(len(vectors), dtype=np.float64)
    n = 0
    for ids in docs_ids:
        n += 1
        if len(ids):
            df[np.asarray(ids, dtype=np.int64)] += 1.0
    return _idf(vectors, df, n if documents is None else documents)


def _idf(vectors: Any, df: np.ndarray, n: int) -> WordWeights:
    values = np.full(len(df), math.log(1.0 + n) + 1.0)  # the words no document holds
    seen = np.flatnonzero(df)
    values[seen] = np.log((1.0 + n) / (1.0 + df[seen])) + 1.0
    return WordWeights("idf", values, vectors)


def sif_weights(
    vectors: Any, counts: np.ndarray, total: float, a: float = DEFAULT_SIF_A
) -> WordWeights:
    """SIF weights ``a / (a + count / total)`` from token counts over the vocabulary rows.

    >>> from kxtool.vectors import Vectors
    >>> v = Vectors(["a", "b"], np.eye(2, dtype=np.float32))
    >>> sif_weights(v, np.array([900.0, 100.0]), 1000.0, a=0.1).values.round(4).tolist()
    [0.1, 0.5]
    """
    counts = np.asarray(counts, dtype=np.float64)
    values = np.ones(len(counts))  # p = 0: weight 1
    if total > 0:
        seen = np.flatnonzero(counts)
        values[seen] = a / (a + counts[seen] / total)
    return WordWeights("sif", values, vectors)


def rank_sif_weights(vectors: Any, a: float = DEFAULT_SIF_A) -> WordWeights:
    """SIF weights with ``p(w)`` from Zipf's law over the vectors' order (most frequent first):
    ``p = 1 / ((r + 1) (ln n + 0.5772))`` for the word of rank ``r`` among ``n``.

    >>> from kxtool.vectors import Vectors
    >>> v = Vectors(["the", "of", "cat"], np.eye(3, dtype=np.float32))
    >>> rank_sif_weights(v, a=0.1).values.round(3).tolist()
    [0.144, 0.251, 0.335]
    """
    key = (id(vectors), a)
    hit = _RANK_CACHE.get(key)
    if hit is not None and hit[0]() is vectors:
        return hit[1]
    n = len(vectors)
    p = 1.0 / (np.arange(1, n + 1, dtype=np.float64) * (math.log(n) + 0.5772))
    out = WordWeights("sif", a / (a + p), vectors)
    if len(_RANK_CACHE) >= 4:
        _RANK_CACHE.pop(next(iter(_RANK_CACHE)))
    try:
        _RANK_CACHE[key] = (weakref.ref(vectors), out)
    except TypeError:  # pragma: no cover - vectors that cannot be weakly referenced
        pass
    return out


# the rank weights of recent vectors (computed once per vectors and constant)
_RANK_CACHE: dict[tuple[int, float], tuple[Any, WordWeights]] = {}


def _norm_word(word: str, lowercase: bool) -> str:
    return word.lower() if lowercase else word


def read_counts(
    path: str | os.PathLike[str],
    vectors: Any,
    *,
    lowercase: bool = True,
    documents: bool = False,
) -> tuple[np.ndarray, float, int | None]:
    """Read a frequency file: one ``word count`` a line (whitespace between; blank lines and a
    header without a number skipped). Returns the counts over the vocabulary rows of
    ``vectors``, the total of all counts (words outside the vectors included), and, with
    ``documents``, the number of documents from the ``<documents> N`` line.

    >>> import tempfile
    >>> from kxtool.vectors import Vectors
    >>> v = Vectors(["cat", "dog"], np.eye(2, dtype=np.float32))
    >>> with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
    ...     _ = f.write("cat 30\\nDog 10\\nzebra 60\\n")
    >>> counts, total, _ = read_counts(f.name, v)
    >>> counts.tolist(), total
    ([30.0, 10.0], 100.0)
    """
    from ..textio import display_name, open_input

    p = os.fspath(path)
    name = display_name(p)
    index = vectors.index
    counts = np.zeros(len(vectors), dtype=np.float64)
    total = 0.0
    n_docs: int | None = None
    try:
        with open_input(p) as f:
            for number, raw in enumerate(f, 1):
                line = raw.decode("utf-8", errors="replace").strip()
                if not line:
                    continue
                parts = line.rsplit(None, 1)
                if len(parts) != 2:
                    raise KxError(f"{name}:{number}: expected 'word count', got {line[:60]!r}")
                word, num = parts
                try:
                    c = float(num)
                except ValueError:
                    if number == 1:  # a header line
                        continue
                    raise KxError(f"{name}:{number}: {num[:30]!r} is not a count") from None
                if not (c >= 0 and math.isfinite(c)):
                    raise KxError(f"{name}:{number}: the count must be 0 or more, not {num!r}")
                if word == DOCUMENTS_KEY:
                    n_docs = int(c)
                    continue
                total += c
                i = index.get(_norm_word(word, lowercase))
                if i is not None:
                    counts[i] += c
    except FileNotFoundError:
        raise KxError(f"frequency file {name!r} not found") from None
    except IsADirectoryError:
        raise KxError(f"cannot read frequency file {name!r}: it is a directory") from None
    if documents:
        if n_docs is None:
            raise KxError(
                f"{name}: a document-frequency file needs a line '{DOCUMENTS_KEY} N' with the"
                " number of documents"
            )
        if n_docs < 1 or counts.max(initial=0.0) > n_docs:
            raise KxError(
                f"{name}: '{DOCUMENTS_KEY} {n_docs}' is smaller than a word's document count"
            )
    return counts, total, n_docs


def weights_from_file(weighting: Weighting, vectors: Any, *, lowercase: bool = True) -> WordWeights:
    """The weights of ``weighting`` from its frequency file.

    >>> import tempfile
    >>> from kxtool.vectors import Vectors
    >>> v = Vectors(["cat", "the"], np.eye(2, dtype=np.float32))
    >>> with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
    ...     _ = f.write("<documents> 10\\nthe 10\\ncat 1\\n")
    >>> weights_from_file(Weighting("idf", doc_frequencies=f.name), v).values.round(3).tolist()
    [2.705, 1.0]
    """
    if weighting.scheme == "idf" and weighting.doc_frequencies is not None:
        df, _, n = read_counts(weighting.doc_frequencies, vectors, lowercase=lowercase,
                               documents=True)
        return _idf(vectors, df, int(n or 0))
    if weighting.scheme == "sif" and weighting.frequencies == FREQ_RANK:
        return rank_sif_weights(vectors, weighting.sif_a)
    if weighting.scheme == "sif" and weighting.frequencies not in (None, FREQ_TEXTS):
        counts, total, _ = read_counts(weighting.frequencies, vectors, lowercase=lowercase)
        return sif_weights(vectors, counts, total, weighting.sif_a)
    raise ValueError(f"{weighting!r} has no frequency file")
