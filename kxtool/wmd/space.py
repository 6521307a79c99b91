"""Documents and the space they live in: a text becomes a :class:`Doc` (the vocabulary rows it
uses and their mass), and a :class:`DocSpace` (vectors, tokenizer, a float64 table of the rows
in use) measures two docs with any of the metrics."""

from __future__ import annotations

import itertools
import math
import os
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import KxError, kxwarn
from ..text import Tokenizer, has_cjk
from ..transport import emd as _emd
from ..transport import sinkhorn as _sinkhorn
from .weights import Weighting, WordWeights, _idf, as_weighting, sif_weights
from .weights import weights_from_file as _weights_from_file

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
    out-of-vocabulary tokens backed off to their pieces (Chinese words the vectors lack), and
    for searches how many exact distances were computed and how many candidates pruned.

    >>> st = WmdStats()
    >>> _ = list(wmd_pairs(["the zzyzx cat"], ["a dog"], default_vectors(), stats=st))
    >>> st.texts, st.tokens, st.oov_tokens, dict(st.oov_words)
    (2, 3, 1, {'zzyzx': 1})
    """

    texts: int = 0
    tokens: int = 0
    oov_tokens: int = 0
    empty_texts: int = 0
    oov_words: Counter = field(default_factory=Counter)
    backoff_tokens: int = 0
    backoff_words: Counter = field(default_factory=Counter)
    mixed_texts: int = 0
    exact: int = 0
    pruned: int = 0
    candidates: int = 0

    def merge(self, other: WmdStats) -> None:
        self.texts += other.texts
        self.tokens += other.tokens
        self.oov_tokens += other.oov_tokens
        self.empty_texts += other.empty_texts
        self.oov_words.update(other.oov_words)
        self.backoff_tokens += other.backoff_tokens
        self.backoff_words.update(other.backoff_words)
        self.mixed_texts += other.mixed_texts
        self.exact += other.exact
        self.pruned += other.pruned
        self.candidates += other.candidates


def _as_vectors(vectors: Any):  # type: ignore[no-untyped-def]
    """A :class:`~kxtool.vectors.Vectors`, a path to load, or ``None`` for the default."""
    from .. import vectors as vmod

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
        weights: str | Weighting | WordWeights | None = None,
        backoff: bool = True,
    ) -> None:
        if kind not in ("euclid", "cosine"):
            raise ValueError(f"kind must be 'euclid' or 'cosine', not {kind!r}")
        self.vectors = _as_vectors(vectors)
        self.kind = kind
        self.tokenizer = tokenizer if tokenizer is not None else _default_tokenizer()
        self.index = self.vectors.index
        self.is_default = bool(getattr(self.vectors, "is_default", False))
        self.keep_oov = keep_oov
        self.backoff = backoff
        self._pieces: dict[str, list[int]] = {}
        self._max_piece = 0
        self._t = _shared_table(self.vectors, kind)
        self._check: Any = None
        self._warned_mixed = False
        self.stats = WmdStats()
        #: the fitted word weights (``None``: every word weighs 1)
        self.weights: WordWeights | None = None
        self.weighting = as_weighting(weights)
        if isinstance(self.weighting, WordWeights):
            self.weights = self.weighting if self.weighting.values is not None else None
        elif self.weighting.scheme != "none" and not self.weighting.needs_texts:
            self.weights = _weights_from_file(
                self.weighting, self.vectors, lowercase=self.tokenizer.lowercase
            )

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
        if not isinstance(text, str):
            toks = list(text)
            if self.is_default:
                joined = " ".join(toks)  # one search, not one a token
                if has_cjk(joined):
                    self._check_language(joined, toks)
            return toks
        if self.is_default and has_cjk(text):
            toks = self.tokenizer(text)
            self._check_language(text, toks)
            return toks
        return self.tokenizer(text)

    def _check_language(self, text: str, toks: list[str]) -> None:
        """Chinese text with the built-in English vectors: an error when most of its words are
        unknown to them, a warning (once) when most are known (English text with a few Chinese
        words, which are dropped)."""
        index = self.index
        known = sum(1 for t in toks if t in index and not has_cjk(t))
        if toks and 2 * known > len(toks):
            self.stats.mixed_texts += 1
            if not self._warned_mixed:
                self._warned_mixed = True
                kxwarn(
                    "a text mixes Chinese (Japanese, Korean) with English words: the built-in"
                    " vectors are English, so its Chinese words are dropped (pass --vectors FILE"
                    " with vectors for both)"
                )
            return
        if self._check is None:
            from .. import vectors as vmod

            self._check = getattr(vmod, "check_default_language", False)
        if self._check:
            self._check(self.vectors, text)
        raise _cjk_error()  # pragma: no cover - the vectors module always raises first

    def pieces(self, word: str) -> list[int]:
        """The vocabulary rows a missing Chinese word backs off to: its longest pieces present
        in the vectors, left to right (a character no longer piece starts with stands for
        itself when the vectors have it, and is skipped when not). Empty when nothing is
        found; cached per word.

        >>> from kxtool.vectors import Vectors
        >>> v = Vectors(["今天", "天气", "好"], np.eye(3, dtype=np.float32))
        >>> DocSpace(v).pieces("今天天气好")
        [0, 1, 2]
        """
        hit = self._pieces.get(word)
        if hit is not None:
            return hit
        index = self.index
        if not self._max_piece:
            self._max_piece = 8  # Chinese words in vectors rarely run longer
        out: list[int] = []
        i, n = 0, len(word)
        while i < n:
            for j in range(min(n, i + self._max_piece), i, -1):
                if j - i == n:  # the word itself is missing
                    continue
                k = index.get(word[i:j])
                if k is not None:
                    out.append(k)
                    i = j
                    break
            else:
                i += 1
        if len(self._pieces) < 1 << 20:
            self._pieces[word] = out
        return out

    def bag(self, text: Text) -> tuple[np.ndarray, np.ndarray, int, int]:
        """A text as its distinct known vocabulary rows and their counts (before weighting),
        with the number of tokens and of tokens dropped. A Chinese word missing from the
        vectors backs off to its :meth:`pieces`, which share its count."""
        toks = self.tokens(text)
        cnt = Counter(toks)
        ids: list[Any] = list(map(self.index.get, cnt))
        oov = 0
        if None in ids:
            st = self.stats
            missing = st.oov_words if self.keep_oov else None
            acc: dict[int, float] = {}
            for (t, n), i in zip(cnt.items(), ids, strict=True):
                if i is not None:
                    acc[i] = acc.get(i, 0.0) + n
                    continue
                parts = self.pieces(t) if self.backoff and has_cjk(t) else ()
                if parts:
                    share = n / len(parts)
                    for k in parts:
                        acc[k] = acc.get(k, 0.0) + share
                    st.backoff_tokens += n
                    if missing is not None:
                        st.backoff_words[t] += n
                else:
                    oov += n
                    if missing is not None:
                        missing[t] += n
            idx = np.fromiter(acc.keys(), dtype=np.int64, count=len(acc))
            mass = np.fromiter(acc.values(), dtype=np.float64, count=len(acc))
        else:
            idx = np.array(ids, dtype=np.int64)
            mass = np.fromiter(cnt.values(), dtype=np.float64, count=len(cnt))
        st = self.stats
        st.texts += 1
        st.tokens += len(toks)
        st.oov_tokens += oov
        return idx, mass, len(toks), oov

    def doc(self, text: Text | Doc) -> Doc:
        """A text (tokenised here), a list of tokens, or an already prepared :class:`Doc`."""
        if isinstance(text, Doc):
            return text
        return self.doc_of_bag(self.bag(text))

    def doc_of_bag(self, bag: tuple[np.ndarray, np.ndarray, int, int]) -> Doc:
        """The :class:`Doc` of a :meth:`bag`: weighted (:attr:`weights`), for WRD times the
        vector norms, normalised to mass 1."""
        ids, mass, ntok, oov = bag
        st = self.stats
        if not len(ids):
            st.empty_texts += 1
            return _empty_doc(ntok, oov)
        if self.weights is not None:
            mass = mass * self.weights.values[ids]  # type: ignore[index]
        rows = self._rows(ids)  # type: ignore[arg-type]
        if self.kind == "cosine":
            mass = mass * self.tnorm[rows]
        keep = mass > 0
        if not keep.all():  # zero vectors have no direction and no mass
            rows, mass = rows[keep], mass[keep]
            if not len(rows):
                st.empty_texts += 1
                return _empty_doc(ntok, oov)
        w = mass / mass.sum()
        sq = self.tsq[rows] if self.kind == "euclid" else None
        return Doc(rows, w, None, sq, ntok, oov)

    def fit_weights(
        self, texts: Iterable[Text] = (), bags: Iterable[tuple] | None = None
    ) -> WordWeights | None:
        """Count the weights of :attr:`weighting` from ``texts`` (or from their ``bags``) when
        no file gives them, and keep them in :attr:`weights`. The counting does not touch
        :attr:`stats`. Returns the weights (``None`` for ``"none"``).

        >>> from kxtool.vectors import Vectors
        >>> v = Vectors(["a", "b"], np.eye(2, dtype=np.float32))
        >>> sp = DocSpace(v, weights="idf")
        >>> sp.fit_weights([["a", "b"], ["a"]]).values.round(4).tolist()
        [1.0, 1.4055]
        """
        wt = self.weighting
        if isinstance(wt, WordWeights) or wt.scheme == "none" or not wt.needs_texts:
            return self.weights
        if bags is None:
            bags = self._scratch_bags(texts)
        acc = np.zeros(len(self.vectors), dtype=np.float64)
        n = 0
        total = 0.0
        for ids, mass, ntok, _ in bags:  # one at a time: memory bounded by the vocabulary
            n += 1
            total += ntok
            if len(ids):
                if wt.scheme == "idf":
                    acc[ids] += 1.0
                else:
                    np.add.at(acc, ids, mass)
        if wt.scheme == "idf":
            self.weights = _idf(self.vectors, acc, n)
        else:
            self.weights = sif_weights(self.vectors, acc, total, wt.sif_a)
        return self.weights

    def _scratch_bags(self, texts: Iterable[Text]) -> Iterator[tuple]:
        """The bags of ``texts``, one at a time, without counting them in :attr:`stats`."""
        saved = self.stats
        self.stats = WmdStats()
        try:
            for t in texts:
                yield self.bag(t)
        finally:
            self.stats = saved

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


def _prepare_two(
    texts_a: Iterable[Text | Doc],
    texts_b: Iterable[Text | Doc] | None,
    vectors: Any,
    metric: str,
    tokenizer: Tokenizer | None,
    stats: WmdStats | None,
    weights: str | Weighting | WordWeights | None = None,
    fit_on: str = "both",
) -> tuple[DocSpace, list[Doc], list[Doc]]:
    """The space and the docs of A and B (``None``: B is A), weighted as ``weights`` says;
    weights counted from the texts are counted over A and B (``fit_on="both"``) or over B
    alone (``"b"``, the corpus of a search)."""
    space = DocSpace(vectors, _kind(metric), tokenizer, weights=weights)
    if stats is not None:
        space.stats = stats
    wt = space.weighting
    if isinstance(wt, Weighting) and wt.needs_texts and wt.scheme != "none":
        bags_a = [t if isinstance(t, Doc) else space.bag(t) for t in texts_a]
        bags_b = bags_a if texts_b is None else [
            t if isinstance(t, Doc) else space.bag(t) for t in texts_b
        ]
        if any(isinstance(b, Doc) for b in itertools.chain(bags_a, bags_b)):
            raise KxError("weights counted from the texts need texts, not prepared docs")
        fit = bags_b if fit_on == "b" or texts_b is None else bags_a + bags_b
        space.fit_weights(bags=fit)
        A = [space.doc_of_bag(b) for b in bags_a]
        B = A if texts_b is None else [space.doc_of_bag(b) for b in bags_b]
        return space, A, B
    A = space.docs(texts_a)
    B = A if texts_b is None else space.docs(texts_b)
    return space, A, B


class _Dims:
    """What a packed space keeps of its vectors: their dimension."""

    def __init__(self, dim: int) -> None:
        self.dim = dim


class _PackedTable:
    """The float64 rows that a set of docs uses, and nothing else: a :class:`_Table` as it
    travels to a cluster's workers (it cannot take new rows)."""

    full = True

    def __init__(self, table: np.ndarray, tsq: np.ndarray, tnorm: np.ndarray) -> None:
        self.table, self.tsq, self.tnorm = table, tsq, tnorm

    def rows(self, ids: list[int]) -> np.ndarray:  # pragma: no cover - never asked
        raise KxError("internal error: a packed document space cannot take new words")


