"""`kxtool wmd` through CliRunner and a real subprocess (pipes, exit codes)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from kxtool.cli import app
from kxtool.vectors import Vectors
from kxtool.wmd import wmd, wmd_search, wrd

WORDS = (
    "cat dog mouse king queen man woman president press media obama speaks greets illinois"
    " chicago 今天天气 很 好 不错 下雨"
).split()


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A small word2vec text file, two text files, and a private vectors cache."""
    monkeypatch.setenv("KXTOOL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("KXTOOL_VECTORS", raising=False)
    rng = np.random.default_rng(0)
    M = rng.normal(size=(len(WORDS), 5)).astype(np.float32)
    M = np.round(M, 4)
    path = tmp_path / "v.txt"
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"{len(WORDS)} 5\n")
        for w, row in zip(WORDS, M, strict=True):
            f.write(w + " " + " ".join(f"{x:.4f}" for x in row) + "\n")
    a = tmp_path / "a.txt"
    b = tmp_path / "b.txt"
    a.write_text(
        "the cat and the dog\nking and queen\nzzz qqq\nObama speaks to the media in Illinois\n",
        encoding="utf-8",
    )
    b.write_text(
        "a mouse\nman woman\nthe king\nThe president greets the press in Chicago\n",
        encoding="utf-8",
    )

    class Env:
        vectors = str(path)
        vec = Vectors(WORDS, M)
        A = str(a)
        B = str(b)
        tmp = tmp_path

    return Env


runner = CliRunner()


def run(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input)


def test_paired(env):
    r = run("wmd", env.A, env.B, "--vectors", env.vectors, "--weights", "none")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert len(lines) == 4
    assert lines[2] == "nan"
    assert float(lines[0]) == pytest.approx(wmd("cat dog", "mouse", env.vec), abs=1e-6)
    assert "1 of 8 texts has no word found in the vectors: 1 score is nan" in r.stderr


def test_paired_json_similarity(env):
    r = run("wmd", env.A, env.B, "--vectors", env.vectors, "--metric", "wrd", "--similarity",
            "--json", "--weights", "none")
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["line"] for x in rows] == [1, 2, 3, 4]
    assert rows[2]["similarity"] is None
    assert rows[1]["similarity"] == pytest.approx(1 - wrd("king queen", "man woman", env.vec))


def test_stdin_and_length_mismatch(env):
    r = run("wmd", "-", env.B, "--vectors", env.vectors, "--weights", "none",
            input="cat\ndog\n")
    assert r.exit_code == 1
    assert r.stdout.splitlines() == [
        f"{wmd('cat', 'mouse', env.vec):.6f}", f"{wmd('dog', 'man woman', env.vec):.6f}",
    ]
    assert "'<stdin>' has 2 lines but" in r.stderr
    assert "b.txt' has more" in r.stderr


def test_text_mode(env):
    r = run("wmd", "-t", "今天天气很好", "今天天气不错", "--vectors", env.vectors,
            "--weights", "none")
    assert r.exit_code == 0, r.output
    assert float(r.stdout) == pytest.approx(
        wmd(["今天天气", "好"], ["今天天气", "不错"], env.vec), abs=1e-6  # 很 is a stopword
    )
    r = run("wmd", "-t", "The cat!", "a dog?", "--vectors", env.vectors, "--json", "-v")
    obj = json.loads(r.stdout)
    assert obj["tokens"] == [["cat"], ["dog"]]
    assert "A: cat" in r.stderr


def test_chinese_with_default_vectors_is_an_error(env, monkeypatch):
    import kxtool.vectors as vmod

    fake = Vectors(list(env.vec.words), env.vec.matrix)
    fake.is_default = True
    monkeypatch.setattr(vmod, "resolve_vectors", lambda path, **kw: fake)
    r = run("wmd", "-t", "今天天气很好", "今天天气不错")
    assert r.exit_code == 1
    assert "--vectors" in r.stderr and "KXTOOL_VECTORS" in r.stderr


def test_cross(env):
    r = run("wmd", "--cross", env.A, env.B, "--vectors", env.vectors, "--weights", "none")
    assert r.exit_code == 0, r.output
    rows = [x.split("\t") for x in r.stdout.splitlines()]
    assert len(rows) == 16
    assert rows[1][:2] == ["1", "2"]
    assert float(rows[1][2]) == pytest.approx(wmd("cat dog", "man woman", env.vec), abs=1e-6)
    assert [x[2] for x in rows if x[0] == "3"] == ["nan"] * 4
    r2 = run("wmd", "--cross", env.A, env.B, "--vectors", env.vectors, "-j", "2",
             "--weights", "none")
    assert r2.stdout == r.stdout


