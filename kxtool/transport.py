"""Transport costs between two histograms under a dense cost matrix: exact and entropic.

:func:`emd` is the exact optimal transport cost, solved by kxtool's compiled network simplex
for dense transportation problems (``kxtool/_transport.c``, built when kxtool is installed
where a C compiler is available) or else by POT's network simplex; both give the same optimum.
The compiled one starts from a greedy basis and prices whole rows of the cost matrix: on WMD
problems of 200 words it takes 3.1 pivots per node where POT takes 5.2, and from 20 to 300
words it runs 2.3x-2.9x as fast (``BENCHMARKS.md``). Should it ever stop short (a pivot limit guards
against cycling) or meet a cost that is not finite, the problem is solved again by POT.

:func:`sinkhorn` is the transport cost ``<T, M>`` of the entropic-regularised plan, the plan
``T`` that minimises ``<T, M> - reg * H(T)`` among those with marginals ``a`` and ``b``, by
kxtool's own solver (log-domain, epsilon scaling, Newton steps when Sinkhorn's sweeps slow
down). What it reports is the cost of that plan rounded onto the feasible set, so it is never
below :func:`emd` and decreases to it as ``reg`` shrinks (see :func:`sinkhorn`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np

from .errors import KxError, kxwarn

__all__ = ["emd", "sinkhorn", "sinkhorn_plan", "solver"]

try:  # the compiled solver is optional: kxtool installs without it where nothing compiles
    from . import _transport as _native
except ImportError:  # pragma: no cover - depends on the build
    _native = None

#: The compiled solver's pivot limit is ``max(PIVOTS_MIN, PIVOTS_PER_NODE * (n1 + n2))``, a
#: guard against cycling: beyond it POT solves the problem instead. WMD problems take 1-4
#: pivots per node; the most degenerate ones, assignment problems (equal sizes, uniform
#: masses), took 7.5 per node at 300 x 300 and 74 at 3000 x 3000.
PIVOTS_PER_NODE = 1000
PIVOTS_MIN = 10_000

_OPTIMAL, _MAX_ITER = 1, 2
_pot_impl: Callable[[np.ndarray, np.ndarray, np.ndarray, int], tuple[float, int]] | None = None


def solver() -> str:
    """Which exact solver :func:`emd` uses: ``"kxtool"`` (compiled) or ``"pot"``."""
    return "kxtool" if _native is not None else "pot"


def _pot_public(a: np.ndarray, b: np.ndarray, M: np.ndarray, itermax: int):
    import ot

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cost, log = ot.emd2(a, b, M, numItermax=itermax, log=True)
    return float(cost), int(log.get("result_code", _OPTIMAL))


def _pick_pot() -> Callable[[np.ndarray, np.ndarray, np.ndarray, int], tuple[float, int]]:
    """POT's network simplex, called directly when possible (``ot.emd2`` costs ~0.2 ms of
    argument checking per call, more than solving a 20-word problem), else ``ot.emd2``."""
    try:
        from ot.lp.emd_wrap import emd_c
    except ImportError:  # pragma: no cover - other POT layouts
        return _pot_public
    a = np.array([0.5, 0.5])
    M = np.array([[0.0, 1.0], [1.0, 0.0]])
    for extra in ((1, None, None), (1,), ()):
        try:
            res = emd_c(a, a, M, 1000, *extra)
        except TypeError:
            continue
        if len(res) >= 5 and abs(float(res[1])) < 1e-12:

            def direct(a, b, M, itermax, _extra=extra):  # type: ignore[no-untyped-def]
                res = emd_c(a, b, M, itermax, *_extra)
                return float(res[1]), int(res[-1])

            return direct
    return _pot_public  # pragma: no cover


def _emd_pot(a: np.ndarray, b: np.ndarray, M: np.ndarray) -> float:
    global _pot_impl
    if _pot_impl is None:
        _pot_impl = _pick_pot()
    n1, n2 = M.shape
    itermax = max(100_000, 20 * n1 * n2)
    for _ in range(4):
        cost, code = _pot_impl(a, b, M, itermax)
        if code == _OPTIMAL:
            return cost
        if code != _MAX_ITER:
            raise KxError(f"the transport solver failed on a {n1}x{n2} problem (code {code})")
        itermax *= 10
    raise KxError(  # pragma: no cover - needs a pathological problem
        f"the transport solver did not converge on a {n1}x{n2} problem"
    )


def emd(a: np.ndarray, b: np.ndarray, M: np.ndarray) -> float:
    """The exact optimal transport cost between histograms ``a`` (n1,) and ``b`` (n2,) under
    the cost matrix ``M`` (n1, n2). ``b`` is rescaled to ``a``'s total mass (their sums may
    differ by rounding); the masses must be non-negative and the arrays non-empty."""
    a = np.ascontiguousarray(a, dtype=np.float64)
    M = np.ascontiguousarray(M, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    b = b * (a.sum() / b.sum())
    n1, n2 = M.shape
    if n1 == 1:  # one source: the plan is forced
        return max(float(M[0] @ b), 0.0)
    if n2 == 1:  # one sink: likewise
        return max(float(a @ M[:, 0]), 0.0)
    if _native is not None:
        limit = max(PIVOTS_MIN, PIVOTS_PER_NODE * (n1 + n2))
        cost, status, _pivots = _native.emd(a, b, M, limit)
        if status == 0:
            return max(cost, 0.0)
    return max(_emd_pot(a, b, M), 0.0)


#: Sinkhorn has converged when the plan's marginals are within this L1 distance of ``a`` and
#: ``b`` (relative to the total mass).
SINKHORN_TOL = 1e-10
#: The iteration limit (Sinkhorn sweeps and Newton steps together): a plan still further than
#: ``SINKHORN_TOL`` from its marginals there is reported with a warning that says how far.
SINKHORN_MAX_ITER = 10_000
#: Newton steps (about ``n1 * n2**2`` operations each) are taken when the smaller side has at
#: most this many points; larger problems are left to Sinkhorn sweeps.
NEWTON_MAX_SIDE = 1500
_EPS_STEP = 0.5  # epsilon scaling: each stage halves the regularisation, down to ``reg``
_STAGE_TOL = 1e-3  # the marginal error at which an intermediate stage hands on its potentials
_STAGE_SWEEPS = 200  # at most this many sweeps in an intermediate stage
_MIN_SWEEPS = 20  # sweeps before a slow stage turns to Newton steps
_SLOW = 0.5  # a sweep that leaves more than this share of the error is slow
_ABSORB = 100.0  # scalings beyond exp(+-_ABSORB) are absorbed into the potentials
_HIGH, _LOW = math.exp(_ABSORB), math.exp(-_ABSORB)


def sinkhorn(
    a: np.ndarray,
    b: np.ndarray,
    M: np.ndarray,
    reg: float,
    *,
    tol: float = SINKHORN_TOL,
    max_iter: int | None = None,
) -> float:
    """The transport cost ``<T, M>`` of the entropic-regularised plan between histograms ``a``
    (n1,) and ``b`` (n2,) (``b`` rescaled to ``a``'s mass), the plan that minimises
    ``<T, M> - reg * H(T)``.

    What is reported is the cost of a *feasible* plan: the Sinkhorn iterate, once its
    marginals are within ``tol`` (L1, relative to the mass) of ``a`` and ``b``, is rounded onto
    the plans with exactly those marginals (Altschuler, Weed & Rigollet 2017, Algorithm 2:
    scale down the rows and columns that carry too much, then add the missing mass as a
    product of the residuals), which moves it by at most twice its marginal error. So the
    value is never below the exact cost :func:`emd` (up to rounding), and as ``reg`` shrinks it
    decreases to it, within ``reg * log(n1 * n2)``.

    The solver works in the log domain with epsilon scaling: potentials are carried from
    stage to stage as the regularisation halves from the cost range down to ``reg``; each
    stage runs Sinkhorn sweeps on a kernel stabilised by the current potentials, and turns to
    damped Newton steps on the dual (Schur complement on the smaller side) when the sweeps
    slow down, as they do for small ``reg`` on near-degenerate problems. It stops once the
    marginal error is at most ``tol``, or at ``max_iter`` iterations (default
    ``SINKHORN_MAX_ITER``) with a :class:`~kxtool.errors.KxWarning` that gives the marginal
    error reached.
    """
    if max_iter is None:
        max_iter = SINKHORN_MAX_ITER
    P, err, its = sinkhorn_plan(a, b, M, reg, tol=tol, max_iter=max_iter)
    if err > tol and its >= max_iter:
        kxwarn(
            f"Sinkhorn (reg {reg:g}, {M.shape[0]}x{M.shape[1]}) stopped at the iteration limit"
            f" ({max_iter}) before converging: marginal error {err:.2e} (L1, relative to the"
            f" mass; converged is <= {tol:.0e}); the cost reported is that of its plan rounded"
            " onto the feasible set"
        )
    return float(np.sum(P * np.asarray(M, dtype=np.float64)))


def sinkhorn_plan(
    a: np.ndarray,
    b: np.ndarray,
    M: np.ndarray,
    reg: float,
    *,
    tol: float = SINKHORN_TOL,
    max_iter: int | None = None,
) -> tuple[np.ndarray, float, int]:
    """The rounded entropic plan of :func:`sinkhorn` (n1, n2), with the marginal error of the
    iterate it was rounded from (L1, relative to the mass) and the iterations taken
    (``max_iter=None``: ``SINKHORN_MAX_ITER``)."""
    if max_iter is None:
        max_iter = SINKHORN_MAX_ITER
    if not (reg > 0 and math.isfinite(reg)):
        raise KxError(f"the Sinkhorn regularisation must be a positive number, not {reg!r}")
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    M = np.asarray(M, dtype=np.float64)
    if M.shape != (len(a), len(b)):
        raise KxError(f"a cost matrix of shape {M.shape} for histograms of {len(a)} and {len(b)}")
    if not np.isfinite(M).all():
        raise KxError("the transport cost matrix has a value that is not finite")
    P = np.zeros(M.shape)
    mass = float(a.sum())
    if not mass > 0 or not b.sum() > 0:
        return P, 0.0, 0
    ia, ib = np.flatnonzero(a > 0), np.flatnonzero(b > 0)
    a1, b1 = a[ia] / mass, b[ib] / float(b[ib].sum())
    sub = M[np.ix_(ia, ib)]
    err, its = 0.0, 0
    if len(ia) == 1 or len(ib) == 1 or float(sub.max() - sub.min()) == 0.0:
        # a single source or sink forces the plan; a constant cost makes every plan cost the
        # same, and the entropic one is the product of the marginals
        Q = np.outer(a1, b1)
    else:
        # overflow in a rejected Newton trial, underflow of negligible entries: expected, and
        # every result is checked for being finite where it matters
        with np.errstate(all="ignore"):
            if len(ia) >= len(ib):
                Q, err, its = _sinkhorn_solve(a1, b1, sub, float(reg), tol, max_iter)
            else:  # the Newton step's dense solve is on the smaller side, the second
                subt = np.ascontiguousarray(sub.T)
                Qt, err, its = _sinkhorn_solve(b1, a1, subt, float(reg), tol, max_iter)
                Q = Qt.T
    with np.errstate(all="ignore"):
        P[np.ix_(ia, ib)] = _round_plan(Q, a1, b1) * mass
    return P, err, its


def _row_exact(g: np.ndarray, M: np.ndarray, la: np.ndarray, eps: float) -> np.ndarray:
    """The log kernel ``(f + g - M) / eps`` with ``f`` chosen (a log-domain half step) so that
    every row sums to its mass: each row keeps entries that do not underflow."""
    S = (g[None, :] - M) * (1.0 / eps)
    mx = S.max(axis=1)
    lse = mx + np.log(np.exp(S - mx[:, None]).sum(axis=1))
    S += (la - lse)[:, None]
    return S


def _marginal_error(P: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(P.sum(axis=1) - a).sum() + np.abs(P.sum(axis=0) - b).sum())


def _sinkhorn_solve(
    a: np.ndarray, b: np.ndarray, M: np.ndarray, reg: float, tol: float, max_iter: int
) -> tuple[np.ndarray, float, int]:
    """Epsilon-scaled, stabilised Sinkhorn with Newton steps, for masses ``a``, ``b`` that sum
    to one, ``len(a) >= len(b) >= 2``. Returns the last plan, its marginal error and the
    iterations taken.

    The plan is ``exp(L + x_i + y_j)``: ``L`` is the log kernel of the stage (fixed while the
    stage runs, rebuilt only when the scalings grow beyond ``exp(_ABSORB)``), ``x``, ``y`` the
    scalings in log form. Keeping fine corrections in ``x`` and ``y`` rather than in the
    potentials matters for tiny ``reg``: potentials of order one are resolved to ~1e-16, which
    is a sizeable fraction of ``reg`` = 1e-12.
    """
    la = np.log(a)
    n1, n2 = M.shape
    newton = n2 <= NEWTON_MAX_SIDE
    eps = max(reg, float(M.max() - M.min()))
    g = np.zeros(n2)
    it = 0
    while True:
        final = eps <= reg
        target = tol if final else _STAGE_TOL
        L = _row_exact(g, M, la, eps)
        K = np.exp(L)
        x, y = np.zeros(n1), np.zeros(n2)
        err = _marginal_error(K, a, b)
        stage_sweeps = 0
        while err > target and it < max_iter:
            if not final and stage_sweeps >= _STAGE_SWEEPS:
                break
            # Sinkhorn sweeps: columns exact, then rows, until converged or slow
            u, v = np.exp(x), np.exp(y)
            prev = np.inf
            sweeps = 0
            absorb = False
            while it < max_iter:
                c = v * (u @ K)
                v = v * (b / np.maximum(c, 1e-300))
                r = u * (K @ v)
                err = float(np.abs(r - a).sum())
                it += 1
                sweeps += 1
                stage_sweeps += 1
                if not (np.isfinite(err) and _LOW < v.min() and v.max() < _HIGH):
                    absorb = True
                    break
                if err <= target or (newton and sweeps >= _MIN_SWEEPS and err > _SLOW * prev):
                    break
                if not final and stage_sweeps >= _STAGE_SWEEPS:
                    break
                prev = err
                u = u * (a / r)
                if not (_LOW < u.min() and u.max() < _HIGH):
                    absorb = True
                    break
            x, y = np.log(u), np.log(v)
            if absorb:  # rebuild the kernel around the potentials reached
                g = g + eps * np.clip(np.nan_to_num(y), -700.0, 700.0)
                L = _row_exact(g, M, la, eps)
                K = np.exp(L)
                x, y = np.zeros(n1), np.zeros(n2)
                err = _marginal_error(K, a, b)
                continue
            if err <= target or it >= max_iter or not newton:
                continue
            x, y, err, it = _newton(L, a, b, x, y, target, it, max_iter)
        if final:
            break
        g = g + eps * y
        # out of iterations: go straight to the final regularisation, to report its plan
        eps = reg if it >= max_iter else max(reg, eps * _EPS_STEP)
    P = np.exp(L + x[:, None] + y[None, :])
    if not np.isfinite(P).all():  # pragma: no cover - defensive: the stage's kernel instead
        P = np.exp(L)
    return P, _marginal_error(P, a, b), it


def _newton(
    L: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    tol: float,
    it: int,
    max_iter: int,
) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Damped Newton steps on the (convex) dual ``F(x, y) = sum exp(L + x + y) - a.x - b.y``
    until the marginal error is at most ``tol``, the iterations run out, or a step no longer
    makes progress (then Sinkhorn sweeps go on). The Newton system
    ``[[diag(r), P], [P^T, diag(c)]] (dx, dy) = (a - r, b - c)`` is solved through its Schur
    complement on the ``y`` side; its null direction ``(1, -1)`` is fixed by adding ``1 1^T``."""
    n2 = L.shape[1]
    P = np.exp(L + x[:, None] + y[None, :])
    diag = np.diag_indices(n2)
    while it < max_iter:
        r, c = P.sum(axis=1), P.sum(axis=0)
        rho, gam = a - r, b - c
        err = float(np.abs(rho).sum() + np.abs(gam).sum())
        if err <= tol or not np.isfinite(err):
            return x, y, err, it
        it += 1
        dr = np.maximum(r, 1e-300)
        Q = P / dr[:, None]
        S = -(P.T @ Q)
        S[diag] += c
        scale = float(c.max())
        S += scale / n2
        S[diag] += 1e-13 * scale
        rhs = gam - Q.T @ rho
        try:
            dy = np.linalg.solve(S, rhs)
        except np.linalg.LinAlgError:
            dy = np.linalg.lstsq(S, rhs, rcond=None)[0]
        dx = (rho - P @ dy) / dr
        slope = -float(rho @ dx + gam @ dy)
        lin = float(a @ dx + b @ dy)
        t = 1.0
        for _ in range(30):
            xn, yn = x + t * dx, y + t * dy
            Pn = np.exp(L + xn[:, None] + yn[None, :])
            drop = float((Pn - P).sum()) - t * lin  # F(x + t dx) - F(x)
            if np.isfinite(drop) and (
                drop <= 1e-4 * t * slope or _marginal_error(Pn, a, b) < (1.0 - 1e-4 * t) * err
            ):
                break
            t *= 0.5
        else:
            return x, y, err, it  # no progress: back to sweeps
        x, y, P = xn, yn, Pn
    return x, y, _marginal_error(P, a, b), it


def _round_plan(P: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``P`` moved onto the plans with marginals exactly ``a`` and ``b`` (which have equal
    sums): Altschuler, Weed & Rigollet (2017), Algorithm 2. Rows, then columns, that carry more
    than their mass are scaled down to it; what is still missing is added as
    ``err_a err_b^T / |err_a|_1``. The result is feasible (up to rounding) and within
    ``2 (|P 1 - a|_1 + |P^T 1 - b|_1)`` of ``P`` in L1."""
    P = P * np.minimum(np.nan_to_num(a / P.sum(axis=1), nan=1.0, posinf=1.0), 1.0)[:, None]
    P = P * np.minimum(np.nan_to_num(b / P.sum(axis=0), nan=1.0, posinf=1.0), 1.0)[None, :]
    ea = np.maximum(a - P.sum(axis=1), 0.0)
    eb = np.maximum(b - P.sum(axis=0), 0.0)
    s = float(ea.sum())
    if s > 0:
        P = P + np.outer(ea, eb) * (1.0 / s)
    return P
