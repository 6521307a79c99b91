"""An input that fits in memory: grouped by threads while it is read (kxtool/shuffle/memory.py),
and moved to disk when a file that looked as if it would fit does not."""

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
