"""CLI tests for `kxtool vectors info|convert`."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from kxtool.cli import app
from kxtool.vectors import load_vectors


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("KXTOOL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("KXTOOL_VECTORS", raising=False)


def run(*args, input=None):
    return CliRunner().invoke(app, list(args), input=input)


def make_file(tmp_path, name="v.txt", n=30, dim=4, header=True, gz=False):
    rng = np.random.default_rng(3)
    m = rng.standard_normal((n, dim)).astype(np.float32)
    words = [f"word{i}" for i in range(n)]
    lines = [f"{n} {dim}"] if header else []
    lines += [w + " " + " ".join(repr(float(x)) for x in r) for w, r in zip(words, m, strict=True)]
    data = ("\n".join(lines) + "\n").encode()
    p = tmp_path / name
    p.write_bytes(gzip.compress(data) if gz else data)
    return str(p), words, m


def test_info_plain(tmp_path):
    p, words, m = make_file(tmp_path)
    r = run("vectors", "info", p)
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "words         30" in out
    assert "dimension     4" in out
    assert "format        word2vec" in out
    assert "word0 word1" in out
    assert "─" not in out and "\x1b" not in out  # plain when piped


def test_info_json_and_limit(tmp_path):
    p, words, m = make_file(tmp_path, gz=True, header=False)
    r = run("vectors", "info", p, "--json", "--limit", "12", "--sample", "3")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["words"] == 12 and d["dim"] == 4 and d["format"] == "glove"
    assert d["sample"] == words[:3]
    norms = np.linalg.norm(m[:12], axis=1)
    assert d["norms"]["max"] == pytest.approx(float(norms.max()), rel=1e-5)
    assert d["norms"]["min"] == pytest.approx(float(norms.min()), rel=1e-5)
    assert d["is_default"] is False
    assert d["cache"] is not None and os.path.exists(d["cache"])


def test_info_default():
    for args in (["vectors", "info", "--json"], ["vectors", "info", "--default", "--json"]):
        r = run(*args)
        assert r.exit_code == 0, r.output
        d = json.loads(r.stdout)
        assert d["is_default"] is True
        assert d["words"] == 100_000 and d["dim"] == 50
        assert d["sample"][0] == "the"


def test_info_stdin(tmp_path):
    p, words, m = make_file(tmp_path)
    with open(p, "rb") as f:
        data = f.read()
    r = run("vectors", "info", "-", "--json", input=data)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["words"] == 30


def test_info_errors(tmp_path):
    r = run("vectors", "info", str(tmp_path / "missing.vec"))
    assert r.exit_code == 1
    assert "kxtool: error:" in r.stderr and "missing.vec" in r.stderr
    bad = tmp_path / "bad.txt"
    bad.write_text("a 1 2\nb 1 2 3\n")
    r = run("vectors", "info", str(bad))
    assert r.exit_code == 1
    assert r.stderr.strip() == (
        f"kxtool: error: {bad}:2: expected 2 numbers after the word, found 3"
    )
    r = run("vectors", "info", str(bad), "--default")
    assert r.exit_code == 1 and "either FILE or --default" in r.stderr
    r = run("vectors", "info", str(bad), "--limit", "0")
    assert r.exit_code == 2


def test_convert(tmp_path):
    p, words, m = make_file(tmp_path, gz=True)
    out = tmp_path / "out.kxv"
    r = run("vectors", "convert", p, str(out), "--limit", "20")
    assert r.exit_code == 0, r.output
    assert "wrote 20 words x 4 dimensions" in r.stderr
    v = load_vectors(out)
    assert v.words == words[:20]
    np.testing.assert_array_equal(np.asarray(v.matrix), m[:20])
    r = run("vectors", "convert", p, str(out), "--json")
    assert r.exit_code == 0
    assert json.loads(r.stdout)["words"] == 30
    r = run("vectors", "info", str(out), "--json")
    assert json.loads(r.stdout)["format"] == "kxtool"


def test_convert_errors_leave_nothing(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("a 1 2\nb 1 x\n")
    out = tmp_path / "out.kxv"
    r = run("vectors", "convert", str(bad), str(out))
    assert r.exit_code == 1 and "bad.txt:2: 'x' is not a number" in r.stderr
    assert os.listdir(tmp_path) == ["bad.txt"] or sorted(os.listdir(tmp_path)) == [
        "bad.txt",
        "cache",
    ]
    r = run("vectors", "convert", str(bad), "-")
    assert r.exit_code == 1 and "stdout" in r.stderr


def test_help_has_examples():
    for cmd in ("info", "convert"):
        r = run("vectors", cmd, "--help")
        assert r.exit_code == 0
        assert "kxtool vectors " + cmd in r.stdout


def test_subprocess_pipe(tmp_path):
    p, _, _ = make_file(tmp_path)
    env = {**os.environ, "KXTOOL_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "kxtool", "vectors", "info", p],
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert b"dimension     4" in proc.stdout


def test_cache_list_and_clean(tmp_path):
    p, _, _ = make_file(tmp_path)
    q, _, _ = make_file(tmp_path, "q.txt")
    assert run("vectors", "info", p).exit_code == 0
    assert run("vectors", "info", q).exit_code == 0
    os.unlink(q)
    r = run("vectors", "cache")
    assert r.exit_code == 0, r.output
    rows = sorted(line.split("\t")[0] for line in r.stdout.splitlines())
    assert rows == ["current", "orphaned"]
    assert "found 2 cache files" in r.stderr
    assert run("vectors", "cache", "--all").exit_code == 1  # --all needs --clean
    r = run("vectors", "cache", "--clean", "--json")
    assert [json.loads(x)["source"] for x in r.stdout.splitlines()] == [q]
    r = run("vectors", "cache", "--clean", "--all")
    assert r.exit_code == 0 and "removed 1 cache file" in r.stderr
    assert run("vectors", "cache").stdout == ""


# A child that loads a vectors file and stops inside the cache write, after the first rows
# are on disk, until it is killed (the pause is the test's own: production code has no hook).
_KILLED_CHILD = r"""
import sys, time
import kxtool.vectors as V
from kxtool.vectors.kxv import _FileSink
real_add = _FileSink.add
def add(self, m):
    real_add(self, m)
    self.f.flush()
    sys.stdout.write(self.tmp + "\n")
    sys.stdout.flush()
    time.sleep(600)
