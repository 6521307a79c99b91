"""The shuffle engine: a permutation, uniform, deterministic, bounded, and safe on faults."""

from __future__ import annotations

import bz2
import errno
import gzip
import io
import itertools
import lzma
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from kxtool import shuffle as sh
from kxtool import textio
from kxtool.errors import KxError
from kxtool.shuffle import keys as shkeys
from kxtool.shuffle import plan, record_keys, shuffle_files
from kxtool.shuffle.reading import _RangePlan
from kxtool.textio import _sniff

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write(path, data: bytes):
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def records(data: bytes, sep: bytes = b"\n") -> list[bytes]:
    parts = data.split(sep)
    assert parts[-1] == b"", "output must end with a terminator"
    return parts[:-1]


def expected_records(*datas: bytes, sep: bytes = b"\n") -> list[bytes]:
    """The records of each input: a missing final terminator counts as one."""
    out: list[bytes] = []
    for d in datas:
        if not d:
            continue
        if not d.endswith(sep):
            d += sep
        out.extend(d.split(sep)[:-1])
    return out


# ------------------------------------------------------------------ keys and order


def test_keys_are_distinct_and_deterministic():
    k = record_keys(7, 0, 200_000)
    assert len(np.unique(k)) == len(k)
    assert np.array_equal(k[1000:2000], record_keys(7, 1000, 1000))
    assert not np.array_equal(k[:100], record_keys(8, 0, 100))


def test_order_matches_argsort_even_with_ties():
    rng = np.random.default_rng(0)
    # few distinct high bits force many ties in the packed sort
    keys = (rng.integers(0, 4, 5000, dtype=np.uint64) << np.uint64(62)) | rng.integers(
        0, 2**20, 5000, dtype=np.uint64
    )
    keys = np.unique(keys)
    rng.shuffle(keys)
    assert np.array_equal(shkeys._order(keys, 0), np.argsort(keys, kind="stable"))
    # with a shared prefix
    pref = (keys & np.uint64((1 << 62) - 1)) | np.uint64(1 << 62)
    assert np.array_equal(shkeys._order(pref, 2), np.argsort(pref, kind="stable"))


# ------------------------------------------------------------------ permutation property

_line = st.binary(min_size=0, max_size=40).map(lambda b: b.replace(b"\n", b"\r"))
_special = st.sampled_from([b"\xff\xfe", b"a\x00b", b"\r", b"x\r", b"\xc3\x28", b"", b"\x00"])
_lines = st.lists(st.one_of(_line, _special), min_size=0, max_size=150)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    files=st.lists(st.tuples(_lines, st.booleans()), min_size=1, max_size=4),
    seed=st.integers(0, 2**63),
    memory=st.sampled_from(["4K", "6K", "1M"]),
)
def test_output_is_a_permutation(tmp_path_factory, files, seed, memory):
    tmp_path = tmp_path_factory.mktemp("perm")
    datas = []
    paths = []
    for i, (lines, final_newline) in enumerate(files):
        data = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
        assume(_sniff(data[:10]) is None)  # inputs that start like a compressed file are read so
        datas.append(data)
        paths.append(write(tmp_path / f"in{i}.txt", data))
    out = tmp_path / "out.txt"
    res = shuffle_files(paths, str(out), memory=memory, seed=seed, tmp_dir=tmp_path)
    got = out.read_bytes()
    want = expected_records(*datas)
    assert Counter(records(got) if got else []) == Counter(want)
    assert res.records == len(want)
    assert sorted(os.listdir(tmp_path)) == sorted(
        [f"in{i}.txt" for i in range(len(files))] + ["out.txt"]
    )


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lines=st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\0", b"\n")), max_size=120),
    seed=st.integers(0, 2**63),
)
def test_zero_terminated_permutation(tmp_path_factory, lines, seed):
    tmp_path = tmp_path_factory.mktemp("zero")
    data = b"".join(x + b"\0" for x in lines)
    assume(_sniff(data[:10]) is None)
    p = write(tmp_path / "z.bin", data)
    out = tmp_path / "z.out"
    shuffle_files([p], str(out), memory="4K", seed=seed, zero_terminated=True, tmp_dir=tmp_path)
    got = out.read_bytes()
    assert Counter(records(got, b"\0") if got else []) == Counter(lines)


# ------------------------------------------------------------------ uniformity


def _chi2_sf(x: float, dof: int) -> float:
    from scipy.stats import chi2

    return float(chi2.sf(x, dof))


def test_uniform_over_all_orders_with_several_piles(tmp_path):
    # five long lines and a 4K budget: two runs and several piles every time
    lines = [bytes([65 + i]) * 800 for i in range(5)]
    p = write(tmp_path / "five.txt", b"".join(x + b"\n" for x in lines))
    out = tmp_path / "o.txt"
    counts: Counter = Counter()
    trials = 1200
    for seed in range(trials):
        res = shuffle_files([p], str(out), memory="4K", seed=seed, tmp_dir=tmp_path, jobs=1)
        counts[tuple(x[:1] for x in records(out.read_bytes()))] += 1
    assert not res.in_memory and res.runs >= 2
    assert len(counts) == 120
    expected = trials / 120
    stat = sum((c - expected) ** 2 / expected for c in counts.values())
    assert _chi2_sf(stat, 119) > 1e-4, stat


