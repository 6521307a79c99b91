"""The exact transport solver: kxtool's compiled network simplex against POT and an
independent linear-programming solution, on random, degenerate and tied problems; the
entropic (Sinkhorn) solver against the exact cost and a direct Sinkhorn iteration."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from kxtool import transport
from kxtool.errors import KxError, KxWarning

try:
    from kxtool import _transport as native
except ImportError:  # pragma: no cover - depends on the build
    native = None

needs_native = pytest.mark.skipif(native is None, reason="the compiled solver is not built")


def lp_cost(a: np.ndarray, b: np.ndarray, M: np.ndarray) -> float:
    """The transport LP solved by HiGHS: min <T, M> with T 1 = a, T^T 1 = b, T >= 0."""
    m, n = M.shape
    rows = np.zeros((m + n, m * n))
    for i in range(m):
        rows[i, i * n : (i + 1) * n] = 1.0
    for j in range(n):
        rows[m + j, j::n] = 1.0
    res = linprog(
        M.ravel(), A_eq=rows, b_eq=np.concatenate([a, b]), bounds=(0, None), method="highs"
    )
    assert res.status == 0
    return float(res.fun)


def pot_cost(a: np.ndarray, b: np.ndarray, M: np.ndarray) -> float:
    return transport._emd_pot(a, b * (a.sum() / b.sum()), np.ascontiguousarray(M))


def native_cost(a: np.ndarray, b: np.ndarray, M: np.ndarray) -> tuple[float, int]:
    b = b * (a.sum() / b.sum())
    cost, status, pivots = native.emd(a, b, np.ascontiguousarray(M), 10**6)
    assert status == 0
    return cost, pivots


def problem(rng: np.random.Generator, m: int, n: int, kind: str):
    if kind == "euclid":  # WMD-like: word counts, Euclidean distances between points
        a = rng.integers(1, 5, m).astype(float)
        b = rng.integers(1, 5, n).astype(float)
        X, Y = rng.normal(size=(m, 5)), rng.normal(size=(n, 5))
        M = np.sqrt(((X[:, None] - Y[None]) ** 2).sum(-1))
    elif kind == "uniform":  # equal masses: an assignment problem when m == n, very degenerate
        a, b = np.ones(m), np.ones(n)
        M = rng.random((m, n))
    elif kind == "ties":  # costs from {0, 1, 2}: many optimal plans
        a = rng.random(m) ** 3 + 1e-3
        b = rng.random(n) ** 3 + 1e-3
        M = rng.integers(0, 3, (m, n)).astype(float)
    elif kind == "zero":  # every plan is optimal
        a, b = rng.random(m) + 0.1, rng.random(n) + 0.1
        M = np.zeros((m, n))
    else:  # skewed masses and a large cost scale
        a = rng.random(m) * 1e-6
        b = rng.random(n) * 1e3
        M = rng.random((m, n)) * 1e4
    return a / a.sum(), b / b.sum(), M


@needs_native
@pytest.mark.parametrize("kind", ["euclid", "uniform", "ties", "zero", "scaled"])
def test_agrees_with_linear_programming(kind: str) -> None:
    rng = np.random.default_rng(len(kind))
    for m, n in [(2, 2), (2, 9), (9, 2), (7, 7), (12, 30), (30, 12), (25, 25)]:
        a, b, M = problem(rng, m, n, kind)
        got, _ = native_cost(a, b, M)
        want = lp_cost(a, b * (a.sum() / b.sum()), M)
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12 * max(1.0, M.max()))


@needs_native
@pytest.mark.parametrize("kind", ["euclid", "uniform", "ties", "scaled"])
def test_agrees_with_pot_on_larger_problems(kind: str) -> None:
    rng = np.random.default_rng(7)
    for m, n in [(60, 60), (150, 90), (200, 200)]:
        a, b, M = problem(rng, m, n, kind)
        got, pivots = native_cost(a, b, M)
        assert got == pytest.approx(pot_cost(a, b, M), rel=1e-12, abs=1e-12 * M.max())
        assert pivots < 20 * (m + n)  # far from the cycling guard


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 14),
    st.integers(1, 14),
    st.integers(0, 2**32 - 1),
    st.sampled_from(["euclid", "uniform", "ties", "zero", "scaled"]),
)
def test_random_problems(m: int, n: int, seed: int, kind: str) -> None:
    a, b, M = problem(np.random.default_rng(seed), m, n, kind)
    got = transport.emd(a, b, M)
    want = lp_cost(a, b * (a.sum() / b.sum()), M)
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12 * max(1.0, M.max()))


def test_zero_masses_are_allowed() -> None:
    a = np.array([0.5, 0.0, 0.5])
    b = np.array([0.0, 1.0])
    M = np.array([[1.0, 2.0], [0.0, 0.0], [3.0, 4.0]])
    assert transport.emd(a, b, M) == pytest.approx(3.0)


@needs_native
def test_falls_back_to_pot_at_the_pivot_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    a, b, M = problem(rng, 40, 40, "euclid")
    want = transport.emd(a, b, M)
    calls = []
    real = transport._emd_pot
    monkeypatch.setattr(transport, "_emd_pot", lambda *x: calls.append(1) or real(*x))
    assert transport.emd(a, b, M) == want and not calls
    monkeypatch.setattr(transport, "PIVOTS_MIN", 0)
    monkeypatch.setattr(transport, "PIVOTS_PER_NODE", 0)
    assert transport.emd(a, b, M) == pytest.approx(want, rel=1e-12)
    assert calls == [1]


@needs_native
def test_reports_the_pivot_limit_and_non_finite_costs() -> None:
    rng = np.random.default_rng(4)
    a, b, M = problem(rng, 30, 30, "euclid")
    b = b * (a.sum() / b.sum())
    assert native.emd(a, b, M, 0)[1] == 1
    M[3, 4] = np.inf
    assert native.emd(a, b, M, 10**6)[1] == 4
    M[3, 4] = np.nan
    assert native.emd(a, b, M, 10**6)[1] == 4


@needs_native
def test_rejects_wrong_arrays() -> None:
    a = np.full(3, 1 / 3)
    M = np.ones((3, 3))
    with pytest.raises(TypeError):
        native.emd(a.astype(np.float32), a, M, 10)
    with pytest.raises((TypeError, ValueError)):  # numpy refuses the C-contiguous view
        native.emd(a, a, np.asfortranarray(np.ones((3, 4)))[:, :3], 10)
    with pytest.raises(ValueError):
        native.emd(a, np.full(4, 0.25), M, 10)
    with pytest.raises(ValueError):
        native.emd(np.zeros(0), np.zeros(0), np.zeros((0, 0)), 10)


def test_without_the_compiled_solver_pot_gives_the_same_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(5)
    a, b, M = problem(rng, 50, 35, "euclid")
    with_native = transport.emd(a, b, M)
    monkeypatch.setattr(transport, "_native", None)
    assert transport.solver() == "pot"
    assert transport.emd(a, b, M) == pytest.approx(with_native, rel=1e-12)


# -- Sinkhorn ----------------------------------------------------------------------------------


def direct_sinkhorn(a: np.ndarray, b: np.ndarray, M: np.ndarray, reg: float) -> float:
    """The textbook iteration (Cuturi 2013), for a ``reg`` large enough that it converges
    without stabilisation: u = a / K v, v = b / K^T u, K = exp(-M / reg); cost <P, M>."""
    K = np.exp(-M / reg)
    u, v = np.ones(len(a)), np.ones(len(b))
    for _ in range(100_000):
        u = a / (K @ v)
        v = b / (K.T @ u)
        P = u[:, None] * K * v[None, :]
        if np.abs(P.sum(axis=1) - a).sum() < 1e-14:
            break
    return float((P * M).sum())


@pytest.mark.parametrize("kind", ["euclid", "uniform", "ties", "scaled"])
def test_sinkhorn_is_the_entropic_cost(kind: str) -> None:
    rng = np.random.default_rng(11)
    for m, n in [(2, 3), (7, 7), (12, 30), (30, 12)]:
        a, b, M = problem(rng, m, n, kind)
        reg = 0.2 * M.max()
        want = direct_sinkhorn(a, b, M, reg)
        assert transport.sinkhorn(a, b, M, reg) == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("kind", ["euclid", "uniform", "ties", "zero", "scaled"])
@pytest.mark.parametrize("shape", [(5, 7), (30, 30), (45, 60), (3, 200)])
def test_sinkhorn_between_emd_and_the_entropy_bound(kind: str, shape: tuple[int, int]) -> None:
    # The entropic plan is feasible, so its cost is at least the exact one, and it is at most
    # reg * log(n1 n2) above it (<P, M> - reg H(P) <= <P*, M> - reg H(P*), 0 <= H <= log(n1 n2)).
    # Assignment problems ("uniform", equal sides) and small reg are where plain Sinkhorn stalls.
    m, n = shape
    rng = np.random.default_rng(m * n)
    a, b, M = problem(rng, m, n, kind)
    exact = transport.emd(a, b, M)
    scale = max(float(M.max()), 1e-300)
    prev = math.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error", KxWarning)  # every one converges: no warning
        for rel in (1e-1, 1e-3, 1e-6, 1e-9, 1e-12):
            reg = rel * scale
            got = transport.sinkhorn(a, b, M, reg)
            assert got >= exact - 1e-12 * scale
            assert got <= exact + reg * math.log(m * n) + 1e-9 * scale
            assert got <= prev + 1e-9 * scale  # decreasing as reg shrinks
            prev = got
            P, err, its = transport.sinkhorn_plan(a, b, M, reg)
            assert err <= transport.SINKHORN_TOL and its < transport.SINKHORN_MAX_ITER
            assert P.min() >= 0.0
            np.testing.assert_allclose(P.sum(axis=1), a, rtol=0, atol=1e-14)
            np.testing.assert_allclose(P.sum(axis=0), b, rtol=0, atol=1e-14)


def test_sinkhorn_warns_when_it_stops_at_the_iteration_limit() -> None:
    rng = np.random.default_rng(12)
    a, b, M = problem(rng, 25, 25, "uniform")  # an assignment problem: slow for Sinkhorn
    exact = transport.emd(a, b, M)
    with pytest.warns(KxWarning, match=r"iteration limit \(7\).*marginal error") as caught:
        got = transport.sinkhorn(a, b, M, 1e-4, max_iter=7)
    stated = float(re.search(r"marginal error ([0-9.e+-]+)", str(caught[0].message)).group(1))
    P, err, its = transport.sinkhorn_plan(a, b, M, 1e-4, max_iter=7)
    assert its == 7 and err > transport.SINKHORN_TOL
    assert stated == pytest.approx(err, rel=0.01)
    # stopped early, the plan is still rounded onto the feasible set: never below the optimum
    assert P.min() >= 0.0
    np.testing.assert_allclose(P.sum(axis=1), a, rtol=0, atol=1e-14)
    np.testing.assert_allclose(P.sum(axis=0), b, rtol=0, atol=1e-14)
    assert got >= exact
    with warnings.catch_warnings():
        warnings.simplefilter("error", KxWarning)
        assert transport.sinkhorn(a, b, M, 1e-4) == pytest.approx(exact, rel=1e-6)


def test_sinkhorn_special_cases() -> None:
    M = np.array([[1.0, 2.0], [0.0, 0.0], [3.0, 4.0]])
    # zero masses drop out; a single sink forces the plan
    assert transport.sinkhorn(np.array([0.5, 0.0, 0.5]), np.array([0.0, 1.0]), M, 0.1) == (
        pytest.approx(3.0)
    )
    # a constant cost: every plan costs the same
    assert transport.sinkhorn(np.full(3, 1 / 3), np.full(2, 0.5), np.full((3, 2), 2.5), 1e-9) == (
        pytest.approx(2.5)
    )
    # masses that do not sum to one: b is rescaled to a's mass, the cost scales with it
    a, b, M2 = problem(np.random.default_rng(13), 6, 8, "euclid")
    one = transport.sinkhorn(a, b, M2, 0.05)
    assert transport.sinkhorn(3 * a, 5 * b, M2, 0.05) == pytest.approx(3 * one, rel=1e-9)
    with pytest.raises(KxError, match="positive"):
        transport.sinkhorn(a, b, M2, 0.0)
    with pytest.raises(KxError, match="not finite"):
        transport.sinkhorn(a, b, np.where(M2 > 1, np.inf, M2), 0.1)
