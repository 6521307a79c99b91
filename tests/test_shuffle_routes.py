"""One output whatever the route: the same seed gives the same bytes from a file, from stdin
redirected from it, from a pipe, from its parts (plain or compressed, in any mix), with any
number of workers and any budget. And the plan behind the two-pass route: pass 2's ranges of
piles and its re-split keep within the budget, as the cost model in ARCHITECTURE.md says."""

from __future__ import annotations

import bz2
import gzip
import lzma
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from kxtool.shuffle import plan, shuffle_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = 5


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """About 400 KB of lines of 0-120 bytes, its parts plain and compressed, and the output of
    the one-pass route in memory (the reference)."""
    d = tmp_path_factory.mktemp("routes")
    rng = np.random.default_rng(3)
    lines = [
        b"%d\t" % i + bytes(rng.integers(32, 127, rng.integers(0, 120)).astype(np.uint8))
        for i in range(6000)
    ]
    data = b"\n".join(lines) + b"\n"
    whole = d / "whole.txt"
    whole.write_bytes(data)
    cuts = [0, 700, 1900, 2000, 4100, 6000]
    pieces = [b"".join(x + b"\n" for x in lines[a:b]) for a, b in zip(cuts, cuts[1:], strict=False)]
    writers = {
        "txt": lambda b: b,
        "gz": gzip.compress,
        "bz2": bz2.compress,
        "xz": lzma.compress,
        "zst": lambda b: zstandard.ZstdCompressor().compress(b),
    }
    parts = {}
    for kind in ("txt", "gz", "zst", "mixed"):
        names = []
        for i, piece in enumerate(pieces):
            ext = list(writers)[i % len(writers)] if kind == "mixed" else kind
            p = d / f"{kind}-{i}.{ext}"
            p.write_bytes(writers[ext](piece))
            names.append(str(p))
        parts[kind] = names
    single = d / "whole.txt.zst"
    single.write_bytes(writers["zst"](data))
    ref = d / "ref.txt"
    r = shuffle_files([str(whole)], str(ref), seed=SEED, memory="1G", jobs=1)
    assert r.in_memory
    return {"dir": d, "whole": str(whole), "parts": parts, "single": str(single),
            "ref": ref.read_bytes()}


@pytest.mark.parametrize("jobs", [1, 2, 3])
@pytest.mark.parametrize("memory", ["48K", "256K", "1G"])
@pytest.mark.parametrize("inputs", ["whole", "single", "txt", "gz", "zst", "mixed"])
def test_every_route_gives_the_bytes_of_the_reference(tmp_path, corpus, inputs, jobs, memory):
    paths = (
        [corpus[inputs]] if inputs in ("whole", "single") else corpus["parts"][inputs]
    )
    out = tmp_path / "out.txt"
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    r = shuffle_files(paths, str(out), seed=SEED, memory=memory, jobs=jobs, tmp_dir=tmp)
    assert out.read_bytes() == corpus["ref"]
    assert r.records == 6000
    assert r.in_memory == (memory == "1G")
    assert os.listdir(tmp) == []


@pytest.mark.parametrize("jobs", [1, 2])
@pytest.mark.parametrize("inputs", ["whole", "mixed"])
def test_run_files_written_around_the_page_cache_give_the_bytes_of_the_reference(
    tmp_path, corpus, monkeypatch, inputs, jobs
):
    # what an input three times bigger than this machine's memory gets (plan.direct_runs)
    from kxtool.shuffle import runs as runs_module

    monkeypatch.setattr(plan, "direct_runs", lambda total: True)
    offsets = []
    real = runs_module._Runs._write_direct

    def spy(self, part, offset):  # type: ignore[no-untyped-def]
        offsets.append(offset)
        return real(self, part, offset)

    monkeypatch.setattr(runs_module._Runs, "_write_direct", spy)
    paths = [corpus["whole"]] if inputs == "whole" else corpus["parts"][inputs]
    out = tmp_path / "out.txt"
    reads = []
    real_read = runs_module._pread_direct

    def spy_read(fd, stage, dest, offset):  # type: ignore[no-untyped-def]
        reads.append(len(dest))
        return real_read(fd, stage, dest, offset)

    monkeypatch.setattr(runs_module, "_pread_direct", spy_read)
    r = shuffle_files(paths, str(out), seed=SEED, memory="48K", jobs=jobs, tmp_dir=tmp_path)
    assert out.read_bytes() == corpus["ref"] and not r.in_memory
    if jobs == 1:  # the workers' writes and reads happen in their own processes
        assert offsets and all(o % 4096 == 0 for o in offsets)
        assert reads, "pass 2 did not read the runs around the page cache"