def test_first_two_outputs_come_from_the_same_pile_as_often_as_uniform(tmp_path):
    # 12 lines in 3 groups of 4, read as several batches: a uniform permutation puts the first
    # two outputs in the same group with probability 3 * (4/12) * (3/11) = 3/11; a round-robin
    # merge of shuffled batches of up to 4 lines never does.
    lines = [b"%02d" % i + b"x" * 500 for i in range(12)]
    p = write(tmp_path / "twelve.txt", b"".join(x + b"\n" for x in lines))
    out = tmp_path / "o.txt"
    trials = 1000
    same = 0
    for seed in range(trials):
        res = shuffle_files([p], str(out), memory="4K", seed=seed, tmp_dir=tmp_path, jobs=1)
        first, second = records(out.read_bytes())[:2]
        same += int(first[:2]) // 4 == int(second[:2]) // 4
    assert not res.in_memory and res.runs >= 3
    p0 = 3 / 11
    z = (same - trials * p0) / math.sqrt(trials * p0 * (1 - p0))
    assert abs(z) < 4, (same, trials * p0)


def test_each_line_lands_in_each_position_uniformly():
    # many seeds on the key function itself: position of line 0 among 8
    n, trials = 8, 8000
    pos = Counter()
    for seed in range(trials):
        perm = shkeys._order(record_keys(seed, 0, n), 0)
        pos[int(np.flatnonzero(perm == 0)[0])] += 1
    expected = trials / n
    stat = sum((pos[i] - expected) ** 2 / expected for i in range(n))
    assert _chi2_sf(stat, n - 1) > 1e-4


# ------------------------------------------------------------------ determinism and modes


@pytest.fixture
def corpus(tmp_path):
    rng = np.random.default_rng(3)
    lines = [
        b"%d " % i + bytes(rng.integers(32, 127, rng.integers(0, 80)).astype(np.uint8))
        for i in range(3000)
    ]
    return write(tmp_path / "corpus.txt", b"\n".join(lines) + b"\n"), lines


def test_same_seed_same_output_whatever_the_budget_and_piles(tmp_path, corpus):
    path, lines = corpus
    outs = []
    for memory, bits in [("1G", None), ("64K", None), ("16K", None), ("16K", 1), ("32K", 5)]:
        out = tmp_path / f"o-{memory}-{bits}.txt"
        tmp = tmp_path / f"t-{memory}-{bits}"
        tmp.mkdir()
        res = shuffle_files([path], str(out), memory=memory, seed=11, tmp_dir=tmp, _pile_bits=bits)
        outs.append(out.read_bytes())
        assert os.listdir(tmp) == []
    assert res.runs > 1
    assert all(o == outs[0] for o in outs)
    assert Counter(records(outs[0])) == Counter(lines)
    other = tmp_path / "other.txt"
    shuffle_files([path], str(other), seed=12)
    assert other.read_bytes() != outs[0]


def test_same_output_whatever_the_number_of_workers(tmp_path, corpus):
    path, lines = corpus
    outs = []
    for jobs in (1, 2, 3):
        out = tmp_path / f"o{jobs}.txt"
        res = shuffle_files([path], str(out), memory="32K", seed=21, jobs=jobs, tmp_dir=tmp_path)
        assert res.jobs == jobs and not res.in_memory
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] == outs[2]
    assert Counter(records(outs[0])) == Counter(lines)
    assert sorted(os.listdir(tmp_path)) == ["corpus.txt", "o1.txt", "o2.txt", "o3.txt"]


def test_workers_shard_and_resplit_like_one_process(tmp_path, corpus):
    path, _ = corpus
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d, jobs, bits in (("a", 1, None), ("b", 2, 1)):
        shuffle_files(
            [path],
            str(tmp_path / d / "s{}.txt"),
            shards=5,
            header=1,
            seed=3,
            memory="16K",
            jobs=jobs,
            tmp_dir=tmp_path,
            _pile_bits=bits,
        )
    for j in range(5):
        assert (tmp_path / "a" / f"s{j}.txt").read_bytes() == (
            tmp_path / "b" / f"s{j}.txt"
        ).read_bytes()


def test_pile_too_big_is_split_again_without_changing_the_output(tmp_path, corpus):
    path, _ = corpus
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    shuffle_files([path], str(a), memory="1G", seed=5)
    res = shuffle_files([path], str(b), memory="8K", seed=5, tmp_dir=tmp_path, _pile_bits=1)
    assert res.piles == 2 and res.runs > 4
    assert a.read_bytes() == b.read_bytes()


