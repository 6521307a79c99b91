"""Byte records held in numpy buffers: find where they end, copy them out in any order.

The shuffle moves tens of millions of short records. Making a Python ``bytes`` object of each
one (``split``, ``itemgetter``, ``join``) costs several hundred nanoseconds a record, more than
the copying itself; here records stay in one ``uint8`` buffer and are described by offset
arrays, and every step is a handful of numpy calls over all of them.

The gather (:func:`gather`) copies each record as one fixed-width element of a ``void`` view of
the buffer: a numpy fancy-index copy of ``W`` bytes per record, ``W`` at least the record's
length. The extra bytes copied past a record's end land where the next records go; since the
records are written in increasing output position, each later record overwrites that spill,
and the last one's spill goes into padding that is cut off. Records longer than ``W`` (rare by
the choice of ``W``) and records too close to the end of the source are copied one by one
afterwards. If numpy ever stopped assigning fancy indices in order (checked once at first use)
an exact copy per record length is used instead.

Where the optional compiled kernel ``kxtool/_records.c`` is built (pip builds it), both loops
run there instead: a ``memchr`` scan and a ``memcpy`` per record, without the interpreter lock.
The bytes are the same either way (tests compare the two paths).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "record_ends", "count_separators", "starts_of", "gather", "gather_where", "aligned_empty",
    "WHERE_BITS",
]

#: Bytes a sub-batch of the fixed-width copy aims at (its temporary stays in cache).
_BATCH_BYTES = 1 << 20
#: Widths above this are not used for the fixed-width copy: longer records go one by one.
_MAX_WIDTH = 4096
#: Share of records that may fall back to the one-by-one copy when ``W`` is chosen.
_LONG_SHARE = 0.02

#: Low bits of a record's position (see :func:`gather_where`) that hold its offset in its
#: source; the bits above them number the source.
WHERE_BITS = 40

_ordered_assign: bool | None = None

try:
    from . import _records as _native
except ImportError:  # pragma: no cover - the kernel is optional
    _native = None


def _native_ok(data: np.ndarray) -> bool:
    return _native is not None and data.dtype == np.uint8 and data.flags.c_contiguous


def record_ends(data: np.ndarray, sep: int, expect: int | None = None) -> np.ndarray:
    """Offsets one past each ``sep`` byte of ``data`` (a uint8 array): the end of every record,
    separator included. Bytes after the last separator are not a record. ``expect``, a guess
    at their number, sizes the array (the answer is the same whatever it is)."""
    if _native_ok(data):
        # one scan, into room for a record every 32 bytes (or for a few more than expected),
        # grown as the density seen so far asks (pages never written cost nothing); then the
        # exact array
        room = len(data) // 32 if expect is None else min(len(data), expect + expect // 16 + 128)
        ends = np.empty(max(16, room), dtype=np.int64)
        found, at = _native.find_ends(data, sep, ends)
        while at < len(data):
            more = int((len(data) - at) * found / max(1, at)) + 16
            grown = np.empty(len(ends) + more, dtype=np.int64)
            grown[:found] = ends[:found]
            ends = grown
            got, at = _native.find_ends(data, sep, ends[found:], at)
            found += got
        return ends[:found].copy() if found < len(ends) // 2 else ends[:found]
    return np.flatnonzero(data == sep) + 1


def count_separators(data: np.ndarray, sep: int) -> int:
    """The number of ``sep`` bytes in ``data`` (a uint8 array): its whole records."""
    if _native_ok(data):
        return int(_native.count_ends(data, sep))
    return int(np.count_nonzero(data == sep))


def starts_of(ends: np.ndarray) -> np.ndarray:
    """Start offsets of the records that end at ``ends`` (the first starts at 0)."""
    starts = np.empty_like(ends)
    if len(ends):
        starts[0] = 0
        starts[1:] = ends[:-1]
    return starts


def _void_view(buf: np.ndarray, width: int) -> np.ndarray:
    """Every ``width``-byte window of ``buf`` as one element (element ``i`` starts at byte
    ``i``)."""
    return np.ndarray(
        shape=(len(buf) - width + 1,), dtype=np.dtype((np.void, width)), buffer=buf, strides=(1,)
    )


def _check_ordered_assign() -> bool:
    """Whether ``view[idx] = values`` writes the elements in index order (it always has)."""
    buf = np.zeros(12, dtype=np.uint8)
    dst = _void_view(buf, 4)
    src = np.frombuffer(b"AAAABBBBCCCC", dtype=np.uint8)
    vals = _void_view(src, 4)[[0, 4, 8]]
    dst[np.array([0, 2, 4])] = vals
    return buf[:8].tobytes() == b"AABBCCCC"


def _width(lengths: np.ndarray) -> int:
    """The copy width: the longest record if that is short, otherwise a width that covers all
    but about :data:`_LONG_SHARE` of the records."""
    longest = int(lengths.max())
    if longest > 256 and len(lengths) > 64:
        k = int((1 - _LONG_SHARE) * (len(lengths) - 1))
        quantile = int(np.partition(lengths, k)[k])
        longest = min(longest, max(quantile, 256), _MAX_WIDTH)
    return (longest + 7) & ~7


def aligned_empty(size: int, phase: int = 0, align: int = 4096) -> np.ndarray:
    """A new uint8 array of ``size`` bytes whose first byte sits at ``phase`` modulo
    ``align`` in memory (for direct I/O)."""
    raw = np.empty(size + align, dtype=np.uint8)
    shift = (phase - raw.ctypes.data) % align
    return raw[shift : shift + size]


def _kernel_arguments(
    positions: np.ndarray,
    kind: type,
    lengths: np.ndarray,
    order: np.ndarray | None,
    phase: int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """What the gather kernels take: contiguous positions (of ``kind``), int64 lengths and
    order, and the output array, sized for the records gathered (at ``phase``, if given)."""
    positions = np.ascontiguousarray(positions, dtype=kind)
    lengths = np.ascontiguousarray(lengths, dtype=np.int64)
    if order is not None:
        order = np.ascontiguousarray(order, dtype=np.int64)
    total = int((lengths if order is None else lengths[order]).sum())
    out = np.empty(total, dtype=np.uint8) if phase is None else aligned_empty(total, phase)
    return positions, lengths, order, out


def gather(
    data: np.ndarray,
    starts: np.ndarray,
    lengths: np.ndarray,
    order: np.ndarray | None = None,
    phase: int | None = None,
) -> np.ndarray:
    """The records ``data[starts[i] : starts[i] + lengths[i]]`` for ``i`` in ``order`` (all
    of them, in turn, when ``order`` is None), concatenated into a new uint8 array; with
    ``phase``, its first byte sits at that address modulo 4096 (see :func:`aligned_empty`)."""
    global _ordered_assign
    if _native_ok(data):
        starts, lengths, order, out = _kernel_arguments(starts, np.int64, lengths, order, phase)
        _native.gather(data, starts, lengths, order, out)
        return out
    if order is not None:
        starts = starts[order]
        lengths = lengths[order]
    n = len(lengths)
    total = int(lengths.sum()) if n else 0
    if n == 0:
        return np.empty(0, dtype=np.uint8)
    if _ordered_assign is None:
        _ordered_assign = _check_ordered_assign()
    if not _ordered_assign:  # pragma: no cover - numpy changed; exact copies instead
        return _gather_by_length(data, starts, lengths, total)
    width = _width(lengths)
    out_starts = np.empty(n, dtype=np.int64)
    out_starts[0] = 0
    np.cumsum(lengths[:-1], out=out_starts[1:])
    out = np.empty(total + width, dtype=np.uint8) if phase is None else aligned_empty(
        total + width, phase
    )
    fits = lengths <= width
    fits &= starts <= len(data) - width
    if fits.all():
        fast_starts, fast_out = starts, out_starts
        slow = None
    else:
        fast_starts, fast_out = starts[fits], out_starts[fits]
        slow = np.flatnonzero(~fits)
    del fits
    if len(fast_starts):
        src = _void_view(data, width)
        dst = _void_view(out, width)
        step = max(256, _BATCH_BYTES // width)
        for a in range(0, len(fast_starts), step):
            dst[fast_out[a : a + step]] = src[fast_starts[a : a + step]]
    if slow is not None and len(slow):
        mo = memoryview(out)
        md = memoryview(data)
        for i, s, length in zip(
            out_starts[slow].tolist(), starts[slow].tolist(), lengths[slow].tolist(), strict=True
        ):
            mo[i : i + length] = md[s : s + length]
    return out[:total]


def gather_where(
    sources: list[np.ndarray],
    where: np.ndarray,
    lengths: np.ndarray,
    order: np.ndarray | None = None,
    phase: int | None = None,
) -> np.ndarray:
    """As :func:`gather`, for records that lie in several buffers: record ``i`` is
    ``lengths[i]`` bytes at offset ``where[i] % 2**WHERE_BITS`` of source number
    ``where[i] >> WHERE_BITS`` (a uint64 position; see :func:`where_of`)."""
    where, lengths, order, out = _kernel_arguments(where, np.uint64, lengths, order, phase)
    if _native is not None and all(_native_ok(s) for s in sources):
        _native.gather_where(sources, where, lengths, order, out)
        return out
    # without the kernel: record by record (nothing calls this on a hot path without it)
    if order is not None:
        where, lengths = where[order], lengths[order]
    mask = np.uint64((1 << WHERE_BITS) - 1)
    source = (where >> np.uint64(WHERE_BITS)).tolist()
    offset = (where & mask).tolist()
    views = [memoryview(s).cast("B") for s in sources]
    mo = memoryview(out)
    at = 0
    for s, o, n in zip(source, offset, lengths.tolist(), strict=True):
        if s >= len(views) or n < 0 or o + n > len(views[s]):
            raise ValueError("a record lies outside its source")
        mo[at : at + n] = views[s][o : o + n]
        at += n
    return out


def where_of(source: int, offset: int) -> int:
    """The position (see :func:`gather_where`) of byte ``offset`` of source ``source``."""
    if offset >> WHERE_BITS:
        raise ValueError("an offset too large for a record position")
    return (source << WHERE_BITS) | offset


def _gather_by_length(
    data: np.ndarray, starts: np.ndarray, lengths: np.ndarray, total: int
) -> np.ndarray:
    """:func:`gather` without relying on the order of fancy assignment: records of one length
    at a time, each copied exactly."""
    n = len(lengths)
    out_starts = np.empty(n, dtype=np.int64)
    out_starts[0] = 0
    np.cumsum(lengths[:-1], out=out_starts[1:])
    out = np.empty(total, dtype=np.uint8)
    by_length = np.argsort(lengths, kind="stable")
    sorted_lengths = lengths[by_length]
    cuts = np.flatnonzero(np.diff(sorted_lengths)) + 1
    bounds = [0, *cuts.tolist(), n]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        width = int(sorted_lengths[a])
        if width == 0:
            continue
        idx = by_length[a:b]
        _void_view(out, width)[out_starts[idx]] = _void_view(data, width)[starts[idx]]
    return out
