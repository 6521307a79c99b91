"""WMD, WRD, WCD, RWMD, Sinkhorn and search, checked against an independent LP solver."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

import kxtool
from kxtool.errors import KxError
from kxtool.text import Tokenizer
from kxtool.vectors import Vectors
from kxtool.wmd import (
    DocSpace,
    WmdStats,
    rwmd,
    sinkhorn,
    text_distance,
    wcd,
    wmd,
    wmd_cross,
    wmd_pairs,
    wmd_search,
    wrd,
)

VOCAB = [f"w{i}" for i in range(60)]


def make_vectors(seed: int = 0, n: int = 60, dim: int = 6) -> Vectors:
    rng = np.random.default_rng(seed)
    return Vectors([f"w{i}" for i in range(n)], rng.normal(size=(n, dim)).astype(np.float32))


VEC = make_vectors()


# -- an independent solution of the same linear programs ----------------------------------------


def lp_transport(a: np.ndarray, b: np.ndarray, M: np.ndarray) -> float:
    """min <T, M> s.t. T 1 = a, T^T 1 = b, T >= 0, by scipy's HiGHS."""
    n1, n2 = M.shape
    rows = []
    for i in range(n1):
        r = np.zeros((n1, n2))
        r[i, :] = 1
        rows.append(r.ravel())
    for j in range(n2):
        r = np.zeros((n1, n2))
        r[:, j] = 1
        rows.append(r.ravel())
    res = linprog(
        M.ravel(), A_eq=np.array(rows), b_eq=np.concatenate([a, b]), bounds=(0, None),
        method="highs",
    )
    assert res.status == 0
    return float(res.fun)


def reference(tokens_a: list[str], tokens_b: list[str], vec: Vectors, kind: str) -> float:
    """WMD (Kusner) or WRD (Yokoi) straight from the definitions, over the union vocabulary."""
    ca, cb = Counter(t for t in tokens_a if t in vec), Counter(t for t in tokens_b if t in vec)
    words = sorted(set(ca) | set(cb))
    X = np.array([vec[w] for w in words], dtype=np.float64)
    norms = np.linalg.norm(X, axis=1)
    if kind == "wmd":
        a = np.array([ca[w] for w in words], float)
        b = np.array([cb[w] for w in words], float)
        M = np.linalg.norm(X[:, None, :] - X[None, :, :], axis=2)
    else:
        a = np.array([ca[w] * norms[i] for i, w in enumerate(words)])
        b = np.array([cb[w] * norms[i] for i, w in enumerate(words)])
        U = X / norms[:, None]
        M = 1.0 - U @ U.T
        np.fill_diagonal(M, 0.0)
    return lp_transport(a / a.sum(), b / b.sum(), M)


def random_docs(rng: np.random.Generator, n: int, lo: int = 1, hi: int = 25) -> list[list[str]]:
    return [list(rng.choice(VOCAB, size=int(rng.integers(lo, hi)))) for _ in range(n)]


@pytest.mark.parametrize("kind", ["wmd", "wrd"])
def test_agrees_with_linprog(kind):
    rng = np.random.default_rng(42)
    fn = wmd if kind == "wmd" else wrd
    for seed in range(3):
        vec = make_vectors(seed, dim=int(rng.integers(2, 12)))
        for a, b in zip(random_docs(rng, 10), random_docs(rng, 10), strict=True):
            assert fn(a, b, vec) == pytest.approx(reference(a, b, vec, kind), abs=1e-6)


def test_known_small_values():
    # two orthogonal unit words against one: WMD = sqrt(2) for each unit of mass moved
    vec = Vectors(["x", "y", "z"], np.eye(3, dtype=np.float32))
    assert wmd(["x", "y"], ["x", "y"], vec) == 0.0
    assert wmd(["x"], ["y"], vec) == pytest.approx(np.sqrt(2))
    assert wmd(["x", "y"], ["x", "z"], vec) == pytest.approx(np.sqrt(2) / 2)
    assert wrd(["x"], ["y"], vec) == pytest.approx(1.0)
    vec2 = Vectors(["p", "q"], np.array([[1, 0], [-3, 0]], dtype=np.float32))
    assert wrd(["p"], ["q"], vec2) == pytest.approx(2.0)  # opposite directions: the maximum
    # WRD weights by norm: q (norm 3) carries 3/4 of the mass of "p q"
    assert wrd(["p", "q"], ["p"], vec2) == pytest.approx(0.75 * 2.0)
    assert wmd(["p", "q"], ["p"], vec2) == pytest.approx(0.5 * 4.0)


