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

Search (:func:`wmd_search`) finds the ``k`` nearest corpus texts of each query exactly, with
Kusner's prefetch-and-prune: candidates are visited by increasing WCD, exact distances are
computed for the first ``k``, and a later candidate is skipped when its RWMD already exceeds
the current ``k``-th best; the visit stops when the WCD does. WRD has the same two bounds (its
cost is half the squared Euclidean distance between unit vectors, so the centroid bound is
``|c1 - c2|^2 / 2``). Ties are broken by corpus index, so the result equals brute force.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import math
import os
import sys
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import KxError
from .progress import Progress
from .text import Tokenizer, has_cjk
from .transport import emd as _emd
from .transport import sinkhorn as _sinkhorn

__all__ = [
    "METRICS",
    "Doc",
    "DocSpace",
    "WmdStats",
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

METRICS = ("wmd", "wrd", "wcd", "rwmd", "sinkhorn")
DEFAULT_REG = 0.1
_NAN = float("nan")

Text = str | Sequence[str]


# ---------------------------------------------------------------------------------------------
# documents


@dataclass(slots=True)
class Doc:
    """A text as transport mass over vocabulary rows.

    ``rows`` index the :class:`DocSpace`'s float64 table (one row per distinct known word),
    ``w`` is the mass (sums to 1), ``c`` the mass-weighted centroid, ``sq`` the squared norms
    of the rows (Euclidean spaces only). ``tokens``/``oov`` count the tokens seen and dropped.
    """

    rows: np.ndarray
    w: np.ndarray
    c: np.ndarray | None
    sq: np.ndarray | None
    tokens: int = 0
    oov: int = 0

    @property
    def empty(self) -> bool:
        return len(self.rows) == 0


@dataclass
class WmdStats:
    """What a batch saw: texts, tokens, out-of-vocabulary tokens, texts without known words,
    and for searches how many exact distances were computed and how many candidates pruned."""

    texts: int = 0
    tokens: int = 0
    oov_tokens: int = 0
    empty_texts: int = 0
    oov_words: Counter = field(default_factory=Counter)
    exact: int = 0
    pruned: int = 0
    candidates: int = 0

    def merge(self, other: WmdStats) -> None:
        self.texts += other.texts
        self.tokens += other.tokens
        self.oov_tokens += other.oov_tokens
        self.empty_texts += other.empty_texts
        self.oov_words.update(other.oov_words)
        self.exact += other.exact
        self.pruned += other.pruned
        self.candidates += other.candidates


def _as_vectors(vectors: Any):  # type: ignore[no-untyped-def]
    """A :class:`~kxtool.vectors.Vectors`, a path to load, or ``None`` for the default."""
    from . import vectors as vmod

    if isinstance(vectors, vmod.Vectors):
        return vectors
    resolve = getattr(vmod, "resolve_vectors", None)
    if resolve is None:  # pragma: no cover - the loader is not there yet
        raise KxError("no vectors given and kxtool.vectors has no loader")
    return resolve(None if vectors is None else os.fspath(vectors))


_FULL_TABLE = 1 << 24  # vectors up to this many numbers are copied to float64 in one go


class _Table:
    """The float64 copies of the vocabulary rows that texts have used, shared by every
    :class:`DocSpace` over the same vectors and kind (so repeated calls copy nothing)."""

    def __init__(self, vectors: Any, kind: str) -> None:
        self.vectors = vectors
        self.kind = kind
        self.lock = threading.Lock()
        self.full = len(vectors) * vectors.dim <= _FULL_TABLE
        if self.full:  # small vectors (the built-in 100k x 50 ones): copy them all at once
            self.map = np.arange(len(vectors), dtype=np.int64)
            self.n = 0
            self.table = np.empty((0, vectors.dim))
            self.tsq = self.tnorm = np.empty(0)
            self._fill(np.arange(len(vectors), dtype=np.int64), 0)
            return
        # vocabulary row -> row of the table (-1: not copied yet)
        self.map = np.full(len(vectors), -1, dtype=np.int64)
        self.n = 0
        self.table = np.empty((64, vectors.dim), dtype=np.float64)
        self.tsq = np.empty(64, dtype=np.float64)  # squared norm of the table rows (euclid)
        self.tnorm = np.empty(64, dtype=np.float64)  # norm of the original vector

    def _fill(self, ids: np.ndarray, start: int) -> None:
        """Copy the vectors ``ids`` to table rows ``start, start + 1, ...``."""
        stop = start + len(ids)
        self._grow(stop)
        step = 65536
        for s in range(0, len(ids), step):
            part = ids[s : s + step]
            V = np.asarray(self.vectors.subset(part), dtype=np.float64)
            sq = np.einsum("ij,ij->i", V, V)
            nrm = np.sqrt(sq)
            at = slice(start + s, start + s + len(part))
            if self.kind == "cosine":
                safe = np.where(nrm > 0, nrm, 1.0)
                self.table[at] = V / safe[:, None]
                self.tsq[at] = (nrm > 0).astype(np.float64)
            else:
                self.table[at] = V
                self.tsq[at] = sq
            self.tnorm[at] = nrm
        self.n = stop

    def _grow(self, need: int) -> None:
        cap = len(self.table)
        if need <= cap:
            return
        cap = max(cap, 64)
        while cap < need:
            cap *= 2
        if self.full:
            cap = need
        for name in ("table", "tsq", "tnorm"):
            old = getattr(self, name)
            new = np.empty((cap, *old.shape[1:]), dtype=np.float64)
            new[: self.n] = old[: self.n]
            setattr(self, name, new)

    def rows(self, ids: list[int]) -> np.ndarray:
        """Table rows of the (distinct) vocabulary ids, copying new ones in."""
        idx = np.array(ids, dtype=np.int64)
        if self.full:
            return idx
        loc = self.map[idx]
        miss = loc < 0
        if miss.any():
            with self.lock:
                loc = self.map[idx]
                miss = loc < 0
                new = idx[miss]
                start = self.n
                self._fill(new, start)
                fresh = np.arange(start, self.n, dtype=np.int64)
                self.map[new] = fresh
                loc[miss] = fresh
        return loc


_TABLES: dict[tuple[int, str], tuple[Any, _Table]] = {}
_TABLES_LOCK = threading.Lock()


def _shared_table(vectors: Any, kind: str) -> _Table:
    key = (id(vectors), kind)
    with _TABLES_LOCK:
        hit = _TABLES.get(key)
        if hit is not None and hit[0]() is vectors:
            return hit[1]
        for k in [k for k, (ref, _) in _TABLES.items() if ref() is None]:
            del _TABLES[k]
        while len(_TABLES) >= 4:
            del _TABLES[next(iter(_TABLES))]
        table = _Table(vectors, kind)
        try:
            _TABLES[key] = (weakref.ref(vectors), table)
        except TypeError:  # pragma: no cover - vectors that cannot be weakly referenced
            pass
        return table


class DocSpace:
    """Word vectors prepared for one family of distances.

    ``kind`` is ``"euclid"`` (WMD, WCD, RWMD, Sinkhorn: raw vectors, nBOW mass) or ``"cosine"``
    (WRD: unit vectors, mass proportional to the norm). Rows of the vectors are copied to a
    float64 table the first time a text uses them; the table is kept (while the vectors live)
    for later spaces over the same vectors.
    """

    def __init__(
        self,
        vectors: Any = None,
        kind: str = "euclid",
        tokenizer: Tokenizer | None = None,
        *,
        keep_oov: bool = True,
    ) -> None:
        if kind not in ("euclid", "cosine"):
            raise ValueError(f"kind must be 'euclid' or 'cosine', not {kind!r}")
        self.vectors = _as_vectors(vectors)
        self.kind = kind
        self.tokenizer = tokenizer if tokenizer is not None else _default_tokenizer()
        self.index = self.vectors.index
        self.is_default = bool(getattr(self.vectors, "is_default", False))
        self.keep_oov = keep_oov
        self._t = _shared_table(self.vectors, kind)
        self._check: Any = None
        self.stats = WmdStats()

    @property
    def table(self) -> np.ndarray:
        return self._t.table

    @property
    def tsq(self) -> np.ndarray:
        return self._t.tsq

    @property
    def tnorm(self) -> np.ndarray:
        return self._t.tnorm

    def _rows(self, ids: list[int]) -> np.ndarray:
        return self._t.rows(ids)

    # -- texts -> docs --------------------------------------------------------------------------
    def tokens(self, text: Text) -> list[str]:
        """The tokens of a text (a list of strings is taken as tokens already)."""
        toks = text if isinstance(text, str) else list(text)
        if self.is_default:
            self._check_language(toks)
        return self.tokenizer(toks) if isinstance(toks, str) else toks

    def _check_language(self, text: str | list[str]) -> None:
        """Chinese text with the built-in English vectors is an error, not a row of nans."""
        if self._check is None:
            from . import vectors as vmod

            self._check = getattr(vmod, "check_default_language", False)
        joined = text if isinstance(text, str) else " ".join(text)
        if self._check:
            self._check(self.vectors, joined)
        elif has_cjk(joined):  # pragma: no cover - the vectors module always has the check
            raise _cjk_error()

    def doc(self, text: Text | Doc) -> Doc:
        """A text (tokenised here), a list of tokens, or an already prepared :class:`Doc`."""
        if isinstance(text, Doc):
            return text
        toks = self.tokens(text)
        cnt = Counter(toks)
        ids: list[Any] = list(map(self.index.get, cnt))
        oov = 0
        if None in ids:
            missing = self.stats.oov_words if self.keep_oov else None
            known_ids: list[int] = []
            counts: list[int] = []
            for (t, n), i in zip(cnt.items(), ids, strict=True):
                if i is None:
                    oov += n
                    if missing is not None:
                        missing[t] += n
                else:
                    known_ids.append(i)
                    counts.append(n)
            ids = known_ids
            mass = np.array(counts, dtype=np.float64)
        else:
            mass = np.fromiter(cnt.values(), dtype=np.float64, count=len(cnt))
        st = self.stats
        st.texts += 1
        st.tokens += len(toks)
        st.oov_tokens += oov
        if not ids:
            st.empty_texts += 1
            return _empty_doc(len(toks), oov)
        rows = self._rows(ids)
        if self.kind == "cosine":
            mass *= self.tnorm[rows]
            keep = mass > 0
            if not keep.all():  # zero vectors have no direction and no mass
                rows, mass = rows[keep], mass[keep]
                if not len(rows):
                    st.empty_texts += 1
                    return _empty_doc(len(toks), oov)
        w = mass / mass.sum()
        sq = self.tsq[rows] if self.kind == "euclid" else None
        return Doc(rows, w, None, sq, len(toks), oov)

    def centroid(self, d: Doc) -> np.ndarray:
        """The mass-weighted mean of the doc's table rows (computed once)."""
        if d.c is None:
            d.c = d.w @ self.table[d.rows]
        return d.c

    def docs(self, texts: Iterable[Text | Doc]) -> list[Doc]:
        return [self.doc(t) for t in texts]

    # -- distances between docs ---------------------------------------------------------------
    def cost(self, d1: Doc, d2: Doc) -> np.ndarray:
        """The (n1, n2) float64 cost matrix between the words of two docs."""
        M = self._cost(d1.rows, d1.sq, d2.rows, d2.sq)
        np.putmask(M, d1.rows[:, None] == d2.rows[None, :], 0.0)
        return M

    def _cost(
        self, r1: np.ndarray, sq1: np.ndarray | None, r2: np.ndarray, sq2: np.ndarray | None
    ) -> np.ndarray:
        T = self._t.table
        M = np.take(T, r1, axis=0) @ np.take(T, r2, axis=0).T
        if self.kind == "euclid":  # |x - y|^2 = |x|^2 + |y|^2 - 2 x.y
            M *= -2.0
            M += sq1[:, None]  # type: ignore[index]
            M += sq2
            np.maximum(M, 0.0, out=M)
            np.sqrt(M, out=M)
        else:
            np.subtract(1.0, M, out=M)
            np.clip(M, 0.0, 2.0, out=M)
        return M

    def exact(self, d1: Doc, d2: Doc) -> float:
        """WMD (euclid) or WRD (cosine) between two docs; nan if either is empty.

        For WMD the mass two docs share stays where it is: with a metric cost, the optimal
        transport depends only on ``a - b`` (Kantorovich-Rubinstein duality), so each shared
        word keeps ``min(a_w, b_w)`` in place and only the rest is solved - a smaller problem
        with the same optimum. (WRD's cost ``1 - cos`` is not a metric: solved in full.)
        """
        if d1.empty or d2.empty:
            return _NAN
        if self.kind != "euclid":
            return _emd(d1.w, d2.w, self.cost(d1, d2))
        eq = d1.rows[:, None] == d2.rows[None, :]
        ii, jj = np.nonzero(eq)
        if 20 * len(ii) < min(len(d1.rows), len(d2.rows)):
            # hardly any shared word: removing it would cost more than it saves
            M = self._cost(d1.rows, d1.sq, d2.rows, d2.sq)
            if len(ii):
                M[ii, jj] = 0.0
            return _emd(d1.w, d2.w, M)
        a = d1.w.copy()
        b = d2.w.copy()
        m = np.minimum(a[ii], b[jj])
        a[ii] -= m
        b[jj] -= m
        ka = a > 0
        kb = b > 0
        if not ka.any() or not kb.any():
            return 0.0
        M = self._cost(d1.rows[ka], d1.sq[ka], d2.rows[kb], d2.sq[kb])  # type: ignore[index]
        return _emd(a[ka], b[kb], M)

    def rwmd(self, d1: Doc, d2: Doc) -> float:
        if d1.empty or d2.empty:
            return _NAN
        M = self.cost(d1, d2)
        return max(float(d1.w @ M.min(axis=1)), float(d2.w @ M.min(axis=0)))

    def wcd(self, d1: Doc, d2: Doc) -> float:
        """The centroid bound: ``|c1 - c2|`` (euclid) or ``|c1 - c2|^2 / 2`` (cosine)."""
        if d1.empty or d2.empty:
            return _NAN
        diff = self.centroid(d1) - self.centroid(d2)
        s = float(diff @ diff)
        return math.sqrt(s) if self.kind == "euclid" else 0.5 * s

    def sinkhorn(self, d1: Doc, d2: Doc, reg: float = DEFAULT_REG) -> float:
        if d1.empty or d2.empty:
            return _NAN
        return _sinkhorn(d1.w, d2.w, self.cost(d1, d2), reg)

    def measure(self, metric: str, reg: float = DEFAULT_REG) -> Callable[[Doc, Doc], float]:
        """The function computing ``metric`` between two docs of this space."""
        if metric in ("wmd", "wrd"):
            return self.exact
        if metric == "wcd":
            return self.wcd
        if metric == "rwmd":
            return self.rwmd
        if metric == "sinkhorn":
            return lambda a, b: self.sinkhorn(a, b, reg)
        raise KxError(f"unknown metric {metric!r} (choose from {', '.join(METRICS)})")


def _empty_doc(tokens: int, oov: int) -> Doc:
    return Doc(np.empty(0, dtype=np.int64), np.empty(0), None, None, tokens, oov)


def _cjk_error() -> KxError:
    return KxError(
        "the text is Chinese but the vectors are kxtool's English defaults (GloVe): pass"
        " Chinese vectors with --vectors FILE or set KXTOOL_VECTORS"
    )


_DEFAULT_TOKENIZER: Tokenizer | None = None


def _default_tokenizer() -> Tokenizer:
    global _DEFAULT_TOKENIZER
    if _DEFAULT_TOKENIZER is None:
        _DEFAULT_TOKENIZER = Tokenizer()
    return _DEFAULT_TOKENIZER


def _kind(metric: str) -> str:
    if metric not in METRICS:
        raise KxError(f"unknown metric {metric!r} (choose from {', '.join(METRICS)})")
    return "cosine" if metric == "wrd" else "euclid"


def _check_reg(reg: float) -> None:
    if not (reg > 0 and math.isfinite(reg)):
        raise KxError(f"the Sinkhorn regularisation must be a positive number, not {reg!r}")


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
) -> float:
    """``metric`` between two texts (strings are tokenised; lists are taken as tokens).

    ``vectors`` is a :class:`~kxtool.vectors.Vectors`, a path, or ``None`` (``KXTOOL_VECTORS``
    or the shipped English default). Returns ``nan`` when a text has no known word.
    """
    if metric == "sinkhorn":
        _check_reg(reg)
    space = DocSpace(vectors, _kind(metric), tokenizer)
    return space.measure(metric, reg)(space.doc(a), space.doc(b))