_FileSink.add = add
V.load_vectors(sys.argv[1])
"""


def test_a_killed_cache_write_is_listed_as_partial_and_cleaned(tmp_path):
    import signal

    p, _, _ = make_file(tmp_path, n=200)
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_CHILD, p],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        tmp = child.stdout.readline().strip()
        assert tmp, child.communicate(timeout=60)
        assert os.path.dirname(tmp) == str(tmp_path / "cache" / "vectors")
        r = run("vectors", "cache")
        assert r.stdout.splitlines() == [f"writing\t{os.path.getsize(tmp)}\t-\t{tmp}"]
        r = run("vectors", "cache", "--clean", "--all")  # a write in progress is kept
        assert r.exit_code == 0 and "removed 0 cache files" in r.stderr and os.path.exists(tmp)
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL
    r = run("vectors", "cache", "--json")
    assert [json.loads(x)["status"] for x in r.stdout.splitlines()] == ["partial"]
    r = run("vectors", "cache", "--clean")
    assert r.exit_code == 0 and "removed 1 cache file" in r.stderr
    assert not os.path.exists(tmp)
    assert run("vectors", "cache").stdout == ""
    # the next load writes its cache as usual
    assert run("vectors", "info", p).exit_code == 0
    assert [x.split("\t")[0] for x in run("vectors", "cache").stdout.splitlines()] == ["current"]


def test_cache_lists_a_damaged_cache(tmp_path):
    p, words, m = make_file(tmp_path)
    r = run("vectors", "info", p, "--json")
    c = json.loads(r.stdout)["cache"]
    with open(c, "r+b") as f:
        f.seek(64 + 8)
        f.write(b"\xff\xff\xff\xff")
    r = run("vectors", "cache")
    assert r.stdout.split("\t")[0] == "damaged"
    r = run("vectors", "info", p, "--json")
    assert r.exit_code == 0
    assert r.stderr.startswith("kxtool: warning: ") and "is damaged" in r.stderr
    assert json.loads(r.stdout)["norms"]["max"] == pytest.approx(
        float(np.linalg.norm(m, axis=1).max()), rel=1e-5
    )
    assert run("vectors", "cache").stdout.split("\t")[0] == "current"


def test_convert_to_a_gz_name_is_an_error(tmp_path):
    p, _, _ = make_file(tmp_path)
    r = run("vectors", "convert", p, str(tmp_path / "out.kxv.gz"))
    assert r.exit_code == 1
    assert "cannot be compressed" in r.stderr and "out.kxv" in r.stderr
    assert not os.path.exists(tmp_path / "out.kxv.gz")