def test_pass_2_reads_through_the_page_cache_where_direct_reads_are_refused(
    tmp_path, corpus, monkeypatch
):
    import errno

    from kxtool.shuffle import runs as runs_module

    monkeypatch.setattr(plan, "direct_runs", lambda total: True)
    refused = []

    def pread(fd, stage, dest, offset):  # type: ignore[no-untyped-def]
        refused.append(offset)
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(runs_module, "_pread_direct", pread)
    monkeypatch.setattr(runs_module, "_NO_DIRECT_READ", set())
    out = tmp_path / "out.txt"
    shuffle_files([corpus["whole"]], str(out), seed=SEED, memory="48K", jobs=1,
                  tmp_dir=tmp_path)
    assert out.read_bytes() == corpus["ref"]
    assert 1 <= len(refused) <= runs_module.READ_THREADS, "refused direct reads were tried again"


@pytest.mark.parametrize("offset", [0, 1, 4095, 4096, 5000])
@pytest.mark.parametrize("size", [0, 1, 100, 4096, 9000, 20000])
def test_a_direct_read_gives_the_bytes_at_any_offset_and_size(tmp_path, offset, size):
    from kxtool.records import aligned_empty
    from kxtool.shuffle.runs import _pread_direct

    blob = np.random.default_rng(offset + size).integers(0, 256, 30000, dtype=np.uint8)
    path = tmp_path / "runs"
    path.write_bytes(blob.tobytes()[:20001])
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        dest = np.zeros(size, dtype=np.uint8)
        got = _pread_direct(fd, aligned_empty(8192), dest, offset)  # a stage smaller than size
    finally:
        os.close(fd)
    expect = blob[offset : min(offset + size, 20001)]
    assert got == len(expect)
    assert dest[:got].tobytes() == expect.tobytes()


def test_a_run_file_whose_direct_writes_are_refused_is_written_through_the_page_cache(
    tmp_path, corpus, monkeypatch
):
    import errno
    import fcntl

    from kxtool.shuffle import runs as runs_module

    monkeypatch.setattr(plan, "direct_runs", lambda total: True)
    real = runs_module._pwrite_all
    refused = []

    def pwrite(fd, data, offset):  # type: ignore[no-untyped-def]
        # the file system takes the first direct writes, then refuses one
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT and offset > 0:
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, data, offset)

    monkeypatch.setattr(runs_module, "_pwrite_all", pwrite)
    out = tmp_path / "out.txt"
    shuffle_files([corpus["whole"]], str(out), seed=SEED, memory="48K", jobs=1,
                  tmp_dir=tmp_path)
    assert len(refused) == 1, "a refused direct write was tried again"
    assert out.read_bytes() == corpus["ref"]


def _cli(args, **kw):
    return subprocess.run(
        [sys.executable, "-m", "kxtool", "shuffle", *args], capture_output=True, check=True, **kw
    )


@pytest.mark.parametrize("memory", ["48K", "1G"])
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_stdin_redirected_and_a_pipe_give_the_bytes_of_the_reference(corpus, memory, jobs):
    opts = ["--seed", str(SEED), "--memory", memory, "--jobs", jobs]
    with open(corpus["whole"], "rb") as f:
        redirected = _cli(["-", *opts], stdin=f).stdout
    assert redirected == corpus["ref"]
    cat = subprocess.Popen(["cat", corpus["whole"]], stdout=subprocess.PIPE)
    piped = _cli(opts, stdin=cat.stdout).stdout
    cat.stdout.close()
    assert cat.wait() == 0
    assert piped == corpus["ref"]
    zcat = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdout.buffer.write(open(sys.argv[1],'rb').read())",
         corpus["single"]],
        stdout=subprocess.PIPE,
    )
    compressed = _cli(opts, stdin=zcat.stdout).stdout  # a compressed stream on stdin
    zcat.stdout.close()
    assert zcat.wait() == 0
    assert compressed == corpus["ref"]