def pack_space(space: DocSpace, *groups: Sequence[Doc]) -> tuple[DocSpace, list[list[Doc]]]:
    """A copy of ``space`` that holds only the table rows the docs of ``groups`` use (and no
    vectors, vocabulary, tokenizer or word weights), with the docs renumbered onto it: what a
    cluster's workers need, sent once. Rows keep their order and values, so every distance between
    the packed docs is bitwise the one between the originals.

    >>> sp = DocSpace(default_vectors())
    >>> a, b = sp.doc("the cat sat"), sp.doc("a dog sat")
    >>> small, [[pa, pb]] = pack_space(sp, [a, b])
    >>> len(small.table), small.exact(pa, pb) == sp.exact(a, b)
    (4, True)
    """
    parts = [d.rows for docs in groups for d in docs if not d.empty]
    used = np.unique(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)
    new = object.__new__(DocSpace)
    new.__dict__.update(space.__dict__)
    new.vectors = _Dims(space.vectors.dim)
    new.index = None
    new.tokenizer = None
    # the docs carry their weighted masses: the word weights (a float per vocabulary word,
    # 21 MB pickled for the built-in vectors, once per chunk) stay here
    new.weights = None
    new.weighting = as_weighting(None)
    new._check = None
    new.stats = WmdStats()
    new._t = _PackedTable(space.table[used], space.tsq[used], space.tnorm[used])

    def move(d: Doc) -> Doc:
        if d.empty:
            return d
        rows = np.searchsorted(used, d.rows).astype(np.int64)
        return Doc(rows, d.w, d.c, d.sq, d.tokens, d.oov)

    out: list[list[Doc]] = []
    seen: dict[int, list[Doc]] = {}
    for docs in groups:  # the same list twice (B is A) stays one list
        if id(docs) not in seen:
            seen[id(docs)] = [move(d) for d in docs]
        out.append(seen[id(docs)])
    return new, out


def _centroids(space: DocSpace, docs: Sequence[Doc]) -> tuple[np.ndarray, np.ndarray]:
    """The centroid matrix of ``docs`` (zeros for empty ones) and the mask of non-empty docs."""
    C = np.zeros((len(docs), space.vectors.dim), dtype=np.float64)
    ok = np.zeros(len(docs), dtype=bool)
    for j, d in enumerate(docs):
        if not d.empty:
            C[j] = space.centroid(d)
            ok[j] = True
    return C, ok
