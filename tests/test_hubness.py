"""Hubness measures, reductions and hubness-prior sampling (kxtool.hubness)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from kxtool.errors import KxError
from kxtool.hubness import (
    antihub_occurrence,
    atkinson_index,
    distance_to_mean,
    gini_index,
    groupie_ratio,
    hub_occurrence,
    hubness_measures,
    hubness_prior_sample,
    hubness_report,
    k_occurrence,
    k_skewness,
    occurrence_histogram,
    read_matrix,
    reduce_hubness,
    robin_hood_index,
    spearman,
)
from kxtool.knn import topk

# N_k = [0, 0, 1, 3, 6]: n = 5, k = 2 (sum 10 = k*n), mean 2. Hand-computed values:
NK = np.array([0, 0, 1, 3, 6])


def test_measures_by_hand():
    # deviations -2 -2 -1 1 4: m2 = 26/5, m3 = 48/5
    assert k_skewness(NK) == pytest.approx((48 / 5) / (26 / 5) ** 1.5)
    # 0.5 * (2+2+1+1+4) / 10
    assert robin_hood_index(NK) == pytest.approx(0.5)
    # unordered |differences| sum to 30, so sum_ij = 60; 60 / (2*5*10)
    assert gini_index(NK) == pytest.approx(0.6)
    # 1 - mean(sqrt)^2 / mean
    ms = (0 + 0 + 1 + math.sqrt(3) + math.sqrt(6)) / 5
    assert atkinson_index(NK) == pytest.approx(1 - ms**2 / 2)
    hubs, occ = hub_occurrence(NK, k=2)  # hubs: N_k >= 4
    assert list(hubs) == [4] and occ == pytest.approx(6 / 10)
    anti, aocc = antihub_occurrence(NK)
    assert list(anti) == [0, 1] and aocc == pytest.approx(0.4)
    assert groupie_ratio(NK, k=2) == pytest.approx(0.6)


def test_measures_against_formulas_and_scipy():
    rng = np.random.default_rng(0)
    nk = rng.poisson(10, size=400)
    assert k_skewness(nk) == pytest.approx(stats.skew(nk))
    pairs = np.abs(nk[:, None] - nk[None, :]).sum()
    assert gini_index(nk) == pytest.approx(pairs / (2 * len(nk) * nk.sum()))
    assert robin_hood_index(nk) == pytest.approx(0.5 * np.abs(nk - nk.mean()).sum() / nk.sum())
    assert atkinson_index(nk, 1.0) == pytest.approx(
        1 - stats.gmean(nk) / nk.mean() if nk.min() > 0 else 1.0
    )
    a, b = rng.normal(size=300), rng.integers(0, 5, size=300)  # ties in b
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic)
    assert math.isnan(k_skewness(np.full(7, 3)))
    assert math.isnan(spearman(np.ones(5), np.arange(5)))


def test_knn_fixture_by_hand():
    # Points on a line 0, 1, 3, 7 with k=1: 0->1, 1->0, 3->1, 7->3, so N_1 = [1, 2, 1, 0].
    x = np.array([[0.0], [1.0], [3.0], [7.0]], dtype=np.float32)
    idx, dist = topk(x, k=1, metric="euclidean")
    assert idx.ravel().tolist() == [1, 0, 1, 2]
    np.testing.assert_allclose(dist.ravel(), [1, 1, 2, 4])
    assert k_occurrence(idx, 4).tolist() == [1, 2, 1, 0]
    m = hubness_measures(idx)
    assert m["antihubs"] == 1 and m["antihub_occurrence"] == pytest.approx(0.25)
    assert m["hubs"] == 1 and m["hub_occurrence"] == pytest.approx(0.5)  # N_k >= 2
    assert m["groupie_ratio"] == pytest.approx(0.5)
    assert m["robin_hood"] == pytest.approx(0.25)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 80), k=st.integers(1, 10), seed=st.integers(0, 2**31))
def test_occurrence_sums_to_k_n(n, k, seed):
    k = min(k, n - 1)
    x = np.random.default_rng(seed).standard_normal((n, 6)).astype(np.float32)
    idx, _ = topk(x, k=k)
    nk = k_occurrence(idx, n)
    assert nk.sum() == k * n and len(nk) == n


def test_hubs_near_the_mean_in_high_dimension():
    x = np.random.default_rng(1).standard_normal((2000, 200)).astype(np.float32)
    r = hubness_report(x, k=10, metric="euclidean")
    assert r.measures["k_skewness"] > 0.5
    assert r.spearman_mean < -0.3  # closer to the mean: more occurrences
    assert r.k_occurrence.sum() == 10 * 2000
    d = r.to_dict()
    assert d["top_hubs"][0]["k_occurrence"] == r.k_occurrence.max()
    assert sum(b["count"] for b in d["histogram"]) == 2000


def test_distance_to_mean():
    x = np.array([[1, 0], [0, 1], [3, 3]], dtype=np.float32)
    np.testing.assert_allclose(
        distance_to_mean(x, "cosine"), [1 - 1 / math.sqrt(2), 1 - 1 / math.sqrt(2), 0], atol=1e-6
    )
    np.testing.assert_allclose(
        distance_to_mean(x, "euclidean"), np.linalg.norm(x - x.mean(0), axis=1), rtol=1e-6
    )


def test_histogram_bins_cover_everything():
    nk = np.array([0] * 50 + [1] * 30 + [10] * 5 + [400])
    h = occurrence_histogram(nk, k=5)
    assert h[0] == (0, 0, 50)
    assert sum(c for _, _, c in h) == len(nk)
    assert h[-1][1] == 400
    assert all(a <= b for a, b, _ in h)
    assert all(h[i][1] + 1 == h[i + 1][0] for i in range(len(h) - 1))


# ---------------------------------------------------------------------------------------------
# Reductions against direct implementations over the full distance matrix.


def _full(x, metric):
    n = len(x)
    ind, sc = topk(x, k=n - 1, metric=metric)
    dist = 1.0 - sc.astype(np.float64) if metric == "cosine" else sc.astype(np.float64)
    full = np.full((n, n), np.nan)
    np.put_along_axis(full, ind, dist, axis=1)
    return ind, dist, full


def _direct(method, x, full, s, metric):
    n = len(full)
    off = ~np.eye(n, dtype=bool)
    others = [np.sort(full[i][off[i]]) for i in range(n)]
    if method == "ls":
        sig = np.array([o[s - 1] for o in others])
        return 1 - np.exp(-(full**2) / np.outer(sig, sig))
    if method == "nicdm":
        mu = np.array([o[:s].mean() for o in others])
        return full / np.sqrt(np.outer(mu, mu))
    if method == "mp":
        out = np.empty((n, n))
        for i in range(n):
            for j in range(n):
                m = off[i]
                d = full[i, j]
                out[i, j] = 1 - np.sum(m & (full[i] > d) & (full[j] > d)) / (n - 1)
        return out
    if method == "mp-gauss":
        mu = np.array([o.mean() for o in others])
        sd = np.array([o.std() for o in others])
        p1 = stats.norm.sf(full, mu[:, None], sd[:, None])
        p2 = stats.norm.sf(full, mu[None, :], sd[None, :])
        return 1 - p1 * p2
    v = np.asarray(x, dtype=np.float64)
    if metric == "cosine":
        v = v / np.linalg.norm(v, axis=1, keepdims=True)
    if method == "dsl":
        nn = [np.argsort(np.where(off[i], full[i], np.inf), kind="stable")[:s] for i in range(n)]
        cent = np.array([v[nn[i]].mean(0) for i in range(n)])
        sq = ((v[:, None] - v[None]) ** 2).sum(-1)
        o = ((v - cent) ** 2).sum(1)
        return sq - o[:, None] - o[None, :]
    if method == "csls":
        sim = v @ v.T if metric == "cosine" else -full
        r = np.array([np.sort(sim[i][off[i]])[::-1][:s].mean() for i in range(n)])
        return -(2 * sim - r[:, None] - r[None, :])
    raise AssertionError(method)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("method", ["mp", "mp-gauss", "ls", "nicdm", "dsl", "csls"])
def test_reductions_match_direct(method, metric):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((60, 30)).astype(np.float32)
    k, s = 5, 4
    ind, dist, full = _full(x, metric)
    rind, rsec = reduce_hubness(ind, dist, method, k, x=x, metric=metric, scale_k=s)
    ref = _direct(method, x, full, s, metric)
    np.fill_diagonal(ref, np.inf)
    ref_sorted = np.sort(ref, axis=1)[:, :k]
    np.testing.assert_allclose(rsec, ref_sorted, atol=2e-5)
    # the returned neighbours carry the direct values
    np.testing.assert_allclose(np.take_along_axis(ref, rind, axis=1), rsec, atol=2e-5)
    assert not (rind == np.arange(60)[:, None]).any()


def test_mp_reduces_hubness():
    x = np.random.default_rng(2).standard_normal((800, 100)).astype(np.float32)
    r = hubness_report(x, k=10, metric="euclidean", reduce="mp", candidates=50)
    assert r.reduced_measures["k_skewness"] < r.measures["k_skewness"]
    assert r.reduced_k_occurrence.sum() == 10 * 800
    assert r.to_dict()["reduction"]["candidates"] == 50


def _identical_rows() -> list[np.ndarray]:
    from kxtool.vectors import default_vectors

    glove = np.asarray(default_vectors().matrix[1234], dtype=np.float32)
    normal = np.random.default_rng(1).standard_normal(50).astype(np.float32)
    return [np.tile(v, (300, 1)) for v in (glove, normal)]


LOWEST = np.array([[j for j in range(300) if j != i][:10] for i in range(300)])


@pytest.mark.parametrize("memory", [1 << 30, 12_600, 30_000])
def test_identical_rows_have_the_lowest_indices_as_neighbours(memory):
    # 300 copies of one vector, cosine: every distance ties, and ties go to the lower index
    # (kxtool.knn), then to the original rank (the reductions): every row's neighbours are the
    # lowest indices other than its own, whatever the block size.
    for x in _identical_rows():
        r = hubness_report(x, k=10, memory=memory)
        np.testing.assert_array_equal(r.indices, LOWEST)
        for method in ("mp", "csls", "dsl"):
            r = hubness_report(x, k=10, reduce=method, memory=memory)
            np.testing.assert_array_equal(r.reduced_indices, LOWEST)


_KERNEL_SCRIPT = """
import numpy as np
from kxtool.hubness import hubness_report
from kxtool.vectors import default_vectors
glove = np.asarray(default_vectors().matrix[1234], dtype=np.float32)
normal = np.random.default_rng(1).standard_normal(50).astype(np.float32)
lowest = np.array([[j for j in range(300) if j != i][:10] for i in range(300)])
for v in (glove, normal):
    for memory in (1 << 30, 12_600, 30_000):
        r = hubness_report(np.tile(v, (300, 1)), k=10, memory=memory)
        print(int((r.indices != lowest).any(axis=1).sum()))
