"""Exact k-nearest neighbours in blocks: float32 BLAS products, a cheap exact selection.

The cost of brute-force k-NN in numpy is not the matrix product but the selection of the k best
entries of every row of a ``(block, n)`` score matrix: ``argpartition`` over whole rows is several
times slower than the product itself. :func:`topk` avoids it with an exact *threshold prefilter*:

1. Split a row of scores into ``G = 4k + 4`` groups of consecutive columns and take each group's
   maximum (one SIMD reduction pass). The k-th largest of these maxima is a lower bound of the
   row's true k-th best score: k different groups each hold an entry at least that good. Once a
   row has a running top-k list, its current k-th score is an even better bound.
2. One vectorised comparison against the bound and ``flatnonzero`` (in cache-sized row chunks)
   leave only slightly more than k candidates per row instead of ``n``.
3. The candidates are packed into a small padded array, and the exact top k are chosen there,
   ties broken by the lower column index; rows with unusually many candidates (duplicates, constant
   vectors) fall back to the same exact selection over their full row.

A self search (``base=None``) computes each tile ``X_I X_J^T`` only for ``J >= I`` and merges it
into the running lists of the rows of I (row-wise) and of J (column-wise): half the matrix
products. For euclidean it ranks by the symmetric ``x_i.x_j - |x_i|^2/2 - |x_j|^2/2``
(``= -|x_i - x_j|^2 / 2``).

The result is exact and deterministic: sorted best first, ties broken by the lower index.
Scores are similarities for ``cosine`` and ``ip`` (higher is better) and distances for
``euclidean`` (lower is better).

Exact means exact whatever BLAS kernel or block size computed the products. Two float32
products of the same pair can differ in their last digits (kernels sum in different orders, and
one product computes the edge of a tile by another path than its middle), so identical rows
would not reliably tie. The ranking is therefore defined by a float64 score of each pair summed
in a fixed order, dimension by dimension (:func:`_rescore`), which depends on nothing but the two
vectors: the float32 search finds the candidates, and where its scores are too close to decide
(within a bound on float32 rounding, :func:`_score_error`) the pairs concerned are re-scored that
way: near-ties inside a list are re-ordered, and a row whose (k+1)-th candidate is near its k-th
gets its boundary decided over every point close enough to matter. Pairs re-scored report the
float64 score (rounded to float32).

An optional approximate search (:func:`topk_approx`, faiss HNSW) exists for very large inputs; its
results are approximate and must be labelled so.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import KxError
from .progress import Progress

METRICS = ("cosine", "euclidean", "ip")
DEFAULT_MEMORY = 1 << 30  # bytes of working memory for one block of scores
# Below this dimension the products are cheap next to the selection, and the plain row-block
# loop is as fast as the symmetric tiled one (measured on 2 cores: equal at 50 and 128
# dimensions, the tiled loop clearly ahead at 300).
SYMMETRIC_MIN_DIM = 160

__all__ = ["METRICS", "DEFAULT_MEMORY", "topk", "topk_approx", "as_matrix"]


def as_matrix(x: np.ndarray, name: str = "matrix") -> np.ndarray:
    """Check a 2-D finite numeric array and return it as C-contiguous float32."""
    a = np.asarray(x)
    if a.ndim != 2:
        raise KxError(f"{name} must be 2-dimensional, got shape {a.shape}")
    if a.dtype.kind not in "fiub":
        raise KxError(f"{name} must be numeric, got dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if a.size and not np.isfinite(a).all():
        bad = int(np.flatnonzero(~np.isfinite(a).all(axis=1))[0])
        raise KxError(f"{name} has a non-finite value (NaN or infinity) in row {bad + 1}")
    return a


def _normalized(a: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; zero rows stay zero (cosine 0 to everything). Norms and
    quotients are computed in float64, so each entry is off by one float32 rounding at most."""
    out = np.empty(a.shape, dtype=np.float32)
    step = 8192
    for s in range(0, len(out), step):
        blk = np.asarray(a[s : s + step], dtype=np.float64)
        n = np.sqrt(np.einsum("ij,ij->i", blk, blk))
        n[n == 0] = 1.0
        out[s : s + step] = blk / n[:, None]
    return out


def _norms(a: np.ndarray) -> np.ndarray:
    """float64 row norms (for error bounds: any summation order will do)."""
    out = np.empty(len(a))
    step = 8192
    for s in range(0, len(a), step):
        blk = np.asarray(a[s : s + step], dtype=np.float64)
        out[s : s + step] = np.sqrt(np.einsum("ij,ij->i", blk, blk))
    return out