def test_parallel_files_stay_aligned(tmp_path):
    src = [b"source %d" % i for i in range(500)]
    tgt = [b"target %d" % i for i in range(500)]
    ps = write(tmp_path / "src.txt", b"\n".join(src) + b"\n")
    pt = write(tmp_path / "tgt.txt", b"\n".join(tgt) + b"\n")
    shuffle_files([ps], ps, seed=99, memory="8K", tmp_dir=tmp_path)
    shuffle_files([pt], pt, seed=99, memory="1G")
    a = records(open(ps, "rb").read())
    b = records(open(pt, "rb").read())
    assert [x.split()[1] for x in a] == [x.split()[1] for x in b]
    assert a != src


def test_in_place(tmp_path, corpus):
    path, lines = corpus
    before = os.stat(path).st_mode
    shuffle_files([path], path, seed=1, memory="16K", tmp_dir=tmp_path)
    assert Counter(records(open(path, "rb").read())) == Counter(lines)
    assert os.stat(path).st_mode == before
    assert sorted(os.listdir(tmp_path)) == ["corpus.txt"]


def test_shards_split_the_same_order(tmp_path, corpus):
    path, lines = corpus
    whole = tmp_path / "whole.txt"
    shuffle_files([path], str(whole), seed=4, header=2)
    (tmp_path / "out").mkdir()
    pattern = str(tmp_path / "out" / "part-{:03d}.txt")
    res = shuffle_files([path], pattern, seed=4, header=2, shards=7, memory="16K", tmp_dir=tmp_path)
    assert len(res.outputs) == 7
    parts = [records(open(pattern.format(j), "rb").read()) for j in range(7)]
    head = lines[:2]
    assert all(p[:2] == head for p in parts)
    bodies = [p[2:] for p in parts]
    sizes = [len(b) for b in bodies]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == len(lines) - 2
    assert head + [x for b in bodies for x in b] == records(whole.read_bytes())


def test_more_shards_than_lines_gives_empty_shards(tmp_path):
    p = write(tmp_path / "two.txt", b"a\nb\n")
    pattern = str(tmp_path / "s{}.txt")
    shuffle_files([p], pattern, shards=4, seed=1)
    sizes = sorted(len(open(pattern.format(j), "rb").read()) for j in range(4))
    assert sizes == [0, 0, 2, 2]


def test_header_stays_on_top_and_is_not_shuffled(tmp_path):
    data = b"id\ttext\n" + b"".join(b"%d\tx\n" % i for i in range(100))
    p = write(tmp_path / "t.tsv", data)
    out = tmp_path / "o.tsv"
    res = shuffle_files([p], str(out), header=1, seed=2, memory="4K", tmp_dir=tmp_path)
    got = records(out.read_bytes())
    assert got[0] == b"id\ttext" and res.header == 1
    assert Counter(got[1:]) == Counter(records(data)[1:])
    # the header comes from the first input only
    p2 = write(tmp_path / "t2.tsv", b"id\ttext\nsecond\n")
    shuffle_files([p, p2], str(out), header=1, seed=2)
    got = records(out.read_bytes())
    assert got[0] == b"id\ttext" and got.count(b"id\ttext") == 2


@pytest.mark.parametrize("opener", [gzip.open, bz2.open, lzma.open])
def test_compressed_inputs_are_read_transparently(tmp_path, opener):
    lines = [b"line %d" % i for i in range(2000)]
    p = tmp_path / "c.txt.z"
    with opener(p, "wb") as f:
        f.write(b"\n".join(lines) + b"\n")
    plain = write(tmp_path / "plain.txt", b"\n".join(lines) + b"\n")
    a, b = tmp_path / "a", tmp_path / "b"
    shuffle_files([str(p)], str(a), seed=3, memory="16K", tmp_dir=tmp_path)
    shuffle_files([plain], str(b), seed=3)
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize(
    "ext, opener", [(".gz", gzip.open), (".bz2", bz2.open), (".xz", lzma.open)]
)
def test_outputs_named_like_compressed_files_are_compressed(tmp_path, ext, opener):
    lines = [b"row %d" % i for i in range(3000)]
    p = tmp_path / f"c{ext}"
    with opener(p, "wb") as f:
        f.write(b"\n".join(lines) + b"\n")
    shuffle_files([str(p)], str(p), seed=4, memory="16K", tmp_dir=tmp_path)  # in place
    with opener(p, "rb") as f:
        got = records(f.read())
    assert Counter(got) == Counter(lines) and got != lines
    assert sorted(os.listdir(tmp_path)) == [f"c{ext}"]


