"""Document distances over word vectors: WMD, WRD, WCD, RWMD and Sinkhorn.

A document is its bag of known words. Each text is turned once into a :class:`Doc` - the
unique vocabulary rows it uses and their transport mass - and the distances work on two such
docs: a small dense cost matrix between the words of one and the words of the other (float64),
solved exactly by :func:`kxtool.transport.emd` (kxtool's compiled network simplex, else POT's).

- **WMD** (Kusner et al., 2015, "From Word Embeddings To Document Distances"): mass is the
  normalised word count (nBOW), cost the Euclidean distance between word vectors.
- **WRD** (Yokoi et al., 2020, "Word Rotator's Distance"; 苏剑林, "从EMD、WMD到WRD", 2020-05-13):
  mass proportional to count times vector norm, cost ``1 - cos``; always in ``[0, 2]``.
- **WCD**: the distance between the documents' weighted centroids, a lower bound of WMD.
- **RWMD**: the relaxed WMD, which drops one of the two marginal constraints and takes the
  larger of the two relaxations, a tighter lower bound of WMD (Kusner et al.).
- **Sinkhorn**: the transport cost ``<T, M>`` of the entropic-regularised plan of the WMD
  problem (:func:`kxtool.transport.sinkhorn`: log domain, epsilon scaling, run until the plan's
  marginals are within 1e-10 of the texts' masses, then rounded onto the feasible plans). It is
  the cost of a feasible plan, so never below WMD, and it decreases to WMD as ``reg`` shrinks.

A text with no known word has no distance: every function returns ``nan`` for it.

**Word weights** (:mod:`.weights`, ``weights="idf"`` or ``"sif"``) multiply each word's count
before the mass is normalised (for WRD: count x weight x norm, as Yokoi et al. do), in every
metric and mode; the problems stay exact and the bounds stay bounds. A Chinese word missing
from the vectors backs off to its longest pieces that are there (then its characters), which
share its count (:meth:`DocSpace.pieces`).

Search (:func:`wmd_search`) finds the ``k`` nearest corpus texts of each query exactly, with
Kusner's prefetch-and-prune: candidates are visited by increasing WCD, exact distances are
computed for the first ``k``, and a later candidate is skipped when its RWMD already exceeds
the current ``k``-th best; the visit stops when the WCD does. WRD has the same two bounds (its
cost is half the squared Euclidean distance between unit vectors, so the centroid bound is
``|c1 - c2|^2 / 2``). Ties are broken by corpus index, so the result equals brute force.

Modules: :mod:`.space` (documents and the space that measures them), :mod:`.distances` (one
pair of texts), :mod:`.batch` (paired and all-pairs, in worker processes through
:mod:`kxtool.parallel`), :mod:`.search` (exact top-k with prefetch-and-prune), :mod:`.weights`
(IDF and SIF word weights).
"""

from __future__ import annotations

import sys
from typing import Any

from .batch import cross_rows, wmd_cross, wmd_pairs
from .distances import rwmd, sinkhorn, text_distance, wcd, wmd, wrd
from .search import search_rows, wmd_search
from .space import DEFAULT_REG, METRICS, Doc, DocSpace, Text, WmdStats
from .weights import DEFAULT_SIF_A, WEIGHTINGS, Weighting, WordWeights

__all__ = [
    "DEFAULT_REG",
    "METRICS",
    "Doc",
    "DocSpace",
    "Text",
    "WmdStats",
    "WEIGHTINGS",
    "DEFAULT_SIF_A",
    "Weighting",
    "WordWeights",
    "wmd",
    "wrd",
    "wcd",
    "rwmd",
    "sinkhorn",
    "text_distance",
    "wmd_pairs",
    "wmd_cross",
    "cross_rows",
    "wmd_search",
    "search_rows",
]


# ---------------------------------------------------------------------------------------------
# ``kxtool.wmd`` is both this module and the :func:`wmd` function of the library API (the
# package's lazy attribute replaces the module by the function once it is looked up, but an
# ``import kxtool.wmd`` binds the module): calling the module calls the function, so
# ``kxtool.wmd(a, b, vectors)`` works either way.


class _CallableModule(type(sys.modules[__name__])):  # type: ignore[misc]
    def __call__(self, *args: Any, **kwargs: Any) -> float:
        return wmd(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
