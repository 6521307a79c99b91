"""Exact k-NN (kxtool.knn): against a float64 brute force, ties, errors, memory blocks, and
the same lists whatever BLAS kernel computes the products."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kxtool.errors import KxError
from kxtool.knn import _rescore, topk
from kxtool.vectors import default_vectors


def brute(x, k, metric, base=None, exclude_self=True):
    """float64 reference: best first, ties broken by the lower index."""
    q = np.asarray(x, dtype=np.float64)
    b = q if base is None else np.asarray(base, dtype=np.float64)
    if metric == "cosine":
        qn = q / np.linalg.norm(q, axis=1, keepdims=True)
        bn = b / np.linalg.norm(b, axis=1, keepdims=True)
        s = qn @ bn.T
    elif metric == "ip":
        s = q @ b.T
    else:
        d2 = (q * q).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * q @ b.T
        s = -np.sqrt(np.maximum(d2, 0))
    if base is None and exclude_self:
        np.fill_diagonal(s, -np.inf)
    cols = np.arange(s.shape[1])
    idx = np.array([np.lexsort((cols, -row))[:k] for row in s])
    vals = np.take_along_axis(s, idx, axis=1)
    return idx, (-vals if metric == "euclidean" else vals)


@pytest.mark.parametrize("metric", ["cosine", "ip", "euclidean"])
@pytest.mark.parametrize("n", [12, 300, 2500])
def test_matches_brute_force(metric, n):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, 24)).astype(np.float32)
    k = 7
    idx, vals = topk(x, k=k, metric=metric)
    ref_i, ref_v = brute(x, k, metric)
    assert idx.dtype == np.int64 and idx.shape == (n, k)
    assert vals.dtype == np.float32
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_allclose(vals, ref_v, atol=2e-4, rtol=1e-4)
    # never itself, sorted best first
    assert not (idx == np.arange(n)[:, None]).any()
    d = np.diff(vals, axis=1)
    assert (d >= -1e-6).all() if metric == "euclidean" else (d <= 1e-6).all()


@pytest.mark.parametrize("metric", ["ip", "euclidean"])
def test_ties_break_by_lower_index(metric):
    # Small integer points: many exact ties in every row, and rows pass the grouped prefilter.
    rng = np.random.default_rng(3)
    x = rng.integers(1, 4, size=(3000, 3)).astype(np.float32)
    idx, _ = topk(x, k=9, metric=metric)
    ref, _ = brute(x, 9, metric)
    np.testing.assert_array_equal(idx, ref)


def test_cosine_ties_among_duplicates():
    # Rows are copies of 6 directions: equal rows give bit-identical scores.
    rng = np.random.default_rng(4)
    dirs = rng.standard_normal((6, 10)).astype(np.float32)
    x = dirs[rng.integers(0, 6, size=2000)]
    idx, _ = topk(x, k=8, metric="cosine")
    for i in (0, 1, 777, 1999):
        same = [j for j in range(2000) if j != i and (x[j] == x[i]).all()][:8]
        assert list(idx[i]) == same


def exact_reference(x, k, metric):
    """Top k by the engine's documented rule: the float64 score of each pair summed in a fixed
    order (kxtool.knn._rescore), then the lower index; a point is not its own neighbour."""
    n = len(x)
    qi, bj = np.repeat(np.arange(n), n), np.tile(np.arange(n), n)
    s = _rescore(x, x, qi, bj, metric).reshape(n, n)
    np.fill_diagonal(s, -np.inf)
    cols = np.arange(n)
    return np.array([np.lexsort((cols, -row))[:k] for row in s])


# Block sizes: one block, tiles of 40 rows (an edge tile of 20), a few rows per block.
MEMORIES = [1 << 30, 8 * 40 * 40, 12_600, 30_000]


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("memory", MEMORIES)
def test_identical_rows_give_the_lowest_indices(memory, symmetric):
    # 300 copies of one vector: every score ties, so every row's neighbours are the lowest
    # indices other than its own (the documented rule: ties go to the lower index). Float32
    # products of copies differ in their last digits between BLAS kernels and between the
    # middle and the edge of a tile; the float64 re-scoring of near-ties makes them tie.
    glove = np.asarray(default_vectors().matrix[1234], dtype=np.float32)
    normal = np.random.default_rng(1).standard_normal(50).astype(np.float32)
    k = 10
    expect = np.array([[j for j in range(300) if j != i][:k] for i in range(300)])
    for v in (glove, normal):
        x = np.tile(v, (300, 1))
        for metric in ("cosine", "euclidean", "ip"):
            idx, vals = topk(x, k=k, metric=metric, memory=memory, symmetric=symmetric)
            np.testing.assert_array_equal(idx, expect)
            assert len(np.unique(vals)) == 1  # one score, bitwise, for every copy


@pytest.mark.parametrize("metric", ["cosine", "ip", "euclidean"])
def test_near_ties_follow_the_float64_rule_at_every_block_size(metric):
    # GloVe rows, duplicated and nudged by one float32 step here and there: scores that float32
    # products cannot order. Every block size and both loops give the reference lists.
    rng = np.random.default_rng(7)
    base = np.asarray(default_vectors().matrix[:5000], dtype=np.float32)
    x = base[rng.integers(0, 5000, 60)][rng.integers(0, 60, 400)].copy()
    nudge = rng.random(x.shape) < 0.02
    x[nudge] = np.nextafter(x[nudge], np.float32(np.inf))
    for k in (1, 7):
        want = exact_reference(x, k, metric)
        for memory in MEMORIES:
            for symmetric in (False, True):
                idx, _ = topk(x, k=k, metric=metric, memory=memory, symmetric=symmetric)
                np.testing.assert_array_equal(idx, want)


def _openblas_kernels() -> list[str]:
    """OpenBLAS kernels this CPU can run (numpy built on OpenBLAS, x86-64 Linux), else []."""
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
    except Exception:  # noqa: BLE001 - an older numpy, another layout: no kernels to try
        return []
    if "openblas" not in str(blas).lower() or platform.machine() not in ("x86_64", "AMD64"):
        return []
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(next(ln for ln in f if ln.startswith("flags")).split(":")[1].split())
    except (OSError, StopIteration):
        return []
    kernels = ["Prescott"]
    if "avx" in flags:
        kernels.append("Sandybridge")
    if {"avx2", "fma"} <= flags:
        kernels.append("Haswell")
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"} <= flags:
        kernels.append("SkylakeX")
    return kernels


_KERNEL_SCRIPT = """
import hashlib, numpy as np
from kxtool.knn import topk
from kxtool.vectors import default_vectors
m = np.asarray(default_vectors().matrix[:3000], dtype=np.float32)
rng = np.random.default_rng(3)
x = np.concatenate([np.tile(m[1234], (300, 1)), m[rng.integers(0, 3000, 700)]])
h = hashlib.sha256()
for metric in ("cosine", "euclidean"):
    for memory, sym in ((1 << 30, False), (12_600, True), (30_000, False)):
        idx, _ = topk(x, k=10, metric=metric, memory=memory, symmetric=sym)
        h.update(idx.tobytes())
