"""One pair of texts: WMD, WRD, WCD, RWMD and Sinkhorn between two texts (the library
functions; the batch modes and search work on prepared docs)."""

from __future__ import annotations

from typing import Any

from ..text import Tokenizer
from .space import DEFAULT_REG, Doc, Text, _check_reg, _prepare_two

# ---------------------------------------------------------------------------------------------
# one pair


def text_distance(
    a: Text | Doc,
    b: Text | Doc,
    vectors: Any = None,
    *,
    metric: str = "wmd",
    tokenizer: Tokenizer | None = None,
    reg: float = DEFAULT_REG,
    weights: Any = None,
) -> float:
    """``metric`` between two texts (strings are tokenised; lists are taken as tokens).

    ``vectors`` is a :class:`~kxtool.vectors.Vectors`, a path, or ``None`` (``KXTOOL_VECTORS``
    or the shipped English default). Returns ``nan`` when a text has no known word.
    ``weights`` (``"none"``, ``"idf"``, ``"sif"``, see :mod:`kxtool.wmd.weights`) weighs the
    words; counted from the texts, the two texts are the corpus.

    >>> v = default_vectors()
    >>> round(text_distance("the cat sat on the mat", "a dog lay on the rug", v, metric="wcd"), 4)
    2.2882
    >>> round(text_distance(["cat"], ["dog"], v), 4)  # token lists are taken as they are
    1.8844
    """
    if metric == "sinkhorn":
        _check_reg(reg)
    space, (da,), (db,) = _prepare_two([a], [b], vectors, metric, tokenizer, None, weights)
    return space.measure(metric, reg)(da, db)


def wmd(a: Text, b: Text, vectors: Any = None, *, tokenizer: Tokenizer | None = None) -> float:
    """Word Mover's Distance (Kusner et al. 2015) between two texts: nBOW mass, Euclidean
    cost. ``nan`` when a text has no known word. For example
    ``wmd("Obama speaks to the media in Illinois", "The president greets the press", vecs)``.

    >>> a, b = "Obama speaks to the media in Illinois", "The president greets the press in Chicago"
    >>> round(wmd(a, b, default_vectors()), 4)
    4.1514
    """
    return text_distance(a, b, vectors, metric="wmd", tokenizer=tokenizer)


def wrd(a: Text, b: Text, vectors: Any = None, *, tokenizer: Tokenizer | None = None) -> float:
    """Word Rotator's Distance (Yokoi et al. 2020): mass proportional to vector norms, cost
    ``1 - cos``. In ``[0, 2]``; ``1 - wrd`` is a similarity. ``nan`` without known words.

    >>> a, b = "Obama speaks to the media in Illinois", "The president greets the press in Chicago"
    >>> round(wrd(a, b, default_vectors()), 4)
    0.3664
    """
    return text_distance(a, b, vectors, metric="wrd", tokenizer=tokenizer)


def wcd(a: Text, b: Text, vectors: Any = None, *, tokenizer: Tokenizer | None = None) -> float:
    """Word Centroid Distance, a lower bound of WMD.

    >>> v = default_vectors()
    >>> a, b = "the cat sat on the mat", "a dog lay on the rug"
    >>> round(wcd(a, b, v), 4), round(wmd(a, b, v), 4)  # a lower bound
    (2.2882, 3.6185)
    """
    return text_distance(a, b, vectors, metric="wcd", tokenizer=tokenizer)


def rwmd(a: Text, b: Text, vectors: Any = None, *, tokenizer: Tokenizer | None = None) -> float:
    """Relaxed WMD, a lower bound of WMD at least as tight as WCD.

    >>> v = default_vectors()
    >>> a, b = "the cat sat on the mat", "a dog lay on the rug"
    >>> wcd(a, b, v) <= rwmd(a, b, v) <= wmd(a, b, v) + 1e-12
    True
    """
    return text_distance(a, b, vectors, metric="rwmd", tokenizer=tokenizer)


def sinkhorn(
    a: Text,
    b: Text,
    vectors: Any = None,
    *,
    reg: float = DEFAULT_REG,
    tokenizer: Tokenizer | None = None,
) -> float:
    """Entropic-regularised WMD: the transport cost ``<T, M>`` of the entropic-regularised
    plan ``T`` (the plan minimising ``<T, M> - reg * H(T)``), rounded onto the plans with
    exactly the texts' masses (see :func:`kxtool.transport.sinkhorn`). Never below WMD; it
    decreases to WMD as ``reg`` shrinks (within ``reg * log(n1 * n2)`` of it). A solve that
    stops at the iteration limit issues a :class:`~kxtool.errors.KxWarning` with the marginal
    error it reached.

    >>> v = default_vectors()
    >>> a, b = "the cat sat on the mat", "a dog lay on the rug"
    >>> exact, smooth = wmd(a, b, v), sinkhorn(a, b, v, reg=0.01)
    >>> exact <= smooth <= exact + 0.01 * math.log(len(set(a.split())) * len(set(b.split())))
    True
    """
    return text_distance(a, b, vectors, metric="sinkhorn", tokenizer=tokenizer, reg=reg)
