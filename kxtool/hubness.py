"""Hubness: measures of the k-occurrence distribution, hubness reduction, hubness-prior sampling.

In high dimensions a few points (*hubs*) turn up in the k-nearest-neighbour lists of very many
others, and many (*antihubs*) in none. Everything here starts from the k-NN lists of
:func:`kxtool.knn.topk` (a point is never its own neighbour).

Measures follow scikit-hubness's definitions (Feldbauer et al.), over the k-occurrence ``N_k``
(how often a point is among the k nearest neighbours of the *other* points; ``sum(N_k) = k*n``):

- k-skewness: population skewness ``m3 / m2**1.5`` of ``N_k`` (Radovanović et al. 2010);
- Robin Hood index: ``sum|N_k - mean| / (2 sum N_k)``, the share of occurrences to redistribute;
- Gini index: ``sum_ij |N_i - N_j| / (2 n sum N_k)``;
- Atkinson index (eps 0.5): ``1 - mean(sqrt(N_k))**2 / mean(N_k)``;
- hub occurrence: the share of all k-NN slots taken by hubs (``N_k >= hub_size * k``);
- antihub occurrence: the share of points with ``N_k = 0``;
- groupie ratio: ``max(N_k) / (k n)``, the share of points that have the largest hub in their list.

Beyond them, the Spearman correlation between ``N_k`` and each point's distance to the data mean
(hubs sit near the mean: Su Jianlin, 2022-06-28; Radovanović et al. 2010), measured.

Reduction methods re-rank a candidate list of ``c`` nearest neighbours per point (as
scikit-hubness does) with a secondary distance and keep the best k: mutual proximity (empiric and
Gaussian; Schnitzer et al. 2012), local scaling and NICDM (Schnitzer et al. 2012), DisSim local
(Hara et al. 2016) and CSLS (Conneau et al. 2018).

Hubness-prior sampling (Liang et al., ICML 2022) keeps standard-normal latents whose
k-occurrence within their batch reaches a threshold.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import KxError, kxwarn
from .knn import DEFAULT_MEMORY, METRICS, as_matrix, topk, topk_approx
from .progress import Progress

REDUCTIONS = ("mp", "mp-gauss", "ls", "nicdm", "dsl", "csls")
# Neighbourhood size of the local statistics when not given: the published defaults.
DEFAULT_SCALE_K = {"ls": 5, "nicdm": 5, "dsl": 5, "csls": 10}
DEFAULT_CANDIDATES = 100

__all__ = [
    "REDUCTIONS",
    "HubnessReport",
    "k_occurrence",
    "k_skewness",
    "robin_hood_index",
    "gini_index",
    "atkinson_index",
    "hub_occurrence",
    "antihub_occurrence",
    "groupie_ratio",
    "spearman",
    "distance_to_mean",
    "hubness_measures",
    "reduce_hubness",
    "hubness_report",
    "hubness_prior_sample",
    "read_matrix",
    "occurrence_histogram",
]


# ---------------------------------------------------------------------------------------------
# Measures over the k-occurrence


def k_occurrence(indices: np.ndarray, n: int | None = None) -> np.ndarray:
    """``N_k``: how often each point appears in the neighbour lists ``indices`` (int64).

    >>> k_occurrence(np.array([[1, 2], [0, 2], [1, 0], [2, 1]]), 4).tolist()  # point 3: antihub
    [2, 3, 3, 0]
    """
    idx = np.asarray(indices, dtype=np.int64)
    n = int(idx.max()) + 1 if n is None else int(n)
    return np.bincount(idx.ravel(), minlength=n).astype(np.int64)


def _f64(nk: np.ndarray) -> np.ndarray:
    return np.asarray(nk, dtype=np.float64)


def k_skewness(nk: np.ndarray) -> float:
    """Population skewness of ``N_k`` (NaN when all ``N_k`` are equal)."""
    x = _f64(nk)
    d = x - x.mean()
    m2 = float(np.mean(d * d))
    if m2 <= 0.0:
        return float("nan")
    return float(np.mean(d * d * d) / m2**1.5)


def robin_hood_index(nk: np.ndarray) -> float:
    """``sum|N_k - mean| / (2 sum N_k)``: the share of occurrences to move to equalise."""
    x = _f64(nk)
    total = x.sum()
    return float(0.5 * np.abs(x - x.mean()).sum() / total) if total > 0 else float("nan")


def gini_index(nk: np.ndarray) -> float:
    """``sum_ij |N_i - N_j| / (2 n sum N)``, computed in O(n log n) from the sorted values."""
    x = np.sort(_f64(nk))
    n, total = len(x), x.sum()
    if total <= 0:
        return float("nan")
    i = np.arange(1, n + 1, dtype=np.float64)
    return float(np.sum((2 * i - n - 1) * x) / (n * total))


def atkinson_index(nk: np.ndarray, eps: float = 0.5) -> float:
    """Atkinson index with inequality aversion ``eps`` (``eps = 1``: geometric mean)."""
    x = _f64(nk)
    mean = x.mean()
    if mean <= 0:
        return float("nan")
    if eps == 1:
        with np.errstate(divide="ignore"):
            term = float(np.exp(np.mean(np.log(x))))
    else:
        term = float(np.mean(x ** (1.0 - eps)) ** (1.0 / (1.0 - eps)))
    return float(1.0 - term / mean)


def hub_occurrence(nk: np.ndarray, k: int, hub_size: float = 2.0, n_queries: int | None = None):
    """``(hubs, share)``: indices with ``N_k >= hub_size*k`` and their share of all k-NN slots."""
    x = np.asarray(nk)
    nq = len(x) if n_queries is None else n_queries
    hubs = np.flatnonzero(x >= hub_size * k)
    return hubs, float(x[hubs].sum() / (k * nq))


def antihub_occurrence(nk: np.ndarray):
    """``(antihubs, share)``: indices with ``N_k = 0`` and their share of all points."""
    x = np.asarray(nk)
    anti = np.flatnonzero(x == 0)
    return anti, float(len(anti) / len(x))


def groupie_ratio(nk: np.ndarray, k: int, n_queries: int | None = None) -> float:
    """``max(N_k) / (k n)``: the share of points with the largest hub in their k-NN list."""
    x = np.asarray(nk)
    nq = len(x) if n_queries is None else n_queries
    return float(x.max() / (k * nq))


def _ranks(a: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    a = np.asarray(a, dtype=np.float64)
    order = np.argsort(a, kind="stable")
    s = a[order]
    n = len(a)
    # boundaries of runs of equal values
    new = np.empty(n, dtype=bool)
    new[0] = True
    new[1:] = s[1:] != s[:-1]
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], n)
    avg = (starts + ends + 1) / 2.0  # mean of 1-based positions start+1 .. end
    run = np.cumsum(new) - 1
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = avg[run]
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (Pearson correlation of average ranks; NaN if one is constant)."""
    if len(a) < 2:
        return float("nan")
    ra, rb = _ranks(a), _ranks(b)
    ra -= ra.mean()
    rb -= rb.mean()
    den = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb / den) if den > 0 else float("nan")


