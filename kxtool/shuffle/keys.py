"""The permutation: a keyed bijection of record indices to 64-bit keys, and key order."""

from __future__ import annotations

import os
from collections.abc import Sequence
from operator import itemgetter

import numpy as np

_M64 = (1 << 64) - 1


def fresh_seed() -> int:
    """A seed for a run given none: 63 random bits from the operating system (what
    ``secrets`` would use, without its import)."""
    return int.from_bytes(os.urandom(8), "big") >> 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _M64
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def _round_keys(seed: int) -> tuple[int, int, int]:
    a = _splitmix64(seed & _M64)
    b = _splitmix64(a ^ 0x5851F42D4C957F2D)
    c = _splitmix64(b ^ 0x14057B7EF767814F)
    return a, b, c


_C1 = np.uint64(0xFF51AFD7ED558CCD)


_C2 = np.uint64(0xC4CEB9FE1A85EC53)


_S33 = np.uint64(33)


def _fmix(x: np.ndarray) -> np.ndarray:
    """The murmur3 64-bit finaliser, in place; a bijection of the 64-bit integers."""
    x ^= x >> _S33
    x *= _C1
    x ^= x >> _S33
    x *= _C2
    x ^= x >> _S33
    return x


def record_keys(seed: int, start: int, count: int) -> np.ndarray:
    """The sort keys of records ``start .. start+count-1`` for ``seed`` (distinct uint64)."""
    a, b, c = (np.uint64(k) for k in _round_keys(seed))
    x = np.arange(start, start + count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x += a
        _fmix(x)
        x += b
        _fmix(x)
        x ^= c
        _fmix(x)
    return x


def _order(keys: np.ndarray, shift: int) -> np.ndarray:
    """Positions of ``keys`` in increasing key order.

    All keys share their top ``shift`` bits. Sorting plain uint64 values is much faster than an
    argsort, so each key's remaining top bits are packed with its position; the rare ties in the
    packed bits are then put right by comparing whole keys.
    """
    n = len(keys)
    if n < 2:
        return np.arange(n, dtype=np.intp)
    low = int(n - 1).bit_length()
    mask = np.uint64((1 << low) - 1)
    packed = keys << np.uint64(shift) if shift else keys.copy()
    packed &= ~mask
    packed |= np.arange(n, dtype=np.uint64)
    packed.sort()
    perm = (packed & mask).astype(np.intp)
    high = packed >> np.uint64(low)
    del packed
    ties = np.flatnonzero(high[1:] == high[:-1])
    if ties.size:
        # runs of equal high bits: [start, end) in sorted order
        starts = ties[np.concatenate(([True], np.diff(ties) > 1))]
        for s in starts.tolist():
            e = s + 1
            while e < n and high[e] == high[s]:
                e += 1
            seg = perm[s:e]
            perm[s:e] = seg[np.argsort(keys[seg], kind="stable")]
    return perm


def _gather_items(items: Sequence[bytes], positions: np.ndarray) -> Sequence[bytes]:
    """``[items[p] for p in positions]`` at C speed."""
    if len(positions) == 0:
        return ()
    if len(positions) == 1:
        return (items[int(positions[0])],)
    return itemgetter(*positions.tolist())(items)


def shuffle_lines(lines: Sequence[bytes], seed: int) -> list[bytes]:
    """The order :func:`shuffle_files` puts ``lines`` in for ``seed`` (for small in-memory use)."""
    perm = _order(record_keys(seed, 0, len(lines)), 0)
    return list(_gather_items(lines, perm))