def test_corrupt_compressed_input_is_a_clear_error(tmp_path):
    p = tmp_path / "bad.gz"
    data = gzip.compress(b"hello\n" * 10000)
    p.write_bytes(data[: len(data) // 2])
    out = tmp_path / "o"
    with pytest.raises(KxError, match="bad.gz"):
        shuffle_files([str(p)], str(out), seed=1)
    assert not out.exists()


def test_bytes_survive_exactly(tmp_path):
    data = b"a\r\nb\xff\n\x00c\nlone\rcr\n\n\xc3\x28bad utf8\nlast-no-newline"
    p = write(tmp_path / "b.bin", data)
    out = tmp_path / "o"
    shuffle_files([p], str(out), seed=5)
    assert Counter(records(out.read_bytes())) == Counter(expected_records(data))
    assert out.read_bytes().endswith(b"\n")


def test_empty_input(tmp_path):
    p = write(tmp_path / "e.txt", b"")
    out = tmp_path / "o"
    res = shuffle_files([p], str(out), seed=1)
    assert out.read_bytes() == b"" and res.records == 0


def test_stdin_is_read_once_without_spooling(tmp_path):
    data = b"".join(b"%d\n" % i for i in range(5000))
    ref = tmp_path / "ref.txt"
    shuffle_files([write(tmp_path / "in.txt", data)], str(ref), seed=8)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kxtool",
            "shuffle",
            "--seed",
            "8",
            "--memory",
            "16K",
            "--tmp-dir",
            str(tmp_path),
        ],
        input=data,
        capture_output=True,
        check=True,
    )
    assert proc.stdout == ref.read_bytes()


def test_fresh_seed_is_reported(tmp_path, corpus):
    path, _ = corpus
    a = shuffle_files([path], str(tmp_path / "a"))
    shuffle_files([path], str(tmp_path / "b"), seed=a.seed)
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()


# ------------------------------------------------------------------ faults


def test_record_larger_than_the_budget_is_an_error_with_nothing_left(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    data = b"short\n" * 3000 + b"x" * 5000 + b"\nshort\n"
    p = write(tmp_path / "big.txt", data)
    out = tmp_path / "out.txt"
    with pytest.raises(KxError, match=r"line 3001 of .*big\.txt.*--memory"):
        shuffle_files([p], str(out), memory="8K", seed=1, tmp_dir=tmp)
    assert not out.exists() and os.listdir(tmp) == []
    assert sorted(os.listdir(tmp_path)) == ["big.txt", "tmp"]


def test_space_check_before_the_first_write(tmp_path, corpus, monkeypatch):
    path, _ = corpus
    monkeypatch.setattr(plan, "free_space", lambda d: 1000)
    with pytest.raises(KxError, match="not enough free space"):
        shuffle_files([path], str(tmp_path / "o"), memory="8K", seed=1, tmp_dir=tmp_path)
    assert not (tmp_path / "o").exists()


def test_disk_full_mid_run_leaves_inputs_and_output_untouched(tmp_path, corpus, monkeypatch):
    path, _ = corpus
    original = open(path, "rb").read()
    out = tmp_path / "out.txt"
    out.write_bytes(b"precious\n")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    real_spill = sh._Runs.spill
    calls = {"n": 0}

    def failing_spill(self, *args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise textio.os_error(OSError(errno.ENOSPC, "No space left on device"), "run")
        return real_spill(self, *args)

    monkeypatch.setattr(sh._Runs, "spill", failing_spill)
    with pytest.raises(KxError, match="no space left"):
        shuffle_files([path], str(out), memory="8K", seed=1, tmp_dir=tmp)
    assert out.read_bytes() == b"precious\n"
    assert open(path, "rb").read() == original
    assert os.listdir(tmp) == []
    assert sorted(os.listdir(tmp_path)) == ["corpus.txt", "out.txt", "tmp"]


def test_output_write_error_leaves_no_temporary_file(tmp_path, corpus, monkeypatch):
    path, _ = corpus
    out = tmp_path / "out.txt"
    real = textio.PositionalWriter.pwrite

    def failing(self, *args):
        real(self, *args)
        raise textio.os_error(OSError(errno.ENOSPC, "No space left on device"), str(out))

    monkeypatch.setattr(textio.PositionalWriter, "pwrite", failing)
    with pytest.raises(KxError, match="no space left"):
        shuffle_files([path], str(out), seed=1)
    assert sorted(os.listdir(tmp_path)) == ["corpus.txt"]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_many_piles_under_a_low_open_file_limit(tmp_path):
    lines = [b"%d" % i + b"y" * 40 for i in range(20000)]
    p = write(tmp_path / "in.txt", b"\n".join(lines) + b"\n")
    out = tmp_path / "out.txt"
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (32, 32))\n"
        "from kxtool.shuffle import shuffle_files\n"
        f"r = shuffle_files([{p!r}], {str(out)!r}, memory='64K', seed=3, tmp_dir={str(tmp_path)!r},"
        " _pile_bits=8)\n"
        "print(r.runs, r.piles)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, env=_env(), text=True)
    assert proc.returncode == 0, proc.stderr
    runs, piles = map(int, proc.stdout.split())
    assert runs > 32 and piles > 32
    assert Counter(records(out.read_bytes())) == Counter(lines)


@pytest.mark.parametrize("jobs", [1, 2])
def test_more_inputs_than_the_open_file_limit(tmp_path, jobs):
    paths, lines = [], []
    for f in range(60):
        part = [b"file %d line %d " % (f, i) + b"q" * (i % 50) for i in range(150)]
        paths.append(write(tmp_path / f"in{f:02d}.txt", b"\n".join(part) + b"\n"))
        lines += part
    out = tmp_path / "out.txt"
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (32, 32))\n"
        "from kxtool.shuffle import shuffle_files\n"
        f"r = shuffle_files({paths!r}, {str(out)!r}, memory='64K', seed=3, jobs={jobs})\n"
        "print(r.in_memory)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, env=_env(), text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False"]
    assert Counter(records(out.read_bytes())) == Counter(lines)


