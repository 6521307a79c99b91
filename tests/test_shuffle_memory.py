"""An input that fits in memory: grouped by threads while it is read (kxtool/shuffle/memory.py),
and moved to disk when a file that looked as if it would fit does not. Plain files that fit are
mapped rather than read (kxtool/shuffle/reading.py): the same bytes come out, and a file that
shrinks meanwhile is a one-line error."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kxtool.shuffle import memory, reading, shuffle_files, shuffle_lines
from kxtool.shuffle import runs as runs_module
from kxtool.shuffle.keys import record_keys
from kxtool.shuffle.runs import _Runs

SEED = 11


def _lines(rng: np.random.Generator, n: int, lo: int, hi: int, tag: bytes) -> list[bytes]:
    return [
        tag + b"%d " % i + bytes(rng.integers(97, 123, rng.integers(lo, hi)).astype(np.uint8))
        for i in range(n)
    ]


@pytest.fixture
def small_blocks(monkeypatch):
    """Read in blocks of 64 KiB, so that a few hundred KB are many chunks."""
    monkeypatch.setattr(reading, "MAX_BLOCK", 1 << 16)


@pytest.fixture
def moves(monkeypatch):
    """Count the moves of runs grouped in memory to disk."""
    calls = []
    real = memory._Grouper.to_disk

    def spy(self, disk):  # type: ignore[no-untyped-def]
        calls.append(len(self.runs.memory))
        return real(self, disk)

    monkeypatch.setattr(memory._Grouper, "to_disk", spy)
    return calls


# (workers, budget, long lines, short lines): the file is expected to fit by its first chunk
# (and, with workers, by its first MiB, which the byte-range plan samples), but does not
CASES = [(1, "4M", 80, 100_000), (2, "128M", 1400, 500_000), (3, "64M", 1400, 500_000)]


@pytest.mark.parametrize(("jobs", "budget", "long", "short"), CASES)
def test_a_file_that_looked_as_if_it_fits_goes_to_disk_with_the_same_output(
    tmp_path, small_blocks, moves, jobs, budget, long, short
):
    # long lines first (little memory per byte), so the file is expected to fit and grouping
    # starts; then come short lines, whose per-record memory does not fit
    rng = np.random.default_rng(jobs)
    lines = _lines(rng, long, 800, 900, b"L") + _lines(rng, short, 0, 3, b"s")
    src = tmp_path / "in.txt"
    src.write_bytes(b"".join(x + b"\n" for x in lines))
    out = tmp_path / "out.txt"
    r = shuffle_files(src, out, memory=budget, seed=SEED, jobs=jobs, tmp_dir=tmp_path)
    assert moves and moves[0] >= 1, "the runs grouped in memory were not moved to disk"
    assert not r.in_memory and r.records == len(lines)
    want = b"".join(x + b"\n" for x in shuffle_lines(lines, SEED))
    assert out.read_bytes() == want
    # and the same as the one-pass route of a budget it fits in
    again = tmp_path / "again.txt"
    r2 = shuffle_files(src, again, memory="1G", seed=SEED, jobs=jobs)
    assert r2.in_memory and again.read_bytes() == want
    assert not list(tmp_path.glob("**/*.runs")), "temporary runs were left behind"


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_file_that_fits_is_grouped_while_it_is_read(tmp_path, small_blocks, moves, jobs,
                                                      monkeypatch):
    rng = np.random.default_rng(5)
    lines = _lines(rng, 20_000, 0, 60, b"")
    src = tmp_path / "in.txt"
    src.write_bytes(b"".join(x + b"\n" for x in lines))
    reads_left: list[int] = []
    real_add = memory._Grouper.add

    def add(self, chunk):  # type: ignore[no-untyped-def]
        # how much of the file is still unread when each chunk is handed to the grouper
        reads_left.append(src.stat().st_size - reader_bytes[-1])
        return real_add(self, chunk)

    reader_bytes = [0]
    real_chunks = reading._Reader.chunks

    def chunks(self):  # type: ignore[no-untyped-def]
        for c in real_chunks(self):
            reader_bytes.append(self.bytes_read)
            yield c

    monkeypatch.setattr(memory._Grouper, "add", add)
    monkeypatch.setattr(reading._Reader, "chunks", chunks)
    out = tmp_path / "out.txt"
    r = shuffle_files(src, out, memory="64M", seed=SEED, jobs=jobs)
    assert r.in_memory and not moves
    assert len(reads_left) > 3 and max(reads_left) > 0, "grouping waited for the whole input"
    assert out.read_bytes() == b"".join(x + b"\n" for x in shuffle_lines(lines, SEED))


def test_stdin_from_a_pipe_is_held_until_it_ends_then_grouped(tmp_path, small_blocks, moves):
    # no size known: nothing is grouped before the input ends (or is too big)
    import subprocess
    import sys

    rng = np.random.default_rng(8)
    lines = _lines(rng, 5000, 0, 40, b"p")
    data = b"".join(x + b"\n" for x in lines)
    out = tmp_path / "out.txt"
    code = (
        "import sys; from kxtool.shuffle import shuffle_files; "
        f"shuffle_files('-', {str(out)!r}, memory='64M', seed={SEED})"
    )
    subprocess.run([sys.executable, "-c", code], input=data, check=True)
    assert out.read_bytes() == b"".join(x + b"\n" for x in shuffle_lines(lines, SEED))


@pytest.mark.skipif(runs_module._records_native is None, reason="kxtool/_records.c not built")
@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 70), max_size=400),
    st.integers(0, 2**40),
    st.integers(0, 2**63 - 1),
    st.sampled_from([(0, 0), (0, 1), (0, 6), (5, 9), (20, 16), (0, 20), (40, 18)]),
)
def test_the_grouping_kernel_makes_the_runs_numpy_makes(lengths, first, seed, piles):
    # keys (the murmur3 rounds of keys.py) and grouping by key bits, in C, against numpy
    shift, bits = piles
    data = np.frombuffer(b"".join(b"r" * k + b"\n" for k in lengths), dtype=np.uint8)
    ends = np.cumsum(np.array(lengths, dtype=np.int64) + 1)
    runs = _Runs(None, b"\n", shift, bits, "t")
    got = runs.group_records(data, ends, seed, first)
    want = runs.group(data, record_keys(seed, first, len(lengths)), ends)
    for g, w in zip(got, want, strict=True):
        assert (g is None) == (w is None)
        if g is not None:
            assert np.array_equal(g, w)


@pytest.mark.skipif(runs_module._records_native is None, reason="kxtool/_records.c not built")
def test_the_grouping_kernel_refuses_ends_that_do_not_describe_the_data():
    native = runs_module._records_native
    data = np.frombuffer(b"ab\ncd\n", dtype=np.uint8)

    def call(ends, out=None):  # type: ignore[no-untyped-def]
        n = len(ends)
        native.group(
            data, np.array(ends, dtype=np.int64), 0, 1, 2, 3, 0, 2,
            np.empty(6 if out is None else out, np.uint8), np.empty(n, np.uint64),
            np.empty(n, np.int64), np.empty(4, np.int64), np.empty(4, np.int64),
        )

    call([3, 6])
    for bad in ([3, 5], [4, 3, 6], [7]):
        with pytest.raises(ValueError):
            call(bad)
    with pytest.raises(ValueError):
        call([3, 6], out=5)


NATIVE_ONLY = pytest.mark.skipif(
    runs_module._records_native is None, reason="kxtool/_records.c not built"
)


@pytest.fixture
def mapped(monkeypatch):
    """Count the inputs mapped (rather than read) and the piles written from their mapping."""
    seen = {"maps": 0, "piles": 0}
    real_map = reading._Reader._map

    def spy_map(self, path):  # type: ignore[no-untyped-def]
        got = real_map(self, path)
        seen["maps"] += got is not None
        return got

    from kxtool.shuffle import output

    real_emit = output._emit_positions

    def spy_emit(*args):  # type: ignore[no-untyped-def]
        seen["piles"] += 1
        return real_emit(*args)

    monkeypatch.setattr(reading._Reader, "_map", spy_map)
    monkeypatch.setattr(output, "_emit_positions", spy_emit)
    return seen


def _shuffled(tmp_path, inputs, name, **kw):  # type: ignore[no-untyped-def]
    out = tmp_path / name
    r = shuffle_files([str(p) for p in inputs], out, seed=SEED, **kw)
    return r, out


@pytest.fixture
def small_piles(monkeypatch):
    """Order an input of a few MB in many piles, by two threads."""
    monkeypatch.setattr(memory, "PILE_SHARE", 0.01)
    monkeypatch.setattr(memory.plan, "THREAD_MIN", 256 << 10)


@NATIVE_ONLY
@pytest.mark.parametrize("jobs", [1, 2])
def test_a_plain_file_that_fits_is_mapped_and_gives_the_bytes_of_the_shuffle(
    tmp_path, small_blocks, small_piles, mapped, jobs
):
    rng = np.random.default_rng(21)
    lines = _lines(rng, 30_000, 0, 90, b"m")
    src = tmp_path / "in.txt"
    src.write_bytes(b"".join(x + b"\n" for x in lines))
    r, out = _shuffled(tmp_path, [src], "out.txt", memory="64M", jobs=jobs)
    assert r.in_memory and r.jobs == jobs and mapped["maps"] == 1 and mapped["piles"] > 4
    assert out.read_bytes() == b"".join(x + b"\n" for x in shuffle_lines(lines, SEED))


@NATIVE_ONLY
@pytest.mark.parametrize(
    "case",
    [
        {"header": 2},
        {"no_final_newline": True},
        {"zero_terminated": True},
        {"shards": 3},
        {"several": True, "header": 1},
        {"several": True, "no_final_newline": True, "jobs": 1},
    ],
)
def test_mapped_inputs_give_the_bytes_the_read_route_gives(
    tmp_path, small_blocks, small_piles, mapped, monkeypatch, case
):
    rng = np.random.default_rng(4)
    sep = b"\0" if case.get("zero_terminated") else b"\n"
    inputs = []
    for i, n in enumerate([9000, 0, 3, 5000] if case.get("several") else [12_000]):
        data = sep.join(_lines(rng, n, 0, 70, b"%d:" % i))
        if n and not (case.get("no_final_newline") and i % 2 == 0):
            data += sep
        p = tmp_path / f"in{i}.txt"
        p.write_bytes(data)
        inputs.append(p)
    kw = {
        "memory": "64M",
        "header": case.get("header", 0),
        "zero_terminated": bool(case.get("zero_terminated")),
        "jobs": case.get("jobs", 2),
    }
    name = "out-{:02d}.txt" if case.get("shards") else "out.txt"
    r, _ = _shuffled(tmp_path, inputs, name, shards=case.get("shards"), **kw)
    assert r.in_memory and mapped["maps"] == sum(1 for p in inputs if p.stat().st_size)
    monkeypatch.setattr(reading._Reader, "_map", lambda self, path: None)
    read_name = "read-{:02d}.txt" if case.get("shards") else "read.txt"
    r2, _ = _shuffled(tmp_path, inputs, read_name, shards=case.get("shards"), **kw)
    assert r2.records == r.records
    for a, b in zip(sorted(tmp_path.glob("out*.txt")), sorted(tmp_path.glob("read*.txt")),
                    strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_without_the_kernel_nothing_is_mapped_and_the_bytes_are_the_same(
    tmp_path, mapped, monkeypatch
):
    import kxtool.shuffle as shuffle_package

    rng = np.random.default_rng(9)
    lines = _lines(rng, 4000, 0, 50, b"k")
    src = tmp_path / "in.txt"
    src.write_bytes(b"".join(x + b"\n" for x in lines))
    monkeypatch.setattr(shuffle_package, "_records_native", None)
    r, out = _shuffled(tmp_path, [src], "out.txt", memory="64M")
    assert r.in_memory and mapped["maps"] == 0
    assert out.read_bytes() == b"".join(x + b"\n" for x in shuffle_lines(lines, SEED))


@NATIVE_ONLY
@pytest.mark.parametrize(("jobs", "budget", "long", "short"), CASES[:2])
def test_a_mapped_file_that_did_not_fit_after_all_drops_its_pages(
    tmp_path, small_blocks, moves, mapped, jobs, budget, long, short
):
    # as above (long lines, then many short ones), mapped: the runs go to disk and the mapped
    # pages are let go of as pass 1 reads on
    rng = np.random.default_rng(jobs + 10)
    lines = _lines(rng, long, 800, 900, b"L") + _lines(rng, short, 0, 3, b"s")
    src = tmp_path / "in.txt"
    src.write_bytes(b"".join(x + b"\n" for x in lines))
    drops = []
    real = reading._Reader.unmap_pages

    def spy(self):  # type: ignore[no-untyped-def]
        drops.append(len(self._maps))
        return real(self)

    import unittest.mock

    with unittest.mock.patch.object(reading._Reader, "unmap_pages", spy):
        r, out = _shuffled(tmp_path, [src], "out.txt", memory=budget, jobs=jobs,
                           tmp_dir=tmp_path)
    assert mapped["maps"] == 1 and moves and drops == [1] and not r.in_memory
    assert out.read_bytes() == b"".join(x + b"\n" for x in shuffle_lines(lines, SEED))


@NATIVE_ONLY
def test_an_input_that_shrinks_while_it_is_mapped_is_a_one_line_error(tmp_path):
    import subprocess
    import sys

    rng = np.random.default_rng(2)
    src = tmp_path / "in.txt"
    src.write_bytes(b"".join(x + b"\n" for x in _lines(rng, 40_000, 10, 80, b"t")))
    out = tmp_path / "out.txt"
    out.write_bytes(b"before\n")
    # another program truncates the input once it has been read, before it is written out
    code = f"""
import os, kxtool.shuffle as s
real = s._drain_to_output
def drain(*a, **k):
    os.truncate({str(src)!r}, 0)
    return real(*a, **k)
s._drain_to_output = drain
s.shuffle_files({str(src)!r}, {str(out)!r}, memory="64M", seed=1)
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert p.returncode == 1, p.stderr
    err = p.stderr.decode()
    assert err == (
        f"kxtool: {str(src)!r} shrank while it was read (another program truncated or rewrote"
        " it); stopped before the output was complete (no output file was replaced)\n"
    )
    assert out.read_bytes() == b"before\n"
