"""The training-data chores of the shuffle: -n (exact sample), -r -n (draws), --split,
--permutation, -e, -i and --random-source; each consistent with the full shuffle."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from typer.testing import CliRunner

from kxtool.cli import app
from kxtool.errors import KxError
from kxtool.shuffle import output as shoutput
from kxtool.shuffle import record_keys, shuffle_files
from kxtool.shuffle.keys import _order
from kxtool.shuffle.permutation import (
    count_records,
    ordered_indices,
    record_indices,
    shuffle_permutation,
    write_permutation,
)
from kxtool.shuffle.ranges import parse_input_range, seed_from_file, shuffle_echo, shuffle_range
from kxtool.shuffle.repeat import draw_indices, repeat_files
from kxtool.shuffle.sample import sample_files
from kxtool.shuffle.split import Parts, split_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
runner = CliRunner()


def _chi2_sf(x: float, dof: int) -> float:
    from scipy.stats import chi2

    return float(chi2.sf(x, dof))


def _chi2(counts, expected) -> float:
    counts = np.asarray(counts, dtype=float)
    expected = np.broadcast_to(np.asarray(expected, dtype=float), counts.shape)
    return float(((counts - expected) ** 2 / expected).sum())


def kx(*args: str, input: bytes | None = None):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "kxtool", *args], input=input, capture_output=True, env=env
    )


def lines_of(path) -> list[bytes]:
    data = open(path, "rb").read()
    assert data == b"" or data.endswith(b"\n")
    return data.split(b"\n")[:-1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(5)
    lines = [
        b"%d " % i + bytes(rng.integers(33, 127, rng.integers(0, 60)).astype(np.uint8))
        for i in range(20_000)
    ]
    path = d / "corpus.txt"
    path.write_bytes(b"".join(x + b"\n" for x in lines))
    return str(path), lines


# ------------------------------------------------------------------ -n: the exact sample


@pytest.mark.parametrize("seed", [0, 1, 7, 12345, 2**63 + 5])
def test_sample_is_the_head_of_the_full_shuffle(tmp_path, corpus, seed):
    path, lines = corpus
    full = tmp_path / "full.txt"
    shuffle_files(path, full, seed=seed, memory="1M", tmp_dir=tmp_path, jobs=2)
    head = lines_of(full)
    for n in (0, 1, 2, 37, 1000, 19_999, 20_000, 25_000):
        for memory in ("64K", "16M", "1G"):
            out = tmp_path / f"s-{n}-{memory}.txt"
            try:
                r = sample_files(path, out, n, seed=seed, memory=memory)
            except KxError as e:
                assert "does not fit" in e.message and memory == "64K"
                continue
            assert lines_of(out) == head[:n], (n, memory)
            assert r.records == min(n, len(lines))


@pytest.mark.parametrize("kernel", ["native", "numpy"])
def test_sample_candidates_are_the_same_with_the_kernel_and_numpy(tmp_path, corpus, kernel,
                                                                   monkeypatch):
    # the compiled kernel keys and selects the candidates; numpy's path must choose the same
    import kxtool.shuffle.sample as shsample

    if kernel == "native" and shsample._native is None:
        pytest.skip("kxtool/_records.c is not built")
    if kernel == "numpy":
        monkeypatch.setattr(shsample, "_native", None)
    monkeypatch.setattr(shsample, "GUESS_AFTER", 4096)  # a threshold from the first blocks on
    monkeypatch.setattr(shsample, "SAMPLE_BLOCK", 8192)
    path, lines = corpus
    full = tmp_path / "full.txt"
    shuffle_files(path, full, seed=3)
    stream = tmp_path / "in.txt.gz"  # read as a stream, scanned block by block uncounted
    stream.write_bytes(gzip.compress(open(path, "rb").read()))
    for n in (1, 50, 3000):
        for src in (path, str(stream)):
            out = tmp_path / f"s{n}.txt"
            sample_files(src, out, n, seed=3, jobs=2)
            assert out.read_bytes().split(b"\n")[:-1] == lines_of(full)[:n]


def test_sample_through_the_cli_equals_head_whatever_jobs_and_budget(tmp_path, corpus):
    path, _ = corpus
    full = kx("shuffle", path, "--seed", "9", "-S", "1M", "-j", "2", "-T", str(tmp_path))
    want = b"".join(x + b"\n" for x in full.stdout.split(b"\n")[:500])
    for jobs in ("1", "2", "3"):
        for memory in ("2M", "1G"):
            got = kx("shuffle", "-n", "500", path, "--seed", "9", "-S", memory, "-j", jobs)
            assert got.returncode == 0, got.stderr
            assert got.stdout == want


def test_sample_from_a_pipe_and_with_a_header(tmp_path, corpus):
    path, _ = corpus
    data = b"head\n" + open(path, "rb").read()
    full = kx("shuffle", "--seed", "4", "--header", "1", input=data)
    want = b"".join(x + b"\n" for x in full.stdout.split(b"\n")[: 1 + 300])
    got = kx("shuffle", "--head-count", "300", "--seed", "4", "--header", "1", input=data)
    assert got.returncode == 0, got.stderr
    assert got.stdout == want and got.stdout.startswith(b"head\n")


def test_sample_with_n_over_the_input_is_the_whole_shuffle(tmp_path):
    src = tmp_path / "in.txt"
    src.write_bytes(b"a\nb\nc")  # no final newline: one is added, as by the shuffle
    shuffle_files(str(src), tmp_path / "f.txt", seed=3)
    sample_files(str(src), tmp_path / "s.txt", 10, seed=3)
    assert (tmp_path / "s.txt").read_bytes() == (tmp_path / "f.txt").read_bytes()
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    assert sample_files(str(empty), tmp_path / "e.txt", 5, seed=1).records == 0
    assert (tmp_path / "e.txt").read_bytes() == b""


def test_sample_that_does_not_fit_is_a_clear_error_and_writes_nothing(tmp_path, corpus):
    path, _ = corpus
    out = tmp_path / "s.txt"
    with pytest.raises(KxError, match="does not fit"):
        sample_files(path, out, 15_000, seed=1, memory="64K")
    assert not out.exists() and os.listdir(tmp_path) == []


def test_sample_chooses_lines_and_orders_them_uniformly(tmp_path):
    # 10 lines, samples of 3, over many seeds: each line is chosen with probability 3/10 and
    # each of the 10*9*8 ordered samples is equally likely
    src = tmp_path / "ten.txt"
    src.write_bytes(b"".join(b"%d\n" % i for i in range(10)))
    chosen, ordered = Counter(), Counter()
    trials = 3000
    for seed in range(trials):
        sample_files(str(src), tmp_path / "s.txt", 3, seed=seed)
        got = tuple(lines_of(tmp_path / "s.txt"))
        chosen.update(got)
        ordered[got] += 1
    assert len(chosen) == 10
    assert _chi2_sf(_chi2(list(chosen.values()), trials * 3 / 10), 9) > 1e-4
    # which line comes first, among the sample: uniform too
    first = Counter(k[0] for k, c in ordered.items() for _ in range(c))
    assert _chi2_sf(_chi2(list(first.values()), trials / 10), 9) > 1e-4
    cells = 10 * 9 * 8
    counts = [ordered.get(k, 0) for k in ordered] + [0] * (cells - len(ordered))
    assert _chi2_sf(_chi2(counts, trials / cells), cells - 1) > 1e-4


def test_zero_terminated_sample(tmp_path):
    src = tmp_path / "z.bin"
    src.write_bytes(b"".join(b"r%d\0" % i for i in range(100)))
    shuffle_files(str(src), tmp_path / "f", seed=2, zero_terminated=True)
    sample_files(str(src), tmp_path / "s", 7, seed=2, zero_terminated=True)
    assert (tmp_path / "s").read_bytes() == b"".join(
        x + b"\0" for x in (tmp_path / "f").read_bytes().split(b"\0")[:7]
    )


# ------------------------------------------------------------------ -r -n: with replacement


def test_draws_are_uniform_with_replacement(tmp_path):
    src = tmp_path / "in.txt"
    src.write_bytes(b"".join(b"%d\n" % i for i in range(20)))
    out = tmp_path / "r.txt"
    r = repeat_files(str(src), out, 20_000, seed=5)
    got = [int(x) for x in lines_of(out)]
    assert r.records == len(got) == 20_000
    counts = np.bincount(got, minlength=20)
    assert _chi2_sf(_chi2(counts, 1000), 19) > 1e-4
    # consecutive draws are independent: pairs (a, b) uniform over 400 cells
    pairs = np.bincount(np.array(got[0::2]) * 20 + np.array(got[1::2]), minlength=400)
    assert _chi2_sf(_chi2(pairs, 10_000 / 400), 399) > 1e-4


def test_draw_index_is_exact_for_large_counts():
    n = (1 << 40) + 12345
    d = draw_indices(3, n, 10_000)
    assert (d < np.uint64(n)).all()
    keys = record_keys(3 ^ 0xD1B54A32D192ED03, 0, 5)
    assert d[:5].tolist() == [(int(k) * n) >> 64 for k in keys]


def test_repeat_from_a_pipe_is_spooled_and_equals_the_file_route(tmp_path, corpus):
    path, _ = corpus
    by_file = kx("shuffle", "-r", "-n", "1000", "--seed", "3", path)
    by_pipe = kx("shuffle", "-r", "-n", "1000", "--seed", "3", "-T", str(tmp_path),
                 input=open(path, "rb").read())
    assert by_file.returncode == 0 and by_pipe.returncode == 0, by_pipe.stderr
    assert by_file.stdout == by_pipe.stdout and len(by_file.stdout.split(b"\n")) == 1001
    assert os.listdir(tmp_path) == []


def test_repeat_of_nothing_is_an_error(tmp_path):
    empty = tmp_path / "e.txt"
    empty.write_bytes(b"")
    with pytest.raises(KxError, match="no lines"):
        repeat_files(str(empty), tmp_path / "o.txt", 3, seed=1)
    r = kx("shuffle", "-r", str(empty))
    assert r.returncode == 2 and b"needs -n" in r.stderr


# ------------------------------------------------------------------ --split


def test_split_sizes_follow_the_rounding_rule():
    p = Parts(["a=0.5", "b=0.5"])
    assert p.sizes(3) == [1, 2] and p.sizes(4) == [2, 2]
    p = Parts(["train=0.98", "valid=5", "test=rest"])
    assert p.sizes(1000) == [980, 5, 15]
    assert Parts(["a=1%", "b=rest"]).sizes(250) == [2, 248]
    assert Parts(["a=3", "b=1"]).sizes(4) == [3, 1]
    # 1/3 three times: 0.333.. as a decimal, the running floors
    assert Parts(["a=0.25", "b=0.25", "c=0.5"]).sizes(7) == [1, 2, 4]
    with pytest.raises(KxError, match="asks for"):
        Parts(["a=5", "b=0.9"]).sizes(10)
    for bad in (["a"], ["a=x"], ["a=1.5"], ["a=rest", "b=rest"], ["a=1", "a=2"], ["=3"]):
        with pytest.raises(KxError):
            Parts(bad)


def test_split_parts_concatenate_to_the_full_shuffle(tmp_path, corpus):
    path, lines = corpus
    shuffle_files(path, tmp_path / "full.txt", seed=8)
    full = (tmp_path / "full.txt").read_bytes()
    names = [str(tmp_path / n) for n in ("train.txt", "valid.txt", "test.txt")]
    for memory, jobs in (("1G", 1), ("1M", 2)):
        r = split_files(path, [f"{names[0]}=0.9", f"{names[1]}=1234", f"{names[2]}=rest"],
                        seed=8, memory=memory, jobs=jobs, tmp_dir=tmp_path)
        counts = [len(lines_of(n)) for n in names]
        assert counts == [18_000, 1234, 20_000 - 18_000 - 1234]
        assert b"".join(open(n, "rb").read() for n in names) == full
        assert r.outputs == names


def test_split_headers_compression_and_aligned_parallel_files(tmp_path):
    src = tmp_path / "src.txt"
    tgt = tmp_path / "tgt.txt"
    src.write_bytes(b"lang: en\n" + b"".join(b"en %d\n" % i for i in range(1000)))
    tgt.write_bytes(b"lang: de\n" + b"".join(b"de %d\n" % i for i in range(1000)))
    for f, lang in ((src, "en"), (tgt, "de")):
        split_files(str(f), [f"{tmp_path}/{lang}.train.gz=0.8", f"{tmp_path}/{lang}.test=rest"],
                    seed=3, header=1)
    for part in ("train.gz", "test"):
        read = gzip.open if part.endswith(".gz") else open
        with read(tmp_path / f"en.{part}", "rb") as f:
            en = f.read().split(b"\n")[:-1]
        with read(tmp_path / f"de.{part}", "rb") as f:
            de = f.read().split(b"\n")[:-1]
        assert en[0] == b"lang: en" and de[0] == b"lang: de"
        assert len(en) == (801 if part == "train.gz" else 201)
        assert [x.split()[1] for x in en[1:]] == [x.split()[1] for x in de[1:]]


def test_split_failing_mid_way_leaves_no_part(tmp_path, corpus, monkeypatch):
    path, _ = corpus
    real_open_next = shoutput._Writer._open_next

    def failing(self):
        if self.shard == 0:  # the second part
            raise KxError("boom")
        real_open_next(self)

    monkeypatch.setattr(shoutput._Writer, "_open_next", failing)
    (tmp_path / "out").mkdir()
    with pytest.raises(KxError, match="boom"):
        split_files(path, [f"{tmp_path}/out/a.txt=0.5", f"{tmp_path}/out/b.txt=rest"], seed=1)
    assert os.listdir(tmp_path / "out") == []


def test_split_leaves_lines_out_with_a_warning(tmp_path):
    src = tmp_path / "in.txt"
    src.write_bytes(b"".join(b"%d\n" % i for i in range(10)))
    with pytest.warns(Warning, match="belong to no part"):
        split_files(str(src), [f"{tmp_path}/a=3"], seed=1)
    assert len(lines_of(tmp_path / "a")) == 3


def test_split_through_the_cli_and_its_usage_errors(tmp_path, corpus):
    path, _ = corpus
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    r = kx("shuffle", path, "--seed", "2", "--split", f"{a}=100", "--split", f"{b}=rest")
    assert r.returncode == 0, r.stderr
    full = kx("shuffle", path, "--seed", "2").stdout
    assert a.read_bytes() + b.read_bytes() == full
    r = kx("shuffle", path, "--split", f"{a}=1", "-o", str(b))
    assert r.returncode == 2 and b"drop -o" in r.stderr
    r = kx("shuffle", path, "--split", f"{a}=oops")
    assert r.returncode == 2


def test_sample_can_be_split(tmp_path, corpus):
    path, _ = corpus
    parts = Parts([f"{tmp_path}/a=0.5", f"{tmp_path}/b=rest"])
    sample_files(path, parts.name(0), 101, seed=6, shards=parts)
    sample_files(path, tmp_path / "s", 101, seed=6)
    assert (tmp_path / "a").read_bytes() + (tmp_path / "b").read_bytes() == (
        tmp_path / "s"
    ).read_bytes()
    assert len(lines_of(tmp_path / "a")) == 50


# ------------------------------------------------------------------ --permutation


def test_inverse_keys_and_ordered_indices_in_any_budget():
    k = record_keys(11, 5, 10_000)
    assert np.array_equal(record_indices(11, k), np.arange(5, 10_005, dtype=np.uint64))
    for n in (0, 1, 2, 999, 50_000):
        want = _order(record_keys(4, 0, n), 0)
        for memory in ("4K", "64K", "1G"):
            got = list(ordered_indices(4, n, memory=memory, step=777))
            got = np.concatenate(got) if got else np.empty(0, dtype=np.uint64)
            assert np.array_equal(got, want), (n, memory)
            for limit in (0, 1, 10, n // 3, n + 1):
                part = list(ordered_indices(4, n, limit, memory=memory))
                part = np.concatenate(part) if part else np.empty(0, dtype=np.uint64)
                assert np.array_equal(part, want[:limit])


def test_permutation_applied_to_the_input_gives_the_output(tmp_path, corpus):
    path, lines = corpus
    outs = []
    for i, (memory, jobs) in enumerate((("1G", 1), ("1M", 2), ("256K", 1))):
        out, perm = tmp_path / f"o{i}.txt", tmp_path / f"p{i}.npy"
        r = kx("shuffle", path, "--seed", "5", "-S", memory, "-j", str(jobs), "-o", str(out),
               "--permutation", str(perm), "-T", str(tmp_path))
        assert r.returncode == 0, r.stderr
        p = np.load(perm, mmap_mode="r")
        assert p.dtype == np.uint64 and len(p) == len(lines)
        assert np.array_equal(np.sort(p), np.arange(len(lines)))
        assert [lines[i] for i in p] == lines_of(out)
        outs.append(np.array(p))
    assert all(np.array_equal(outs[0], o) for o in outs[1:])
    # --permutation-only: the same file, no data written
    only = tmp_path / "only.npy"
    r = kx("shuffle", path, "--seed", "5", "--permutation", str(only), "--permutation-only")
    assert r.returncode == 0 and r.stdout == b""
    assert np.array_equal(np.load(only), outs[0])


def test_permutation_of_a_sample_and_with_a_header(tmp_path):
    src = tmp_path / "in.txt"
    body = [b"x%d" % i for i in range(500)]
    src.write_bytes(b"h\n" + b"".join(x + b"\n" for x in body))
    out, perm = tmp_path / "o.txt", tmp_path / "p.npy"
    sample_files(str(src), out, 40, seed=2, header=1, permutation=perm)
    got = lines_of(out)
    assert got[0] == b"h" and [body[i] for i in np.load(perm)] == got[1:]
    write_permutation(tmp_path / "q.npy", 2, 500, limit=40)
    assert np.array_equal(np.load(tmp_path / "q.npy"), np.load(perm))
    assert count_records(str(src), header=1) == 500


def test_permutation_file_is_a_valid_npy_of_any_length(tmp_path):
    for n in (0, 1, 100_000):
        p = tmp_path / f"p{n}.npy"
        assert write_permutation(p, 3, n, memory="64K") == n
        a = np.load(p, mmap_mode="r")
        assert a.shape == (n,) and np.array_equal(a, shuffle_permutation(3, n))


# ------------------------------------------------------------------ -e, -i, --random-source


def test_input_range_equals_the_file_route(tmp_path):
    src = tmp_path / "seq.txt"
    src.write_bytes(b"".join(b"%d\n" % i for i in range(5, 3006)))
    for seed in (0, 3, 99):
        shuffle_files(str(src), tmp_path / "f.txt", seed=seed)
        for memory in ("4K", "1G"):
            shuffle_range(5, 3005, tmp_path / "r.txt", seed=seed, memory=memory)
            assert (tmp_path / "r.txt").read_bytes() == (tmp_path / "f.txt").read_bytes()
        shuffle_range(5, 3005, tmp_path / "n.txt", seed=seed, count=17)
        assert lines_of(tmp_path / "n.txt") == lines_of(tmp_path / "f.txt")[:17]
    r = kx("shuffle", "-i", "5-3005", "--seed", "99")
    assert r.stdout == (tmp_path / "f.txt").read_bytes()


def test_input_range_is_a_uniform_permutation(tmp_path):
    out = tmp_path / "r.txt"
    shuffle_range(1, 1000, out, seed=1)
    assert sorted(int(x) for x in lines_of(out)) == list(range(1, 1001))
    first = Counter()
    trials = 2000
    for seed in range(trials):
        shuffle_range(0, 9, out, seed=seed, count=1)
        first[int(lines_of(out)[0])] += 1
    assert _chi2_sf(_chi2([first[i] for i in range(10)], trials / 10), 9) > 1e-4
    assert parse_input_range("3-2") == (3, 2)
    assert shuffle_range(3, 2, out, seed=1) == 0 and out.read_bytes() == b""
    with pytest.raises(KxError):
        parse_input_range("5-1")
    with pytest.raises(KxError):
        parse_input_range("a-b")


def test_huge_input_range_in_small_memory(tmp_path):
    # 2**40 lines: only the first few, through the keys of the whole range, in bounded memory
    # (the head is found by scanning: keep the range modest enough for a test)
    out = tmp_path / "r.txt"
    shuffle_range(10**15, 10**15 + 2_000_000 - 1, out, seed=2, count=5, memory="4M")
    got = [int(x) for x in lines_of(out)]
    want = (10**15 + _order(record_keys(2, 0, 2_000_000), 0)[:5]).tolist()
    assert got == want


def test_echo_equals_the_file_route_and_is_uniform(tmp_path):
    words = [f"w{i}" for i in range(50)]
    src = tmp_path / "w.txt"
    src.write_text("".join(w + "\n" for w in words))
    shuffle_files(str(src), tmp_path / "f.txt", seed=12)
    shuffle_echo(words, tmp_path / "e.txt", seed=12)
    assert (tmp_path / "e.txt").read_bytes() == (tmp_path / "f.txt").read_bytes()
    r = kx("shuffle", "-e", *words, "--seed", "12")
    assert r.stdout == (tmp_path / "f.txt").read_bytes()
    orders = Counter()
    trials = 2400
    for seed in range(trials):
        shuffle_echo(["a", "b", "c", "d"], tmp_path / "o.txt", seed=seed)
        orders[tuple(lines_of(tmp_path / "o.txt"))] += 1
    assert len(orders) == 24
    assert _chi2_sf(_chi2(list(orders.values()), trials / 24), 23) > 1e-4


def test_echo_and_range_with_repeat(tmp_path):
    r = kx("shuffle", "-r", "-e", "x", "y", "-n", "2000", "--seed", "1")
    got = Counter(r.stdout.split())
    assert sum(got.values()) == 2000 and set(got) == {b"x", b"y"}
    assert _chi2_sf(_chi2(list(got.values()), 1000), 1) > 1e-4
    # -r alone draws forever; head ends it quietly
    p = subprocess.Popen([sys.executable, "-m", "kxtool", "shuffle", "-r", "-i", "1-6"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    assert p.stdout is not None
    head = p.stdout.read(4096)
    p.stdout.close()
    p.wait(timeout=60)
    assert set(head.split()[:-1]) <= {b"1", b"2", b"3", b"4", b"5", b"6"}
    assert p.returncode in (0, 141), p.stderr.read() if p.stderr else b""


def test_random_source(tmp_path, corpus):
    path, _ = corpus
    src = tmp_path / "seedfile"
    src.write_bytes(b"reproducible randomness")
    a = kx("shuffle", "--random-source", str(src), path, "-n", "20")
    b = kx("shuffle", "--random-source", str(src), path, "-n", "20")
    assert a.returncode == 0 and a.stdout == b.stdout
    c = kx("shuffle", "--seed", str(seed_from_file(src)), path, "-n", "20")
    assert c.stdout == a.stdout
    r = kx("shuffle", "--random-source", str(src), "--seed", "1", path)
    assert r.returncode == 2
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    r = kx("shuffle", "--random-source", str(empty), path)
    assert r.returncode == 1 and b"end of file" in r.stderr


def test_cli_usage_errors_of_the_chores(tmp_path):
    cases = [
        (["shuffle", "-e", "a", "-i", "1-3"], "exclude"),
        (["shuffle", "-i", "1-3", "somefile"], "takes no FILE"),
        (["shuffle", "--permutation-only", "-i", "1-3"], "needs --permutation"),
        (["shuffle", "-n", "x", "-i", "1-3"], "whole number"),
        (["shuffle", "-i", "1-3", "--permutation", "-"], "not '-'"),
    ]
    for args, message in cases:
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        assert message in r.output, (args, r.output)


def test_sample_guess_that_proves_too_low_reads_the_file_again(tmp_path, monkeypatch):
    # short lines first, long ones after: the size suggests far more lines than there are,
    # the first threshold is too low, and the file is read again without it
    import kxtool.shuffle.sample as shsample

    monkeypatch.setattr(shsample, "GUESS_AFTER", 2048)
    monkeypatch.setattr(shsample, "SAMPLE_BLOCK", 4096)
    scans = []
    real_scan = shsample._scan_ranges
    monkeypatch.setattr(shsample, "_scan_ranges",
                        lambda *a: scans.append(a[8]) or real_scan(*a))
    src = tmp_path / "in.txt"
    src.write_bytes(b"".join(b"s%d\n" % i for i in range(2000))
                    + b"".join(b"%d " % i + b"L" * 1000 + b"\n" for i in range(200)))
    shuffle_files(str(src), tmp_path / "f.txt", seed=4)
    for n in (5, 1500, 2200):
        scans.clear()
        sample_files(str(src), tmp_path / "s.txt", n, seed=4, jobs=2)
        assert lines_of(tmp_path / "s.txt") == lines_of(tmp_path / "f.txt")[:n]
        if n == 1500:
            assert scans == [True, False]


def test_sample_line_longer_than_the_budget_allows(tmp_path):
    src = tmp_path / "in.txt"
    src.write_bytes(b"short\n" + b"x" * 100_000 + b"\nshort\n")
    with pytest.raises(KxError, match="longer than a quarter"):
        sample_files(str(src), tmp_path / "s.txt", 2, seed=1, memory="64K")
    assert not (tmp_path / "s.txt").exists()


def test_sample_of_a_stream_names_the_line_that_is_too_long(tmp_path):
    # a stream's reader counts nothing (the scan does, block by block, before the next one is
    # read): the line number in the error must still be that of the file, header included
    lines = [b"line %d" % i for i in range(20_000)]
    lines[12_345] = b"x" * 100_000
    src = tmp_path / "in.txt.gz"
    src.write_bytes(gzip.compress(b"".join(x + b"\n" for x in lines)))
    for header in (0, 1):
        with pytest.raises(KxError, match=r"line 12346 of '[^']*in\.txt\.gz' is longer than"):
            sample_files(str(src), tmp_path / "s.txt", 5, seed=1, memory="256K", header=header)
        assert not (tmp_path / "s.txt").exists()
    short = [x for x in lines if len(x) < 100]
    src.write_bytes(gzip.compress(b"".join(x + b"\n" for x in short)))
    plain = tmp_path / "in.txt"
    plain.write_bytes(b"".join(x + b"\n" for x in short))
    for header in (0, 3):
        sample_files(str(src), tmp_path / "s.txt", 700, seed=5, memory="256K", header=header)
        sample_files(str(plain), tmp_path / "p.txt", 700, seed=5, memory="256K", header=header)
        assert (tmp_path / "s.txt").read_bytes() == (tmp_path / "p.txt").read_bytes()


def test_candidates_of_a_block_not_counted_yet(tmp_path):
    # a stream's block comes without its count: the kernel's scan counts it, into room for
    # the candidates of a record every 32 bytes; lines of a few bytes under a high threshold
    # overflow that room, and the block is counted and scanned again. Either way the answer
    # is that of the counted block.
    from kxtool.records import _native
    from kxtool.shuffle.sample import _Sample

    if _native is None:
        pytest.skip("the compiled kernel is not built")
    data = np.frombuffer(b"".join(b"%d\n" % i for i in range(100_000)), dtype=np.uint8)
    for threshold in (2**63, 2**60, 2**40):
        s = _Sample(10, 1 << 30)
        s.threshold = np.uint64(threshold)
        got = s.candidates(data, None, 1234, 5, 1 << 20)
        want = s.candidates(data, 100_000, 1234, 5, 1 << 20)
        assert got[1:] == want[1:] == (100_000, 0)
        if threshold == 2**63:
            assert len(got[0][1]) > len(data) // 32 + 64  # more than the room guessed
        if want[0] is None:
            assert got[0] is None
        else:
            for g, w in zip(got[0], want[0], strict=True):
                assert np.array_equal(g, w)


def test_candidates_without_a_threshold_keep_the_largest_key(tmp_path):
    # before there is a threshold every record is a candidate; the kernel compares keys with
    # the largest key, so the block that holds the record of that key goes through numpy
    from kxtool.shuffle.permutation import record_indices
    from kxtool.shuffle.sample import _Sample

    seed = 11
    top = int(record_indices(seed, np.array([2**64 - 1], dtype=np.uint64))[0])
    data = np.frombuffer(b"".join(b"r%d\n" % i for i in range(10)), dtype=np.uint8)
    for start in (top - 3, top + 1):
        for count in (None, 10):
            part, records, left = _Sample(5, 1 << 30).candidates(data, count, start, seed, 100)
            assert (records, left) == (10, 0)
            assert np.array_equal(part[0], data)
            assert np.array_equal(part[2], record_keys(seed, start, 10))
            assert (int(part[2].max()) == 2**64 - 1) == (start == top - 3)


def test_threshold_lowered_between_thinnings_keeps_the_sample_exact():
    # between thinnings out the keys taken are counted in buckets and the threshold lowered
    # to the end of the bucket by which n are counted: it must always keep at least n of the
    # keys seen below it, and the sample at the end is the n smallest of all
    from kxtool.shuffle.sample import _Sample

    rng = np.random.default_rng(8)
    for n in (1, 50, 2000):
        s = _Sample(n, 1 << 40)
        seen = []
        lowered = 0
        for _ in range(300):
            keys = rng.integers(0, 2**64, int(rng.integers(1, 200)), dtype=np.uint64)
            seen.append(keys)
            if s.threshold is not None:
                keys = keys[keys < s.threshold]  # what the scan would offer
            before = s.threshold
            if len(keys):
                part = (np.zeros(len(keys), np.uint8), np.ones(len(keys), np.int64), keys)
                s.take(part, len(keys), 0)
            if s.threshold is not None:
                assert int((np.concatenate(seen) < s.threshold).sum()) >= n
                lowered += before is not None and s.threshold < before and s.fresh > 0
        s.finish()
        assert np.array_equal(np.sort(s.keys), np.sort(np.concatenate(seen))[:n])
        assert lowered  # the threshold did fall between thinnings out


def test_sample_of_a_stream_of_short_lines_equals_the_file_route(tmp_path):
    body = b"".join(b"%d\n" % i for i in range(600_000))
    (tmp_path / "in.txt").write_bytes(body)
    (tmp_path / "in.txt.gz").write_bytes(gzip.compress(body))
    for n in (1, 30_000, 35_000):
        sample_files(str(tmp_path / "in.txt.gz"), tmp_path / "s.txt", n, seed=7, memory="8M")
        sample_files(str(tmp_path / "in.txt"), tmp_path / "p.txt", n, seed=7, memory="8M")
        assert (tmp_path / "s.txt").read_bytes() == (tmp_path / "p.txt").read_bytes()


def test_sample_of_every_line_of_a_file_too_big_for_memory_is_the_full_shuffle(tmp_path, corpus):
    path, lines = corpus
    shuffle_files(path, tmp_path / "f.txt", seed=2, memory="256K", tmp_dir=tmp_path)
    r = sample_files(path, tmp_path / "s.txt", 10**9, seed=2, memory="256K",
                     permutation=tmp_path / "p.npy")
    assert (tmp_path / "s.txt").read_bytes() == (tmp_path / "f.txt").read_bytes()
    assert r.records == len(lines) and not r.in_memory
    assert [lines[i] for i in np.load(tmp_path / "p.npy")] == lines_of(tmp_path / "s.txt")
    with pytest.raises(KxError, match="does not fit"):  # fewer than all: still an error
        sample_files(path, tmp_path / "s.txt", 19_000, seed=2, memory="256K")


def test_first_lines_of_a_huge_range_walk_the_key_space(tmp_path):
    # n = 2**44: the first three positions come from keys 0, 1, 2, ... turned back into
    # indices (about 2**20 keys a line), not from a pass over 2**44 indices
    n = 1 << 44
    got = np.concatenate(list(ordered_indices(6, n, 3)))
    assert len(got) == 3 and (got < np.uint64(n)).all()
    keys = np.array([record_keys(6, int(i), 1)[0] for i in got], dtype=np.uint64)
    assert (np.diff(keys.astype(object)) > 0).all()  # in key order
    below = record_indices(6, np.arange(int(keys[-1]) + 1, dtype=np.uint64))
    assert int(np.count_nonzero(below < np.uint64(n))) == 3  # nothing smaller was missed
    out = tmp_path / "r.txt"
    shuffle_range(0, 2**64 - 2, out, seed=1, count=3)
    assert len(lines_of(out)) == 3