def test_sigint_and_sigterm_remove_temporary_files(tmp_path):
    for sig, code in [(signal.SIGINT, 130), (signal.SIGTERM, 143)]:
        tmp = tmp_path / f"tmp{int(sig)}"
        tmp.mkdir()
        out = tmp_path / f"out{int(sig)}.txt"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kxtool",
                "shuffle",
                "--memory",
                "64K",
                "--tmp-dir",
                str(tmp),
                "-o",
                str(out),
            ],
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_env(),
        )
        chunk = b"".join(b"line %d of the stream\n" % i for i in range(20000))
        proc.stdin.write(chunk)
        proc.stdin.flush()
        deadline = time.time() + 30
        while time.time() < deadline:  # wait until runs exist on disk
            if any(files for _, _, files in os.walk(tmp)):
                break
            time.sleep(0.05)
        assert any(files for _, _, files in os.walk(tmp)), "no run was written"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == code, err
        assert os.listdir(tmp) == []
        assert not out.exists()
        assert b"Traceback" not in err


def test_bad_arguments(tmp_path):
    p = write(tmp_path / "a.txt", b"a\n")
    with pytest.raises(KxError, match="does not exist|No such file"):
        shuffle_files([str(tmp_path / "missing.txt")], "-")
    with pytest.raises(KxError, match="directory"):
        shuffle_files([str(tmp_path)], "-")
    with pytest.raises(KxError, match="--memory"):
        shuffle_files([p], "-", memory="1K")
    with pytest.raises(KxError, match="pattern"):
        shuffle_files([p], str(tmp_path / "fixed.txt"), shards=3)
    with pytest.raises(KxError, match="needs -o"):
        shuffle_files([p], "-", shards=3)
    with pytest.raises(KxError, match="once"):
        shuffle_files(["-", "-"], "-")
    with pytest.raises(KxError, match="invalid size"):
        shuffle_files([p], "-", memory="lots")


def test_all_orders_reachable_small():
    seen = {tuple(shkeys._order(record_keys(s, 0, 4), 0)) for s in range(400)}
    assert seen == set(itertools.permutations(range(4)))


