"""Tests of kxtool.dim: the closed forms against hand-computed values, corpus counting, the
PIP-loss method on a synthetic corpus of known rank."""

from __future__ import annotations

import bz2
import gzip
import math

import numpy as np
import pytest

from kxtool import KxError
from kxtool import dim as D

# ---------------------------------------------------------------------------------------------
# closed forms


def test_article_examples():
    # Su Jianlin, kexue.fm/archives/7695 (2020-08-20): N = 100,000 -> about 96;
    # N = 5,000,000 -> about 128 (bound 8.33 ln 5e6 = 128.49, so the smallest whole n is 129).
    e = D.estimate_dim(100_000)
    assert e.dim == 96
    assert e.bound == pytest.approx(95.9027, abs=1e-4)  # 8.33 * 11.512925465
    e = D.estimate_dim(5_000_000)
    assert round(e.bound, 1) == 128.5
    assert e.dim == 129


@pytest.mark.parametrize(
    "n, bound, dim",
    [
        # hand-computed: 8.33 * ln N
        (2, 5.7739, 6),
        (10, 19.1805, 20),
        (1_000, 57.5416, 58),
        (30_000, 85.8736, 86),
        (1_000_000, 115.0832, 116),
        (3_000_000, 124.2346, 125),
    ],
)
def test_entropy_table_closed_form(n, bound, dim):
    e = D.estimate_dim(n, "entropy")
    assert e.bound == pytest.approx(bound, abs=1e-4)
    assert e.dim == dim
    assert e.dim == math.floor(8.33 * math.log(n)) + 1
    assert e.dim > e.bound >= e.dim - 1  # smallest whole n with n > bound


def test_strict_inequality_at_integer_bound():
    # an exactly integral bound needs the next integer (n > bound, not >=)
    assert D._smallest_above(96.0) == 97
    assert D._smallest_above(95.999) == 96


def test_analytic_constant():
    phi = (1 + 5**0.5) / 2
    assert pytest.approx(4 / math.log(phi), abs=1e-12) == D.ANALYTIC_COEF
    assert D.ANALYTIC_COEF == pytest.approx(8.31235, abs=1e-5)  # 4 / 0.4812118
    e = D.estimate_dim(100_000, "entropy-analytic")
    assert e.bound == pytest.approx(8.312348 * 11.512925, rel=1e-5)
    assert e.dim == 96


@pytest.mark.parametrize(
    "n, eps, bound",
    [
        # 4 ln N / (eps^2/2 - eps^3/3), by hand
        (100_000, 0.1, 46.0517019 / 0.0046666667),  # 9868.22
        (1_000, 0.5, 27.6310211 / (0.125 - 0.0416666667)),  # 331.57
        (10_000, 0.2, 36.8413615 / (0.02 - 0.0026666667)),  # 2125.46
    ],
)
def test_jl(n, eps, bound):
    e = D.estimate_dim(n, "jl", eps=eps)
    assert e.bound == pytest.approx(bound, rel=1e-7)
    assert e.dim == math.ceil(bound)
    assert e.eps == eps


def test_jl_matches_sklearn_formula_value():
    # scikit-learn's johnson_lindenstrauss_min_dim(1e5, eps=0.1) truncates 9868.22 to 9868;
    # k >= bound needs 9869.
    assert D.estimate_dim(100_000, "jl").dim == 9869


def test_fourth_root():
    assert D.estimate_dim(10_000, "fourth-root").dim == 10  # exactly 10, not 11
    assert D.estimate_dim(100_000, "fourth-root").bound == pytest.approx(17.7828, abs=1e-4)
    assert D.estimate_dim(100_000, "fourth-root").dim == 18


def test_estimate_dims_table():
    rows = D.estimate_dims([1000, 100_000], ["entropy", "jl"])
    assert [(r.vocab, r.method) for r in rows] == [
        (1000, "entropy"),
        (1000, "jl"),
        (100_000, "entropy"),
        (100_000, "jl"),
    ]
    assert rows[2].as_dict()["dim"] == 96


@pytest.mark.parametrize("bad", [0, 1, -5, 2.5])
def test_bad_vocab(bad):
    with pytest.raises(KxError):
        D.estimate_dim(bad)


def test_bad_method_and_eps():
    with pytest.raises(KxError):
        D.estimate_dim(1000, "magic")
    with pytest.raises(KxError):
        D.estimate_dim(1000, "jl", eps=1.5)


def test_lazy_api():
    import kxtool

    assert kxtool.estimate_dim(100_000).dim == 96