def test_top(env):
    r = run("wmd", "--top", "2", env.A, env.B, "--vectors", env.vectors, "--json")
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    A = env.tmp.joinpath("a.txt").read_text().splitlines()
    B = env.tmp.joinpath("b.txt").read_text().splitlines()
    want = wmd_search(A, B, env.vec, k=2, prune=False)
    assert [[n["line"] - 1 for n in row["neighbors"]] for row in rows] == [
        [j for j, _ in w] for w in want
    ]
    assert rows[2]["neighbors"] == []
    r = run("wmd", "-k", "1", env.A, env.A, "--vectors", env.vectors)
    lines = r.stdout.splitlines()
    assert lines[0] == "1\t1\t0.000000"
    r = run("wmd", "-k", "1", "--exclude-self", env.A, env.A, "--vectors", env.vectors)
    assert r.exit_code == 0, r.output
    firsts = [x.split("\t") for x in r.stdout.splitlines()]
    assert firsts and all(i != j for i, j, _ in firsts)
    assert run("wmd", "--exclude-self", env.A, env.B, "--vectors", env.vectors).exit_code == 2


def test_usage_errors(env):
    for args in (
        ["--metric", "cosine"],
        ["--lang", "fr"],
        ["--similarity"],
        ["--cross", "--top", "3"],
        ["--top", "0"],
        ["--reg", "0", "--metric", "sinkhorn"],
    ):
        r = run("wmd", env.A, env.B, "--vectors", env.vectors, *args)
        assert r.exit_code == 2, args
    r = run("wmd", "-", "-", "--vectors", env.vectors)
    assert r.exit_code == 1
    r = run("wmd", env.A, "/nonexistent", "--vectors", env.vectors)
    assert r.exit_code == 1 and "nonexistent" in r.stderr


def test_options_reach_the_tokenizer(env, tmp_path):
    stop = tmp_path / "stop.txt"
    stop.write_text("cat\n", encoding="utf-8")
    r = run("wmd", "-t", "cat dog", "dog", "--vectors", env.vectors, "--stopwords", str(stop))
    assert float(r.stdout) == 0.0
    r = run("wmd", "-t", "Cat", "cat", "--vectors", env.vectors, "--keep-case")
    assert r.stdout.strip() == "nan"
    r = run("wmd", "-t", "cat", "cat", "--vectors", env.vectors, "--metric", "sinkhorn")
    assert r.exit_code == 0 and math.isfinite(float(r.stdout))


def test_help_has_examples():
    r = run("wmd", "--help")
    assert r.exit_code == 0
    assert "kxtool wmd -t" in r.stdout and "--top" in r.stdout


def test_subprocess_pipe(env):
    cmd = [sys.executable, "-m", "kxtool", "wmd", "-", env.B, "--vectors", env.vectors]
    p = subprocess.run(
        cmd, input="cat\ndog\nking\nobama\n", capture_output=True, text=True, timeout=60,
        env={**os.environ, "KXTOOL_CACHE_DIR": str(env.tmp / "cache")},
    )
    assert p.returncode == 0, p.stderr
    assert len(p.stdout.splitlines()) == 4


def test_pipes_as_files(env, tmp_path):
    # `kxtool wmd <(cmd1) <(cmd2)`: named pipes cannot seek
    import threading

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def feed() -> None:
        with open(fifo, "w", encoding="utf-8") as f:
            f.write("cat\nking queen\n")

    t = threading.Thread(target=feed)
    t.start()
    other = tmp_path / "other.txt"
    other.write_text("dog\nman woman\n", encoding="utf-8")
    r = run("wmd", str(fifo), str(other), "--vectors", env.vectors)
    t.join()
    assert r.exit_code == 0, r.output
    assert float(r.stdout.split()[0]) == pytest.approx(wmd("cat", "dog", env.vec), abs=1e-6)


def test_verbose_counts_unknown_words(env):
    r = run("wmd", env.A, env.B, "--vectors", env.vectors, "-v")
    assert "8 texts, " in r.stderr and "out of vocabulary" in r.stderr
    assert "zzz (1)" in r.stderr
    r = run("wmd", "--top", "1", env.A, env.B, "--vectors", env.vectors, "-v", "-j", "2")
    assert r.exit_code == 0 and "exact distances" in r.stderr
    assert len(r.stdout.splitlines()) == 3


def test_library_names():
    import kxtool

    vec = Vectors(["cat", "dog"], np.eye(2, dtype=np.float32))
    assert kxtool.wmd("cat", "dog", vec) == pytest.approx(math.sqrt(2))
    import kxtool.wmd as module  # binds the module or the function: both are callable

    assert module("cat", "dog", vec) == pytest.approx(math.sqrt(2))
    assert kxtool.wmd_search(["cat"], ["dog", "cat"], vec, k=1) == [[(1, 0.0)]]
    assert kxtool.Tokenizer()("The Cat") == ["cat"]


def test_a_binary_file_is_named_as_not_text(tmp_path):
    binary = tmp_path / "data.bin"
    binary.write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\x00\n\xe4\xb8\xad\x00\x01\n")
    text = tmp_path / "t.txt"
    text.write_text("the cat\nthe dog\n")
    r = subprocess.run(
        [sys.executable, "-m", "kxtool", "wmd", str(binary), str(text)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1
    assert r.stderr == f"kxtool: error: {binary}:1: not text (it holds NUL bytes)\n"