def _random_lines_file(path, total: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    lens = rng.integers(20, 201, total // 100)
    buf = rng.integers(32, 127, int(lens.sum()), dtype=np.uint8)
    buf[np.cumsum(lens) - 1] = 10
    path.write_bytes(buf.tobytes())


@pytest.mark.parametrize("jobs", [1, 2])
def test_peak_memory_stays_within_the_budget(tmp_path, jobs):
    src = tmp_path / "big.txt"
    _random_lines_file(src, 60 << 20)
    out = tmp_path / "out.txt"
    code = (
        "import resource, subprocess, sys\n"
        f"r = subprocess.run([sys.executable, '-m', 'kxtool', 'shuffle', {str(src)!r}, '-o',"
        f" {str(out)!r}, '--memory', '16M', '--jobs', '{jobs}', '--seed', '1', '--tmp-dir',"
        f" {str(tmp_path)!r}])\n"
        "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(), check=True
    )
    code_, peak_kib = map(int, proc.stdout.split())
    assert code_ == 0, proc.stderr
    assert peak_kib * 1024 < (16 << 20) + (64 << 20), peak_kib
    assert out.stat().st_size == src.stat().st_size


# ------------------------------------------------------------------ workers reading ranges


def _mixed_inputs(tmp_path):
    rng = np.random.default_rng(9)
    a = b"".join(b"a%d\xff\x00 \r\n" % i for i in range(700))
    b = b""
    lengths = rng.integers(0, 300, 400)
    c = b"".join(b"c%d " % i + b"z" * int(k) + b"\n" for i, k in enumerate(lengths))
    d = b"d-last-line-without-terminator"
    e = b"\n\n" + b"".join(b"e%d\r\n" % i for i in range(300))
    names = []
    for name, data in zip("abcde", (a, b, c, d, e), strict=True):
        names.append(write(tmp_path / f"{name}.txt", data))
    return names, (a, b, c, d, e)


@pytest.mark.parametrize("header", [0, 3])
def test_workers_reading_their_own_ranges_match_one_process(tmp_path, header):
    names, datas = _mixed_inputs(tmp_path)
    outs = {}
    for label, memory, jobs in (("memory", "1G", 1), ("one", "16K", 1), ("two", "16K", 2)):
        out = tmp_path / f"{label}.txt"
        res = shuffle_files(names, str(out), memory=memory, seed=4, jobs=jobs, header=header)
        assert res.in_memory == (label == "memory")
        outs[label] = out.read_bytes()
    assert outs["memory"] == outs["one"] == outs["two"]
    want = expected_records(*datas)
    got = records(outs["two"])
    assert got[:header] == want[:header]
    assert Counter(got) == Counter(want)


def test_workers_reading_ranges_keep_parallel_corpora_aligned(tmp_path):
    src = b"".join(b"source %d\n" % i for i in range(5000))
    tgt = b"".join(b"target %d with more words\n" % i for i in range(5000))
    ps, pt = write(tmp_path / "s.txt", src), write(tmp_path / "t.txt", tgt)
    shuffle_files([ps], str(tmp_path / "s.out"), memory="16K", seed=8, jobs=2)
    shuffle_files([pt], str(tmp_path / "t.out"), memory="64K", seed=8, jobs=3)
    s_ids = [x.split()[1] for x in records((tmp_path / "s.out").read_bytes())]
    t_ids = [x.split()[1] for x in records((tmp_path / "t.out").read_bytes())]
    assert s_ids == t_ids and sorted(s_ids) != s_ids


def test_long_record_found_by_workers_names_its_line(tmp_path):
    data = b"short\n" * 3000 + b"x" * 5000 + b"\n" + b"short\n" * 3000
    p = write(tmp_path / "big.txt", data)
    with pytest.raises(KxError, match=r"line 3001 of .*big\.txt.*--memory"):
        shuffle_files([p], str(tmp_path / "out.txt"), memory="8K", seed=1, jobs=2)
    assert sorted(os.listdir(tmp_path)) == ["big.txt"]


@pytest.mark.parametrize(("jobs", "memory"), [(1, "1G"), (1, "1M"), (2, "1M")])
def test_direct_writes_give_the_same_output(tmp_path, monkeypatch, jobs, memory):
    src = tmp_path / "src.txt"
    _random_lines_file(src, 3 << 20, seed=2)
    plain = tmp_path / "plain.txt"
    shuffle_files([str(src)], str(plain), memory=memory, seed=6, jobs=jobs, header=2)
    monkeypatch.setattr(plan, "DIRECT_MIN", 0)
    direct = tmp_path / "direct.txt"
    shuffle_files([str(src)], str(direct), memory=memory, seed=6, jobs=jobs, header=2)
    assert direct.read_bytes() == plain.read_bytes()


@pytest.mark.parametrize("jobs", [1, 2, 4])
def test_plan_keeps_the_pile_index_and_piles_within_the_budget(jobs):
    for total in (10**6, 10**9, 2 * 10**9, 2 * 10**10, 2 * 10**11, 10**12):
        for budget in (16 << 20, 512 << 20, 1 << 30, 4 << 30):
            unit = plan._work_unit(budget, total, jobs)
            assert unit <= max(plan.WORK_UNIT, budget // (2 * jobs))
            bits = plan._pile_bits_for(total, 1.15, unit, budget, jobs)
            full_bits, _ = plan._pile_plan(total, 1.15, unit, budget, jobs)
            _, index = plan._pile_plan(total, 1.15, unit, budget, jobs)
            index >>= full_bits - bits
            assert index <= budget / 8 or bits == 1, (total, budget, jobs)
            pile = total / (1 << bits)
            if bits == full_bits:  # piles fit in memory in pass 2 (otherwise split again)
                assert plan._work_memory(pile, pile / 100) <= 0.6 * budget / jobs


@pytest.mark.parametrize("target", ["plain", "direct", "shards", "gzip"])
def test_threads_in_memory_give_the_same_output(tmp_path, monkeypatch, target):
    src = tmp_path / "src.txt"
    _random_lines_file(src, 2 << 20, seed=4)
    name = {"plain": "o.txt", "direct": "o.txt", "shards": "o-{}.txt", "gzip": "o.txt.gz"}[target]
    shards = 3 if target == "shards" else None
    monkeypatch.setattr(plan, "WORK_UNIT", 1 << 18)  # many chunks and piles
    outs = []
    for jobs in (1, 3):
        d = tmp_path / f"j{jobs}"
        d.mkdir()
        if jobs > 1:
            monkeypatch.setattr(plan, "THREAD_MIN", 1 << 16)
            if target == "direct":
                monkeypatch.setattr(plan, "DIRECT_MIN", 0)
        res = shuffle_files(
            [str(src)], str(d / name), memory="1G", seed=9, jobs=jobs, shards=shards, header=1
        )
        assert res.in_memory
        outs.append(sorted((p.name, p.read_bytes()) for p in d.iterdir()))
    assert outs[0] == outs[1]
    lines = []
    for _, data in outs[0]:
        if target == "gzip":
            data = gzip.decompress(data)
        lines += data.splitlines()[1:]  # the header tops every shard
    assert sorted(lines) == sorted(src.read_bytes().splitlines()[1:])


@pytest.mark.parametrize("target", ["o.txt", "o-{}.txt"])
def test_threads_leave_a_pile_too_big_for_one_thread_to_the_whole_budget(
    tmp_path, monkeypatch, target
):
    from kxtool.shuffle import output

    src = tmp_path / "src.txt"
    _random_lines_file(src, 2 << 20, seed=5)
    shards = 2 if "{}" in target else None
    want = tmp_path / "want"
    want.mkdir()
    shuffle_files([str(src)], str(want / target), memory="40M", seed=3, jobs=1, shards=shards)
    monkeypatch.setattr(plan, "WORK_UNIT", 1 << 20)
    monkeypatch.setattr(plan, "THREAD_MIN", 1 << 16)
    real = output._work_memory
    calls = []

    def inflated(nbytes, count):  # ten times: over a thread's share, within the whole budget
        calls.append(nbytes)
        return 10 * real(nbytes, count)

    monkeypatch.setattr(output, "_work_memory", inflated)
    got = tmp_path / "got"
    got.mkdir()
    res = shuffle_files([str(src)], str(got / target), memory="40M", seed=3, jobs=3, shards=shards)
    assert res.in_memory and res.jobs == 3 and calls
    for p in sorted(want.iterdir()):
        assert (got / p.name).read_bytes() == p.read_bytes()


# ------------------------------------------------------------------ stdin redirected from a file


def _redirect_stdin(monkeypatch, path, offset=0):
    """Make ``sys.stdin`` the file ``path``, positioned at ``offset`` (use it in ``with``)."""
    f = open(path, "rb")  # noqa: SIM115 - closed by the caller's with
    f.seek(offset)
    stdin = io.TextIOWrapper(f)
    monkeypatch.setattr(sys, "stdin", stdin)
    return stdin


@pytest.mark.parametrize("header", [0, 3])
def test_stdin_from_a_plain_file_is_read_by_ranges_like_the_file(tmp_path, monkeypatch, header):
    names, datas = _mixed_inputs(tmp_path)
    ref = tmp_path / "ref.txt"
    shuffle_files(names, str(ref), memory="16K", seed=4, jobs=2, header=header)
    ranges = []
    real = _RangePlan.make
    monkeypatch.setattr(
        _RangePlan, "make", staticmethod(lambda *a: ranges.append(a[0]) or real(*a))
    )
    with _redirect_stdin(monkeypatch, names[0]):
        out = tmp_path / "out.txt"
        args = ["-", *names[1:]]
        shuffle_files(args, str(out), memory="16K", seed=4, jobs=2, header=header)
    assert out.read_bytes() == ref.read_bytes()
    assert len(ranges) == 1 and ranges[0][0].startswith("/dev/fd/")
    assert not textio._ALIASES  # the duplicate descriptor is closed, its alias gone


@pytest.mark.parametrize("case", ["read partly already", "compressed"])
def test_stdin_from_a_file_that_ranges_cannot_read_takes_the_stream_route(
    tmp_path, monkeypatch, case
):
    data = b"".join(b"line %d\n" % i for i in range(3000))
    if case == "compressed":  # decompressed as it is read
        stdin_file, offset, want = tmp_path / "in.gz", 0, data
        stdin_file.write_bytes(gzip.compress(data))
    else:  # read from where it stands, as a stream would be
        offset = data.index(b"line 1000\n")
        stdin_file, want = write(tmp_path / "in.txt", data), data[offset:]
    ref = tmp_path / "ref.txt"
    shuffle_files([write(tmp_path / "want.txt", want)], str(ref), memory="16K", seed=5, jobs=2)
    with _redirect_stdin(monkeypatch, stdin_file, offset):
        out = tmp_path / "out.txt"
        shuffle_files(["-"], str(out), memory="16K", seed=5, jobs=2)
    assert out.read_bytes() == ref.read_bytes()


def test_stdin_from_a_file_is_named_stdin_in_errors(tmp_path, monkeypatch):
    data = b"short\n" * 3000 + b"x" * 5000 + b"\n" + b"short\n" * 3000
    p = write(tmp_path / "big.txt", data)
    with _redirect_stdin(monkeypatch, p):
        with pytest.raises(KxError, match=r"line 3001 of '<stdin>' .*--memory"):
            shuffle_files(["-"], str(tmp_path / "out.txt"), memory="8K", seed=1, jobs=2)
    assert sorted(os.listdir(tmp_path)) == ["big.txt"]


# ---- compressed parts read by the workers themselves -----------------------------------


def _parts(tmp_path, n_lines=120_000, n_parts=5):
    rng = np.random.default_rng(11)
    lines = [b"%07d %s\n" % (i, b"y" * int(rng.integers(0, 90))) for i in range(n_lines)]
    per = n_lines // n_parts
    paths = []
    for j in range(n_parts):
        part = b"".join(lines[j * per : (j + 1) * per])
        if j == n_parts - 1:
            part = part[:-1]  # the last part lacks its final newline
        kind = ["gz", "bz2", "txt", "xz", "gz"][j % 5]
        p = tmp_path / f"part-{j}.{kind}"
        p.write_bytes(
            {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}.get(kind, bytes)(part)
        )
        paths.append(str(p))
    whole = tmp_path / "whole.txt"
    whole.write_bytes(b"".join(lines[: per * n_parts]))
    return paths, str(whole)


@pytest.mark.parametrize("jobs", [2, 3])
@pytest.mark.parametrize("memory", ["1M", "3M"])
@pytest.mark.parametrize("header", [0, 2])
def test_parts_read_by_the_workers_give_the_same_output(tmp_path, monkeypatch, jobs, memory,
                                                        header):
    from kxtool.shuffle import workers

    used = []
    original = workers._Pool.pass1_parts

    def spy(self, *a, **kw):
        used.append(True)
        return original(self, *a, **kw)

    monkeypatch.setattr(workers._Pool, "pass1_parts", spy)
    paths, whole = _parts(tmp_path)
    a = shuffle_files(paths, tmp_path / "a.txt", memory=memory, jobs=jobs, seed=21, header=header)
    assert used, "the parts route was not taken"
    b = shuffle_files(whole, tmp_path / "b.txt", memory="64M", jobs=1, seed=21, header=header)
    assert (tmp_path / "a.txt").read_bytes() == (tmp_path / "b.txt").read_bytes()
    assert a.records == b.records and a.header == header
    assert os.listdir(tmp_path).count("a.txt") == 1


def test_a_corrupt_part_read_by_a_worker_is_a_named_error(tmp_path):
    paths, _ = _parts(tmp_path)
    bad = bytearray(open(paths[0], "rb").read())
    for i in range(len(bad) // 2, len(bad) // 2 + 32):
        bad[i] ^= 0x5A
    open(paths[0], "wb").write(bytes(bad))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    with pytest.raises(KxError, match=f"cannot read '{paths[0]}': corrupt gzip data"):
        shuffle_files(paths, tmp_path / "out.txt", memory="1M", jobs=2, seed=1, tmp_dir=tmp)
    assert os.listdir(tmp) == []
    assert not (tmp_path / "out.txt").exists()


# ---- the whole process tree within --memory + 64 MiB, on every input route ---------------


def _tree_peak(argv, stdin=None):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "tools"))
    from procmem import run_measured

    return run_measured(argv, stdin=stdin, env=_env(), interval=0.02)


@pytest.fixture(scope="module")
def memory_inputs(tmp_path_factory):
    import zstandard

    d = tmp_path_factory.mktemp("memory")
    src = d / "big.txt"
    _random_lines_file(src, 100 << 20, seed=4)
    data = src.read_bytes()
    lines = data.splitlines(keepends=True)
    n = len(lines)
    compress = {
        "gz": lambda b: gzip.compress(b, 1),
        "bz2": bz2.compress,
        "xz": lambda b: lzma.compress(b, preset=0),
        "zst": zstandard.ZstdCompressor().compress,
    }
    parts = []
    for j, ext in enumerate(["gz", "bz2", "xz", "zst"] * 2):
        p = d / f"part-{j}.{ext}"
        p.write_bytes(compress[ext](b"".join(lines[j * n // 8 : (j + 1) * n // 8])))
        parts.append(str(p))
    one = d / "big.txt.zst"
    one.write_bytes(zstandard.ZstdCompressor().compress(data))
    return {"file": str(src), "parts": parts, "one": str(one), "size": len(data)}


MEMORY_ROUTES = ["file", "file -j 1", "stdin < file", "pipe", "parts", "parts -j 1", "one .zst"]


@pytest.mark.parametrize("route", MEMORY_ROUTES)
def test_the_whole_process_tree_stays_within_the_budget(tmp_path, memory_inputs, route):
    """Peak proportional set size of kxtool and every worker, sampled, against --memory plus
    64 MiB for the interpreters; the output must be complete."""
    budget = 64 << 20
    out = tmp_path / "out.txt"
    argv = [sys.executable, "-m", "kxtool", "shuffle", "--memory", "64M", "--seed", "3",
            "-o", str(out), "--tmp-dir", str(tmp_path)]
    stdin = None
    cat = None
    if route.startswith("file"):
        argv.append(memory_inputs["file"])
    elif route == "stdin < file":
        stdin = open(memory_inputs["file"], "rb")  # noqa: SIM115 - closed below
    elif route == "pipe":
        cat = subprocess.Popen(["cat", memory_inputs["file"]], stdout=subprocess.PIPE)
        stdin = cat.stdout
    elif route.startswith("parts"):
        argv += memory_inputs["parts"]
    else:
        argv.append(memory_inputs["one"])
    if route.endswith("-j 1"):
        argv += ["--jobs", "1"]
    try:
        m = _tree_peak(argv, stdin=stdin)
    finally:
        if stdin is not None:
            stdin.close()
        if cat is not None:
            cat.wait()
    assert m.returncode == 0, m.stderr
    assert out.stat().st_size == memory_inputs["size"]
    assert m.peak_pss * 1024 <= budget + (64 << 20), (m.peak_pss, m.peak_rss)