def test_a_slow_pipe_too_big_for_memory_does_not_hang_the_workers(corpus):
    # the next block of stdin is read by a thread of its own; the workers are forked while a
    # read from a slow producer may be waiting, and a child must not inherit the stream's lock
    # (multiprocessing's children close stdin as they start): reads are settled before a fork
    producer = (
        "import sys, time\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "for i in range(0, len(data), 8192):\n"
        "    sys.stdout.buffer.write(data[i:i + 8192]); sys.stdout.flush(); time.sleep(0.0005)\n"
    )
    slow = subprocess.Popen([sys.executable, "-c", producer, corpus["whole"]],
                            stdout=subprocess.PIPE)
    out = _cli(["--seed", str(SEED), "--memory", "96K", "--jobs", "2"], stdin=slow.stdout,
               timeout=120).stdout
    slow.stdout.close()
    assert slow.wait() == 0
    assert out == corpus["ref"]


def test_the_cli_on_parts_gives_the_bytes_of_the_reference(corpus):
    out = _cli([*corpus["parts"]["mixed"], "--seed", str(SEED), "--memory", "64K"]).stdout
    assert out == corpus["ref"]


# ------------------------------------------------------------------ the plan of pass 2


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 2000), min_size=1, max_size=300),
    st.integers(1 << 12, 1 << 24),
)
def test_pile_ranges_cover_every_pile_once_and_stay_within_their_share(counts, budget):
    counts = np.array(counts, dtype=np.int64)
    sizes = counts * 57
    groups = plan._pile_groups(counts, sizes, budget)
    assert groups[0][0] == 0 and groups[-1][1] == len(counts)
    assert all(a < b for a, b in groups)
    assert all(g[1] == h[0] for g, h in zip(groups, groups[1:], strict=False))
    for first, end in groups:
        if end - first > 1:
            held = int((sizes[first:end] + 8 * counts[first:end]).sum())
            assert held <= plan.GROUP_SHARE * budget
            work = 2 * sizes[first:end] + plan.RECORD_WORK * counts[first:end]
            assert (work <= plan.GROUP_PILE_SHARE * budget).all()


@pytest.mark.parametrize(
    "nbytes,budget",
    [(128 << 30, 45 << 20), (2 << 30, 450 << 20), (62 << 20, 3 << 20), (1 << 40, 1 << 20),
     (10 << 20, 8 << 10)],
)
def test_a_pile_split_again_keeps_its_index_within_a_sixteenth_of_the_budget(nbytes, budget):
    count = nbytes // 110
    bits = plan._resplit_bits(nbytes, count, budget)
    assert 1 <= bits <= 16
    need = plan._work_memory(nbytes, count)
    sub_runs = math.ceil(need / (0.5 * budget))
    assert bits == 1 or plan._INDEX_ENTRY * sub_runs * (1 << bits) <= budget / 16


def test_a_tiny_budget_splits_piles_again_over_several_levels_and_changes_nothing(
    tmp_path, corpus, monkeypatch
):
    from kxtool.shuffle import output

    calls = []
    original = output._resplit_bits

    def spy(nbytes, count, budget):
        bits = original(nbytes, count, budget)
        calls.append(bits)
        return bits

    monkeypatch.setattr(output, "_resplit_bits", spy)
    out = tmp_path / "out.txt"
    shuffle_files([corpus["whole"]], str(out), seed=SEED, memory="24K", jobs=1,
                  tmp_dir=tmp_path, _pile_bits=1)
    assert out.read_bytes() == corpus["ref"]
    assert len(calls) > 2  # split again, and the parts split again
    assert sorted(os.listdir(tmp_path)) == ["out.txt"]