def test_identical_texts_are_zero():
    rng = np.random.default_rng(1)
    for a in random_docs(rng, 20):
        b = list(reversed(a))
        for fn in (wmd, wrd, wcd, rwmd):
            assert fn(a, b, VEC) == pytest.approx(0.0, abs=1e-12)
        assert wmd(a, b, VEC) == 0.0


def test_no_known_word_is_nan():
    assert np.isnan(wmd(["nope"], ["w1"], VEC))
    assert np.isnan(wrd([], ["w1"], VEC))
    assert np.isnan(wcd(["w1"], ["x", "y"], VEC))
    assert np.isnan(sinkhorn([], [], VEC))


def test_strings_are_tokenised():
    vec = Vectors(["cat", "dog"], np.array([[1, 0], [0, 1]], dtype=np.float32))
    assert wmd("The Cat!", "the DOG", vec) == pytest.approx(np.sqrt(2))
    tok = Tokenizer(lowercase=False, stopwords="none")
    assert np.isnan(wmd("The Cat", "the DOG", vec, tokenizer=tok))
    assert kxtool.wmd("cat", "dog", vec) == pytest.approx(np.sqrt(2))
    assert kxtool.wrd("cat", "cat dog", vec) == pytest.approx(0.5)


doc_strategy = st.lists(st.sampled_from(VOCAB[:30]), min_size=1, max_size=30)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc_strategy, doc_strategy, st.integers(0, 5))
def test_lower_bounds(a, b, seed):
    vec = make_vectors(seed, n=30, dim=4)
    space = DocSpace(vec, "euclid")
    da, db = space.doc(a), space.doc(b)
    d = space.exact(da, db)
    assert space.wcd(da, db) <= d + 1e-9
    assert space.rwmd(da, db) <= d + 1e-9
    cos = DocSpace(vec, "cosine")
    ca, cb = cos.doc(a), cos.doc(b)
    r = cos.exact(ca, cb)
    assert -1e-12 <= r <= 2.0 + 1e-12
    assert cos.wcd(ca, cb) <= r + 1e-9
    assert cos.rwmd(ca, cb) <= r + 1e-9
    assert abs(space.exact(da, db) - space.exact(db, da)) < 1e-9  # symmetric


def test_sinkhorn_approaches_wmd():
    rng = np.random.default_rng(3)
    for a, b in zip(random_docs(rng, 2, 3, 8), random_docs(rng, 2, 3, 8), strict=True):
        exact = wmd(a, b, VEC)
        near = sinkhorn(a, b, VEC, reg=0.1)
        assert abs(near - exact) < 2e-2 * exact
        assert sinkhorn(a, b, VEC, reg=1.0) >= near - 1e-9
    # exp(-M/reg) underflows to 0 at this regularisation without the log domain
    a, b = ["w1", "w2", "w5", "w9"], ["w3", "w4", "w7"]
    assert sinkhorn(a, b, VEC, reg=1e-3) == pytest.approx(wmd(a, b, VEC), abs=1e-5)
    with pytest.raises(KxError):
        sinkhorn(["w1"], ["w2"], VEC, reg=0)


# Sentence pairs and random texts over the shipped GloVe vectors: the first pair is Kusner et
# al.'s (2015) Figure 1 example.
SENTENCES = [
    ("Obama speaks to the media in Illinois", "The President greets the press in Chicago"),
    ("The band gave a concert in Japan", "Obama speaks to the media in Illinois"),
    ("the cat sat on the mat", "a dog lay on the rug"),
    ("stocks fell sharply as investors worried about inflation",
     "shares dropped on fears of rising prices"),
]


def _shipped_text_pairs(n: int, seed: int):
    from kxtool.vectors import default_vectors

    vec = default_vectors()
    rng = np.random.default_rng(seed)
    words = vec.words[100:20000]
    pairs = [(a.lower().split(), b.lower().split()) for a, b in SENTENCES]
    for _ in range(n):
        pairs.append(
            (list(rng.choice(words, int(rng.integers(5, 30)))),
             list(rng.choice(words, int(rng.integers(5, 30)))))
        )
    return vec, pairs