"""


def test_identical_rows_under_every_openblas_kernel():
    # On AMD EPYC (OpenBLAS's Zen/Haswell kernels) 16 of 300 copies had other neighbours.
    import os
    import subprocess
    import sys

    from test_knn import _openblas_kernels

    kernels = _openblas_kernels()
    if not kernels:
        pytest.skip("numpy's BLAS is not OpenBLAS on x86-64")
    for kernel in kernels:
        env = dict(os.environ, OPENBLAS_CORETYPE=kernel)
        out = subprocess.run(
            [sys.executable, "-c", _KERNEL_SCRIPT], env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        wrong = [int(w) for w in out.stdout.split()]
        assert wrong == [0] * 6, (kernel, wrong)  # rows with other neighbours


def _glove(n):
    from kxtool.vectors import default_vectors

    return np.asarray(default_vectors().matrix[:n], dtype=np.float32)


def test_dsl_with_cosine_is_the_formula_on_unit_vectors():
    # DisSim local (Hara et al. 2016) straight from its definition, in float64, on the unit
    # vectors of 1,500 shipped GloVe words: |u - w|^2 - |u - c_u|^2 - |w - c_w|^2, c_u the mean
    # of the 5 nearest. With every other point as a candidate kxtool computes exactly that.
    n, k, s = 1500, 10, 5
    x = _glove(n)
    u = x.astype(np.float64)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    sq = np.maximum(2.0 - 2.0 * (u @ u.T), 0.0)
    np.fill_diagonal(sq, np.inf)
    near = np.argsort(sq, axis=1, kind="stable")[:, :s]
    off = ((u - u[near].mean(axis=1)) ** 2).sum(axis=1)
    want = sq - off[:, None] - off[None, :]
    want_sorted = np.sort(want, axis=1)[:, :k]
    ind, sc = topk(x, k=n - 1, metric="cosine")
    rind, rsec = reduce_hubness(ind, 1.0 - sc.astype(np.float64), "dsl", k, x=x, scale_k=s)
    np.testing.assert_allclose(rsec, want_sorted, atol=1e-5)
    np.testing.assert_allclose(np.take_along_axis(want, rind, axis=1), rsec, atol=1e-5)


def test_reduction_that_raises_hubness_warns():
    # On the shipped GloVe vectors DisSim local with cosine raises the k-skewness (1.70 to
    # 1.92 on the first 5,000 words): the report says so instead of presenting it silently.
    import re
    import warnings

    from kxtool.errors import KxWarning

    x = _glove(5000)
    with pytest.warns(KxWarning, match="'dsl' with cosine raised the k-skewness") as caught:
        r = hubness_report(x, k=10, reduce="dsl")
    before, after = r.measures["k_skewness"], r.reduced_measures["k_skewness"]
    assert after > before
    stated = re.search(r"from ([0-9.]+) to ([0-9.]+)", str(caught[0].message)).groups()
    assert stated == (f"{before:.3f}", f"{after:.3f}")
    with warnings.catch_warnings():
        warnings.simplefilter("error", KxWarning)  # methods that do lower it: no warning
        for method, metric in (("mp-gauss", "cosine"), ("csls", "cosine"), ("dsl", "euclidean")):
            r = hubness_report(x, k=10, metric=metric, reduce=method)
            assert r.reduced_measures["k_skewness"] < r.measures["k_skewness"]


def test_reduction_errors():
    ind = np.zeros((3, 2), dtype=np.int64)
    with pytest.raises(KxError, match="unknown hubness reduction"):
        reduce_hubness(ind, ind.astype(float), "xx", 1)
    with pytest.raises(KxError, match="larger than the 2 candidates"):
        reduce_hubness(ind, ind.astype(float), "ls", 3)


# ---------------------------------------------------------------------------------------------
# Hubness-prior sampling


def test_sampling_exact_count_and_threshold():
    dim, k, t, batch, seed = 32, 5, 12, 600, 4
    z = hubness_prior_sample(dim, 70, k=k, min_occurrence=t, batch_size=batch, seed=seed)
    assert z.shape == (70, dim) and z.dtype == np.float32
    # direct: replay the batches, keep the rows reaching the threshold, in order
    rng = np.random.default_rng(seed)
    kept = []
    while sum(len(a) for a in kept) < 70:
        b = rng.standard_normal((batch, dim), dtype=np.float32)
        nk = k_occurrence(topk(b, k=k, metric="euclidean")[0], batch)
        assert (nk[nk >= t] >= t).all()
        kept.append(b[nk >= t])
    np.testing.assert_array_equal(z, np.concatenate(kept)[:70])
    again = hubness_prior_sample(dim, 70, k=k, min_occurrence=t, batch_size=batch, seed=seed)
    np.testing.assert_array_equal(z, again)


def test_sampling_impossible_threshold():
    with pytest.raises(KxError, match="impossible"):
        hubness_prior_sample(8, 10, k=5, min_occurrence=600, batch_size=500)
    with pytest.raises(KxError, match="out of reach"):
        hubness_prior_sample(8, 10, k=2, min_occurrence=300, batch_size=400)


# ---------------------------------------------------------------------------------------------
# Inputs


def test_read_matrix_npy_limit_sample(tmp_path):
    m = np.arange(40, dtype=np.float32).reshape(20, 2)
    p = tmp_path / "m.npy"
    np.save(p, m)
    x, words, rows = read_matrix(str(p), limit=10, sample=4, seed=1)
    assert words is None and len(x) == 4 and (np.diff(rows) > 0).all() and rows.max() < 10
    np.testing.assert_array_equal(x, m[rows])


def test_read_matrix_word2vec_text(tmp_path):
    p = tmp_path / "v.txt"
    p.write_text("3 2\nthe 1 0\ncat 0 1\ndog 1 1\n")
    x, words, rows = read_matrix(str(p))
    assert words == ["the", "cat", "dog"] and x.shape == (3, 2)


def test_read_matrix_errors(tmp_path):
    with pytest.raises(KxError, match="no such file"):
        read_matrix(str(tmp_path / "missing.npy"))
    p = tmp_path / "bad.npy"
    np.save(p, np.zeros(4))
    with pytest.raises(KxError, match="2-D"):
        read_matrix(str(p))


def test_mp_empiric_on_partial_candidate_sets():
    # The candidate-set definition, pair by pair: universe C_i; d(j, m) known when m is in C_j,
    # else it counts as beyond when d(i, j) < r_j (j's candidate radius).
    rng = np.random.default_rng(21)
    x = rng.standard_normal((40, 12)).astype(np.float32)
    c = 8
    ind, sc = topk(x, k=c, metric="euclidean")
    dist = sc.astype(np.float64)
    expect = {}
    for i in range(40):
        for j_pos, j in enumerate(ind[i]):
            d = dist[i, j_pos]
            cand_j = dict(zip(ind[j].tolist(), dist[j].tolist(), strict=True))
            count = 0
            for m_pos, m in enumerate(ind[i]):
                if not dist[i, m_pos] > d:
                    continue
                beyond = cand_j[m] > d if m in cand_j else d < dist[j, -1]
                count += beyond
            expect[(i, int(j))] = 1 - count / c
    got = {}
    rind, rsec = reduce_hubness(ind, dist, "mp", c, metric="euclidean")
    for i in range(40):
        for j, v in zip(rind[i], rsec[i], strict=True):
            got[(i, int(j))] = v
    assert got.keys() == expect.keys()
    for key, v in expect.items():
        assert got[key] == pytest.approx(v)