print(h.hexdigest())
"""


def test_same_lists_under_every_openblas_kernel():
    kernels = _openblas_kernels()
    if len(kernels) < 2:
        pytest.skip("numpy's BLAS is not OpenBLAS on x86-64 with two kernels to compare")
    digests = {}
    for kernel in kernels:
        env = dict(os.environ, OPENBLAS_CORETYPE=kernel)
        out = subprocess.run(
            [sys.executable, "-c", _KERNEL_SCRIPT], env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        digests[kernel] = out.stdout.strip()
    assert len(set(digests.values())) == 1, digests
    # and the lists are the reference ones (here, in whatever kernel this process runs)
    m = np.asarray(default_vectors().matrix[:3000], dtype=np.float32)
    rng = np.random.default_rng(3)
    x = np.concatenate([np.tile(m[1234], (300, 1)), m[rng.integers(0, 3000, 700)]])
    h = hashlib.sha256()
    for metric in ("cosine", "euclidean"):
        want = exact_reference(x, 10, metric)
        for _ in range(3):
            h.update(want.tobytes())
    assert digests[kernels[0]] == h.hexdigest()


def test_duplicates_and_constant_rows():
    x = np.ones((600, 5), dtype=np.float32)  # every score equal: the heavy-row path
    idx, vals = topk(x, k=4, metric="cosine")
    expect = np.array([[j for j in range(600) if j != i][:4] for i in range(600)])
    np.testing.assert_array_equal(idx, expect)
    np.testing.assert_allclose(vals, 1.0, atol=1e-6)


def test_zero_vectors_cosine():
    x = np.zeros((50, 3), dtype=np.float32)
    x[0] = [1, 0, 0]
    idx, vals = topk(x, k=2, metric="cosine")
    np.testing.assert_array_equal(idx[0], [1, 2])
    np.testing.assert_allclose(vals, 0.0)


def test_memory_blocks_do_not_change_result():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1500, 16)).astype(np.float32)
    a = topk(x, k=5, memory=1 << 30)
    b = topk(x, k=5, memory=20_000)  # a couple of rows per block
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1], atol=1e-6)


@pytest.mark.parametrize("metric", ["cosine", "ip", "euclidean"])
@pytest.mark.parametrize("tile_memory", [8 * 7 * 7, 8 * 64 * 64, 1 << 30])
def test_symmetric_tiles_match_plain_loop(metric, tile_memory):
    # tiles of 7 (narrower than 2k: no group bound), 64 and one big tile
    rng = np.random.default_rng(8)
    x = rng.integers(-2, 3, size=(400, 6)).astype(np.float32)  # many ties
    x[50] = x[10]  # an exact duplicate
    ref, _ = brute(x, 6, metric)
    sym = topk(x, k=6, metric=metric, memory=tile_memory, symmetric=True)
    plain = topk(x, k=6, metric=metric, symmetric=False)
    if metric != "cosine":  # cosine of integer vectors is not exact in float32
        np.testing.assert_array_equal(sym[0], ref)
    np.testing.assert_array_equal(sym[0], plain[0])
    np.testing.assert_allclose(sym[1], plain[1], atol=1e-5)


def test_separate_base_and_progress():
    rng = np.random.default_rng(6)
    q = rng.standard_normal((40, 8)).astype(np.float32)
    base = rng.standard_normal((900, 8)).astype(np.float32)
    calls = []
    idx, vals = topk(q, base, k=5, metric="euclidean", progress=lambda *a: calls.append(a))
    ref_i, ref_v = brute(q, 5, "euclidean", base=base)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_allclose(vals, ref_v, atol=1e-4)
    assert calls and calls[-1] == ("k-NN", 40, 40)


def test_self_included_when_asked():
    x = np.eye(4, dtype=np.float32)
    idx, vals = topk(x, k=1, metric="ip", exclude_self=False)
    np.testing.assert_array_equal(idx[:, 0], np.arange(4))


def test_errors():
    x = np.zeros((5, 2), dtype=np.float32)
    with pytest.raises(KxError, match="k=5 is too large"):
        topk(x, k=5)
    with pytest.raises(KxError, match="at least 1"):
        topk(x, k=0)
    with pytest.raises(KxError, match="unknown metric"):
        topk(x, k=1, metric="manhattan")
    with pytest.raises(KxError, match="non-finite"):
        topk(np.array([[1.0, np.nan], [0, 1], [1, 1]]), k=1)
    with pytest.raises(KxError, match="dimensions"):
        topk(x, np.zeros((5, 3)), k=1)
    with pytest.raises(KxError, match="2-dimensional"):
        topk(np.zeros(5), k=1)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 60),
    d=st.integers(1, 5),
    k=st.integers(1, 8),
    seed=st.integers(0, 2**31),
    metric=st.sampled_from(["ip", "euclidean"]),
    tile=st.sampled_from([None, 3, 9, 20]),
)
def test_property_small_integer_data(n, d, k, seed, metric, tile):
    k = min(k, n - 1)
    x = np.random.default_rng(seed).integers(-2, 3, size=(n, d)).astype(np.float32)
    if tile is None:
        idx, _ = topk(x, k=k, metric=metric)
    else:
        idx, _ = topk(x, k=k, metric=metric, memory=8 * tile * tile, symmetric=True)
    ref, _ = brute(x, k, metric)
    np.testing.assert_array_equal(idx, ref)
