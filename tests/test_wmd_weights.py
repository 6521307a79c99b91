"""Word weights (idf, sif) against their formulas, the bounds with weights, search with weights
against brute force, Chinese out-of-vocabulary backoff, mixed-script text, the stopword lists,
jieba's cache and ``--cross --matrix``."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter
from importlib import resources

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog
from typer.testing import CliRunner

from kxtool.cli import app
from kxtool.errors import KxError, KxWarning
from kxtool.text import Tokenizer, default_stopwords
from kxtool.vectors import Vectors, load_vectors
from kxtool.wmd import (
    DocSpace,
    Weighting,
    WmdStats,
    wmd_cross,
    wmd_pairs,
    wmd_search,
)
from kxtool.wmd.weights import read_counts

VOCAB = [f"w{i}" for i in range(40)]


def make_vectors(seed: int = 0, n: int = 40, dim: int = 5) -> Vectors:
    rng = np.random.default_rng(seed)
    return Vectors([f"w{i}" for i in range(n)], rng.normal(size=(n, dim)).astype(np.float32))


VEC = make_vectors()


def lp(a: np.ndarray, b: np.ndarray, M: np.ndarray) -> float:
    n1, n2 = M.shape
    A = np.zeros((n1 + n2, n1 * n2))
    for i in range(n1):
        A[i, i * n2 : (i + 1) * n2] = 1
    for j in range(n2):
        A[n1 + j, j::n2] = 1
    res = linprog(M.ravel(), A_eq=A, b_eq=np.concatenate([a, b]), bounds=(0, None),
                  method="highs")
    assert res.status == 0
    return float(res.fun)


def direct_weights(docs: list[list[str]], scheme: str, a: float = 1e-3) -> dict[str, float]:
    """The weights straight from their formulas, over the documents ``docs``."""
    words = {w for d in docs for w in d}
    if scheme == "idf":
        n = len(docs)
        return {w: math.log((1 + n) / (1 + sum(w in d for d in docs))) + 1 for w in words}
    if scheme == "sif":
        total = sum(len(d) for d in docs)
        cnt = Counter(w for d in docs for w in d)
        return {w: a / (a + cnt[w] / total) for w in words}
    return {w: 1.0 for w in words}


def direct(x: list[str], y: list[str], vec: Vectors, metric: str, wt: dict[str, float]) -> float:
    """WMD, WRD, WCD or RWMD of two weighted documents, from the definitions."""
    cx, cy = Counter(x), Counter(y)
    wx, wy = sorted(cx), sorted(cy)
    X = np.array([vec[w] for w in wx], dtype=np.float64)
    Y = np.array([vec[w] for w in wy], dtype=np.float64)
    a = np.array([cx[w] * wt[w] for w in wx])
    b = np.array([cy[w] * wt[w] for w in wy])
    if metric == "wrd":  # Yokoi et al.: the weight multiplies the norm
        nx, ny = np.linalg.norm(X, axis=1), np.linalg.norm(Y, axis=1)
        a, b = a * nx, b * ny
        M = 1 - (X / nx[:, None]) @ (Y / ny[:, None]).T
        M[np.array(wx)[:, None] == np.array(wy)[None, :]] = 0.0
    else:
        M = np.linalg.norm(X[:, None] - Y[None, :], axis=2)
    a, b = a / a.sum(), b / b.sum()
    if metric == "wcd":
        return float(np.linalg.norm(a @ X - b @ Y))
    if metric == "rwmd":
        return max(float(a @ M.min(axis=1)), float(b @ M.min(axis=0)))
    return lp(a, b, M)


def random_docs(rng: np.random.Generator, n: int, hi: int = 12) -> list[list[str]]:
    return [list(rng.choice(VOCAB, size=int(rng.integers(1, hi)))) for _ in range(n)]


@pytest.mark.parametrize("scheme", ["none", "idf", "sif"])
@pytest.mark.parametrize("metric", ["wmd", "wrd", "wcd", "rwmd"])
def test_weights_match_their_formulas(scheme, metric):
    rng = np.random.default_rng(3)
    docs = random_docs(rng, 8)
    wt = direct_weights(docs, scheme)
    got = wmd_cross(docs, None, VEC, metric=metric, weights=scheme)
    for i in range(len(docs)):
        for j in range(i + 1, len(docs)):
            assert got[i, j] == pytest.approx(direct(docs[i], docs[j], VEC, metric, wt),
                                              abs=1e-6)


def test_sif_constant_and_paired_mode_counts_both_sides():
    rng = np.random.default_rng(5)
    A, B = random_docs(rng, 6), random_docs(rng, 6)
    wt = direct_weights(A + B, "sif", a=0.05)
    got = list(wmd_pairs(A, B, VEC, weights=Weighting("sif", sif_a=0.05)))
    want = [direct(x, y, VEC, "wmd", wt) for x, y in zip(A, B, strict=True)]
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert list(wmd_pairs(A, B, VEC, weights="sif", jobs=2, chunk_size=2)) == pytest.approx(
        list(wmd_pairs(A, B, VEC, weights="sif")), abs=1e-12
    )


def test_frequency_files(tmp_path):
    freq = tmp_path / "counts.txt"
    freq.write_text("word count\nW1 30\nw2 10\nunknown 60\n", encoding="utf-8")
    counts, total, _ = read_counts(freq, VEC)
    assert total == 100 and counts[1] == 30 and counts[2] == 10
    sp = DocSpace(VEC, weights=Weighting("sif", sif_a=0.1, frequencies=str(freq)))
    assert sp.weights.values[1] == pytest.approx(0.1 / (0.1 + 0.3))
    assert sp.weights.values[5] == 1.0  # not in the file: p = 0
    df = tmp_path / "df.txt"
    df.write_text("<documents> 9\nw1 9\nw2 1\n", encoding="utf-8")
    sp = DocSpace(VEC, weights=Weighting("idf", doc_frequencies=str(df)))
    assert sp.weights.values[1] == pytest.approx(1.0)
    assert sp.weights.values[2] == pytest.approx(math.log(10 / 2) + 1)
    bad = tmp_path / "bad.txt"
    bad.write_text("w1 3\n", encoding="utf-8")
    with pytest.raises(KxError, match="<documents> N"):
        DocSpace(VEC, weights=Weighting("idf", doc_frequencies=str(bad)))
    bad.write_text("w1 3\nw2 many\n", encoding="utf-8")
    with pytest.raises(KxError, match="bad.txt:2"):
        DocSpace(VEC, weights=Weighting("sif", frequencies=str(bad)))
    with pytest.raises(KxError, match="nope"):
        DocSpace(VEC, weights=Weighting("sif", frequencies=str(tmp_path / "nope")))
    with pytest.raises(KxError, match="unknown weighting"):
        Weighting("tfidf")


docs_strategy = st.lists(st.sampled_from(VOCAB[:15]), min_size=1, max_size=8)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(docs_strategy, min_size=2, max_size=5), st.sampled_from(["idf", "sif"]),
       st.sampled_from(["wmd", "wrd"]))
def test_bounds_hold_with_weights(docs, scheme, metric):
    exact = wmd_cross(docs, None, VEC, metric=metric, weights=scheme)
    for bound in ("wcd", "rwmd"):
        if metric == "wrd":
            sp = DocSpace(VEC, "cosine", weights=scheme)
            sp.fit_weights(docs)
            ds = [sp.doc(d) for d in docs]
            low = np.array([[getattr(sp, bound)(x, y) for y in ds] for x in ds])
        else:
            low = wmd_cross(docs, None, VEC, metric=bound, weights=scheme)
        assert (low <= exact + 1e-9).all()


@pytest.mark.parametrize("metric", ["wmd", "wrd", "rwmd", "wcd"])
@pytest.mark.parametrize("scheme", ["idf", "sif"])
def test_top_with_weights_equals_brute_force(metric, scheme):
    rng = np.random.default_rng(11)
    Q, C = random_docs(rng, 6), random_docs(rng, 40)
    got = wmd_search(Q, C, VEC, k=4, metric=metric, weights=scheme)
    # brute force: the corpus's weights, every distance, sorted by (distance, index)
    sp = DocSpace(VEC, "cosine" if metric == "wrd" else "euclid", weights=scheme)
    fitted = sp.fit_weights(C)
    D = wmd_cross(Q, C, VEC, metric=metric, weights=fitted)
    for g, row in zip(got, D, strict=True):
        order = np.lexsort((np.arange(len(row)), row))[:4]
        assert [j for j, _ in g] == order.tolist()
        np.testing.assert_allclose([d for _, d in g], row[order], rtol=1e-9, atol=1e-12)
    assert wmd_search(Q, C, VEC, k=4, metric=metric, weights=scheme, jobs=2) == got


# -- Chinese out-of-vocabulary backoff ------------------------------------------------------------


@pytest.fixture
def zh_vectors(tmp_path):
    words = ["今天", "天气", "很", "好", "天", "不错", "下雨"]
    rng = np.random.default_rng(2)
    M = np.round(rng.normal(size=(len(words), 4)), 4)
    path = tmp_path / "zh.txt"
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"{len(words)} 4\n")
        for w, row in zip(words, M, strict=True):
            f.write(w + " " + " ".join(f"{x:.4f}" for x in row) + "\n")
    return str(path), load_vectors(str(path))


def test_backoff_present_pieces_absent(zh_vectors):
    _, vec = zh_vectors
    sp = DocSpace(vec)
    # present: used as it is
    d = sp.doc(["天气"])
    assert sp.stats.backoff_tokens == 0 and sp.stats.oov_tokens == 0 and len(d.rows) == 1
    # absent, its pieces present: 今天 and 天气 share its count
    d = sp.doc(["今天天气", "好"])
    assert sp.stats.backoff_tokens == 1 and dict(sp.stats.backoff_words) == {"今天天气": 1}
    assert sorted(vec.words[int(r)] for r in d.rows) == ["今天", "天气", "好"]
    np.testing.assert_allclose(sorted(d.w), [0.25, 0.25, 0.5])
    assert sp.exact(d, sp.doc(["今天", "天气", "好", "好"])) == pytest.approx(0.0, abs=1e-12)
    # longest pieces first, then single characters (天), unknown characters skipped
    assert [vec.words[i] for i in sp.pieces("天气天鑫")] == ["天气", "天"]
    # absent entirely: dropped as before
    d = sp.doc(["鑫鑫", "好"])
    assert sp.stats.oov_tokens == 1 and sp.stats.oov_words["鑫鑫"] == 1 and len(d.rows) == 1
    # not for other scripts, and not when switched off
    assert DocSpace(vec, backoff=False).doc(["今天天气"]).empty


def test_backoff_through_jieba_and_cli(zh_vectors):
    path, vec = zh_vectors
    # jieba cuts 今天天气 as one word, which these vectors lack
    assert "今天天气" in Tokenizer(stopwords="none")("今天天气很好")
    r = CliRunner().invoke(app, ["wmd", "-t", "今天天气很好", "今天天气不错", "--vectors", path,
                                 "-v", "--weights", "none"])
    assert r.exit_code == 0, r.output
    assert "backed off" in r.stderr and "今天天气 (2) -> 今天 天气" in r.stderr
    assert float(r.stdout) > 0


# -- mixed script with the built-in vectors -------------------------------------------------------


def test_mixed_script_warns_when_most_words_are_known():
    vec = Vectors(["hello", "friend", "dear", "今天天气"], np.eye(4, dtype=np.float32))
    vec.is_default = True
    sp = DocSpace(vec, tokenizer=Tokenizer(stopwords="none"))
    with pytest.warns(KxWarning, match="mixes Chinese"):
        d = sp.doc("hello 世界 dear friend")
    assert len(d.rows) == 3 and sp.stats.mixed_texts == 1
    with pytest.raises(KxError, match="--vectors"):
        sp.doc("今天天气很好 hello")  # mostly Chinese: an error as before


# -- stopword lists -------------------------------------------------------------------------------


def test_stopword_lists_load_are_applied_and_have_a_source():
    data = resources.files("kxtool").joinpath("data")
    readme = data.joinpath("stopwords.README.md").read_text("utf-8")
    assert "spaCy" in readme and "Stopwords ISO" in readme and readme.count("MIT") >= 2
    for lang in ("en", "zh"):
        head = data.joinpath(f"stopwords_{lang}.txt").read_text("utf-8").splitlines()[0]
        assert head.startswith("#") and "licence" in " ".join(
            data.joinpath(f"stopwords_{lang}.txt").read_text("utf-8").splitlines()[:4]
        )
    sw = default_stopwords()
    assert len(sw) > 1000  # 299 English + 787 Chinese
    assert {"the", "whereas", "'ll", "的", "我们"} <= sw
    assert not {"not", "no", "never", "n't", "不", "没有", "好"} & sw  # judgement is kept
    assert Tokenizer()("The cat would never sit whereas the dog did") == [
        "cat", "never", "sit", "dog",
    ]
    zh = Tokenizer()("我们今天不好")
    assert "我们" not in zh and "不" in "".join(zh)


# -- jieba's cache --------------------------------------------------------------------------------


def test_jieba_cache_in_kxtool_cache_dir(tmp_path):
    env = dict(os.environ, KXTOOL_CACHE_DIR=str(tmp_path / "cache"), TMPDIR=str(tmp_path / "t"))
    os.makedirs(tmp_path / "t")
    code = "from kxtool.text import Tokenizer; print(Tokenizer()('今天天气很好'))"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
    assert (tmp_path / "cache" / "jieba.cache").is_file()
    assert not (tmp_path / "t" / "jieba.cache").exists()


# -- the CLI --------------------------------------------------------------------------------------


@pytest.fixture
def files(tmp_path):
    vec_path = tmp_path / "v.txt"
    with open(vec_path, "w", encoding="utf-8") as f:
        f.write(f"{len(VOCAB)} 5\n")
        for w in VOCAB:
            f.write(w + " " + " ".join(f"{x:.6f}" for x in VEC[w]) + "\n")
    rng = np.random.default_rng(8)
    A, B = random_docs(rng, 5), random_docs(rng, 5)
    pa, pb = tmp_path / "a.txt", tmp_path / "b.txt"
    pa.write_text("".join(" ".join(d) + "\n" for d in A), encoding="utf-8")
    pb.write_text("".join(" ".join(d) + "\n" for d in B), encoding="utf-8")
    return str(vec_path), str(pa), str(pb), A, B, load_vectors(str(vec_path))


def run(*args, input=None):
    return CliRunner().invoke(app, list(args), input=input)


def test_cli_weights_paired_files_and_stdin(files):
    vp, pa, pb, A, B, vec = files
    want = list(wmd_pairs(A, B, vec, weights="idf", metric="wrd"))
    r = run("wmd", pa, pb, "--vectors", vp, "--weights", "idf", "--metric", "wrd")
    assert r.exit_code == 0, r.output
    np.testing.assert_allclose([float(x) for x in r.stdout.split()], want, atol=2e-6)
    with open(pb, encoding="utf-8") as f:
        r = run("wmd", pa, "-", "--vectors", vp, "--weights", "idf", "--metric", "wrd",
                input=f.read())
    assert r.exit_code == 0, r.output
    np.testing.assert_allclose([float(x) for x in r.stdout.split()], want, atol=2e-6)
    r = run("wmd", pa, pb, "--vectors", vp, "--frequencies", pa, "--weights", "idf")
    assert r.exit_code == 2 and "--weights sif" in r.output
    r = run("wmd", pa, pb, "--vectors", vp, "--sif-a", "0")
    assert r.exit_code == 2


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cli_cross_matrix(files, tmp_path, dtype):
    vp, pa, pb, A, B, vec = files
    out = tmp_path / "m.npy"
    r = run("wmd", "--cross", pa, pb, "--vectors", vp, "--matrix", str(out), "--matrix-dtype",
            dtype, "--json")
    assert r.exit_code == 0, r.output
    M = np.load(out, mmap_mode="r")
    assert M.dtype == np.dtype(dtype) and M.shape == (5, 5)
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    got = np.array([x["distance"] for x in rows]).reshape(5, 5)
    np.testing.assert_allclose(M, got, rtol=1e-6 if dtype == "float32" else 1e-15)
    want = wmd_cross(A, B, vec, weights=Weighting("sif", frequencies="rank"))
    np.testing.assert_allclose(got, want, atol=1e-9)
    r = run("wmd", pa, pb, "--vectors", vp, "--matrix", str(out))
    assert r.exit_code == 2 and "--cross" in r.output


def test_cli_help_names_the_default_weights():
    r = run("wmd", "--help")
    assert "--weights" in r.output and "default sif" in r.output.replace("\n", " ")


def test_cli_default_is_sif_over_the_vectors_order(files):
    from kxtool.wmd.weights import rank_sif_weights

    vp, pa, pb, A, B, vec = files
    r = run("wmd", pa, pb, "--vectors", vp)
    assert r.exit_code == 0, r.output
    want = list(wmd_pairs(A, B, vec, weights=rank_sif_weights(vec)))
    np.testing.assert_allclose([float(x) for x in r.stdout.split()], want, atol=2e-6)
    # by hand: p(w) = 1 / ((r + 1) (ln n + 0.5772)), weight a / (a + p)
    n = len(vec)
    p = 1 / ((np.arange(n) + 1) * (math.log(n) + 0.5772))
    np.testing.assert_allclose(rank_sif_weights(vec).values, 1e-3 / (1e-3 + p))
    r = run("wmd", pa, pb, "--vectors", vp, "--frequencies", "texts")
    want = list(wmd_pairs(A, B, vec, weights="sif"))
    np.testing.assert_allclose([float(x) for x in r.stdout.split()], want, atol=2e-6)


def test_stats_merge_backoff():
    a, b = WmdStats(backoff_tokens=2), WmdStats(backoff_tokens=3, mixed_texts=1)
    a.merge(b)
    assert (a.backoff_tokens, a.mixed_texts) == (5, 1)


def test_cli_matrix_left_out_on_error(tmp_path):
    # the built-in English vectors refuse Chinese text: no matrix, no temporary file left
    a = tmp_path / "zh.txt"
    a.write_text("今天天气很好\n下雨了\n", encoding="utf-8")
    out = tmp_path / "out" / "m.npy"
    out.parent.mkdir()
    r = run("wmd", "--cross", str(a), str(a), "--matrix", str(out))
    assert r.exit_code == 1 and "--vectors" in r.output
    assert list(out.parent.iterdir()) == []
    r = run("wmd", "--cross", str(a), str(a), "--matrix", "-")
    assert r.exit_code == 2