def wmd(a: Text, b: Text, vectors: Any = None, *, tokenizer: Tokenizer | None = None) -> float:
    """Word Mover's Distance (Kusner et al. 2015) between two texts: nBOW mass, Euclidean
    cost. ``nan`` when a text has no known word. For example
    ``wmd("Obama speaks to the media in Illinois", "The president greets the press", vecs)``.
    """
    return text_distance(a, b, vectors, metric="wmd", tokenizer=tokenizer)


def wrd(a: Text, b: Text, vectors: Any = None, *, tokenizer: Tokenizer | None = None) -> float:
    """Word Rotator's Distance (Yokoi et al. 2020): mass proportional to vector norms, cost
    ``1 - cos``. In ``[0, 2]``; ``1 - wrd`` is a similarity. ``nan`` without known words."""
    return text_distance(a, b, vectors, metric="wrd", tokenizer=tokenizer)


def wcd(a: Text, b: Text, vectors: Any = None, *, tokenizer: Tokenizer | None = None) -> float:
    """Word Centroid Distance, a lower bound of WMD."""
    return text_distance(a, b, vectors, metric="wcd", tokenizer=tokenizer)


def rwmd(a: Text, b: Text, vectors: Any = None, *, tokenizer: Tokenizer | None = None) -> float:
    """Relaxed WMD, a lower bound of WMD at least as tight as WCD."""
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
    error it reached."""
    return text_distance(a, b, vectors, metric="sinkhorn", tokenizer=tokenizer, reg=reg)


# ---------------------------------------------------------------------------------------------
# worker processes (fork: the prepared space is inherited, never pickled)

_WORK: dict[str, Any] = {}


def _worker_init() -> None:
    """Workers die quietly when the pool is terminated, and leave Ctrl-C to the parent."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _fork_pool(jobs: int):  # type: ignore[no-untyped-def]
    import multiprocessing as mp

    try:
        ctx = mp.get_context("fork")
    except ValueError:  # pragma: no cover - no fork on this platform
        return None
    return ctx.Pool(jobs, initializer=_worker_init)