def distance_to_mean(x: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """Each row's distance to the data mean, in the metric of the k-NN.

    cosine: the mean of the unit-normalised rows, and cosine distance ``1 - cos`` to it;
    euclidean and ip: the euclidean distance to the plain mean.
    """
    x = np.asarray(x, dtype=np.float32)
    if metric == "cosine":
        norms = np.linalg.norm(x, axis=1)
        norms[norms == 0] = 1.0
        u = x / norms[:, None]
        mu = u.mean(axis=0, dtype=np.float64)
        nm = float(np.linalg.norm(mu))
        if nm == 0:
            return np.full(len(x), np.nan)
        return 1.0 - (u @ (mu / nm).astype(np.float32)).astype(np.float64)
    mu = x.mean(axis=0, dtype=np.float64).astype(np.float32)
    d = x - mu
    return np.sqrt(np.einsum("ij,ij->i", d, d)).astype(np.float64)


def hubness_measures(
    indices: np.ndarray, n: int | None = None, hub_size: float = 2.0
) -> dict[str, Any]:
    """Every measure of the k-occurrence of the ``(n_queries, k)`` neighbour lists ``indices``.

    ``n`` is the number of points that can be neighbours (default: the number of queries).

    >>> m = hubness_measures(np.array([[1, 2], [0, 2], [1, 0], [2, 1]]), 4)
    >>> round(m["k_skewness"], 3), m["antihubs"], m["max_occurrence"]
    (-0.816, 1, 3)
    """
    idx = np.asarray(indices)
    nq, k = idx.shape
    n = nq if n is None else n
    nk = k_occurrence(idx, n)
    hubs, hub_occ = hub_occurrence(nk, k, hub_size, nq)
    anti, anti_occ = antihub_occurrence(nk)
    return {
        "k_skewness": k_skewness(nk),
        "robin_hood": robin_hood_index(nk),
        "gini": gini_index(nk),
        "atkinson": atkinson_index(nk, 0.5),
        "hub_occurrence": hub_occ,
        "hubs": int(len(hubs)),
        "antihub_occurrence": anti_occ,
        "antihubs": int(len(anti)),
        "groupie_ratio": groupie_ratio(nk, k, nq),
        "max_occurrence": int(nk.max()) if len(nk) else 0,
    }


# ---------------------------------------------------------------------------------------------
# Hubness reduction over candidate lists


def _norm_sf(x: np.ndarray, mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """Survival function of N(mu, sd) at x; sd = 0 is a step at mu."""
    erfc = np.frompyfunc(math.erfc, 1, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (x - mu) / (sd * math.sqrt(2.0))
    out = np.asarray(erfc(np.where(np.isfinite(z), z, 0.0)), dtype=np.float64) * 0.5
    step = np.where(x < mu, 1.0, np.where(x > mu, 0.0, 0.5))
    return np.where(sd > 0, out, step)


def _mp_empiric(ind: np.ndarray, dist: np.ndarray, progress: Progress | None) -> np.ndarray:
    """Empiric mutual proximity within each point's candidate set.

    For a point i with candidates C_i (c of them) and a candidate j:
    ``MP(i, j) = 1 - |{m in C_i : d(i,m) > d(i,j) and d(j,m) > d(i,j)}| / c``.
    ``d(j, m)`` is known when m is among j's candidates; otherwise it is at least j's candidate
    radius r_j, so it counts as beyond exactly when ``d(i,j) < r_j``. With all other points as
    candidates this is the exact empiric MP of Schnitzer et al. (2012) over the n - 1 others.
    """
    n, c = ind.shape
    out = np.empty((n, c), dtype=np.float64)
    radius = dist[:, -1].astype(np.float64)
    # A batch of b points at once: (b, c, c) arrays of ~16 MB and a (b, n) position table.
    b = int(max(1, min(256, (16 << 20) // (c * c * 8), (64 << 20) // (4 * n))))
    pos = np.full((b, n), -1, dtype=np.int32)  # where a point sits in C_i, or -1
    cpos = np.arange(c, dtype=np.int32)[None, :]
    for i0 in range(0, n, b):
        i1 = min(n, i0 + b)
        bl = np.arange(i1 - i0)[:, None]
        ci = ind[i0:i1]
        di = dist[i0:i1].astype(np.float64)
        pos[bl, ci] = cpos
        p = pos[bl[:, :, None], ind[ci]]  # (b, c, c): j's candidates located in C_i
        ok = p >= 0
        bb, jj, mm = np.nonzero(ok)
        known = np.full(p.shape, np.nan)
        known[bb, jj, p[bb, jj, mm]] = dist[ci[bb, jj], mm]
        dij = di[:, :, None]
        beyond_j = np.where(np.isnan(known), (di < radius[ci])[:, :, None], known > dij)
        beyond_i = di[:, None, :] > dij
        out[i0:i1] = 1.0 - (beyond_i & beyond_j).sum(axis=2) / c
        pos[bl, ci] = -1
        if progress is not None:
            progress("mutual proximity", i1, n)
    return out


def reduce_hubness(
    ind: np.ndarray,
    dist: np.ndarray,
    method: str,
    k: int,
    *,
    x: np.ndarray | None = None,
    metric: str = "cosine",
    scale_k: int | None = None,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Re-rank candidate neighbour lists with a hubness-reducing secondary distance.

    ``ind``/``dist``: ``(n, c)`` candidate lists of all n points (self excluded), sorted by
    ascending distance (cosine distance ``1 - cos`` or euclidean). ``method``:

    - ``mp``: empiric mutual proximity (see :func:`_mp_empiric`);
    - ``mp-gauss``: ``1 - SF_i(d) SF_j(d)``, each point's candidate distances modelled by an
      independent normal distribution (mean and population sd over its c candidates);
    - ``ls``: local scaling ``1 - exp(-d^2 / (s_i s_j))``, s_i = distance to the scale_k-th
      neighbour;
    - ``nicdm``: ``d / sqrt(m_i m_j)``, m_i = mean distance to the scale_k nearest neighbours;
    - ``dsl``: DisSim local ``|x-y|^2 - |x-c_x|^2 - |y-c_y|^2``, c_x the centroid of the scale_k
      nearest neighbours (on unit vectors for cosine); needs ``x``;
    - ``csls``: ``-(2 s_ij - r_i - r_j)``, s the similarity (``1 - d`` for cosine, ``-d`` for
      euclidean), r_i the mean similarity to the scale_k nearest neighbours.

    Returns ``(indices, secondary distances)`` of the best k per point (lower is better), ties
    broken by the original rank.

    >>> x = np.array([[0.0], [1.0], [2.0], [10.0]], dtype=np.float32)
    >>> ind, dist = topk(x, k=3, metric="euclidean")  # candidates: every other point
    >>> reduce_hubness(ind, dist, "mp", k=2, metric="euclidean")[0].tolist()
    [[1, 2], [0, 2], [1, 0], [2, 1]]
    """
    ind = np.asarray(ind, dtype=np.int64)
    d = np.asarray(dist, dtype=np.float64)
    n, c = ind.shape
    if method not in REDUCTIONS:
        raise KxError(f"unknown hubness reduction {method!r}: use one of {', '.join(REDUCTIONS)}")
    if k > c:
        raise KxError(f"k={k} is larger than the {c} candidates per point")
    s = DEFAULT_SCALE_K.get(method, 0) if scale_k is None else int(scale_k)
    if method in DEFAULT_SCALE_K and not 1 <= s <= c:
        raise KxError(f"--scale-k must be between 1 and the {c} candidates, got {s}")
    if method == "mp":
        sec = _mp_empiric(ind, d, progress)
    elif method == "mp-gauss":
        mu = d.mean(axis=1)
        sd = d.std(axis=1)
        sec = 1.0 - _norm_sf(d, mu[:, None], sd[:, None]) * _norm_sf(d, mu[ind], sd[ind])
    elif method == "ls":
        sig = d[:, s - 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            sec = 1.0 - np.exp(-(d * d) / (sig[:, None] * sig[ind]))
        sec = np.where(np.isnan(sec), np.where(d > 0, 1.0, 0.0), sec)
    elif method == "nicdm":
        mu = d[:, :s].mean(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            sec = d / np.sqrt(mu[:, None] * mu[ind])
        sec = np.where(np.isnan(sec), 0.0, sec)
    elif method == "dsl":
        # Hara et al. (2016) define it for squared Euclidean distances. For cosine it works on
        # the unit vectors, whose squared distance 2 (1 - cos) ranks as the cosine distance
        # does, with the centroids the plain means of the unit vectors; with every other point
        # as a candidate it is the formula exactly. On word vectors with cosine it can raise
        # hubness: hubness_report warns then (see _check_reduction).
        if x is None:
            raise KxError("DisSim local needs the vectors")
        v = np.asarray(x, dtype=np.float64)
        if metric == "cosine":
            nrm = np.linalg.norm(v, axis=1)
            nrm[nrm == 0] = 1.0
            v = v / nrm[:, None]
            sq = 2.0 * d  # |u - w|^2 = 2 (1 - cos) on unit vectors
        else:
            sq = d * d
        cent = v[ind[:, :s]].mean(axis=1)
        off = np.einsum("ij,ij->i", v - cent, v - cent)
        sec = sq - off[:, None] - off[ind]
    else:  # csls
        sim = 1.0 - d if metric == "cosine" else -d
        r = sim[:, :s].mean(axis=1)
        sec = -(2.0 * sim - r[:, None] - r[ind])
    order = np.argsort(sec, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(ind, order, axis=1), np.take_along_axis(sec, order, axis=1)


# ---------------------------------------------------------------------------------------------
# Reading inputs


def _parse_text_matrix(data: bytes, name: str) -> np.ndarray:
    rows: list[int] = []
    lines = data.split(b"\n")
    width = None
    line_of_row: list[int] = []
    for no, line in enumerate(lines, 1):
        cnt = len(line.split())
        if cnt == 0:
            continue
        if width is None:
            width = cnt
        elif cnt != width:
            raise KxError(
                f"{name}, line {no}: {cnt} numbers where the first row had {width}"
                " (rows must all have the same length)"
            )
        rows.append(cnt)
        line_of_row.append(no)
    if width is None:
        raise KxError(f"{name}: no numbers to read")
    tokens = data.split()
    try:
        arr = np.array(tokens).astype(np.float32)
    except ValueError:
        for no in line_of_row:
            for t in lines[no - 1].split():
                try:
                    float(t)
                except ValueError:
                    shown = t.decode("utf-8", "replace")
                    raise KxError(f"{name}, line {no}: {shown!r} is not a number") from None
        raise KxError(f"{name}: cannot read the numbers") from None  # pragma: no cover
    arr = arr.reshape(len(rows), width)
    if not np.isfinite(arr).all():
        r = int(np.flatnonzero(~np.isfinite(arr).all(axis=1))[0])
        raise KxError(f"{name}, line {line_of_row[r]}: a value is NaN or infinite")
    return arr


def read_matrix(
    path: str | os.PathLike[str],
    *,
    limit: int | None = None,
    sample: int | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> tuple[np.ndarray, list[str] | None, np.ndarray]:
    """Read the points for a hubness analysis: ``(matrix, words or None, original row ids)``.

    ``path``: a ``.npy`` matrix, ``-`` (whitespace-separated numbers on stdin, one row a line),
    or any vectors file :func:`kxtool.vectors.load_vectors` reads. ``limit`` keeps the first rows
    (vector files are sorted by frequency), then ``sample`` draws that many rows at random
    (``seed``), kept in file order.
    """
    from .textio import display_name, is_remote, local_path, open_input, os_error, staged_input

    p = local_path(os.fspath(path))
    name = display_name(p)
    if limit is not None and limit < 1:
        raise KxError(f"--limit must be at least 1, got {limit}")
    words: list[str] | None = None
    if p == "-":
        with open_input(p) as f:
            data = f.read()
        m = _parse_text_matrix(data, name)
        if limit is not None:
            m = m[:limit]
    elif p.lower().endswith(".npy") and is_remote(p):
        # a URL: a local copy, memory-mapped like a local file (the mapping outlives the copy)
        with staged_input(p) as local:
            m = read_matrix(local, limit=limit, progress=progress)[0]
    elif p.lower().endswith(".npy"):
        if not os.path.isfile(p):
            raise KxError(
                f"cannot open {p!r}: no such file"
                if not os.path.exists(p)
                else f"cannot read {p!r}: not a regular file"
            )
        try:
            m = np.load(p, mmap_mode="r", allow_pickle=False)
        except OSError as e:
            raise os_error(e, p) from None
        except ValueError as e:
            raise KxError(f"cannot read {p!r} as a .npy matrix: {e}") from None
        if m.ndim != 2:
            raise KxError(f"{p!r}: expected a 2-D matrix, got shape {m.shape}")
        if m.dtype.kind not in "fiu":
            raise KxError(f"{p!r}: expected numbers, got dtype {m.dtype}")
        if limit is not None:
            m = m[:limit]
    else:
        from .vectors import load_vectors

        vec = load_vectors(p, limit=limit, progress=progress)
        m, words = vec.matrix, list(vec.words)
    n = len(m)
    rows = np.arange(n, dtype=np.int64)
    if sample is not None:
        if sample < 1:
            raise KxError(f"--sample must be at least 1, got {sample}")
        if sample < n:
            rng = np.random.default_rng(seed)
            rows = np.sort(rng.choice(n, size=sample, replace=False))
            m = m[rows]
            if words is not None:
                words = [words[i] for i in rows]
    return as_matrix(m, name), words, rows


# ---------------------------------------------------------------------------------------------
# The report


def occurrence_histogram(nk: np.ndarray, k: int) -> list[tuple[int, int, int]]:
    """Bins ``(low, high, count)`` of ``N_k`` (inclusive bounds): ``N_k = 0`` (the antihubs) on
    its own, equal widths up to about 2k, then widths growing by half so that a long tail of hubs
    stays readable."""
    x = np.asarray(nk)
    top = int(x.max()) if len(x) else 0
    lin_end = min(top, 2 * k) + 1
    step = max(1, math.ceil(lin_end / 16))
    edges = [0, 1]
    while edges[-1] < lin_end:
        edges.append(edges[-1] + step)
    while edges[-1] <= top:
        edges.append(max(edges[-1] + 1, math.ceil(edges[-1] * 1.5)))
    while len(edges) > 2 and edges[-2] > top:
        edges.pop()
    edges[-1] = top + 1
    counts = np.histogram(x, bins=np.array(edges))[0] if len(x) else np.zeros(1, np.int64)
    return [(int(edges[i]), int(edges[i + 1] - 1), int(counts[i])) for i in range(len(counts))]


@dataclass
class HubnessReport:
    """Everything ``kxtool hubness`` reports; :meth:`to_dict` is its JSON form.

    >>> x = np.random.default_rng(0).normal(size=(500, 50)).astype(np.float32)
    >>> r = hubness_report(x, k=10, metric="euclidean")
    >>> r.n, r.k, r.measures["k_skewness"] > 1, "measures" in r.to_dict()
    (500, 10, True, True)
    """

    source: str
    n: int
    dim: int
    k: int
    metric: str
    hub_size: float
    approximate: bool
    measures: dict[str, Any]
    spearman_mean: float
    k_occurrence: np.ndarray = field(repr=False)
    indices: np.ndarray = field(repr=False)
    labels: list[str] = field(repr=False)
    rows: np.ndarray = field(repr=False)
    top: int = 10
    has_words: bool = False
    reduction: str | None = None
    candidates: int | None = None
    scale_k: int | None = None
    reduced_measures: dict[str, Any] | None = None
    reduced_indices: np.ndarray | None = field(default=None, repr=False)
    reduced_k_occurrence: np.ndarray | None = field(default=None, repr=False)
    reduced_spearman_mean: float | None = None

    def top_hubs(self, occurrence: np.ndarray | None = None) -> list[dict[str, Any]]:
        nk = self.k_occurrence if occurrence is None else occurrence
        order = np.lexsort((np.arange(len(nk)), -nk))[: self.top]
        return [
            {"row": int(self.rows[i]), "word": self._word(i), "k_occurrence": int(nk[i])}
            for i in order
        ]

    def antihub_examples(self, occurrence: np.ndarray | None = None) -> list[dict[str, Any]]:
        nk = self.k_occurrence if occurrence is None else occurrence
        anti = np.flatnonzero(nk == 0)[: self.top]
        return [{"row": int(self.rows[i]), "word": self._word(i)} for i in anti]

    def _word(self, i: int) -> str | None:
        return self.labels[i] if self.has_words else None

    def histogram(self, occurrence: np.ndarray | None = None) -> list[tuple[int, int, int]]:
        nk = self.k_occurrence if occurrence is None else occurrence
        return occurrence_histogram(nk, self.k)

    def to_dict(self) -> dict[str, Any]:
        def hist(h):
            return [{"low": a, "high": b, "count": c} for a, b, c in h]

        out: dict[str, Any] = {
            "source": self.source,
            "n": self.n,
            "dim": self.dim,
            "k": self.k,
            "metric": self.metric,
            "hub_size": self.hub_size,
            "approximate": self.approximate,
            "measures": {
                **self.measures,
                "spearman_occurrence_vs_distance_to_mean": self.spearman_mean,
            },
            "top_hubs": self.top_hubs(),
            "antihub_examples": self.antihub_examples(),
            "histogram": hist(self.histogram()),
        }
        if self.reduction is not None and self.reduced_k_occurrence is not None:
            out["reduction"] = {
                "method": self.reduction,
                "candidates": self.candidates,
                "scale_k": self.scale_k,
                "measures": {
                    **(self.reduced_measures or {}),
                    "spearman_occurrence_vs_distance_to_mean": self.reduced_spearman_mean,
                },
                "top_hubs": self.top_hubs(self.reduced_k_occurrence),
                "antihub_examples": self.antihub_examples(self.reduced_k_occurrence),
                "histogram": hist(self.histogram(self.reduced_k_occurrence)),
            }
        return out


def hubness_report(
    x: np.ndarray,
    *,
    words: list[str] | None = None,
    rows: np.ndarray | None = None,
    source: str = "<memory>",
    k: int = 10,
    metric: str = "cosine",
    hub_size: float = 2.0,
    reduce: str | None = None,
    candidates: int | None = None,
    scale_k: int | None = None,
    memory: int = DEFAULT_MEMORY,
    approx: bool = False,
    top: int = 10,
    progress: Progress | None = None,
    cluster: Any = None,
) -> HubnessReport:
    """k-NN lists of the rows of ``x``, their hubness measures and, with ``reduce``, the same
    after hubness reduction (see :func:`reduce_hubness`; ``candidates`` per point, default
    ``max(100, 3k)`` capped at n - 1). ``cluster`` (see :mod:`kxtool.cluster`) computes the
    exact k-NN lists as tasks on a Dask cluster (:func:`kxtool.knn.topk`); the measures are
    computed here, and are those of a local run without the tiled self-search.

    >>> x = np.random.default_rng(0).normal(size=(500, 50)).astype(np.float32)
    >>> r = hubness_report(x, k=10, metric="euclidean", reduce="mp")
    >>> round(r.measures["k_skewness"], 1), round(r.reduced_measures["k_skewness"], 1)
    (4.3, 1.1)
    """
    if metric not in ("cosine", "euclidean"):
        raise KxError(f"unknown metric {metric!r}: use cosine or euclidean")
    assert metric in METRICS
    x = as_matrix(x, source)
    n = len(x)
    if n < 2:
        raise KxError(f"{source}: hubness needs at least 2 points, got {n}")
    if k < 1 or k >= n:
        raise KxError(
            f"k={k} must be between 1 and n - 1 = {n - 1} (a point is not its own neighbour)"
        )
    if hub_size <= 0:
        raise KxError(f"--hub-size must be greater than zero, got {hub_size}")
    c = k
    if reduce is not None:
        if reduce not in REDUCTIONS:
            raise KxError(
                f"unknown hubness reduction {reduce!r}: use one of {', '.join(REDUCTIONS)}"
            )
        c = max(DEFAULT_CANDIDATES, 3 * k) if candidates is None else int(candidates)
        c = min(c, n - 1)
        if c < k:
            raise KxError(f"--candidates ({c}) must be at least k ({k})")
    if approx:
        ind, sc = topk_approx(x, k=c, metric=metric, progress=progress)
    else:
        ind, sc = topk(x, k=c, metric=metric, memory=memory, progress=progress,
                       cluster=cluster)
    dist = (1.0 - sc.astype(np.float64)) if metric == "cosine" else sc.astype(np.float64)
    base_ind = ind[:, :k]
    nk = k_occurrence(base_ind, n)
    dmean = distance_to_mean(x, metric)
    labels = (
        list(words)
        if words is not None
        else [f"row {i}" for i in (rows if rows is not None else range(n))]
    )
    report = HubnessReport(
        source=source,
        n=n,
        dim=int(x.shape[1]),
        k=k,
        metric=metric,
        hub_size=hub_size,
        approximate=approx,
        measures=hubness_measures(base_ind, n, hub_size),
        spearman_mean=spearman(nk, dmean),
        k_occurrence=nk,
        indices=base_ind,
        labels=labels,
        rows=np.arange(n, dtype=np.int64) if rows is None else np.asarray(rows),
        top=top,
        has_words=words is not None,
    )
    if reduce is not None:
        if scale_k is None and reduce in DEFAULT_SCALE_K:
            scale_k = min(DEFAULT_SCALE_K[reduce], c)
        rind, _ = reduce_hubness(
            ind, dist, reduce, k, x=x, metric=metric, scale_k=scale_k, progress=progress
        )
        rnk = k_occurrence(rind, n)
        report.reduction = reduce
        report.candidates = c
        report.scale_k = scale_k if reduce in DEFAULT_SCALE_K else None
        report.reduced_indices = rind
        report.reduced_k_occurrence = rnk
        report.reduced_measures = hubness_measures(rind, n, hub_size)
        report.reduced_spearman_mean = spearman(rnk, dmean)
        _check_reduction(reduce, metric, report.measures, report.reduced_measures)
    return report


def _check_reduction(
    method: str, metric: str, before: dict[str, Any], after: dict[str, Any]
) -> None:
    """Warn when a hubness reduction raised the k-skewness: the figures are right, but the
    method did the opposite of its purpose on this data.

    Measured on the shipped GloVe vectors (the first 5,000, 10,000 and 20,000 words, k = 10):
    DisSim local with cosine took the k-skewness from 1.70 to 1.92, 1.68 to 1.95 and 1.54 to
    1.92, and with every point as a candidate (the formula exactly) from 1.72 to 3.11 on 3,000
    words; it subtracts each point's squared distance to its local centroid, which brings
    isolated words into many lists. With the centroids projected onto the sphere it did no
    better (1.98 on 10,000). Every other method lowered it, as did DisSim local with euclidean
    (3.16 to 2.30 on 5,000)."""
    a, b = before.get("k_skewness"), after.get("k_skewness")
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)) or b <= a:
        return
    why = (
        " (DisSim local subtracts each point's squared distance to the centroid of its"
        " neighbours, which can draw isolated points into many lists)"
        if method == "dsl"
        else ""
    )
    others = ", ".join(m for m in REDUCTIONS if m != method)
    kxwarn(
        f"hubness reduction {method!r} with {metric} raised the k-skewness from {a:.3f} to"
        f" {b:.3f} instead of lowering it{why}; the figures after it are correct, but another"
        f" method ({others}) may serve better"
    )


# ---------------------------------------------------------------------------------------------
# Hubness-prior latent sampling


def hubness_prior_sample(
    dim: int,
    count: int,
    *,
    k: int = 5,
    min_occurrence: int = 50,
    batch_size: int = 10_000,
    seed: int = 0,
    metric: str = "euclidean",
    max_batches: int = 1000,
    memory: int = DEFAULT_MEMORY,
    progress: Progress | None = None,
    info: dict[str, Any] | None = None,
) -> np.ndarray:
    """``count`` standard-normal latents of ``dim`` dimensions with high k-occurrence.

    Latents are drawn in batches of ``batch_size``; within each batch the k-NN lists (``metric``)
    give every latent its k-occurrence, and those with ``N_k >= min_occurrence`` are kept, in
    draw order, until ``count`` are collected (Liang et al., "Exploring and Exploiting Hubness
    Priors for High-Quality GAN Latent Sampling", ICML 2022). Returns a float32 ``(count, dim)``
    array; deterministic for a given ``seed``.

    A threshold no latent can reach is an error, not an endless loop: above ``batch_size - 1``
    it fails at once; if the first batches keep nothing, or ``max_batches`` would not suffice,
    it fails naming the largest k-occurrence seen. ``info``, if given, receives ``batches``,
    ``drawn`` and ``accepted`` (how many latents of the drawn batches met the threshold).

    >>> z = hubness_prior_sample(8, 20, k=5, min_occurrence=10, batch_size=500, seed=0)
    >>> z.shape, z.dtype.name
    ((20, 8), 'float32')
    """
    for name, v, lo in (
        ("--dim", dim, 1),
        ("--count", count, 1),
        ("-k", k, 1),
        ("--batch-size", batch_size, 2),
        ("--max-batches", max_batches, 1),
    ):
        if v < lo:
            raise KxError(f"{name} must be at least {lo}, got {v}")
    if metric not in METRICS:
        raise KxError(f"unknown metric {metric!r}: use one of {', '.join(METRICS)}")
    if k >= batch_size:
        raise KxError(f"-k ({k}) must be smaller than the batch size ({batch_size})")
    if min_occurrence > batch_size - 1:
        raise KxError(
            f"--min-occurrence {min_occurrence} is impossible: in a batch of {batch_size} a latent"
            f" is a neighbour of at most {batch_size - 1} others"
        )
    rng = np.random.default_rng(seed)
    kept: list[np.ndarray] = []
    have = 0
    best = 0
    accepted = 0
    probe = 5
    for b in range(max_batches):
        z = rng.standard_normal((batch_size, dim), dtype=np.float32)
        ind, _ = topk(z, k=k, metric=metric, memory=memory)
        nk = k_occurrence(ind, batch_size)
        best = max(best, int(nk.max()))
        sel = z[nk >= min_occurrence]
        accepted += len(sel)
        if info is not None:
            info.update(batches=b + 1, drawn=(b + 1) * batch_size, accepted=accepted)
        if len(sel):
            kept.append(sel[: count - have])
            have += len(kept[-1])
        if progress is not None:
            progress("sampling", have, count)
        if have >= count:
            return np.concatenate(kept)[:count]
        done = b + 1
        if have == 0 and done >= probe:
            raise KxError(
                f"--min-occurrence {min_occurrence} is out of reach: no latent reached it in"
                f" {done} batches of {batch_size} (the largest k-occurrence seen was {best});"
                " lower the threshold or raise -k"
            )
        if have and done >= probe and have / done * max_batches < count:
            raise KxError(
                f"--min-occurrence {min_occurrence} keeps only about {have / done:.1f} latents a"
                f" batch: {count} would need more than --max-batches {max_batches}"
            )
    raise KxError(
        f"only {have} of {count} latents reached --min-occurrence {min_occurrence} in"
        f" {max_batches} batches; lower the threshold or raise --max-batches"
    )