# ---------------------------------------------------------------------------------------------
# N from files


def test_vectors_header(tmp_path):
    p = tmp_path / "v.txt"
    p.write_text("3 2\na 1 2\nb 3 4\nc 5 6\n")
    assert D.vectors_vocab_size(p) == 3
    g = tmp_path / "v.txt.gz"
    with gzip.open(g, "wb") as f:
        f.write(b"123456 300\n")
    assert D.vectors_vocab_size(g) == 123456


def test_vectors_without_header(tmp_path, monkeypatch):
    monkeypatch.setenv("KXTOOL_CACHE_DIR", str(tmp_path / "cache"))  # load_vectors may cache
    p = tmp_path / "glove.txt"
    p.write_text("the 0.1 0.2 0.3\nof 0.4 0.5 0.6\nand 0.7 0.8 0.9\nto 1 2 3\n")
    assert D.vectors_vocab_size(p) == 4


def test_vectors_missing(tmp_path):
    with pytest.raises(KxError):
        D.vectors_vocab_size(tmp_path / "nope.vec")


def test_count_vocab(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("The cat sat on the mat.\nthe dog\n\nA cat, a DOG and a bird\n")
    vc = D.count_vocab(p)
    # the cat sat on mat dog a and bird (lowercased, stopwords kept)
    assert vc.vocab == 9 and vc.distinct == 9 and vc.tokens == 15
    assert D.count_vocab(p, min_count=2).vocab == 4  # the, cat, dog, a
    assert D.count_vocab(p, min_count=3).vocab == 2  # the, a
    b = tmp_path / "c.txt.bz2"
    b.write_bytes(bz2.compress(p.read_bytes()))
    assert D.count_vocab(b).vocab == 9


def test_count_vocab_chinese_and_blocks(tmp_path, monkeypatch):
    p = tmp_path / "zh.txt"
    p.write_text("我们喜欢自然语言处理\nhello world\n" * 3, encoding="utf-8")
    vc = D.count_vocab(p)
    from kxtool.text import Tokenizer

    tok = Tokenizer(stopwords="none")
    expect = set(tok("我们喜欢自然语言处理")) | {"hello", "world"}
    assert vc.vocab == len(expect)
    # lines split across read blocks are not cut
    monkeypatch.setattr(D, "read_blocks", lambda path: iter([b"ab", b"c d\ne", b"f"]))
    monkeypatch.setattr(D, "input_size", lambda path: None)
    assert D.count_vocab("x").vocab == 3  # abc, d, ef


def test_count_vocab_errors(tmp_path):
    with pytest.raises(KxError):
        D.count_vocab(tmp_path / "missing.txt")
    with pytest.raises(KxError):
        D.count_vocab(tmp_path)  # a directory
    p = tmp_path / "bad.gz"
    p.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(KxError):
        D.count_vocab(p)


# ---------------------------------------------------------------------------------------------
# PIP loss


def test_pmi_matrix_by_hand():
    c = np.array([[0, 2, 1], [2, 0, 1], [1, 1, 0]])
    m = D.pmi_matrix(c)
    # row sums 3, 3, 2; total 8: PMI(0,1) = ln(2*8/(3*3)), PMI(0,2) = ln(1*8/(3*2))
    assert m[0, 1] == pytest.approx(math.log(16 / 9), rel=1e-6)
    assert m[0, 2] == pytest.approx(math.log(8 / 6), rel=1e-6)
    assert m[0, 0] == 0.0 and m[2, 2] == 0.0  # unseen pairs are 0
    assert np.allclose(m, m.T)


def test_top_eigs_matches_dense():
    rng = np.random.default_rng(1)
    n = 1600  # above the dense cut-off: the randomised path
    q, _ = np.linalg.qr(rng.standard_normal((n, 8)))
    vals = np.array([50, -40, 30, 25, -20, 15, 12, 10.0])
    a = (q * vals) @ q.T + 0.01 * rng.standard_normal((n, n))
    a = ((a + a.T) / 2).astype(np.float32)
    w, u = D._top_eigs(a, 8, vectors=True, rng=rng)
    assert np.allclose(w, vals, atol=0.1)
    assert np.allclose(np.abs(np.sum(u * q.astype(np.float32), axis=0)), 1, atol=1e-3)


def test_pip_loss_curve_noise_free():
    # without noise the loss falls to ~0 at the true rank
    s = np.array([10.0, 8.0, 5.0, 3.0])
    loss = D.pip_loss_curve(s, 1e-9, 60, alpha=0.5)
    assert len(loss) == 4 and loss[-1] < 0.02  # float32 arithmetic
    assert np.all(np.diff(loss) < 0)
    # k = 0 would be ||E E^T|| = sqrt(sum s^2); k = 1 leaves sqrt(8^2 + 5^2 + 3^2)
    assert loss[0] == pytest.approx(math.sqrt(64 + 25 + 9), rel=1e-3)


def _topic_corpus(path, vocab, rank, tokens, seed=0, line_len=50):
    """Lines drawn from a log-linear model P(w | c) ~ exp(b_w + v_w . c), c ~ N(0, I) per
    line, v_w in R^rank: the PMI of two words is about v_w . v_w' (Arora et al. 2016), a
    matrix of rank ``rank``."""
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((vocab, rank)) / math.sqrt(rank)
    base = -np.log(np.arange(1, vocab + 1))
    lines = []
    for _ in range(tokens // line_len):
        logit = base + vecs @ rng.standard_normal(rank)
        p = np.exp(logit - logit.max())
        p /= p.sum()
        lines.append(" ".join(f"w{i}" for i in rng.choice(vocab, size=line_len, p=p)))
    path.write_text("\n".join(lines) + "\n")


def test_pip_finds_planted_rank(tmp_path):
    p = tmp_path / "topic.txt"
    _topic_corpus(p, vocab=300, rank=6, tokens=300_000)
    calls = []
    res = D.pip_dimension(p, top=300, progress=lambda *a: calls.append(a[0]))
    assert res.vocab == 300 and res.tokens == 300_000
    assert 5 <= res.dim <= 9, (res.dim, res.spectrum[:12])
    assert res.pip_loss[res.dim - 1] == min(res.pip_loss)
    assert len(res.pip_loss) == res.rank
    assert res.sigma > 0 and res.threshold == pytest.approx(2 * res.sigma * math.sqrt(300))
    assert {"reading corpus", "co-occurrence"} <= set(calls)
    d = res.as_dict()
    assert d["method"] == "pip" and d["dim"] == res.dim
    assert d["at_max_dim"] is False
    # a curve cut short where it still falls: its minimum sits at the edge, and says so
    cut = D.pip_dimension(p, top=300, max_dim=2)
    assert cut.dim == 2 and len(cut.pip_loss) == 2 and cut.at_max_dim
    for bad in (0, -3):
        with pytest.raises(KxError, match="--max-dim must be at least 1"):
            D.pip_dimension(p, top=300, max_dim=bad)


def test_pip_cooccurrence_counts(tmp_path, monkeypatch):
    # window 1: the pairs are neighbours within a line; halves are even/odd lines
    import types

    p = tmp_path / "t.txt"
    p.write_text("a B a\nb A\n")
    rec = {}

    def fake(h1, h2, **kw):
        rec["h1"], rec["h2"] = h1.copy(), h2.copy()
        return types.SimpleNamespace(seconds={})

    monkeypatch.setattr(D, "pip_from_counts", fake)
    D.pip_dimension(p, window=1)
    # vocabulary by frequency: a (3), b (2); line 1 (half 1): a-b, b-a; line 2 (half 2): b-a
    assert (rec["h1"] + rec["h1"].T).tolist() == [[0, 2], [2, 0]]
    assert (rec["h2"] + rec["h2"].T).tolist() == [[0, 1], [1, 0]]


def test_symmetrize_inplace():
    rng = np.random.default_rng(0)
    c = rng.integers(0, 9, size=(37, 37)).astype(np.int32)
    want = c + c.T
    D._symmetrize_inplace(c, tile=8)
    assert np.array_equal(c, want)
    assert not D.pmi_matrix(np.zeros((4, 4), dtype=np.int32)).any()


def test_pip_errors(tmp_path):
    p = tmp_path / "e.txt"
    p.write_text("\n\n")
    with pytest.raises(KxError):
        D.pip_dimension(p)
    with pytest.raises(KxError):
        D.pip_dimension(tmp_path / "missing.txt")
    q = tmp_path / "one.txt"
    q.write_text("same same same\n")
    with pytest.raises(KxError):
        D.pip_dimension(q)
    with pytest.raises(KxError):
        D.pip_dimension(q, window=0)
    one_line = tmp_path / "line.txt"
    one_line.write_text("a b c a b c\n")  # nothing in the second half
    with pytest.raises(KxError, match="halves"):
        D.pip_dimension(one_line)