@contextlib.contextmanager
def _workers(jobs: int, **work: Any) -> Iterator[Any]:
    """Publish ``work`` in ``_WORK`` (forked workers inherit it) and start a pool of ``jobs``
    processes (``None`` for one job); on exit, however it comes, stop the pool and restore
    ``_WORK`` as it was (so a generator nested in another's loop keeps the outer state)."""
    prev = dict(_WORK)
    _WORK.clear()
    _WORK.update(work)
    pool = _fork_pool(jobs) if jobs > 1 else None
    try:
        yield pool
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        _WORK.clear()
        _WORK.update(prev)


def _jobs(jobs: int | None) -> int:
    if jobs is None or jobs == 1:
        return 1
    if jobs <= 0:
        return max(1, os.cpu_count() or 1)
    return jobs


def _ordered(
    pool: Any, fn: Callable[..., Any], chunks: Iterable[Any], window: int
) -> Iterator[Any]:
    """Run ``fn`` over ``chunks`` in ``pool``, at most ``window`` in flight, results in order."""
    pending: list[Any] = []
    for chunk in chunks:
        pending.append(pool.apply_async(fn, (chunk,)))
        if len(pending) >= window:
            yield pending.pop(0).get()
    while pending:
        yield pending.pop(0).get()


def _chunked(it: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for x in it:
        chunk.append(x)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# ---------------------------------------------------------------------------------------------
# paired: line i of A against line i of B


def _zip_strict(a: Iterable[Any], b: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
    ia, ib = iter(a), iter(b)
    sentinel = object()
    while True:
        x = next(ia, sentinel)
        y = next(ib, sentinel)
        if x is sentinel and y is sentinel:
            return
        if x is sentinel or y is sentinel:
            short = "first" if x is sentinel else "second"
            raise KxError(f"the two inputs differ in length: the {short} one is shorter")
        yield x, y


def _pairs_chunk(chunk: list[tuple[Text, Text]]) -> tuple[list[float], WmdStats]:
    space: DocSpace = _WORK["space"]
    fn = _WORK["fn"]
    space.stats = WmdStats()
    doc = space.doc
    out = [fn(doc(x), doc(y)) for x, y in chunk]
    return out, space.stats


def wmd_pairs(
    texts_a: Iterable[Text],
    texts_b: Iterable[Text],
    vectors: Any = None,
    *,
    metric: str = "wmd",
    tokenizer: Tokenizer | None = None,
    reg: float = DEFAULT_REG,
    jobs: int = 1,
    chunk_size: int = 128,
    progress: Progress | None = None,
    stats: WmdStats | None = None,
) -> Iterator[float]:
    """Yield ``metric`` between ``texts_a[i]`` and ``texts_b[i]``, in order, as they are read.

    Both iterables are consumed in lockstep (they may be huge); differing lengths raise
    :class:`KxError` (when the shorter one runs out). ``nan`` for a pair with a text without
    known words. ``jobs > 1`` computes chunks of pairs in forked worker processes. ``stats``,
    when given, is filled with token and OOV counts.
    """
    if metric == "sinkhorn":
        _check_reg(reg)
    space = DocSpace(vectors, _kind(metric), tokenizer)
    fn = space.measure(metric, reg)
    total = stats if stats is not None else WmdStats()
    pairs = _zip_strict(texts_a, texts_b)
    jobs = _jobs(jobs)
    done = 0
    chunks: Iterator[list[tuple[Text, Text]]] = iter(())
    if jobs > 1:
        chunks = _chunked(pairs, chunk_size)
        first = next(chunks, None)
        if first is None:
            jobs = 1
        else:
            chunks = itertools.chain([first], chunks)
            _warm_tokenizer(space.tokenizer, first)
    with _workers(jobs, space=space, fn=fn) as pool:
        if pool is None:
            space.stats = total
            for x, y in itertools.chain(itertools.chain.from_iterable(chunks), pairs):
                yield fn(space.doc(x), space.doc(y))
                done += 1
                if progress is not None and done % 256 == 0:
                    progress("pairs", done, None)
        else:
            results = _ordered(pool, _pairs_chunk, chunks, 4 * jobs)
            for scores, st in results:
                total.merge(st)
                yield from scores
                done += len(scores)
                if progress is not None:
                    progress("pairs", done, None)
    if progress is not None:
        progress("pairs", done, done)


def _warm_tokenizer(tok: Tokenizer, sample: list[tuple[Text, Text]]) -> None:
    """Load jieba in the parent (once, not once per worker) when Chinese text is coming."""
    if tok.lang == "zh" or (
        tok.lang == "auto"
        and any(isinstance(t, str) and has_cjk(t) for pair in sample for t in pair)
    ):
        from .text import warm_up

        warm_up()


# ---------------------------------------------------------------------------------------------
# all pairs


def _prepare_two(
    texts_a: Iterable[Text | Doc],
    texts_b: Iterable[Text | Doc] | None,
    vectors: Any,
    metric: str,
    tokenizer: Tokenizer | None,
    stats: WmdStats | None,
) -> tuple[DocSpace, list[Doc], list[Doc]]:
    space = DocSpace(vectors, _kind(metric), tokenizer)
    if stats is not None:
        space.stats = stats
    A = space.docs(texts_a)
    B = A if texts_b is None else space.docs(texts_b)
    return space, A, B


def _cross_row(i: int) -> np.ndarray:
    fn = _WORK["fn"]
    a = _WORK["A"][i]
    B = _WORK["B"]
    if _WORK["metric"] == "wcd":
        return _wcd_row(_WORK["space"], a, B)
    return np.fromiter((fn(a, b) for b in B), dtype=np.float64, count=len(B))


def _cross_rows_chunk(rows: list[int]) -> list[np.ndarray]:
    return [_cross_row(i) for i in rows]


def _centroids(space: DocSpace, docs: Sequence[Doc]) -> tuple[np.ndarray, np.ndarray]:
    """The centroid matrix of ``docs`` (zeros for empty ones) and the mask of non-empty docs."""
    C = np.zeros((len(docs), space.vectors.dim), dtype=np.float64)
    ok = np.zeros(len(docs), dtype=bool)
    for j, d in enumerate(docs):
        if not d.empty:
            C[j] = space.centroid(d)
            ok[j] = True
    return C, ok


def _wcd_row(space: DocSpace, a: Doc, B: Sequence[Doc]) -> np.ndarray:
    C, ok = _WORK["cent"]
    if a.empty:
        return np.full(len(B), _NAN)
    D = C - space.centroid(a)
    s = np.einsum("ij,ij->i", D, D)
    out = np.sqrt(s) if space.kind == "euclid" else 0.5 * s
    out[~ok] = _NAN
    return out


def cross_rows(
    texts_a: Iterable[Text | Doc],
    texts_b: Iterable[Text | Doc] | None,
    vectors: Any = None,
    *,
    metric: str = "wmd",
    tokenizer: Tokenizer | None = None,
    reg: float = DEFAULT_REG,
    jobs: int = 1,
    progress: Progress | None = None,
    stats: WmdStats | None = None,
) -> Iterator[np.ndarray]:
    """Yield, for each text of A, the array of its ``metric`` to every text of B (``None``:
    B is A). All texts are read and prepared first; rows are computed in order (in worker
    processes with ``jobs > 1``)."""
    if metric == "sinkhorn":
        _check_reg(reg)
    space, A, B = _prepare_two(texts_a, texts_b, vectors, metric, tokenizer, stats)
    fn = space.measure(metric, reg)
    total = len(A) * len(B)
    jobs = _jobs(jobs) if len(A) > 1 else 1
    work = dict(space=space, fn=fn, A=A, B=B, metric=metric)
    if metric == "wcd":
        work["cent"] = _centroids(space, B)
    done = 0
    with _workers(jobs, **work) as pool:
        if pool is None:
            for i in range(len(A)):
                row = _cross_row(i)
                done += len(B)
                if progress is not None:
                    progress("pairs", done, total)
                yield row
        else:
            per = max(1, min(64, len(A) // (8 * jobs) or 1))
            chunks = _chunked(range(len(A)), per)
            for rows in _ordered(pool, _cross_rows_chunk, chunks, 4 * jobs):
                for row in rows:
                    done += len(B)
                    if progress is not None:
                        progress("pairs", done, total)
                    yield row


def wmd_cross(
    texts_a: Iterable[Text | Doc],
    texts_b: Iterable[Text | Doc] | None = None,
    vectors: Any = None,
    *,
    metric: str = "wmd",
    tokenizer: Tokenizer | None = None,
    reg: float = DEFAULT_REG,
    jobs: int = 1,
    progress: Progress | None = None,
    stats: WmdStats | None = None,
) -> np.ndarray:
    """The ``(len(A), len(B))`` matrix of ``metric`` between every text of A and of B
    (``texts_b=None``: A against itself). ``nan`` where a text has no known word."""
    A = list(texts_a)
    B = None if texts_b is None else list(texts_b)
    nb = len(A) if B is None else len(B)
    rows = list(
        cross_rows(
            A,
            B,
            vectors,
            metric=metric,
            tokenizer=tokenizer,
            reg=reg,
            jobs=jobs,
            progress=progress,
            stats=stats,
        )
    )
    return np.array(rows, dtype=np.float64).reshape(len(A), nb)


# ---------------------------------------------------------------------------------------------
# top-k search


_CHUNK = 1 << 22  # cost-matrix entries computed at once by the bounds (32 MiB of float64)


class _Corpus:
    """The search side: docs, centroids, and the concatenated rows and mass of the non-empty
    docs (``valid``), so that the bounds of a query against every doc are a few array ops."""

    def __init__(self, space: DocSpace, docs: list[Doc]) -> None:
        self.space = space
        self.docs = docs
        self.C, self.ok = _centroids(space, docs)
        self.valid = np.flatnonzero(self.ok)
        self.lens = np.array([len(docs[j].rows) for j in self.valid], dtype=np.int64)
        self.start = np.zeros(len(self.valid) + 1, dtype=np.int64)
        np.cumsum(self.lens, out=self.start[1:])
        if len(self.valid):
            rows = np.concatenate([docs[j].rows for j in self.valid])
            self.w = np.concatenate([docs[j].w for j in self.valid])
        else:
            rows = np.empty(0, dtype=np.int64)
            self.w = np.empty(0)
        # the corpus vocabulary (table rows) and each doc word as a position in it
        self.vocab, self.rows = np.unique(rows, return_inverse=True)
        self.rows = self.rows.reshape(-1)

    def bound_centroid(self, q: Doc) -> np.ndarray:
        """WCD (or its WRD analogue) from ``q`` to every valid doc, in ``valid`` order."""
        D = self.C[self.valid] - self.space.centroid(q)
        s = np.einsum("ij,ij->i", D, D)
        return np.sqrt(s) if self.space.kind == "euclid" else 0.5 * s

    def _cost_to(self, q: Doc, rows: np.ndarray, same: bool = True) -> np.ndarray:
        """The cost from each word of ``q`` to each table row ``rows`` (same word: 0, unless
        ``same`` is false and the caller sees to it)."""
        sp = self.space
        T = sp.table
        G = T[q.rows] @ T[rows].T
        if sp.kind == "euclid":
            M = q.sq[:, None] + sp.tsq[rows][None, :]  # type: ignore[index]
            M -= 2.0 * G
            np.maximum(M, 0.0, out=M)
            np.sqrt(M, out=M)
        else:
            M = 1.0 - G
            np.clip(M, 0.0, 2.0, out=M)
        if same:
            np.putmask(M, q.rows[:, None] == rows[None, :], 0.0)
        return M

    def _token_positions(self, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions in ``rows``/``w`` of the words of the valid docs ``pos``, and the offset
        of each doc in that list."""
        lens = self.lens[pos]
        offs = np.zeros(len(pos), dtype=np.int64)
        np.cumsum(lens[:-1], out=offs[1:])
        tok = np.repeat(self.start[pos] - offs, lens)
        tok += np.arange(len(tok))
        return tok, offs

    def bound_relaxed(self, q: Doc, pos: np.ndarray, thr: float | None = None) -> np.ndarray:
        """RWMD (or its WRD analogue) from ``q`` to the valid docs at positions ``pos``.

        RWMD is the larger of two relaxations: every word of the candidate sent to its nearest
        query word ("to q"), and every query word to its nearest candidate word ("from q").
        When the cost from the query to every word of the table fits in a chunk, it is
        computed once, "to q" comes from its column minima for all candidates at once, and
        "from q" is computed only for the candidates that "to q" leaves at or below ``thr``
        (the others keep "to q", already above ``thr``). Otherwise candidates are taken a chunk
        of words at a time.
        """
        n1 = len(q.rows)
        out = np.empty(len(pos))
        if not len(pos):
            return out
        if n1 * len(self.vocab) <= _CHUNK:
            D = self._cost_to(q, self.vocab, same=False)
            # the query's own words cost nothing to themselves
            at = np.searchsorted(self.vocab, q.rows)
            hit = at < len(self.vocab)
            hit[hit] = self.vocab[at[hit]] == q.rows[hit]
            D[np.flatnonzero(hit), at[hit]] = 0.0
            D = D.T.copy()  # (corpus words, query words)
            nearest = D.min(axis=1)
            if len(pos) * 4 >= len(self.valid):
                out[:] = np.add.reduceat(nearest[self.rows] * self.w, self.start[:-1])[pos]
            else:
                tok, offs = self._token_positions(pos)
                out[:] = np.add.reduceat(nearest[self.rows[tok]] * self.w[tok], offs)
            todo = np.arange(len(pos)) if thr is None else np.flatnonzero(out <= thr)
            per = max(1, _CHUNK // max(1, n1 * int(self.lens.mean())))
            for s in range(0, len(todo), per):
                sub = todo[s : s + per]
                tok, offs = self._token_positions(pos[sub])
                from_q = np.minimum.reduceat(D[self.rows[tok]], offs, axis=0) @ q.w
                out[sub] = np.maximum(out[sub], from_q)
            return out
        s = 0
        while s < len(pos):
            e = s + 1
            total = self.lens[pos[s]]
            while e < len(pos) and n1 * (total + self.lens[pos[e]]) <= _CHUNK:
                total += self.lens[pos[e]]
                e += 1
            tok, offs = self._token_positions(pos[s:e])
            M = self._cost_to(q, self.vocab[self.rows[tok]])
            to_q = np.add.reduceat(M.min(axis=0) * self.w[tok], offs)
            from_q = q.w @ np.minimum.reduceat(M, offs, axis=1)
            out[s:e] = np.maximum(to_q, from_q)
            s = e
        return out


def _search_one(corpus: _Corpus, q: Doc, k: int, prune: bool, st: WmdStats):
    """The ``k`` nearest valid docs of ``q`` as ``(index, distance)``, by (distance, index).

    Kusner's prefetch-and-prune: visit the candidates by increasing WCD (ties by index); the
    first ``k`` get exact distances; after that a candidate whose WCD exceeds the current
    ``k``-th distance ends the visit (every later one has a larger WCD), and one whose RWMD
    exceeds it is skipped. Bounds are compared with a relative slack of 1e-9, so rounding in
    a bound never drops a true neighbour, and a candidate tied with the ``k``-th is computed
    and ordered by index: the answer is the brute-force answer.
    """
    if q.empty or k <= 0 or not len(corpus.valid):
        return []
    exact = corpus.space.exact
    docs = corpus.docs
    valid = corpus.valid
    st.candidates += len(valid)
    if not prune:
        ds = [(exact(q, docs[j]), int(j)) for j in valid]
        st.exact += len(ds)
        ds.sort()
        return [(j, d) for d, j in ds[:k]]
    wcd = corpus.bound_centroid(q)
    order = np.lexsort((valid, wcd))  # positions in ``valid``, by (WCD, index)
    best = sorted((exact(q, docs[int(valid[p])]), int(valid[p])) for p in order[:k])
    n_exact = len(best)
    rest = order[k:]
    if len(rest):
        thr = best[-1][0]
        # everything from the first candidate whose WCD exceeds the k-th distance on is out
        stop = int(np.searchsorted(wcd[rest], thr + 1e-9 * (1.0 + thr), side="right"))
        rest = rest[:stop]
    if len(rest):
        rw = corpus.bound_relaxed(q, rest, thr + 1e-9 * (1.0 + thr))
        for p, r in zip(rest, rw, strict=True):
            tol = 1e-9 * (1.0 + thr)
            if wcd[p] > thr + tol:
                break
            if r > thr + tol:
                continue
            j = int(valid[p])
            item = (exact(q, docs[j]), j)
            n_exact += 1
            if item < best[-1]:
                bisect.insort(best, item)
                best.pop()
                thr = best[-1][0]
    st.exact += n_exact
    st.pruned += len(valid) - n_exact
    return [(j, d) for d, j in best]


def _search_chunk(qs: list[int]) -> tuple[list[list[tuple[int, float]]], WmdStats]:
    st = WmdStats()
    corpus = _WORK["corpus"]
    Q = _WORK["Q"]
    out = [_search_one(corpus, Q[i], _WORK["k"], _WORK["prune"], st) for i in qs]
    return out, st


def _search_brute_metric(space: DocSpace, metric: str, reg: float, corpus: _Corpus, q: Doc, k):
    """Top-k for metrics without pruning (WCD, RWMD, Sinkhorn): every distance, then sort."""
    if q.empty or not len(corpus.valid):
        return []
    if metric == "wcd":
        d = corpus.bound_centroid(q)
    else:
        fn = space.measure(metric, reg)
        d = np.array([fn(q, corpus.docs[j]) for j in corpus.valid])
    order = np.lexsort((corpus.valid, d))[:k]
    return [(int(corpus.valid[o]), float(d[o])) for o in order]


def search_rows(
    queries: Iterable[Text | Doc],
    corpus: Iterable[Text | Doc] | None,
    vectors: Any = None,
    *,
    k: int = 10,
    metric: str = "wmd",
    tokenizer: Tokenizer | None = None,
    reg: float = DEFAULT_REG,
    prune: bool = True,
    jobs: int = 1,
    progress: Progress | None = None,
    stats: WmdStats | None = None,
    exclude_self: bool = False,
) -> Iterator[list[tuple[int, float]]]:
    """Yield, for each query in order, its ``k`` nearest corpus texts as ``(index, distance)``
    pairs, nearest first, ties by index (``corpus=None``: the queries themselves).

    WMD and WRD use exact prefetch-and-prune (``prune=False``: brute force, same answer);
    the other metrics compute every distance. Corpus texts without known words are never
    returned; a query without known words gets an empty list. With ``exclude_self`` corpus
    text ``i`` is never returned for query ``i`` (a collection searched against itself).
    """
    if k < 1:
        raise KxError(f"k must be at least 1, not {k}")
    if exclude_self:
        # the k + 1 nearest, less the query's own index if it is among them: exactly the k
        # nearest others, in the same order
        rows = search_rows(
            queries,
            corpus,
            vectors,
            k=k + 1,
            metric=metric,
            tokenizer=tokenizer,
            reg=reg,
            prune=prune,
            jobs=jobs,
            progress=progress,
            stats=stats,
        )
        for i, hits in enumerate(rows):
            yield [(j, d) for j, d in hits if j != i][:k]
        return
    if metric == "sinkhorn":
        _check_reg(reg)
    st = stats if stats is not None else WmdStats()
    space, Q, C = _prepare_two(queries, corpus, vectors, metric, tokenizer, st)
    corp = _Corpus(space, C)
    n = len(Q)
    if metric not in ("wmd", "wrd"):
        for i, q in enumerate(Q):
            yield _search_brute_metric(space, metric, reg, corp, q, k)
            if progress is not None:
                progress("queries", i + 1, n)
        return
    jobs = _jobs(jobs) if n > 1 else 1
    done = 0
    with _workers(jobs, corpus=corp, Q=Q, k=k, prune=prune) as pool:
        if pool is None:
            for q in Q:
                yield _search_one(corp, q, k, prune, st)
                done += 1
                if progress is not None:
                    progress("queries", done, n)
        else:
            per = max(1, min(32, n // (8 * jobs) or 1))
            for res, s in _ordered(pool, _search_chunk, _chunked(range(n), per), 4 * jobs):
                st.merge(s)
                for r in res:
                    done += 1
                    if progress is not None:
                        progress("queries", done, n)
                    yield r


def wmd_search(
    queries: Iterable[Text | Doc],
    corpus: Iterable[Text | Doc] | None = None,
    vectors: Any = None,
    *,
    k: int = 10,
    metric: str = "wmd",
    tokenizer: Tokenizer | None = None,
    reg: float = DEFAULT_REG,
    prune: bool = True,
    jobs: int = 1,
    progress: Progress | None = None,
    stats: WmdStats | None = None,
    exclude_self: bool = False,
) -> list[list[tuple[int, float]]]:
    """The ``k`` nearest corpus texts of every query (see :func:`search_rows`)."""
    return list(
        search_rows(
            queries,
            corpus,
            vectors,
            k=k,
            metric=metric,
            tokenizer=tokenizer,
            reg=reg,
            prune=prune,
            jobs=jobs,
            progress=progress,
            stats=stats,
            exclude_self=exclude_self,
        )
    )


# ---------------------------------------------------------------------------------------------
# ``kxtool.wmd`` is both this module and the :func:`wmd` function of the library API (the
# package's lazy attribute replaces the module by the function once it is looked up, but an
# ``import kxtool.wmd`` binds the module): calling the module calls the function, so
# ``kxtool.wmd(a, b, vectors)`` works either way.


class _CallableModule(type(sys.modules[__name__])):  # type: ignore[misc]
    def __call__(self, *args: Any, **kwargs: Any) -> float:
        return wmd(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
