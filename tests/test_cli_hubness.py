"""`kxtool hubness` through CliRunner and a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from kxtool.cli import app
from kxtool.hubness import k_occurrence
from kxtool.knn import topk

runner = CliRunner()

BOX = set("─│┌┐└┘├┤┬┴┼━┃╭╮╰╯█")


@pytest.fixture(scope="module")
def npy(tmp_path_factory):
    x = np.random.default_rng(0).standard_normal((400, 40)).astype(np.float32)
    p = tmp_path_factory.mktemp("h") / "x.npy"
    np.save(p, x)
    return str(p), x


@pytest.fixture(scope="module")
def w2v(tmp_path_factory):
    rng = np.random.default_rng(1)
    words = [f"w{i}" for i in range(60)]
    m = rng.standard_normal((60, 8))
    p = tmp_path_factory.mktemp("v") / "vecs.txt"
    lines = ["60 8"] + [
        w + " " + " ".join(f"{v:.5f}" for v in row) for w, row in zip(words, m, strict=True)
    ]
    p.write_text("\n".join(lines) + "\n")
    return str(p), words


def run(*args, input=None):
    return runner.invoke(app, ["hubness", *args], input=input)


def test_help_of_group_report_and_sample():
    for args in (["--help"], ["report", "--help"], ["sample", "--help"], ["-h"]):
        r = run(*args)
        assert r.exit_code == 0, r.output
        assert "Example" in r.output
    assert "sample" in run("--help").output


def test_plain_report(npy):
    path, x = npy
    r = run(path, "-k", "5", "--top", "3")
    assert r.exit_code == 0, r.output
    out = r.stdout
    for needle in (
        "k-skewness",
        "Robin Hood",
        "Gini",
        "Atkinson",
        "groupie ratio",
        "Spearman",
        "top hubs",
        "antihubs (N_k = 0)",
        "k-occurrence histogram",
    ):
        assert needle in out
    assert not BOX & set(out)  # piped output stays plain


def test_json_and_explicit_report_subcommand(npy):
    path, x = npy
    r = run("report", path, "-k", "5", "--metric", "euclidean", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["n"] == 400 and d["k"] == 5 and d["approximate"] is False
    idx, _ = topk(x, k=5, metric="euclidean")
    nk = k_occurrence(idx, 400)
    assert d["measures"]["max_occurrence"] == nk.max()
    assert d["top_hubs"][0]["row"] == int(np.lexsort((np.arange(400), -nk))[0])
    assert d["top_hubs"][0]["word"] is None
    assert sum(b["count"] for b in d["histogram"]) == 400
    assert d["measures"]["antihubs"] == int((nk == 0).sum())


def test_stdin_numbers_and_errors():
    x = np.random.default_rng(2).standard_normal((50, 6))
    text = "\n".join(" ".join(f"{v:.6f}" for v in row) for row in x) + "\n"
    r = run("-", "-k", "3", "--json", input=text)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["n"] == 50
    r = run("-", input="1 2 3\n4 5 6\n7 oops 9\n")
    assert r.exit_code == 1 and "line 3" in r.stderr and "'oops'" in r.stderr
    r = run("-", input="1 2 3\n4 5\n")
    assert r.exit_code == 1 and "line 2" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_usage_and_input_errors(npy, tmp_path):
    path, _ = npy
    r = run(path, "-k", "400")
    assert r.exit_code == 1 and "k=400" in r.stderr
    assert run(path, "--metric", "manhattan").exit_code == 2
    assert run(path, "--reduce", "nope").exit_code == 2
    assert run(path, "--memory", "lots").exit_code == 2
    r = run(str(tmp_path / "missing.npy"))
    assert r.exit_code == 1 and "missing.npy" in r.stderr
    r = run(str(tmp_path / "missing.txt"))
    assert r.exit_code == 1 and "missing.txt" in r.stderr


def test_vectors_file_words_and_neighbors(w2v, tmp_path):
    path, words = w2v
    out = tmp_path / "nn.tsv"
    r = run(path, "-k", "4", "--neighbors", str(out), "--json", "--limit", "50")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["n"] == 50 and d["top_hubs"][0]["word"] in words
    lines = out.read_text().splitlines()
    assert len(lines) == 50
    first = lines[0].split("\t")
    assert first[0] == "w0" and len(first) == 5 and "w0" not in first[1:]
    # the same lists as the library gives
    from kxtool.vectors import load_vectors

    v = load_vectors(path, limit=50)
    idx, _ = topk(np.asarray(v.matrix), k=4)
    assert first[1:] == [words[j] for j in idx[0]]
    r = run(
        path,
        "--sample",
        "20",
        "--seed",
        "3",
        "-k",
        "3",
        "--neighbors",
        str(tmp_path / "nn.npy"),
        "--json",
    )
    assert r.exit_code == 0, r.output
    arr = np.load(tmp_path / "nn.npy")
    assert arr.shape == (20, 3) and arr.dtype == np.int64 and arr.max() < 60


@pytest.mark.parametrize("method", ["mp", "mp-gauss", "ls", "nicdm", "dsl", "csls"])
def test_reduce_methods(npy, method, tmp_path):
    path, _ = npy
    nn = tmp_path / "r.tsv"
    r = run(
        path, "-k", "5", "--reduce", method, "--candidates", "30", "--json", "--neighbors", str(nn)
    )
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    red = d["reduction"]
    assert red["method"] == method and red["candidates"] == 30
    assert sum(b["count"] for b in red["histogram"]) == 400
    assert len(nn.read_text().splitlines()) == 400
    r = run(path, "-k", "5", "--reduce", method, "--candidates", "30")
    assert f"after {method}" in r.stdout


def test_reduction_that_raises_hubness_is_a_warning(tmp_path):
    # the first 5,000 shipped GloVe words: DisSim local with cosine raises the k-skewness
    from kxtool.vectors import default_vectors

    p = tmp_path / "glove.npy"
    np.save(p, np.asarray(default_vectors().matrix[:5000], dtype=np.float32))
    r = run(str(p), "--reduce", "dsl", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    before = d["measures"]["k_skewness"]
    after = d["reduction"]["measures"]["k_skewness"]
    assert after > before
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("kxtool: warning:")]
    assert len(lines) == 1
    assert f"raised the k-skewness from {before:.3f} to {after:.3f}" in lines[0]
    r = run(str(p), "--reduce", "csls", "--json")
    assert r.exit_code == 0 and "warning" not in r.stderr


def test_sample_subcommand(tmp_path):
    out = tmp_path / "z.npy"
    r = run(
        "sample",
        "--dim",
        "16",
        "--count",
        "25",
        "-k",
        "5",
        "--min-occurrence",
        "10",
        "--batch-size",
        "400",
        "--seed",
        "2",
        "-o",
        str(out),
        "--json",
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["rows"] == 25
    z = np.load(out)
    assert z.shape == (25, 16) and z.dtype == np.float32
    r = run(
        "sample",
        "--dim",
        "16",
        "--count",
        "5",
        "--min-occurrence",
        "500",
        "--batch-size",
        "400",
        "-o",
        str(tmp_path / "y.npy"),
    )
    assert r.exit_code == 1 and "impossible" in r.stderr
    assert not (tmp_path / "y.npy").exists()
    r = run("sample", "--dim", "4", "--count", "5", "--min-occurrence", "5", "-o", "z.txt")
    assert r.exit_code == 2


def test_approx_labelled(npy):
    pytest.importorskip("faiss")
    path, _ = npy
    r = run(path, "-k", "5", "--approx", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["approximate"] is True
    r = run(path, "-k", "5", "--approx")
    assert "APPROXIMATE" in r.stdout and "~" in r.stdout


def test_subprocess_pipe_and_head(npy):
    path, _ = npy
    env = {k: v for k, v in os.environ.items() if k != "KXTOOL_DEBUG"}
    x = np.random.default_rng(5).standard_normal((30, 4))
    text = "\n".join(" ".join(map(str, row)) for row in x)
    p = subprocess.run(
        [sys.executable, "-m", "kxtool", "hubness", "-", "-k", "2", "--json"],
        input=text.encode(),
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["n"] == 30
    p = subprocess.run(
        f"{sys.executable} -m kxtool hubness {path} -k 3 | head -n 1",
        shell=True,
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert p.stdout.decode().startswith("hubness of") and p.stderr == b""