def test_sinkhorn_decreases_to_wmd_from_above_on_the_shipped_vectors():
    # The entropic plan is feasible, so its cost is >= WMD, and it is at most reg * log(n1 n2)
    # above WMD; it decreases as reg does. Before kxtool's own solver, POT's stopped at its
    # iteration limit: 3.5% above WMD at reg 1e-6, below WMD at reg 0.01.
    import warnings

    from kxtool.errors import KxWarning

    vec, pairs = _shipped_text_pairs(24, seed=5)
    space = DocSpace(vec, "euclid")
    regs = (1e-1, 1e-2, 1e-3, 1e-6, 1e-9, 1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error", KxWarning)  # converged every time: no warning
        for a, b in pairs:
            da, db = space.doc(a), space.doc(b)
            exact = space.exact(da, db)
            bound = math.log(len(da.rows) * len(db.rows))
            got = [sinkhorn(a, b, vec, reg=r) for r in regs]
            for reg, v in zip(regs, got, strict=True):
                assert exact * (1 - 1e-12) <= v <= exact * (1 + 1e-9) + reg * bound
            for hi, lo in itertools.pairwise(got):
                assert lo <= hi * (1 + 1e-9)
            for v in got[-2:]:  # reg 1e-9 and 1e-12
                assert v == pytest.approx(exact, rel=1e-8)


def test_sinkhorn_never_below_wmd_at_reg_0_01():
    vec, pairs = _shipped_text_pairs(150, seed=6)
    got = list(wmd_pairs([a for a, _ in pairs], [b for _, b in pairs], vec, metric="sinkhorn",
                         reg=0.01))
    want = list(wmd_pairs([a for a, _ in pairs], [b for _, b in pairs], vec))
    assert all(g >= w * (1 - 1e-12) for g, w in zip(got, want, strict=True))


def test_sinkhorn_warns_at_the_iteration_limit(monkeypatch):
    from kxtool import transport
    from kxtool.errors import KxWarning

    vec, pairs = _shipped_text_pairs(0, seed=0)
    a, b = pairs[0]
    exact = wmd(a, b, vec)
    monkeypatch.setattr(transport, "SINKHORN_MAX_ITER", 4)
    with pytest.warns(KxWarning, match=r"stopped at the iteration limit \(4\).*marginal error"):
        got = sinkhorn(a, b, vec, reg=1e-6)
    assert got >= exact * (1 - 1e-12)  # still the cost of a feasible plan


def test_unknown_metric():
    with pytest.raises(KxError, match="unknown metric"):
        text_distance(["w1"], ["w2"], VEC, metric="cosine")


def test_long_texts_solve_exactly():
    # ~400 x 400 distinct words: well beyond POT's default iteration budget for small problems
    vec = make_vectors(5, n=900, dim=8)
    rng = np.random.default_rng(5)
    words = vec.words
    a = list(rng.choice(words, 400, replace=False))
    b = list(rng.choice(words, 400, replace=False))
    d = wmd(a, b, vec)
    assert wcd(a, b, vec) <= d <= wmd(a[:200], b, vec) + 10  # finite, sane
    assert np.isfinite(d)


def test_pairs_cross_and_jobs():
    rng = np.random.default_rng(7)
    A, B = random_docs(rng, 40), random_docs(rng, 40)
    A[5] = ["unknown"]
    one = [wmd(x, y, VEC) for x, y in zip(A, B, strict=True)]
    stats = WmdStats()
    got = list(wmd_pairs(A, B, VEC, stats=stats))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(one))
    np.testing.assert_allclose(got, one, rtol=1e-12)
    assert stats.empty_texts == 1 and stats.oov_tokens == 1 and stats.texts == 80
    par = list(wmd_pairs(A, B, VEC, jobs=2, chunk_size=7, stats=(s2 := WmdStats())))
    np.testing.assert_array_equal(par, got)
    assert s2.texts == 80 and s2.empty_texts == 1
    X = wmd_cross(A[:6], B[:9], VEC)
    assert X.shape == (6, 9)
    assert X[0, 3] == pytest.approx(wmd(A[0], B[3], VEC))
    assert np.isnan(X[5]).all()
    np.testing.assert_array_equal(wmd_cross(A[:6], B[:9], VEC, jobs=2), X)
    W = wmd_cross(A[:6], B[:9], VEC, metric="wcd")
    assert (W[:5] <= X[:5] + 1e-9).all()


def test_pairs_length_mismatch():
    with pytest.raises(KxError, match="differ in length"):
        list(wmd_pairs([["w1"], ["w2"]], [["w1"]], VEC))


def brute(Q, C, vec, k, metric):
    out = []
    for q in Q:
        ds = [(text_distance(q, c, vec, metric=metric), j) for j, c in enumerate(C)]
        ds = sorted((d, j) for d, j in ds if not np.isnan(d))
        out.append([(j, d) for d, j in ds[:k]] if not np.isnan(text_distance(q, q, vec)) else [])
    return out


