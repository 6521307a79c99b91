"""How many dimensions should word vectors have? Closed-form estimates and the PIP-loss method.

Closed forms (functions of the vocabulary size N only):

``entropy``
    Su Jianlin (苏剑林), "最小熵原理(六):词向量的维度应该怎么选择?", kexue.fm, 2020-08-20
    (https://kexue.fm/archives/7695). From the entropy of the Skip-Gram joint distribution with
    vectors of norm about sqrt(n), n dimensions suffice for N words when ``n > 8.33 ln N``
    (natural log; 8.33 = 2/0.24 is the article's rounded constant). The estimate is the smallest
    whole n that satisfies the strict inequality: ``floor(8.33 ln N) + 1``. N = 100,000 gives
    95.90 -> 96; N = 5,000,000 gives 128.50 -> 129.
``entropy-analytic``
    The same bound with the analytic constant of the derivation, ``4 / ln(phi)`` = 8.31235...
    (phi the golden ratio): ``n > 8.3123 ln N`` (the brief's
    "8.3122" is a rounding slip: ln(phi) = 0.481212, 4/0.481212 = 8.31235).
``jl``
    Johnson-Lindenstrauss in the form of Dasgupta & Gupta, "An elementary proof of a theorem of
    Johnson and Lindenstrauss" (Random Structures & Algorithms 22(1), 2003): N points keep all
    pairwise distances within a factor 1 +- eps under a random projection to k dimensions when
    ``k >= 4 ln N / (eps^2/2 - eps^3/3)``. The estimate is the smallest whole k: the ceiling.
    eps defaults to 0.1 (10 % distortion), the default of scikit-learn's
    ``johnson_lindenstrauss_min_dim``, so the numbers can be checked against it. It is a
    worst-case bound for arbitrary points, far above what word vectors need.
``fourth-root``
    The rule of thumb ``n ~ N^(1/4)`` (Google's machine-learning guidance for embedding sizes,
    e.g. the TensorFlow blog "Introducing TensorFlow Feature Columns", 2017: "the number of
    embedding dimensions is the fourth root of the number of categories"). Rounded up.

The PIP-loss method (``pip``, :func:`pip_dimension`) estimates from a corpus the dimension that
minimises the Pairwise-Inner-Product loss of Yin & Shen, "On the Dimensionality of Word
Embedding" (NeurIPS 2018); see :func:`pip_dimension` for exactly what is computed.

Everything here is pure computation: no printing, no exiting; user-facing failures raise
:class:`~kxtool.errors.KxError`; long work reports through a ``progress(phase, done, total)``
callback (:mod:`kxtool.progress`).
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import KxError
from .progress import Progress
from .textio import display_name, input_size, open_input, read_blocks

__all__ = [
    "ARTICLE_COEF",
    "ANALYTIC_COEF",
    "METHODS",
    "DimEstimate",
    "VocabCount",
    "PipResult",
    "entropy_bound",
    "jl_bound",
    "fourth_root_bound",
    "estimate_dim",
    "estimate_dims",
    "count_vocab",
    "vectors_vocab_size",
    "pip_dimension",
    "pip_from_counts",
    "pmi_matrix",
    "pip_loss_curve",
]

#: The article's constant 2/0.24 (rounded there to 8.33).
ARTICLE_COEF = 8.33
#: The analytic constant 4 / ln(golden ratio) = 8.31235...
ANALYTIC_COEF = 4.0 / math.log((1.0 + math.sqrt(5.0)) / 2.0)

METHODS: dict[str, dict[str, str]] = {
    "entropy": {
        "formula": "n > 8.33 ln N",
        "source": "Su Jianlin, 最小熵原理(六):词向量的维度应该怎么选择?, kexue.fm/archives/7695 "
        "(2020-08-20)",
    },
    "entropy-analytic": {
        "formula": "n > (4/ln phi) ln N",
        "source": "the same derivation with its analytic constant 4/ln(golden ratio)",
    },
    "jl": {
        "formula": "k >= 4 ln N / (eps^2/2 - eps^3/3)",
        "source": "Johnson-Lindenstrauss lemma, Dasgupta & Gupta, Random Structures & "
        "Algorithms 22(1), 2003",
    },
    "fourth-root": {
        "formula": "n ~ N^(1/4)",
        "source": "rule of thumb from Google's ML guidance (TensorFlow feature-columns blog, 2017)",
    },
}


# ---------------------------------------------------------------------------------------------
# closed forms


def _check_vocab(n_words: int) -> int:
    try:
        n = int(n_words)
    except (TypeError, ValueError):
        raise KxError(f"vocabulary size must be a whole number, not {n_words!r}") from None
    if n != n_words or n < 2:
        raise KxError(f"vocabulary size must be a whole number >= 2, not {n_words!r}")
    return n


def entropy_bound(n_words: int, coef: float = ARTICLE_COEF) -> float:
    """``coef * ln N``: the dimension n must exceed this (strictly)."""
    return coef * math.log(_check_vocab(n_words))


def jl_bound(n_words: int, eps: float = 0.1) -> float:
    """``4 ln N / (eps^2/2 - eps^3/3)``: k must be at least this (Dasgupta & Gupta)."""
    if not (0.0 < eps < 1.0):
        raise KxError(f"--eps must be between 0 and 1 (exclusive), not {eps}")
    return 4.0 * math.log(_check_vocab(n_words)) / (eps**2 / 2.0 - eps**3 / 3.0)


def fourth_root_bound(n_words: int) -> float:
    """``N ** 0.25``."""
    return float(_check_vocab(n_words)) ** 0.25


@dataclass(frozen=True)
class DimEstimate:
    """One estimate: the whole dimension ``dim`` and the real-valued ``bound`` behind it.

    >>> e = estimate_dim(1_000_000)
    >>> e.method, e.vocab, e.dim, round(e.bound, 2), e.formula
    ('entropy', 1000000, 116, 115.08, 'n > 8.33 ln N')
    """

    method: str
    vocab: int
    dim: int
    bound: float
    formula: str
    source: str
    eps: float | None = None

    def as_dict(self) -> dict[str, Any]:
        d = {
            "method": self.method,
            "vocab": self.vocab,
            "dim": self.dim,
            "bound": self.bound,
            "formula": self.formula,
            "source": self.source,
        }
        if self.eps is not None:
            d["eps"] = self.eps
        return d


def _smallest_above(bound: float) -> int:
    """The smallest whole n with n > bound (strict)."""
    return math.floor(bound) + 1


def estimate_dim(n_words: int, method: str = "entropy", *, eps: float = 0.1) -> DimEstimate:
    """The dimension one closed-form ``method`` gives for a vocabulary of ``n_words`` words.

    >>> estimate_dim(100_000).dim
    96
    >>> round(estimate_dim(5_000_000).bound, 2), estimate_dim(5_000_000).dim
    (128.49, 129)
    """
    n = _check_vocab(n_words)
    info = METHODS.get(method)
    if info is None:
        raise KxError(f"unknown method {method!r} (choose from {', '.join(METHODS)})")
    if method == "entropy":
        b = entropy_bound(n, ARTICLE_COEF)
        dim = _smallest_above(b)
    elif method == "entropy-analytic":
        b = entropy_bound(n, ANALYTIC_COEF)
        dim = _smallest_above(b)
    elif method == "jl":
        b = jl_bound(n, eps)
        dim = math.ceil(b - 1e-9 * b)  # k >= b; guard against b = 12.000000000001
        return DimEstimate(method, n, dim, b, info["formula"], info["source"], eps=eps)
    else:
        b = fourth_root_bound(n)
        dim = math.ceil(b - 1e-12 * b)
    return DimEstimate(method, n, dim, b, info["formula"], info["source"])


def estimate_dims(
    vocab_sizes: Iterable[int], methods: Sequence[str] = ("entropy",), *, eps: float = 0.1
) -> list[DimEstimate]:
    """Every method for every vocabulary size, vocabulary-major.

    >>> [(e.method, e.vocab, e.dim) for e in estimate_dims([10_000, 1_000_000], ["entropy", "jl"])]
    [('entropy', 10000, 77), ('jl', 10000, 7895), ('entropy', 1000000, 116), ('jl', 1000000, 11842)]
    """
    return [estimate_dim(n, m, eps=eps) for n in vocab_sizes for m in methods]


# ---------------------------------------------------------------------------------------------
# N from a vectors file


def vectors_vocab_size(path: str | os.PathLike[str], *, progress: Progress | None = None) -> int:
    """The vocabulary size of a vectors file.

    Cheap when the file has a word2vec/fastText header line ``"<count> <dim>"`` (text or
    binary, plain or compressed): only that line is read. Otherwise the file is loaded with
    :func:`kxtool.vectors.load_vectors` (GloVe text has no header; kxtool's cache format).
    """
    p = os.fspath(path)
    with open_input(p) as f:
        try:
            head = f.readline(4096)
        except Exception as e:  # corrupt compressed data
            raise KxError(f"cannot read {display_name(p)!r}: {e}") from None
    parts = head.split()
    if len(parts) == 2 and all(x.isdigit() for x in parts) and head.endswith(b"\n"):
        n = int(parts[0])
        if n < 1:
            raise KxError(f"{display_name(p)!r}: the header says the file holds {n} vectors")
        return n
    if p == "-":
        raise KxError("vectors from stdin need a word2vec header line '<count> <dim>'")
    try:
        from .vectors import load_vectors  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover - the loader is another module's work
        return _count_vector_lines(p)
    return len(load_vectors(p, progress=progress).words)


def _count_vector_lines(path: str) -> int:
    n = 0
    for block in read_blocks(path):
        n += block.count(b"\n")
    return n


# ---------------------------------------------------------------------------------------------
# corpus reading


def _make_tokenizer(lang: str, lowercase: bool, stopwords: Any):
    from .text import Tokenizer

    return Tokenizer(lang=lang, lowercase=lowercase, stopwords=stopwords)


def _lines_of(path: str, progress: Progress | None, phase: str) -> Iterator[tuple[str, int]]:
    """Blocks of whole lines (decoded UTF-8, invalid bytes replaced), with bytes done so far."""
    total = input_size(path)
    done = 0
    rest = b""
    for block in read_blocks(path):
        done += len(block)
        block = rest + block
        cut = block.rfind(b"\n")
        if cut < 0:
            rest = block
            continue
        rest = block[cut + 1 :]
        yield block[: cut + 1].decode("utf-8", errors="replace"), done
        if progress is not None:
            progress(phase, done, total)
    if rest:
        yield rest.decode("utf-8", errors="replace"), done
    if progress is not None:
        progress(phase, done, total)


@dataclass
class VocabCount:
    """What :func:`count_vocab` found: ``vocab`` distinct tokens seen at least ``min_count``
    times, out of ``distinct`` distinct tokens and ``tokens`` tokens in all."""

    vocab: int
    distinct: int
    tokens: int
    min_count: int
    source: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "vocab": self.vocab,
            "distinct": self.distinct,
            "tokens": self.tokens,
            "min_count": self.min_count,
        }


def count_vocab(
    path: str | os.PathLike[str],
    *,
    min_count: int = 1,
    lang: str = "auto",
    lowercase: bool = True,
    stopwords: Any = "none",
    progress: Progress | None = None,
) -> VocabCount:
    """Count the distinct tokens of a corpus (one pass, streaming, any size).

    Text is tokenised by :class:`kxtool.text.Tokenizer`, line by line as ``kxtool wmd`` does
    (a block without CJK text is cut in one call, which gives the same tokens). Stopwords are
    kept by default (``stopwords="none"``): a word-vector vocabulary has its function words.
    Memory grows with the number of distinct tokens, not with the corpus.

    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "corpus.txt")
    >>> _ = open(p, "w").write("the cat sat on the mat\\nthe dog sat on the log\\n")
    >>> c = count_vocab(p)
    >>> c.vocab, c.tokens
    (7, 12)
    """
    p = os.fspath(path)
    if min_count < 1:
        raise KxError(f"--min-count must be at least 1, not {min_count}")
    # Tokens are counted as cut, and folded to lower case once per distinct token at the end:
    # the same counts as Tokenizer(lowercase=True), without lowercasing every token.
    tok = _make_tokenizer(lang, False, stopwords)
    counts: Counter[str] = Counter()
    n_tokens = 0
    for text, _done in _lines_of(p, progress, "counting"):
        if tok.lang == "zh" or (tok.lang == "auto" and _has_cjk(text)):
            for line in text.splitlines():
                toks = tok(line)
                n_tokens += len(toks)
                counts.update(toks)
        else:
            toks = tok(text)
            n_tokens += len(toks)
            counts.update(toks)
    if lowercase:
        folded: Counter[str] = Counter()
        for w, c in counts.items():
            folded[w.lower()] += c
        counts = folded
    vocab = len(counts) if min_count <= 1 else sum(1 for c in counts.values() if c >= min_count)
    return VocabCount(vocab, len(counts), n_tokens, min_count, display_name(p))


def _has_cjk(text: str) -> bool:
    from .text import has_cjk

    return has_cjk(text)


# ---------------------------------------------------------------------------------------------
# PIP loss (Yin & Shen 2018)

_SEGMENT = 10_000  # lines longer than this many tokens are cut into segments of this size


def _tokenize_to_ids(
    path: str,
    tok: Any,
    ids_file: Any,
    progress: Progress | None,
) -> tuple[list[str], int, int]:
    """Pass 1: tokenise, give each distinct token an id (first appearance), write the ids as
    int32 with ``-1`` after every line/segment. Returns (words, tokens, segments)."""
    index: dict[str, int] = {}
    setdefault = index.setdefault
    n_tokens = 0
    n_segments = 0
    for text, _done in _lines_of(path, progress, "reading corpus"):
        buf: list[int] = []
        for line in text.splitlines():
            toks = tok(line)
            if not toks:
                continue
            ids = [setdefault(t, len(index)) for t in toks]
            n_tokens += len(ids)
            for s in range(0, len(ids), _SEGMENT):
                buf.extend(ids[s : s + _SEGMENT])
                buf.append(-1)
                n_segments += 1
        if buf:
            np.asarray(buf, dtype=np.int32).tofile(ids_file)
    return list(index), n_tokens, n_segments


def _accumulate_pairs(
    ids_path: str,
    remap: np.ndarray,
    size: int,
    window: int,
    progress: Progress | None,
    chunk: int = 1 << 22,
) -> tuple[np.ndarray, np.ndarray]:
    """Pass 2: directed co-occurrence counts ``C[h][a, b]`` (b within ``window`` tokens after
    a, same line/segment) for the two halves h (even / odd segments), as int32 (int64 for
    corpora of more than 2^31 / window tokens) flat arrays of
    ``size * size``. Vectorised: per chunk, pair codes ``a * size + b`` are sorted and counted."""
    raw = np.memmap(ids_path, dtype=np.int32, mode="r") if os.path.getsize(ids_path) else None
    n = 0 if raw is None else len(raw)
    # int32 unless a cell could overflow it: no cell exceeds (positions * window) pairs
    dtype = np.int32 if n * window < 2**31 - 1 else np.int64
    counts = [np.zeros(size * size, dtype=dtype), np.zeros(size * size, dtype=dtype)]
    if raw is None:
        return counts[0], counts[1]
    seg_before = 0  # separators before the current chunk
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        part = np.asarray(raw[start : min(n, stop + window)])
        m = stop - start
        sep = part < 0
        seg = np.cumsum(sep, dtype=np.int64)
        seg += seg_before
        v = np.where(sep, -1, remap[np.where(sep, 0, part)])
        codes_by_half: list[list[np.ndarray]] = [[], []]
        for d in range(1, window + 1):
            k = min(m, len(part) - d)
            if k <= 0:
                break
            a = v[:k]
            b = v[d : d + k]
            ok = (a >= 0) & (b >= 0) & (seg[:k] == seg[d : d + k])
            code = a[ok].astype(np.int64) * size + b[ok]
            half = (seg[:k][ok] & 1).astype(bool)
            codes_by_half[0].append(code[~half])
            codes_by_half[1].append(code[half])
        for h in (0, 1):
            if codes_by_half[h]:
                allc = np.concatenate(codes_by_half[h])
                if len(allc):
                    u, c = np.unique(allc, return_counts=True)
                    counts[h][u] += c
        seg_before += int(sep[:m].sum())
        if progress is not None:
            progress("co-occurrence", stop, n)
    return counts[0], counts[1]


def _symmetrize_inplace(c: np.ndarray, tile: int = 512) -> None:
    """``c <- c + c^T`` in place, tile by tile (no whole-matrix temporary)."""
    n = c.shape[0]
    for i in range(0, n, tile):
        ie = min(n, i + tile)
        d = c[i:ie, i:ie]
        d += d.T.copy()
        for j in range(ie, n, tile):
            je = min(n, j + tile)
            t = c[i:ie, j:je] + c[j:je, i:ie].T
            c[i:ie, j:je] = t
            c[j:je, i:ie] = t.T


def _pmi_blocks(
    parts: Sequence[np.ndarray], *, directed: bool, block: int = 1024
) -> Iterator[tuple[int, np.ndarray]]:
    """Row blocks ``(start, float32 PMI rows)`` of the PMI of the counts ``sum(parts)``;
    with ``directed`` each part is first made symmetric in place, ``C <- C + C^T``."""
    n = parts[0].shape[0]
    if directed:
        for c in parts:
            _symmetrize_inplace(c)
    row = np.zeros(n, dtype=np.float64)
    for c in parts:
        row += c.sum(axis=1, dtype=np.float64)
    total = float(row.sum())
    logrow = np.log(row, where=row > 0, out=np.zeros_like(row))
    logtotal = math.log(total) if total > 0 else 0.0
    # float32 is plenty for a PMI (|error| ~ 1e-6 on terms of ~20) and halves the traffic
    logrow32 = logrow.astype(np.float32)
    for s in range(0, n, block):
        e = min(n, s + block)
        cb = np.zeros((e - s, n), dtype=np.float32)
        for c in parts:
            cb += c[s:e]
        seen = cb > 0
        vals = np.log(cb, where=seen, out=np.zeros_like(cb))
        vals += (logtotal - logrow[s:e, None]).astype(np.float32)
        vals -= logrow32[None, :]
        vals[~seen] = 0.0
        yield s, vals


def pmi_matrix(counts: np.ndarray, *, directed: bool = False) -> np.ndarray:
    """PMI of a symmetric co-occurrence count matrix, float32, 0 where a pair was never seen.

    ``PMI[i, j] = ln(C[i, j] * T / (c_i * c_j))`` with ``c_i = sum_j C[i, j]`` and
    ``T = sum_i c_i``: plain PMI (not positive PMI), no smoothing and no shift, with the
    unseen pairs (and words with no pairs) at 0, as in Yin & Shen's reference code.
    ``directed``: ``counts`` holds one direction only and the symmetric counts are
    ``C + C^T``.
    """
    c = np.asarray(counts)
    out = np.empty(c.shape, dtype=np.float32)
    for s, vals in _pmi_blocks([c], directed=directed):
        out[s : s + len(vals)] = vals
    return out


def _orthonormalize(y: np.ndarray) -> np.ndarray:
    """An orthonormal basis of the columns of ``y`` (twice-applied Gram eigen method,
    BLAS-3 and numpy only; directions numerically absent are dropped)."""
    q = y
    for _ in range(2):
        g = q.T.astype(np.float64) @ q.astype(np.float64)
        w, vecs = np.linalg.eigh(g)
        keep = w > w.max() * 1e-12 if w.size and w.max() > 0 else np.zeros_like(w, dtype=bool)
        vecs = vecs[:, keep] / np.sqrt(w[keep])
        q = (q.astype(np.float64) @ vecs).astype(np.float32)
    return q


def _top_eigs(
    a: np.ndarray,
    want: int,
    *,
    vectors: bool,
    rng: np.random.Generator,
    power: int = 4,
    progress: Progress | None = None,
    phase: str = "spectrum",
    start: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The ``want`` eigenvalues of largest magnitude of the symmetric ``a`` (and vectors),
    ordered by decreasing magnitude. Randomised subspace iteration (Halko, Martinsson & Tropp
    2011) with ``power`` passes, Rayleigh-Ritz at the end; a dense eigen-decomposition when the
    block would be a large part of the matrix."""
    n = a.shape[0]
    want = max(1, min(want, n))
    b = min(n, want + max(16, want // 4))
    if n <= 1500 or b > n // 3:
        if progress is not None:
            progress(phase, 0, 1)
        w, u = np.linalg.eigh(a.astype(np.float32, copy=False))
        order = np.argsort(-np.abs(w), kind="stable")[:want]
        if progress is not None:
            progress(phase, 1, 1)
        return w[order].astype(np.float64), (u[:, order] if vectors else None)
    q = rng.standard_normal((n, b), dtype=np.float32)
    if start is not None:  # a basis from a smaller run: its directions are nearly converged
        k = min(start.shape[1], b)
        q[:, :k] = start[:, :k]
    steps = power + 2
    for i in range(power + 1):
        q = _orthonormalize(a @ q)
        if progress is not None:
            progress(phase, i + 1, steps)
    t = q.T @ (a @ q)
    t = (t + t.T) / 2
    w, z = np.linalg.eigh(t.astype(np.float64))
    order = np.argsort(-np.abs(w), kind="stable")[:want]
    if progress is not None:
        progress(phase, steps, steps)
    u = (q @ z[:, order].astype(np.float32)) if vectors else None
    return w[order], u


def _leading_spectrum(
    m: np.ndarray, tau: float, rng: np.random.Generator, progress: Progress | None
) -> np.ndarray:
    """All eigenvalues of the symmetric ``m`` with magnitude above ``tau`` (and one more, when
    there is one), largest magnitude first: blocks of doubling size, each run started from the
    previous run's Ritz vectors."""
    v = m.shape[0]
    want = min(v, 256)
    prev = None
    while True:
        eig, vecs = _top_eigs(
            m,
            want,
            vectors=True,
            rng=rng,
            progress=progress,
            phase=f"spectrum (top {want})",
            start=prev,
            power=4 if prev is None else 2,
        )
        above = int((np.abs(eig) > tau).sum())
        if above < want or want >= v:
            return eig
        prev = vecs
        want = min(v, want * 2)


def pip_loss_curve(
    signal: np.ndarray,
    sigma: float,
    n: int,
    *,
    alpha: float = 0.5,
    seed: int = 0,
    max_dim: int | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """Monte-Carlo estimate of the PIP loss ``||E_k E_k^T - E E^T||_F`` for k = 1..K.

    ``signal`` holds the estimated (signed) eigenvalues of the noise-free signal matrix,
    largest magnitude first; K = ``max_dim`` or ``len(signal)``. One draw, as in the paper's
    reference code but symmetric (the PMI matrix is): X = U diag(signal) U^T with U a random
    n x r orthonormal matrix, E = U |signal|^alpha the oracle embedding; Y = X + Z with Z
    symmetric Gaussian noise of standard deviation ``sigma``; E_k = U'_k |theta_k|^alpha from
    the k eigenpairs of Y of largest magnitude. With orthonormal columns,

        ||E_k E_k^T - E E^T||^2 = sum_i |s_i|^(4 alpha) + sum_{j<=k} |theta_j|^(4 alpha)
                                  - 2 sum_{j<=k} |theta_j|^(2 alpha) ||E^T u'_j||^2,

    so the whole curve costs one partial eigen-decomposition of Y.
    """
    s = np.asarray(signal, dtype=np.float64)
    r = len(s)
    kmax = r if max_dim is None else max(1, min(int(max_dim), n))
    if r == 0:
        return np.zeros(0)
    rng = np.random.default_rng(seed)
    if progress is not None:
        progress("simulation", 0, 3)
    basis = _orthonormalize(rng.standard_normal((n, r), dtype=np.float32))[:, :r]
    r = basis.shape[1]
    s = s[:r]
    y = rng.standard_normal((n, n), dtype=np.float32)
    y += y.T
    y *= np.float32(sigma / math.sqrt(2.0))
    y[np.diag_indices(n)] *= np.float32(1.0 / math.sqrt(2.0))
    y += (basis * s.astype(np.float32)) @ basis.T
    if progress is not None:
        progress("simulation", 1, 3)
    theta, u = _top_eigs(y, kmax, vectors=True, rng=rng)
    del y
    if progress is not None:
        progress("simulation", 2, 3)
    assert u is not None
    mag = np.abs(s) ** alpha  # oracle embedding E = basis * mag
    proj = (u.T @ basis).astype(np.float64) * mag  # row j: E^T u'_j
    cross = (proj**2).sum(axis=1)
    th = np.abs(theta) ** (2 * alpha)
    loss2 = float((mag**4).sum()) + np.cumsum(th**2) - 2.0 * np.cumsum(th * cross)
    if progress is not None:
        progress("simulation", 3, 3)
    return np.sqrt(np.maximum(loss2, 0.0))


@dataclass
class PipResult:
    """The PIP-loss estimate. ``dim`` minimises ``pip_loss`` (``pip_loss[k-1]`` is the loss
    at dimension k); ``spectrum`` holds the leading singular values of the PMI matrix,
    ``rank`` how many exceed the noise threshold ``threshold = 2 sigma sqrt(V)``.

    See :func:`pip_dimension` for an example; ``as_dict()`` is the JSON form:

    >>> sorted(PipResult(3, 60, 36000, 5, 0.5, 0.1, 0.9, 4, [9.0], [1.0, 0.5, 0.2]).as_dict())[:4]
    ['alpha', 'at_max_dim', 'dim', 'method']
    """

    dim: int
    vocab: int
    tokens: int
    window: int
    alpha: float
    sigma: float
    threshold: float
    rank: int
    spectrum: list[float]
    pip_loss: list[float]
    source: str = "<memory>"
    seconds: dict[str, float] = field(default_factory=dict)
    #: True when the curve was cut short by ``max_dim`` and its minimum is its last point:
    #: the loss may still fall beyond it, so ``dim`` is only a lower bound
    at_max_dim: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": "pip",
            "source": self.source,
            "dim": self.dim,
            "at_max_dim": self.at_max_dim,
            "vocab": self.vocab,
            "tokens": self.tokens,
            "window": self.window,
            "alpha": self.alpha,
            "sigma": self.sigma,
            "threshold": self.threshold,
            "rank": self.rank,
            "spectrum": self.spectrum,
            "pip_loss": self.pip_loss,
            "seconds": self.seconds,
        }


def pip_from_counts(
    half1: np.ndarray,
    half2: np.ndarray,
    *,
    alpha: float = 0.5,
    seed: int = 0,
    max_dim: int | None = None,
    progress: Progress | None = None,
    tokens: int = 0,
    window: int = 0,
    source: str = "<memory>",
    directed: bool = False,
) -> PipResult:
    """The PIP-optimal dimension from the symmetric co-occurrence counts of two halves
    (``directed``: one direction only, the symmetric counts being ``C + C^T``).

    1. ``M``, ``M1``, ``M2``: :func:`pmi_matrix` of ``half1 + half2``, ``half1``, ``half2``.
    2. Noise: each half has half the data, so its entrywise noise has twice the variance of
       the whole; ``M1 - M2`` has entrywise standard deviation ``2 sigma`` and
       ``sigma = ||M1 - M2||_F / (2 V)`` (Yin & Shen's noise estimate; their code computes
       ``0.5 * std(M1 - M2)``, the same up to the mean of the difference).
    3. Signal: the eigenvalues ``d_i`` of ``M`` (its singular values are their magnitudes),
       soft-thresholded at ``tau = 2 sigma sqrt(V)``, the edge of the spectrum of V x V
       noise (universal singular value thresholding, Chatterjee 2015, as in the paper):
       ``lambda_i = sign(d_i) (|d_i| - tau)`` for ``|d_i| > tau``; ``rank`` survive.
       Only these are computed: randomised subspace iteration on blocks of 256, 512, ...
       eigenvalues until one falls below ``tau`` (a dense eigen-decomposition when the block
       would exceed V/3). Eigenvalues that sit at the edge of the noise bulk converge slowly,
       so ``rank`` may be undercounted there; they carry almost no signal after the
       threshold and do not move the argmin.
    4. The PIP loss ``E ||E_k E_k^T - E E^T||_F`` for alpha (0.5: the symmetric factorisation
       of word2vec/GloVe) for every k = 1..rank, by the Monte-Carlo estimate of the paper's
       reference code (:func:`pip_loss_curve`), not the looser closed-form upper bound of
       its main theorem; ``dim`` is its argmin.
    """
    if max_dim is not None and max_dim < 1:
        raise KxError(f"--max-dim must be at least 1, got {max_dim}")
    t0 = time.perf_counter()
    v = half1.shape[0]
    if v < 2:
        raise KxError("the PIP method needs at least 2 words in the vocabulary")
    seconds: dict[str, float] = {}
    if not half1.any() or not half2.any():
        raise KxError(
            "the corpus is too small for the PIP method: both halves (alternate lines) need "
            "co-occurring vocabulary words"
        )
    if directed:  # in place: the caller's arrays become the symmetric counts
        _symmetrize_inplace(half1)
        _symmetrize_inplace(half2)
    diff2 = 0.0
    blocks2 = _pmi_blocks([half2], directed=False)
    for (_s, b1), (_s2, b2) in zip(_pmi_blocks([half1], directed=False), blocks2, strict=True):
        b1 -= b2
        diff2 += float(np.einsum("ij,ij->i", b1, b1).sum(dtype=np.float64))
    sigma = math.sqrt(diff2) / (2.0 * v)
    tau = 2.0 * sigma * math.sqrt(v)
    m = np.empty((v, v), dtype=np.float32)
    for s, vals in _pmi_blocks([half1, half2], directed=False):
        m[s : s + len(vals)] = vals
    seconds["pmi"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    rng = np.random.default_rng(seed)
    eig = _leading_spectrum(m, tau, rng, progress)
    del m
    seconds["spectrum"] = time.perf_counter() - t1
    rank = int((np.abs(eig) > tau).sum())
    signal = np.sign(eig[:rank]) * (np.abs(eig[:rank]) - tau)
    t2 = time.perf_counter()
    if rank == 0 or sigma == 0.0:
        loss = np.sqrt(np.cumsum(np.zeros(0)))
        dim = rank
    else:
        loss = pip_loss_curve(
            signal, sigma, v, alpha=alpha, seed=seed, max_dim=max_dim, progress=progress
        )
        dim = int(np.argmin(loss)) + 1
    at_edge = max_dim is not None and len(loss) < rank and dim == len(loss)
    seconds["pip_loss"] = time.perf_counter() - t2
    return PipResult(
        dim=dim,
        vocab=v,
        tokens=tokens,
        window=window,
        alpha=alpha,
        sigma=sigma,
        threshold=tau,
        rank=rank,
        spectrum=[float(x) for x in np.abs(eig)],
        pip_loss=[float(x) for x in loss],
        source=source,
        seconds=seconds,
        at_max_dim=at_edge,
    )


def pip_dimension(
    path: str | os.PathLike[str],
    *,
    top: int = 10_000,
    window: int = 5,
    alpha: float = 0.5,
    min_count: int = 1,
    lang: str = "auto",
    lowercase: bool = True,
    stopwords: Any = "none",
    seed: int = 0,
    max_dim: int | None = None,
    tmp_dir: str | None = None,
    progress: Progress | None = None,
) -> PipResult:
    """Estimate the PIP-loss-optimal word-vector dimension of a corpus (Yin & Shen 2018).

    Reading is streaming (any size). Memory: the two halves' counts (int32, 2 x 4 V^2 bytes)
    and the PMI matrix (float32, 4 V^2), then the simulated matrix: 1.9 GB measured at
    V = 10,000 (it grows as V^2).

    - Tokens as ``kxtool wmd`` cuts them (:class:`kxtool.text.Tokenizer`, lowercased), but all
      words kept (``stopwords="none"``): PMI is about every word's contexts, function words
      included, as in the paper.
    - Pass 1 tokenises once and writes int32 token ids to a temporary file; the vocabulary is
      the ``top`` most frequent tokens with at least ``min_count`` occurrences (ties: first
      seen first).
    - Pass 2 (numpy only) counts, for every pair of vocabulary tokens at most ``window``
      positions apart in the same line, the co-occurrence symmetrically (uniform weight, the
      distance counted in the original text: out-of-vocabulary tokens keep their place).
      Lines longer than 10,000 tokens are cut into 10,000-token segments; even segments form
      half 1, odd ones half 2 (interleaved halves of the same distribution, rather than the
      first and second half of the file, whose topics may differ).

    Then :func:`pip_from_counts`. ``pip_loss`` in the result is the curve for k = 1..rank
    (``max_dim`` caps it).

    >>> import os, random, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "topics.txt")
    >>> rng, words = random.Random(0), [f"w{i}" for i in range(60)]
    >>> with open(p, "w") as f:  # three topics of 20 words each
    ...     for i in range(3000):
    ...         topic = words[20 * (i % 3) : 20 * (i % 3 + 1)]
    ...         _ = f.write(" ".join(rng.choice(topic) for _ in range(12)) + "\\n")
    >>> r = pip_dimension(p, top=60)
    >>> r.dim, r.vocab, r.tokens
    (3, 60, 36000)
    """
    if max_dim is not None and max_dim < 1:
        raise KxError(f"--max-dim must be at least 1, got {max_dim}")
    p = os.fspath(path)
    if top < 2:
        raise KxError(f"--top must be at least 2, not {top}")
    if window < 1:
        raise KxError(f"--window must be at least 1, not {window}")
    if min_count < 1:
        raise KxError(f"--min-count must be at least 1, not {min_count}")
    if not (0.0 < alpha <= 1.0):
        raise KxError(f"--alpha must be in (0, 1], not {alpha}")
    tok = _make_tokenizer(lang, False, stopwords)  # case folded per distinct token below
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    try:
        fd, ids_path = tempfile.mkstemp(prefix="kxtool-dim-", suffix=".ids", dir=tmp_dir)
    except OSError as e:
        raise KxError(f"cannot create a temporary file: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            try:
                words, n_tokens, _segs = _tokenize_to_ids(p, tok, f, progress)
            except OSError as e:
                from .textio import os_error

                raise os_error(e, ids_path, "cannot write") from None
        seconds["read"] = time.perf_counter() - t0
        if not words:
            raise KxError(f"{display_name(p)!r} has no tokens")
        t1 = time.perf_counter()
        raw = np.memmap(ids_path, dtype=np.int32, mode="r")
        freq = np.zeros(len(words), dtype=np.int64)
        for s in range(0, len(raw), 1 << 24):
            part = np.asarray(raw[s : s + (1 << 24)])
            freq += np.bincount(part[part >= 0], minlength=len(words))
        del raw
        # fold case once per distinct token (ids stay in order of first appearance)
        fold = np.arange(len(words), dtype=np.int64)
        if lowercase:
            merged: dict[str, int] = {}
            fold = np.fromiter(
                (merged.setdefault(w.lower(), len(merged)) for w in words),
                dtype=np.int64,
                count=len(words),
            )
            freq = np.bincount(fold, weights=freq, minlength=len(merged)).astype(np.int64)
        order = np.argsort(-freq, kind="stable")
        order = order[freq[order] >= min_count][:top]
        size = len(order)
        if size < 2:
            raise KxError(
                f"{display_name(p)!r} has fewer than 2 words seen at least {min_count} times"
            )
        remap = np.full(len(freq), -1, dtype=np.int64)
        remap[order] = np.arange(size)
        remap = remap[fold]
        c1, c2 = _accumulate_pairs(ids_path, remap, size, window, progress)
    finally:
        try:
            os.unlink(ids_path)
        except OSError:
            pass
    c1 = c1.reshape(size, size)
    c2 = c2.reshape(size, size)
    seconds["cooccurrence"] = time.perf_counter() - t1
    res = pip_from_counts(
        c1,
        c2,
        alpha=alpha,
        seed=seed,
        max_dim=max_dim,
        progress=progress,
        tokens=n_tokens,
        window=window,
        source=display_name(p),
        directed=True,
    )
    seconds.update(res.seconds)
    seconds["total"] = time.perf_counter() - t0
    res.seconds = seconds
    return res
