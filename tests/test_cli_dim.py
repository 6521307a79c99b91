"""`kxtool dim` through Typer's CliRunner (and one real subprocess for the pipe case)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
from typer.testing import CliRunner

from kxtool.cli import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, ["dim", *args])


def test_single_vocab_prints_dim_and_bound():
    r = run("--vocab", "100000")
    assert r.exit_code == 0, r.output
    assert r.stdout.split()[0] == "96"
    assert "95.90" in r.stdout and "8.33 ln N" in r.stdout


def test_article_second_example():
    r = run("--vocab", "5000000")
    assert r.exit_code == 0
    assert r.stdout.split()[0] == "129"
    assert "128.49" in r.stdout  # 128.5 to one decimal


def test_table_against_closed_form():
    ns = [1000, 100_000, 5_000_000]
    r = run(*[a for n in ns for a in ("--vocab", str(n))])
    assert r.exit_code == 0
    lines = r.stdout.strip().splitlines()
    assert lines[0].split() == ["vocab", "dim", "bound"]
    for n, line in zip(ns, lines[1:], strict=True):
        vocab, dim, bound = line.split()
        b = 8.33 * math.log(n)
        assert int(vocab) == n
        assert int(dim) == math.floor(b) + 1
        assert float(bound) == round(b, 2)
    assert "─" not in r.stdout and "│" not in r.stdout  # plain when not a terminal


def test_method_all_table_and_json():
    r = run("-n", "100000", "-n", "5000000", "--method", "all")
    assert r.exit_code == 0
    head, row1, row2 = r.stdout.strip().splitlines()
    assert head.split() == ["vocab", "entropy", "entropy-analytic", "jl(eps=0.1)", "fourth-root"]
    assert row1.split() == ["100000", "96", "96", "9869", "18"]
    assert row2.split() == ["5000000", "129", "129", "13222", "48"]
    r = run("-n", "100000", "--method", "all", "--json", "--eps", "0.2")
    d = json.loads(r.stdout)
    ests = {e["method"]: e for e in d["results"][0]["estimates"]}
    assert set(ests) == {"entropy", "entropy-analytic", "jl", "fourth-root"}
    jl = 4 * math.log(100_000) / (0.2**2 / 2 - 0.2**3 / 3)
    assert ests["jl"]["bound"] == jl and ests["jl"]["dim"] == math.ceil(jl)
    assert ests["entropy"]["source"].startswith("Su Jianlin")


def test_json_single():
    r = run("--vocab", "100000", "--json")
    d = json.loads(r.stdout)
    e = d["results"][0]["estimates"][0]
    assert e["dim"] == 96 and abs(e["bound"] - 95.9027) < 1e-4


def test_vectors_and_corpus(tmp_path):
    v = tmp_path / "v.vec"
    v.write_text("5000000 300\n")
    r = run("--vectors", str(v))
    assert r.exit_code == 0, r.output
    assert r.stdout.split()[0] == "129"
    c = tmp_path / "c.txt"
    c.write_text("a b c\nc d a\n")
    r = run("--corpus", str(c), "--json")
    d = json.loads(r.stdout)["results"][0]
    assert d["vocab"] == 4 and d["tokens"] == 6 and d["from"] == "corpus"
    r = run("--corpus", str(c), "--min-count", "2", "--json")
    assert json.loads(r.stdout)["results"][0]["vocab"] == 2
    r = run("--corpus", str(c), "--vocab", "100", "--vectors", str(v))
    assert r.exit_code == 0
    assert r.stdout.splitlines()[0].split() == ["source", "vocab", "dim", "bound"]


def test_errors(tmp_path):
    r = run("--vocab", "1")
    assert r.exit_code == 2 and "at least 2" in r.stderr  # a usage error
    r = run("--corpus", str(tmp_path / "missing.txt"))
    assert r.exit_code == 1 and "kxtool: error:" in r.stderr
    r = run("--vectors", str(tmp_path))
    assert r.exit_code == 1 and "directory" in r.stderr
    one = tmp_path / "one.txt"
    one.write_text("word word\n")
    r = run("--corpus", str(one))
    assert r.exit_code == 1 and "at least 2" in r.stderr
    assert run().exit_code == 2
    assert run("--vocab", "10", "--method", "magic").exit_code == 2
    assert run("--vocab", "10", "--method", "jl", "--eps", "1.5").exit_code == 2
    assert run("--vocab", "10", "--method", "pip").exit_code == 2


def test_help_names_sources():
    r = runner.invoke(app, ["dim", "--help"])
    assert r.exit_code == 0
    for s in ("kexue.fm/archives/7695", "Dasgupta", "Yin & Shen", "fourth root", "Example"):
        assert s.lower() in r.stdout.lower().replace("n^(1/4)", "fourth root")


def test_pip_cli(tmp_path):
    rng = np.random.default_rng(3)
    vecs = rng.standard_normal((120, 4)) / 2
    base = -np.log(np.arange(1, 121))
    lines = []
    for _ in range(1500):
        logit = base + vecs @ rng.standard_normal(4)
        p = np.exp(logit - logit.max())
        lines.append(" ".join(f"w{i}" for i in rng.choice(120, 40, p=p / p.sum())))
    c = tmp_path / "topic.txt"
    c.write_text("\n".join(lines) + "\n")
    r = run("--method", "pip", "--corpus", str(c), "--top", "120", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["method"] == "pip" and d["vocab"] == 120 and d["window"] == 5
    assert 3 <= d["dim"] <= 7
    assert len(d["pip_loss"]) == d["rank"] and d["pip_loss"][d["dim"] - 1] == min(d["pip_loss"])
    r = run("--method", "pip", "--corpus", str(c), "--top", "120")
    assert r.exit_code == 0 and r.stdout.split()[:2] == ["dim", str(d["dim"])]
    assert "max-dim" not in r.stdout
    r = run("--method", "pip", "--corpus", str(c), "--top", "120", "--max-dim", "1")
    assert r.exit_code == 0 and "(at --max-dim 1: the loss may fall further)" in r.stdout
    for bad in ("0", "-3"):
        assert run("--method", "pip", "--corpus", str(c), "--max-dim", bad).exit_code == 2


def test_pipe_to_head_is_quiet():
    cmd = [sys.executable, "-m", "kxtool", "dim", "--vocab", "100000", "--vocab", "200,000"]
    p = subprocess.run(" ".join(cmd) + " | head -1", shell=True, capture_output=True, text=True)
    assert p.stdout.split() == ["vocab", "dim", "bound"]
    assert p.stderr == ""


def test_counts_are_read_in_every_common_spelling():
    for spelling in ("1000000", "1_000_000", "1,000,000", "1e6", "1.0E6"):
        r = run("--vocab", spelling, "--json")
        assert r.exit_code == 0, (spelling, r.output)
        assert json.loads(r.stdout)["results"][0]["vocab"] == 1_000_000
    for bad in ("1.5e0", "abc", "1,00", "-5", "1e"):
        r = run("--vocab", bad)
        assert r.exit_code == 2, bad


def test_deprecated_short_flags_still_work_with_a_warning():
    cmd = [sys.executable, "-m", "kxtool", "dim", "-n", "5000", "-m", "jl", "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 0
    assert json.loads(p.stdout)["results"][0]["vocab"] == 5000
    assert "-n for --vocab is deprecated" in p.stderr
    assert "-m for --method is deprecated" in p.stderr