def _score_error(metric: str, q_norms: np.ndarray, b_max: float, dim: int) -> np.ndarray:
    """A bound, per query row, on how far a float32 score of the search can be from the exact
    score, plus how far the float64 re-score can be (in the units of the search's scores).

    A float32 dot product of length d summed in any order, with or without fused multiply-adds,
    is within ``d u sum|x_t y_t| <= d u |x| |y|`` of the exact one (u = 2^-24, Higham's
    gamma_d); cosine adds at most 2u from the unit rows (each entry one float32 rounding of a
    float64 quotient), euclidean the rounding of ``|y|^2 / 2`` (and ``|x|^2 / 2`` in the
    symmetric loop) and of the subtractions. ``(d + 8) u``, with 5% to spare, covers each;
    the float64 re-score adds ``(d + 4) 2^-53``. A zero cosine row scores exactly 0 against
    everything: its bound is 0."""
    c = (dim + 8) * 2.0**-24 * 1.05 + (dim + 4) * 2.0**-53
    if metric == "cosine":
        scale = (q_norms > 0).astype(np.float64)
    elif metric == "ip":
        scale = q_norms * b_max
    else:
        scale = q_norms * b_max + 0.5 * q_norms * q_norms + 0.5 * b_max * b_max
    return c * scale


def _select_padded(
    vals: np.ndarray, cols: np.ndarray, k: int, ascending: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top k of each row of ``vals``, ties broken by the lower ``cols``.

    Padding entries are ``-inf`` with columns larger than any real one (and distinct within a
    row, as all columns of a row must be). ``ascending``: the columns of every row increase
    along the row, so ties resolve by position. Returns ``(cols, vals)`` of shape ``(rows, k)``,
    best first.
    """
    b, w = vals.shape
    if w == k:
        take = np.ones_like(vals, dtype=bool)
    else:
        kth = np.partition(vals, w - k, axis=1)[:, w - k]
        gt = vals > kth[:, None]
        need = k - gt.sum(axis=1)  # >= 1: the k-th value itself is taken
        eq = vals == kth[:, None]
        take = gt | eq
        tied = np.flatnonzero(eq.sum(axis=1) > need)
        if len(tied) and ascending:
            # the first `need` tied entries of the row are its lowest columns
            for r in tied:
                row = take[r]
                row[:] = gt[r]
                row[np.flatnonzero(eq[r])[: need[r]]] = True
        elif len(tied):
            # more entries equal the k-th value than fit: keep the `need` lowest columns
            big = np.iinfo(np.int64).max
            eq_t = eq[tied]
            eq_cols = np.sort(np.where(eq_t, cols[tied], big), axis=1)
            limit = np.take_along_axis(eq_cols, (need[tied] - 1)[:, None], axis=1)
            take[tied] = gt[tied] | (eq_t & (cols[tied] <= limit))
    rr, cc = np.nonzero(take)
    sv = vals[rr, cc].reshape(b, k)
    sc = cols[rr, cc].reshape(b, k)
    order = np.lexsort((sc, -sv), axis=-1)
    return np.take_along_axis(sc, order, axis=1), np.take_along_axis(sv, order, axis=1)


_LOWEST = np.float32(-np.finfo(np.float32).max)


def _group_bound(tile: np.ndarray, k: int, axis: int) -> np.ndarray:
    """A lower bound of the k-th best score of every row (``axis=1``) or column (``axis=0``) of
    ``tile``: the k-th largest of group maxima, since k groups each hold an entry at least that
    good. Groups have at least two entries, so the one ``-inf`` (a point itself) never makes a
    group maximum ``-inf``. Too few entries for k groups: ``_LOWEST`` (keep every finite one)."""
    length = tile.shape[axis]
    other = tile.shape[1 - axis]
    g = min(4 * k + 4, length // 2)
    if g < k:
        return np.full(other, _LOWEST, dtype=np.float32)
    width = length // g
    if axis == 1:
        gmax = tile[:, : g * width].reshape(other, g, width).max(axis=2)
        bound = np.partition(gmax, g - k, axis=1)[:, g - k]
    else:
        gmax = tile[: g * width].reshape(g, width, other).max(axis=1)
        bound = np.partition(gmax, g - k, axis=0)[g - k]
    return np.maximum(bound, _LOWEST)


def _merge(
    run_v: np.ndarray,
    run_i: np.ndarray,
    owner: np.ndarray,
    cols: np.ndarray,
    vals: np.ndarray,
    k: int,
) -> None:
    """Merge candidates (``owner`` row of ``run_*``, sorted; column id; score) into the running
    top-k lists (sorted best first; ``-inf`` placeholders while filling)."""
    if not len(owner):
        return
    counts = np.bincount(owner, minlength=len(run_v))
    touched = np.flatnonzero(counts)
    dense = np.full(len(run_v), -1, dtype=np.int64)
    dense[touched] = np.arange(len(touched))
    width = k + int(counts.max())
    pv = np.full((len(touched), width), -np.inf, dtype=np.float32)
    pc = np.empty((len(touched), width), dtype=np.int64)
    pc[:] = np.iinfo(np.int64).max // 2 + np.arange(width)  # distinct padding columns
    pv[:, :k] = run_v[touched]
    pc[:, :k] = run_i[touched]
    starts = np.cumsum(counts) - counts
    pos = np.arange(len(owner), dtype=np.int64) - starts[owner] + k
    d = dense[owner]
    pv[d, pos] = vals
    pc[d, pos] = cols
    sc, sv = _select_padded(pv, pc, k)
    run_i[touched] = sc
    run_v[touched] = sv


def _bounds(run_v: np.ndarray, tile: np.ndarray, k: int, axis: int) -> np.ndarray:
    """Per running list, the value a candidate of ``tile`` must exceed (strictly).

    Every list receives its columns in ascending blocks (see :func:`_topk_symmetric`), so a
    score equal to the current k-th can never enter a full list (the lower index wins the tie):
    strictly greater is exact, and keeps constant or duplicate data from flooding the merge.
    A list still filling takes scores >= the group bound (one float step below, strictly).
    """
    bound = run_v[:, k - 1].copy()
    unfilled = bound == -np.inf
    if unfilled.any():
        gb = _group_bound(tile, k, axis)[unfilled]
        with np.errstate(over="ignore"):  # -FLT_MAX steps down to -inf: all finite scores pass
            bound[unfilled] = np.nextafter(gb, np.float32(-np.inf))
    return bound


def _merge_rows(run_v, run_i, tile, col0, k) -> None:  # type: ignore[no-untyped-def]
    """Rows of ``tile`` are the running lists; its columns are points ``col0 ...``."""
    r, w = tile.shape
    bound = _bounds(run_v, tile, k, 1)
    chunk = max(1, (1 << 22) // (w * 4))
    found = []
    for s in range(0, r, chunk):
        f = np.flatnonzero(tile[s : s + chunk] > bound[s : s + chunk, None])
        found.append(f + s * w if s else f)
    flat = np.concatenate(found) if len(found) > 1 else found[0]
    owner = flat // w
    _merge(run_v, run_i, owner, flat - owner * w + col0, tile.reshape(-1)[flat], k)


def _merge_cols(run_v, run_i, tile, row0, k) -> None:  # type: ignore[no-untyped-def]
    """Columns of ``tile`` are the running lists; its rows are points ``row0 ...``."""
    r, w = tile.shape
    bound = _bounds(run_v, tile, k, 0)
    chunk = max(1, (1 << 22) // (w * 4))
    found = []
    for s in range(0, r, chunk):
        f = np.flatnonzero(tile[s : s + chunk] > bound[None, :])
        found.append(f + s * w if s else f)
    flat = np.concatenate(found) if len(found) > 1 else found[0]
    point = flat // w
    owner = flat - point * w
    order = np.argsort(owner, kind="stable")
    flat, point, owner = flat[order], point[order], owner[order]
    _merge(run_v, run_i, owner, point + row0, tile.reshape(-1)[flat], k)


def _topk_symmetric(
    x: np.ndarray,
    k: int,
    half_sq: np.ndarray | None,
    exclude: bool,
    memory: int,
    progress: Progress | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Self k-NN computing each tile ``x_I x_J^T`` once, for J >= I, and using it for the rows
    of I and (column-wise) for the rows of J: half the matrix products of the plain loop.
    A row of block B is merged with column blocks 0, 1, ..., B-1 (column-wise, as the outer loop
    goes) and then B, B+1, ...: always in ascending order of columns.

    Scores are inner products, or with ``half_sq`` (|x|^2 / 2) the symmetric
    ``x_i . x_j - half_sq_i - half_sq_j = -|x_i - x_j|^2 / 2``.
    """
    n = len(x)
    t = int(max(k + 1, min(4096, math.isqrt(max(1, memory // 8)))))
    run_v = np.full((n, k), -np.inf, dtype=np.float32)
    run_i = np.empty((n, k), dtype=np.int64)
    run_i[:] = np.iinfo(np.int64).max // 4 + np.arange(k)  # placeholders, distinct per row
    starts = list(range(0, n, t))
    buf = np.empty(min(t, n) ** 2, dtype=np.float32)  # one tile, reused
    for bi, s in enumerate(starts):
        e = min(n, s + t)
        for s2 in starts[bi:]:
            e2 = min(n, s2 + t)
            tile = buf[: (e - s) * (e2 - s2)].reshape(e - s, e2 - s2)
            np.matmul(x[s:e], x[s2:e2].T, out=tile)
            if half_sq is not None:
                tile -= half_sq[s:e, None]
                tile -= half_sq[None, s2:e2]
            if s2 == s and exclude:
                r = np.arange(e - s)
                tile[r, r] = -np.inf
            _merge_rows(run_v[s:e], run_i[s:e], tile, s2, k)
            if s2 != s:
                _merge_cols(run_v[s2:e2], run_i[s2:e2], tile, s, k)
        if progress is not None:
            progress("k-NN", e, n)
    return run_i, run_v


def _select_block(scores: np.ndarray, k: int, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top k per row of a ``(b, n)`` float32 score block (higher is better)."""
    b, n = scores.shape
    if groups <= 0:
        cols = np.broadcast_to(np.arange(n, dtype=np.int64), (b, n))
        return _select_padded(scores, cols, k, ascending=True)
    width = n // groups
    body = groups * width
    # Work in cache-sized chunks of rows: group maxima, bound, comparison, positions.
    chunk = max(1, (1 << 22) // (n * 4))
    found = []
    flood = max(64, 32 * k)  # more candidates than this: the row takes the full-row path
    flooded = np.zeros(b, dtype=bool)
    for s in range(0, b, chunk):
        blk = scores[s : s + chunk]
        gmax = blk[:, :body].reshape(len(blk), groups, width).max(axis=2)
        if body < n:
            gmax = np.concatenate([gmax, blk[:, body:].max(axis=1, keepdims=True)], axis=1)
        g = gmax.shape[1]
        # k groups have a maximum >= bound, so the row's k-th best is >= bound too.
        bound = np.partition(gmax, g - k, axis=1)[:, g - k]
        mask = blk >= bound[:, None]
        f = np.flatnonzero(mask)
        if len(f) > len(blk) * flood:  # ties everywhere (constant or duplicate vectors)
            over = mask.sum(axis=1) > flood
            flooded[s : s + len(blk)] = over
            mask[over] = False
            f = np.flatnonzero(mask)
        if s:
            f += s * n
        found.append(f)
    flat = np.concatenate(found) if len(found) > 1 else found[0]
    rows = flat // n
    counts = np.bincount(rows, minlength=b)
    cap = max(4 * k, 8 * int(math.ceil(len(flat) / b)), 64)
    heavy = (counts > cap) | flooded
    out_c = np.empty((b, k), dtype=np.int64)
    out_v = np.empty((b, k), dtype=np.float32)
    if heavy.any():
        hrows = np.flatnonzero(heavy)
        hc, hv = _select_block(scores[hrows], k, 0)
        out_c[hrows] = hc
        out_v[hrows] = hv
        keep = ~heavy[rows]
        flat = flat[keep]
        rows = rows[keep]
        counts = counts.copy()
        counts[heavy] = 0
    light = np.flatnonzero(~heavy)
    if len(light):
        w = int(counts.max())
        # Rows renumbered densely among the light ones.
        dense = np.cumsum(~heavy) - 1
        drow = dense[rows]
        starts = np.cumsum(counts) - counts
        pos = np.arange(len(flat), dtype=np.int64) - starts[rows]
        pv = np.full((len(light), w), -np.inf, dtype=np.float32)
        pc = np.full((len(light), w), n, dtype=np.int64)
        pc += np.arange(w)  # distinct padding columns, larger than any real one
        pv[drow, pos] = scores.reshape(-1)[flat]
        pc[drow, pos] = flat - rows * n
        lc, lv = _select_padded(pv, pc, k, ascending=True)
        out_c[light] = lc
        out_v[light] = lv
    return out_c, out_v


def _fixed_sums(A: np.ndarray, B: np.ndarray, op: str) -> np.ndarray:
    """Per column of the ``(d, m)`` float32 arrays, the float64 sum over the d rows, in row
    order, of ``A*B`` (``op="dot"``) or ``(A-B)^2`` (``op="sq"``): one elementwise numpy
    operation per row, no BLAS and no reassociation. Float32 products are exact in float64."""
    m = A.shape[1]
    acc = np.zeros(m)
    tmp = np.empty(m)
    for t in range(A.shape[0]):
        if op == "sq":
            np.subtract(A[t], B[t], out=tmp, dtype=np.float64)
            tmp *= tmp
        else:
            np.multiply(A[t], B[t], out=tmp, dtype=np.float64)
        acc += tmp
    return acc


def _gather_t(a: np.ndarray, rows: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a[rows].T)


def _rescore(
    q: np.ndarray, b: np.ndarray, qi: np.ndarray, bj: np.ndarray, metric: str
) -> np.ndarray:
    """The float64 scores of the pairs ``(q[qi], b[bj])`` from the float32 input rows: cosine
    ``x.y / sqrt(|x|^2 |y|^2)`` (0 with a zero row), ``x.y``, or ``-|x - y|^2 / 2``.

    Every sum runs over the dimensions in order (:func:`_fixed_sums`), so a pair's score
    depends only on its two vectors: identical rows score bitwise the same, wherever they are
    and whatever else is computed."""
    out = np.empty(len(qi))
    step = 2048  # pairs at a time: their transposed rows stay in cache
    if metric == "cosine":  # squared norms once per row involved, by the same fixed sums
        uq, qpos = np.unique(qi, return_inverse=True)
        ub, bpos = np.unique(bj, return_inverse=True)
        qsq, bsq = np.empty(len(uq)), np.empty(len(ub))
        for rows, a, dst in ((uq, q, qsq), (ub, b, bsq)):
            for s in range(0, len(rows), step):
                A = _gather_t(a, rows[s : s + step])
                dst[s : s + step] = _fixed_sums(A, A, "dot")
    for s in range(0, len(qi), step):
        A = _gather_t(q, qi[s : s + step])
        B = _gather_t(b, bj[s : s + step])
        if metric == "euclidean":
            out[s : s + step] = -0.5 * _fixed_sums(A, B, "sq")
            continue
        ab = _fixed_sums(A, B, "dot")
        if metric == "ip":
            out[s : s + step] = ab
            continue
        den = np.sqrt(qsq[qpos[s : s + step]] * bsq[bpos[s : s + step]])
        out[s : s + step] = np.divide(ab, den, out=np.zeros(len(ab)), where=den > 0)
    return out


def _order_bands(
    row: np.ndarray,
    val: np.ndarray,
    col: np.ndarray,
    err: np.ndarray,
    k: int,
    q: np.ndarray,
    b: np.ndarray,
    metric: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The exact k best of candidate bands: entries ``(row, float32 score, column)`` grouped
    by row, best first within each, every row with at least k entries. Neighbouring entries
    of a row less than ``2 err[row]`` apart form runs of near-ties; their pairs are re-scored
    (:func:`_rescore`) and each run is ordered by (float64 score, column). Entries more than
    that apart are in the right order already. Returns ``(columns, float32 scores, float64
    scores or NaN)``, ``(rows, k)`` for the rows in order of appearance."""
    tied = (row[1:] == row[:-1]) & (
        val[:-1].astype(np.float64) - val[1:] <= 2.0 * err[row[1:]]
    )
    member = np.zeros(len(row), dtype=bool)
    member[:-1] |= tied
    member[1:] |= tied
    at = np.flatnonzero(member)  # runs are contiguous: re-order the members in place
    exact = np.full(len(row), np.nan)
    sc = _rescore(q, b, row[at], col[at], metric)
    run = np.cumsum(np.r_[True, ~tied])[at]
    order = np.lexsort((col[at], -sc, run))
    col, val = col.copy(), val.copy()
    col[at], val[at], exact[at] = col[at][order], val[at][order], sc[order]
    starts = np.flatnonzero(np.r_[True, row[1:] != row[:-1]])
    take = starts[:, None] + np.arange(k)[None, :]
    return col[take], val[take], exact[take]


def _exact_ties(
    q: np.ndarray,
    b: np.ndarray,
    qm: np.ndarray,
    bm: np.ndarray,
    shift: np.ndarray | None,
    run_i: np.ndarray,
    run_v: np.ndarray,
    k: int,
    metric: str,
    exclude: bool,
    memory: int,
    complete: bool,
    row_shift: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Make the float32 search's top lists exact in the float64 scores of :func:`_rescore`.

    ``run_i``/``run_v``: the search's lists (float32 scores of ``qm @ bm.T - shift``, less
    ``row_shift`` per row if given, best first, at least ``k`` entries; ``complete``: they hold
    every point there is). ``q``/``b``:
    the input rows. With ``E`` the bound of :func:`_score_error`, every float32 score is within
    ``E`` of the float64 one. Each of the true k best therefore scores at least
    ``kth - 2E`` in float32 (``kth`` the row's k-th float32 score): that *band* holds the
    answer, and ordering the band (:func:`_order_bands`) gives it. The band usually lies within
    the list; a row whose last entry is still in it is scored again in full to find its band.

    Returns ``(indices, float32 scores, float64 scores)`` of shape ``(n, k)``; the float64
    scores are NaN where a pair was not re-scored."""
    n_q, width = run_i.shape
    n_b = len(b)
    err = _score_error(metric, _norms(q), float(_norms(b).max()), q.shape[1])
    idx = np.ascontiguousarray(run_i[:, :k])
    val = np.ascontiguousarray(run_v[:, :k])
    ex = np.full((n_q, k), np.nan)
    low = run_v[:, k - 1].astype(np.float64) - 2.0 * err
    inband = run_v >= low[:, None]
    live = err > 0
    full = live & inband[:, -1] & (not complete)
    gap = run_v[:, :-1].astype(np.float64) - run_v[:, 1:]
    ties = live & ~full & ((gap <= 2.0 * err[:, None]) & inband[:, 1:]).any(axis=1)
    rows = np.flatnonzero(ties)
    if len(rows):
        keep = inband[rows]
        rr, cc = np.nonzero(keep)
        ci, cv, ce = _order_bands(
            rows[rr], run_v[rows][keep], run_i[rows][keep], err, k, q, b, metric
        )
        idx[rows], val[rows], ex[rows] = ci, cv, ce
    rows = np.flatnonzero(full)
    block = _block_rows(n_b, memory)
    for s in range(0, len(rows), block):
        rr = rows[s : s + block]
        S = qm[rr] @ bm.T
        if shift is not None:
            S -= shift[None, :]
        if row_shift is not None:
            S -= row_shift[rr, None]
        if exclude:
            S[np.arange(len(rr)), rr] = -np.inf
        lo = np.partition(S, n_b - k, axis=1)[:, n_b - k].astype(np.float64) - 2.0 * err[rr]
        lo32 = lo.astype(np.float32)
        lo32 = np.where(lo32 > lo, np.nextafter(lo32, np.float32(-np.inf)), lo32)
        br, bc = np.nonzero(S >= lo32[:, None])
        bv = S[br, bc]
        del S
        order = np.lexsort((bc, -bv, br))
        ci, cv, ce = _order_bands(rr[br[order]], bv[order], bc[order], err, k, q, b, metric)
        idx[rr], val[rr], ex[rr] = ci, cv, ce
    return idx, val, ex


def _block_rows(n_base: int, memory: int) -> int:
    # scores (4 bytes) + a transient comparison mask and partition copies: ~6 bytes an entry.
    return int(max(1, min(8192, memory // max(1, n_base * 6))))


def topk(
    queries: np.ndarray,
    base: np.ndarray | None = None,
    k: int = 10,
    metric: str = "cosine",
    exclude_self: bool = True,
    memory: int = DEFAULT_MEMORY,
    progress: Progress | None = None,
    symmetric: bool | None = None,
    cluster: object = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The exact k nearest rows of ``base`` for every row of ``queries``.

    ``base=None`` searches ``queries`` against themselves; then ``exclude_self`` (default) keeps a
    point out of its own list (it is ignored when a separate ``base`` is given). ``metric`` is
    ``"cosine"`` (scores are cosine similarities), ``"ip"`` (inner products) or ``"euclidean"``
    (scores are distances). ``memory`` bounds the bytes of one block of scores (the normalised
    copy of the data that cosine needs comes on top).

    ``symmetric`` chooses, for a self search, the tiled loop that computes each product once
    and uses it for both sides (default: for inputs with at least ``SYMMETRIC_MIN_DIM``
    dimensions and more than a few hundred points); both give the same result.

    Returns ``(indices, scores)``, both ``(n_queries, k)``: int64 row numbers into ``base`` and
    float32 scores, sorted best first (highest similarity or lowest distance), ties broken by the
    lower index. The order is that of each pair's float64 score summed in a fixed order (see
    the module's docstring), so it is the same whatever the BLAS kernel, ``memory`` or
    ``symmetric``: identical rows always tie, and the lower index comes first.

    >>> x = np.array([[0.0], [1.0], [2.0], [10.0]], dtype=np.float32)
    >>> ind, dist = topk(x, k=2, metric="euclidean")  # each point against the others
    >>> ind.tolist(), dist.tolist()
    ([[1, 2], [0, 2], [1, 0], [2, 1]], [[1.0, 2.0], [1.0, 1.0], [1.0, 2.0], [8.0, 9.0]])
    """
    if metric not in METRICS:
        raise KxError(f"unknown metric {metric!r}: use one of {', '.join(METRICS)}")
    q = as_matrix(queries, "queries")
    self_mode = base is None
    b = q if self_mode else as_matrix(base, "base")
    if q.shape[1] != b.shape[1]:
        raise KxError(f"queries have {q.shape[1]} dimensions but base has {b.shape[1]}")
    exclude = self_mode and exclude_self
    n_q, n_b = len(q), len(b)
    available = n_b - (1 if exclude else 0)
    if k < 1:
        raise KxError(f"k must be at least 1, got {k}")
    if k > available:
        raise KxError(
            f"k={k} is too large for {n_b} points"
            + (" (a point is not its own neighbour)" if exclude else "")
            + f": use k <= {available}"
        )
    if n_q == 0:
        return np.empty((0, k), np.int64), np.empty((0, k), np.float32)

    q_in, b_in = q, b  # the input rows, for the exact re-scoring of near-ties
    if metric == "cosine":
        b = _normalized(b)
        q = b if self_mode else _normalized(q)
    shift = None
    if metric == "euclidean":
        bn2 = np.einsum("ij,ij->i", b, b)
        shift = (0.5 * bn2).astype(np.float32)
        qn2 = bn2 if self_mode else np.einsum("ij,ij->i", q, q)
    # a few more than asked, where there are: the band of near-ties around the k-th then
    # nearly always lies within the list (see _exact_ties; on 20,000 GloVe words with k = 100,
    # one more left 228 rows to score again in full, two or more none)
    ke = min(k + 4, available)

    if symmetric is None:
        # Halving the products pays off when they dominate: many dimensions, large n.
        symmetric = n_b > 8 * (4 * ke + 4) and q.shape[1] >= SYMMETRIC_MIN_DIM
    if cluster is not None:
        out_i, out_v = _topk_cluster(q, b, self_mode, ke, shift, exclude, int(memory),
                                     progress, cluster)
        symmetric = False
    elif self_mode and symmetric:
        out_i, out_v = _topk_symmetric(q, ke, shift, exclude, int(memory), progress)
    else:
        out_i, out_v = _topk_blocks(q, b, ke, shift, exclude, int(memory), progress)
    sym = self_mode and symmetric
    out_i, out_v, exact = _exact_ties(
        q_in, b_in, q, b, shift, out_i, out_v, k, metric, exclude, int(memory),
        ke == available, shift if sym else None,
    )
    if metric == "euclidean":
        if sym:
            d2 = -2.0 * out_v.astype(np.float64)
        else:
            d2 = qn2[:, None] - 2.0 * out_v.astype(np.float64)
        out_v = np.sqrt(np.maximum(d2, 0.0)).astype(np.float32)
        exact = np.sqrt(np.maximum(-2.0 * exact, 0.0))
    redone = ~np.isnan(exact)
    out_v[redone] = exact[redone]
    return out_i, out_v


def _topk_blocks(
    q: np.ndarray,
    b: np.ndarray,
    k: int,
    shift: np.ndarray | None,
    exclude: bool,
    memory: int,
    progress: Progress | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The float32 top k of ``q @ b.T - shift`` per row of ``q``, a block of rows at a time."""
    n_q, n_b = len(q), len(b)
    rows = _block_rows(n_b, memory)
    # The bound is the k-th best of `groups` column-group maxima (see _select_block).
    groups = 4 * k + 4
    if groups * 8 > n_b:
        groups = 0  # small inputs: exact selection over whole rows
    out_i = np.empty((n_q, k), dtype=np.int64)
    out_v = np.empty((n_q, k), dtype=np.float32)
    buf = np.empty((min(rows, n_q), n_b), dtype=np.float32)
    for s in range(0, n_q, rows):
        e = min(n_q, s + rows)
        out_i[s:e], out_v[s:e] = _block_topk(q, b, s, e, k, shift, exclude, groups, buf)
        if progress is not None:
            progress("k-NN", e, n_q)
    return out_i, out_v


def _block_topk(
    q: np.ndarray,
    b: np.ndarray,
    s: int,
    e: int,
    k: int,
    shift: np.ndarray | None,
    exclude: bool,
    groups: int,
    buf: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The float32 top k of query rows ``s:e`` (one block of :func:`_topk_blocks`)."""
    S = buf[: e - s] if buf is not None else np.empty((e - s, len(b)), dtype=np.float32)
    np.matmul(q[s:e], b.T, out=S)
    if shift is not None:
        S -= shift[None, :]
    if exclude:
        r = np.arange(e - s)
        S[r, r + s] = -np.inf
    return _select_block(S, k, groups)


def _cluster_blocks(work: dict, blocks: list[tuple[int, int]]) -> list:
    """A cluster task: :func:`_block_topk` for consecutive blocks of query rows."""
    b = work["b"]
    q = b if work["q"] is None else work["q"]
    return [
        (s, *_block_topk(q, b, s, e, work["k"], work["shift"], work["exclude"], work["groups"]))
        for s, e in blocks
    ]


def _topk_cluster(
    q: np.ndarray,
    b: np.ndarray,
    self_mode: bool,
    k: int,
    shift: np.ndarray | None,
    exclude: bool,
    memory: int,
    progress: Progress | None,
    cluster: object,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_topk_blocks` with its blocks as tasks on a Dask cluster (the same blocks, so
    the same float32 lists); each task takes a few consecutive blocks."""
    from . import parallel

    n_q, n_b = len(q), len(b)
    rows = _block_rows(n_b, memory)
    groups = 4 * k + 4
    if groups * 8 > n_b:
        groups = 0
    blocks = [(s, min(n_q, s + rows)) for s in range(0, n_q, rows)]
    out_i = np.empty((n_q, k), dtype=np.int64)
    out_v = np.empty((n_q, k), dtype=np.float32)
    work = dict(q=None if self_mode else q, b=b, k=k, shift=shift, exclude=exclude,
                groups=groups)
    done = 0
    with parallel.executor(None, work, cluster=cluster) as ex:
        per = max(1, len(blocks) // (4 * ex.jobs))
        for res in ex.map(_cluster_blocks, parallel.chunked(blocks, per)):
            for s, ci, cv in res:
                out_i[s : s + len(ci)] = ci
                out_v[s : s + len(ci)] = cv
                done += len(ci)
            if progress is not None:
                progress("k-NN", done, n_q)
    return out_i, out_v


def approx_available() -> bool:
    """Whether the optional approximate backend (faiss) can be imported."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def topk_approx(
    queries: np.ndarray,
    k: int = 10,
    metric: str = "cosine",
    seed: int = 0,
    ef_search: int = 128,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Approximate self k-NN with faiss HNSW (optional extra ``kxtool[approx]``).

    Same conventions as :func:`topk` with ``base=None, exclude_self=True``; the lists are
    approximate: recall below 1 is expected.
    """
    try:
        import faiss
    except ImportError:
        raise KxError(
            "--approx needs faiss: install it with `pip install 'kxtool[approx]'` (faiss-cpu)"
        ) from None
    if metric not in METRICS:
        raise KxError(f"unknown metric {metric!r}: use one of {', '.join(METRICS)}")
    x = as_matrix(queries, "queries")
    n = len(x)
    if k < 1 or k > n - 1:
        raise KxError(f"k={k} is too large for {n} points: use 1 <= k <= {n - 1}")
    if metric == "cosine":
        x = _normalized(x)
    faiss_metric = faiss.METRIC_L2 if metric == "euclidean" else faiss.METRIC_INNER_PRODUCT
    index = faiss.IndexHNSWFlat(x.shape[1], 32, faiss_metric)
    index.hnsw.efConstruction = 80
    index.hnsw.efSearch = max(ef_search, k + 1)
    step = 65536
    for s in range(0, n, step):
        index.add(x[s : s + step])
        if progress is not None:
            progress("index", min(n, s + step), n)
    out_i = np.empty((n, k), dtype=np.int64)
    out_v = np.empty((n, k), dtype=np.float32)
    for s in range(0, n, step):
        e = min(n, s + step)
        d, i = index.search(x[s:e], k + 1)
        for r in range(e - s):
            row_i, row_d = i[r], d[r]
            keep = (row_i != s + r) & (row_i >= 0)
            ri, rd = row_i[keep][:k], row_d[keep][:k]
            if len(ri) < k:  # HNSW may return fewer; pad with the worst found
                pad = k - len(ri)
                ri = np.concatenate([ri, np.full(pad, ri[-1] if len(ri) else 0)])
                rd = np.concatenate([rd, np.full(pad, rd[-1] if len(rd) else np.inf)])
            out_i[s + r], out_v[s + r] = ri, rd
        if progress is not None:
            progress("k-NN (approximate)", e, n)
    if metric == "euclidean":
        out_v = np.sqrt(np.maximum(out_v, 0.0)).astype(np.float32)
    return out_i, out_v