@pytest.mark.parametrize("metric", ["wmd", "wrd"])
def test_search_equals_brute_force(metric):
    rng = np.random.default_rng(11)
    C = random_docs(rng, 300, 1, 12)
    C[10] = ["nothing"]
    C[20] = list(C[3])  # exact ties: the lower index must win
    C[30] = list(C[3])
    Q = random_docs(rng, 8, 1, 12) + [list(C[3]), ["nothing"]]
    stats = WmdStats()
    got = wmd_search(Q, C, VEC, k=5, metric=metric, stats=stats)
    assert got == wmd_search(Q, C, VEC, k=5, metric=metric, prune=False)
    assert stats.pruned > 0
    assert got[-1] == []
    assert [j for j, _ in got[-2][:3]] == [3, 20, 30]
    ref = brute(Q, C, VEC, 5, metric)
    for g, r in zip(got, ref, strict=True):
        assert [j for j, _ in g] == [j for j, _ in r]
        np.testing.assert_allclose([d for _, d in g], [d for _, d in r], rtol=1e-12)
    assert wmd_search(Q, C, VEC, k=5, metric=metric, jobs=2) == got


def test_search_other_metrics_and_self():
    rng = np.random.default_rng(12)
    C = random_docs(rng, 50, 1, 10)
    for metric in ("wcd", "rwmd"):
        got = wmd_search(C[:3], C, VEC, k=3, metric=metric)
        ref = brute(C[:3], C, VEC, 3, metric)
        # the search computes the bounds for the whole corpus at once, the reference one pair
        # at a time: the same neighbours, distances equal up to rounding
        for g, r in zip(got, ref, strict=True):
            assert [j for j, _ in g] == [j for j, _ in r]
            np.testing.assert_allclose([d for _, d in g], [d for _, d in r], rtol=1e-12)
    own = wmd_search(C[:5], None, VEC, k=1)  # the texts against themselves
    for i, r in enumerate(own):
        (j, d), = r
        assert d == 0.0 and j <= i  # itself, or an identical text before it
    with pytest.raises(KxError):
        wmd_search(C, C, VEC, k=0)


@pytest.mark.parametrize("metric", ["wmd", "rwmd"])
def test_search_excluding_self_equals_brute_force_without_self(metric):
    rng = np.random.default_rng(13)
    C = random_docs(rng, 80, 1, 10)
    C[5] = list(C[4])  # an identical text: still returned for the other
    got = wmd_search(C, None, VEC, k=3, metric=metric, exclude_self=True)
    full = brute(C, C, VEC, 4, metric)
    for i, (g, r) in enumerate(zip(got, full, strict=True)):
        want = [(j, d) for j, d in r if j != i][:3]
        assert [j for j, _ in g] == [j for j, _ in want]
        np.testing.assert_allclose([d for _, d in g], [d for _, d in want], rtol=1e-12)
    assert got[4][0] == (5, 0.0) and got[5][0] == (4, 0.0)
    assert wmd_search(C, None, VEC, k=3, metric=metric, exclude_self=True, jobs=2) == got


def test_default_vectors_refuse_chinese():
    vec = Vectors(["今天天气", "cat"], np.eye(2, dtype=np.float32))
    vec.is_default = True
    with pytest.raises(KxError, match="--vectors"):
        wmd("今天天气很好", "cat", vec)
    vec.is_default = False
    assert wmd("今天天气很好", "今天天气", vec) == 0.0


def test_lazy_table_matches_full(monkeypatch):
    # big vectors are copied to float64 a word at a time as texts use them
    import importlib

    engine = importlib.import_module("kxtool.wmd.space")
    rng = np.random.default_rng(21)
    A, B = random_docs(rng, 30), random_docs(rng, 30)
    full = make_vectors(9)
    want = [list(wmd_pairs(A, B, full, metric=m)) for m in ("wmd", "wrd", "rwmd", "wcd")]
    want_top = wmd_search(A, B, full, k=3)
    monkeypatch.setattr(engine, "_FULL_TABLE", 0)
    lazy = make_vectors(9)
    got = [list(wmd_pairs(A, B, lazy, metric=m)) for m in ("wmd", "wrd", "rwmd", "wcd")]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    top = wmd_search(A, B, lazy, k=3)
    assert [[j for j, _ in r] for r in top] == [[j for j, _ in r] for r in want_top]
    assert not engine.DocSpace(lazy)._t.full
