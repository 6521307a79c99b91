"""Byte records in numpy buffers: boundaries and the gather, against plain Python."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kxtool import records as rec
from kxtool.records import gather, record_ends, starts_of


def _buffer(items: list[bytes], sep: bytes = b"\n") -> np.ndarray:
    return np.frombuffer(b"".join(x + sep for x in items), dtype=np.uint8)


def _python_gather(items: list[bytes], order, sep: bytes = b"\n") -> bytes:
    return b"".join(items[i] + sep for i in order)


NATIVE = rec._native


@pytest.fixture(scope="module", autouse=True, params=["native", "numpy"])
def backend(request):
    """Every test here runs on both paths: the compiled kernel and numpy."""
    if request.param == "native" and NATIVE is None:
        pytest.skip("the compiled kernel kxtool/_records.c is not built")
    rec._native = NATIVE if request.param == "native" else None
    yield request.param
    rec._native = NATIVE


record = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"x"))


@settings(max_examples=200, deadline=None)
@given(st.lists(record, max_size=60), st.randoms(use_true_random=False))
def test_gather_equals_python_for_any_order(items, rnd):
    data = _buffer(items)
    ends = record_ends(data, 10)
    assert len(ends) == len(items)
    starts = starts_of(ends)
    order = list(range(len(items)))
    rnd.shuffle(order)
    got = gather(data, starts, ends - starts, np.array(order, dtype=np.intp))
    assert got.tobytes() == _python_gather(items, order)


@pytest.mark.parametrize("long_share", [0.0, 0.01, 0.3])
def test_long_records_and_records_at_the_end_are_copied_exactly(long_share):
    # widths above 256 bytes use a quantile, so the longest records take the one-by-one path
    rng = np.random.default_rng(7)
    n = 3000
    lengths = rng.integers(0, 300, n)
    long = rng.random(n) < long_share
    lengths[long] = rng.integers(300, 20000, int(long.sum()))
    items = [bytes(rng.integers(11, 256, k, dtype=np.uint8)) for k in lengths]
    data = _buffer(items)
    ends = record_ends(data, 10)
    starts = starts_of(ends)
    for order in (rng.permutation(n), np.arange(n), np.arange(n)[::-1].copy()):
        assert gather(data, starts, ends - starts, order).tobytes() == _python_gather(
            items, order
        )


def test_the_exact_fallback_gives_the_same_bytes():
    rng = np.random.default_rng(3)
    items = [bytes(rng.integers(11, 256, k, dtype=np.uint8)) for k in rng.integers(0, 90, 500)]
    data = _buffer(items)
    ends = record_ends(data, 10)
    starts = starts_of(ends)
    order = rng.permutation(len(items))
    lengths = (ends - starts)[order]
    got = rec._gather_by_length(data, starts[order], lengths, int(lengths.sum()))
    assert got.tobytes() == _python_gather(items, order)


def test_numpy_assigns_fancy_indices_in_order():
    # the fixed-width copy relies on it; if it ever fails, gather falls back to exact copies
    assert rec._check_ordered_assign()


def test_nul_separator_and_empty_input():
    data = _buffer([b"a\nb", b"", b"\xff"], sep=b"\0")
    ends = record_ends(data, 0)
    assert ends.tolist() == [4, 5, 7]
    starts = starts_of(ends)
    assert gather(data, starts, ends - starts, np.array([2, 0, 1])).tobytes() == b"\xff\0a\nb\0\0"
    empty = np.empty(0, dtype=np.int64)
    assert gather(data, empty, empty).tobytes() == b""
    assert record_ends(np.frombuffer(b"no end", dtype=np.uint8), 10).tolist() == []


@pytest.mark.parametrize("direct", [False, True])
def test_positional_writer_places_every_piece(tmp_path, direct):
    from kxtool.records import aligned_empty
    from kxtool.textio import PositionalWriter

    rng = np.random.default_rng(5)
    total = 300_000
    want = rng.integers(0, 256, total, dtype=np.uint8)
    cuts = np.sort(rng.choice(np.arange(1, total), 40, replace=False))
    path = tmp_path / "out.bin"
    path.write_bytes(b"\0" * total)
    w = PositionalWriter(str(path), "out.bin", direct=direct)
    try:
        bounds = [0, *cuts.tolist(), total]
        pieces = list(zip(bounds[:-1], bounds[1:], strict=True))
        rng.shuffle(pieces)
        for a, b in pieces:
            buf = aligned_empty(b - a, w.phase(a)) if a % 2 else np.empty(b - a, np.uint8)
            buf[:] = want[a:b]
            w.pwrite(buf, a)
    finally:
        w.close()
    assert path.read_bytes() == want.tobytes()


@pytest.mark.skipif(NATIVE is None, reason="the compiled kernel is not built")
@pytest.mark.parametrize("sep", [10, 0])
@pytest.mark.parametrize("phase", [None, 123])
def test_the_kernel_and_numpy_give_the_same_bytes(sep, phase, backend):
    rng = np.random.default_rng(sep + 7)
    lengths = rng.integers(0, 600, 20000)
    lengths[::97] = 5000  # some records longer than any fixed width
    data = rng.integers(1, 256, int(lengths.sum()) + len(lengths), dtype=np.uint8)
    data[data == sep] = 1
    ends = np.cumsum(lengths + 1)
    data[ends - 1] = sep
    data = data[: ends[-1] - 3]  # the last record has no separator: not a record
    order = rng.permutation(len(lengths) - 1)
    got = {}
    for name, native in (("native", NATIVE), ("numpy", None)):
        rec._native = native
        e = record_ends(data, sep)
        s = starts_of(e)
        got[name] = (
            e,
            gather(data, s, e - s, order, phase=phase).tobytes(),
            gather(data, s, e - s).tobytes(),
            gather(data, s[::2], (e - s)[::2], order[: len(order) // 3] // 2).tobytes(),
        )
    rec._native = NATIVE if backend == "native" else None
    assert np.array_equal(got["native"][0], got["numpy"][0])
    assert got["native"][1:] == got["numpy"][1:]
    assert len(got["native"][0]) == len(lengths) - 1


@pytest.mark.skipif(NATIVE is None, reason="the compiled kernel is not built")
def test_the_kernel_refuses_what_would_read_or_write_out_of_bounds():
    data = np.frombuffer(b"ab\ncd\n", dtype=np.uint8)
    out = np.empty(6, dtype=np.uint8)
    starts = np.array([0, 3], dtype=np.int64)
    with pytest.raises(ValueError, match="outside"):
        NATIVE.gather(data, starts, np.array([3, 9], dtype=np.int64), None, out)
    with pytest.raises(ValueError, match="out of range"):
        NATIVE.gather(data, starts, np.array([3, 3], dtype=np.int64),
                      np.array([2], dtype=np.int64), out)
    with pytest.raises(ValueError, match="too small"):
        NATIVE.gather(data, starts, np.array([3, 3], dtype=np.int64), None, out[:4])
    assert NATIVE.gather(data, starts, np.array([3, 3], dtype=np.int64), None, out) == 6
    assert out.tobytes() == b"ab\ncd\n"


@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 100, 4099])
def test_count_separators_counts_every_one(n, backend):
    from kxtool.records import count_separators

    rng = np.random.default_rng(n)
    data = rng.integers(0, 4, n, dtype=np.uint8)
    assert count_separators(data, 0) == int((data == 0).sum())
    assert len(record_ends(data, 0)) == int((data == 0).sum())
    assert count_separators(data[1:], 3) == int((data[1:] == 3).sum())  # unaligned start


@pytest.mark.parametrize(
    "density", [0.0, 0.001, 1 / 40, 1 / 8, 0.5, 1.0], ids=lambda d: f"sep-share-{d:g}"
)
def test_record_ends_finds_every_separator_however_dense(density):
    # the kernel's one scan starts with room for a record every 32 bytes and grows it as it
    # goes: sparse, denser than that guess, and all-separator buffers give the same offsets
    rng = np.random.default_rng(int(density * 1000) + 1)
    for size in (0, 1, 15, 16, 17, 31, 33, 1000, 100_003):
        data = np.where(rng.random(size) < density, 10, 97).astype(np.uint8)
        want = np.flatnonzero(data == 10) + 1
        assert np.array_equal(record_ends(data, 10), want)
        assert rec.count_separators(data, 10) == len(want)


def test_record_ends_of_a_view_counts_only_the_view():
    data = np.frombuffer(b"a\nb\nc\nd\n" * 100, dtype=np.uint8)
    part = data[3:401]
    assert np.array_equal(record_ends(part, 10), np.flatnonzero(part == 10) + 1)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.lists(record, max_size=20), min_size=1, max_size=4),
    st.randoms(use_true_random=False),
)
def test_gather_where_takes_records_from_several_sources_in_any_order(sources, rnd):
    from kxtool.records import gather_where, where_of

    buffers = [_buffer(items) for items in sources]
    where, lengths, items = [], [], []
    for s, records in enumerate(sources):
        at = 0
        for x in records:
            where.append(where_of(s, at))
            lengths.append(len(x) + 1)
            items.append(x)
            at += len(x) + 1
    order = list(range(len(items)))
    rnd.shuffle(order)
    w = np.array(where, dtype=np.uint64)
    n = np.array(lengths, dtype=np.int64)
    got = gather_where(buffers, w, n, np.array(order, dtype=np.int64), phase=123)
    assert got.tobytes() == _python_gather(items, order)
    assert not len(got) or got.ctypes.data % 4096 == 123
    assert gather_where(buffers, w, n).tobytes() == _python_gather(items, range(len(items)))


def test_gather_where_refuses_records_outside_their_source():
    from kxtool.records import gather_where, where_of

    a, b = _buffer([b"ab", b"cd"]), _buffer([b"xyz"])
    ok = gather_where([a, b], np.array([where_of(1, 0), where_of(0, 3)], np.uint64),
                      np.array([4, 3], np.int64))
    assert ok.tobytes() == b"xyz\ncd\n"
    for where, length in [(where_of(1, 1), 4), (where_of(2, 0), 1), (where_of(0, 7), 0)]:
        with pytest.raises(ValueError, match="outside"):
            gather_where([a, b], np.array([where], np.uint64), np.array([length], np.int64))
    with pytest.raises(ValueError):
        where_of(0, 1 << rec.WHERE_BITS)