def test_the_cost_model_predicts_the_engines_runs_and_piles(tmp_path, corpus):
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import shuffle_model

    size = os.path.getsize(corpus["whole"])
    mean = size / 6000
    for memory, jobs in [(1 << 20, 1), (256 << 10, 2)]:
        r = shuffle_files([corpus["whole"]], str(tmp_path / "o.txt"), seed=SEED, memory=memory,
                          jobs=jobs, tmp_dir=tmp_path)
        m = shuffle_model.model(size, memory, jobs, mean)
        assert r.piles == m["piles"]
        assert abs(r.runs - m["runs"]) <= max(2, 0.2 * m["runs"])


@pytest.mark.parametrize("jobs", [1, 2])
def test_pass_2_reads_runs_straight_into_aligned_slots_and_gives_the_bytes_of_the_reference(
    tmp_path, monkeypatch, jobs
):
    # with few runs for the budget each run's bytes are read around the page cache straight
    # into a page-aligned slot of the range's buffer (runs.read_slack)
    from kxtool.shuffle import runs as runs_module

    rng = np.random.default_rng(11)
    lengths = rng.integers(0, 120, 140_000)
    blob = rng.integers(32, 127, int(lengths.sum()) + len(lengths), dtype=np.uint8)
    blob[np.cumsum(lengths + 1) - 1] = ord("\n")
    src = tmp_path / "in.txt"
    src.write_bytes(blob.tobytes())
    ref = tmp_path / "ref.txt"
    shuffle_files([str(src)], str(ref), seed=SEED, memory="1G", jobs=1, tmp_dir=tmp_path)
    import fcntl

    monkeypatch.setattr(plan, "direct_runs", lambda total: True)
    slots = []
    real = runs_module._pread_into

    def spy(fd, buf, offset):  # type: ignore[no-untyped-def]
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:  # a slot read straight
            slots.append((buf.ctypes.data % 4096, buf.nbytes % 4096, offset % 4096))
        return real(fd, buf, offset)

    monkeypatch.setattr(runs_module, "_pread_into", spy)
    out = tmp_path / "out.txt"
    r = shuffle_files([str(src)], str(out), seed=SEED, memory="4M", jobs=jobs, tmp_dir=tmp_path)
    assert not r.in_memory
    assert out.read_bytes() == ref.read_bytes()
    if jobs == 1:  # the workers' reads happen in their own processes
        assert slots and set(slots) == {(0, 0, 0)}


@pytest.mark.parametrize("direct", [False, True])
def test_a_run_file_cut_short_during_pass_2_is_a_named_error_and_no_output(
    tmp_path, corpus, monkeypatch, direct
):
    # the reads of a range of piles run on threads, one range ahead: their errors still reach
    # the caller, and the output is not written
    import kxtool.shuffle as shuffle_module
    from kxtool.errors import KxError

    monkeypatch.setattr(plan, "direct_runs", lambda total: direct)
    real = shuffle_module._drain_to_output

    def cut(runs, *args, **kwargs):  # type: ignore[no-untyped-def]
        with open(runs.files[0], "r+b") as f:
            f.truncate(os.path.getsize(runs.files[0]) // 2)
        return real(runs, *args, **kwargs)

    monkeypatch.setattr(shuffle_module, "_drain_to_output", cut)
    out = tmp_path / "out.txt"
    with pytest.raises(KxError, match="temporary file .* truncated or changed"):
        shuffle_files([corpus["whole"]], str(out), seed=SEED, memory="48K", jobs=1,
                      tmp_dir=tmp_path)
    assert os.listdir(tmp_path) == [], "the run files or the staged output were left behind"


@pytest.mark.parametrize("direct", [False, True])
def test_pass_2_without_the_compiled_kernel_gives_the_bytes_of_the_reference(
    tmp_path, corpus, monkeypatch, direct
):
    # piles of a range read at once are joined by gather_where, whose fallback is pure Python
    from kxtool import records
    from kxtool.shuffle import runs as runs_module

    monkeypatch.setattr(plan, "direct_runs", lambda total: direct)
    monkeypatch.setattr(records, "_native", None)
    monkeypatch.setattr(runs_module, "_records_native", None)
    out = tmp_path / "out.txt"
    r = shuffle_files([corpus["whole"]], str(out), seed=SEED, memory="48K", jobs=1,
                      tmp_dir=tmp_path)
    assert out.read_bytes() == corpus["ref"] and not r.in_memory
