"""The permutation itself: which input record each output position holds, in bounded memory.

The shuffle puts record ``i`` at the rank of its key ``f_seed(i)`` among the keys of all
``n`` records. ``f_seed`` is a bijection of the 64-bit integers whose inverse is as cheap
(:func:`record_indices`), so the permutation needs no record at all: the keys of ``0 .. n-1``
in increasing order, each turned back into its index. When the ``n`` keys do not fit in the
budget, the key space is cut into ranges that each hold about as many keys as fit (keys are
uniform), and each range is one pass over ``0 .. n-1``: memory stays bounded for any ``n``,
at the cost of one key computation per index and pass. The first few positions of a huge
``n`` come cheaper from the other side: the keys 0, 1, 2, ... turned back into indices, those
below ``n`` kept (about ``2**64 / n`` keys a position). ``kxtool shuffle -i`` and
``--permutation`` are built on it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np

from ..errors import KxError
from ..progress import Progress
from ..textio import STDIO, AtomicOutputs, check_readable, open_filler, parse_size
from .keys import _round_keys, record_keys

__all__ = ["count_records", "ordered_indices", "record_indices", "shuffle_permutation",
           "write_permutation"]

_M64 = 1 << 64
_C1_INV = np.uint64(pow(0xFF51AFD7ED558CCD, -1, _M64))
_C2_INV = np.uint64(pow(0xC4CEB9FE1A85EC53, -1, _M64))
_S33 = np.uint64(33)
#: Indices keyed at once while a pass looks for the keys of its range.
_STEP = 1 << 20
#: Bytes of memory one key of a pass costs: the key as found, and in the one array sorted.
_KEY_MEMORY = 16


def _fmix_inverse(x: np.ndarray) -> np.ndarray:
    """The inverse of the murmur3 finaliser, in place (a shift by 33 undoes itself)."""
    x ^= x >> _S33
    x *= _C2_INV
    x ^= x >> _S33
    x *= _C1_INV
    x ^= x >> _S33
    return x


def record_indices(seed: int, keys: np.ndarray) -> np.ndarray:
    """The record indices whose keys for ``seed`` are ``keys``: the inverse of
    :func:`~kxtool.shuffle.record_keys` (a new uint64 array).

    >>> from kxtool.shuffle import record_keys
    >>> record_indices(7, record_keys(7, 40, 3)).tolist()
    [40, 41, 42]
    """
    a, b, c = (np.uint64(k) for k in _round_keys(seed))
    x = np.array(keys, dtype=np.uint64, copy=True)
    with np.errstate(over="ignore"):
        _fmix_inverse(x)
        x ^= c
        _fmix_inverse(x)
        x -= b
        _fmix_inverse(x)
        x -= a
    return x


def _keys_in(seed: int, n: int, lo: int, hi: int) -> np.ndarray:
    """The keys in ``[lo, hi)`` of the records ``0 .. n-1``, unordered."""
    found = []
    full = lo == 0 and hi >= _M64
    for start in range(0, n, _STEP):
        k = record_keys(seed, start, min(_STEP, n - start))
        if not full:
            mask = k >= np.uint64(lo) if lo else None
            if hi < _M64:
                below = k < np.uint64(hi)
                mask = below if mask is None else mask & below
            if mask is not None:
                k = k[mask]
        found.append(k)
    return np.concatenate(found) if found else np.empty(0, dtype=np.uint64)


def ordered_indices(
    seed: int,
    n: int,
    limit: int | None = None,
    memory: int | str = "1G",
    step: int = 1 << 20,
) -> Iterator[np.ndarray]:
    """The indices ``0 .. n-1`` in the order the shuffle with ``seed`` puts records of that
    index (only the first ``limit``, when given), in uint64 arrays of at most ``step``.
    Memory stays within ``memory``: when the keys do not fit, each part of the key space is
    one more pass over the indices.

    >>> import numpy as np
    >>> np.concatenate(list(ordered_indices(1, 6))).tolist()
    [5, 1, 3, 0, 2, 4]
    """
    budget = parse_size(memory)
    wanted = n if limit is None else max(0, min(limit, n))
    if wanted == 0:
        return
    if wanted * _M64 // n < n // 4:
        # the first few of a huge range: walk the key space upwards from 0 and turn each key
        # back into its index, keeping those below n; about 2**64 / n keys a line, fewer
        # than one pass over the indices
        yield from _smallest_by_keys(seed, n, wanted, step)
        return
    per_pass = max(1 << 12, int(0.75 * budget) // _KEY_MEMORY)
    # each pass takes a range of the key space holding about ``per_pass`` keys; with a limit,
    # the first range aims a little above it so that one pass usually suffices
    if wanted <= per_pass and wanted < n:
        target = min(per_pass, int(wanted * 1.05) + 64)
    else:
        target = per_pass
    lo, emitted = 0, 0
    while emitted < wanted and lo < _M64:
        width = _M64 if target >= n else -(-_M64 * target // n)
        hi = min(_M64, lo + width)
        keys = _keys_in(seed, n, lo, hi)
        if len(keys) * _KEY_MEMORY > budget and hi - lo > 1:
            target = max(1, target // 2)  # an unlucky range: more than fits; halve it
            continue
        keys.sort()
        keys = keys[: wanted - emitted]
        for a in range(0, len(keys), step):
            yield record_indices(seed, keys[a : a + step])
        emitted += len(keys)
        del keys
        lo = hi
        target = per_pass


def _smallest_by_keys(seed: int, n: int, wanted: int, step: int) -> Iterator[np.ndarray]:
    """The indices below ``n`` of the keys 0, 1, 2, ... in turn, until ``wanted``: the first
    ``wanted`` positions of the shuffle of ``n`` records, in order."""
    per_line = _M64 // n
    batch = max(1 << 10, min(1 << 20, per_line * min(wanted, step)))
    key = done = 0
    while done < wanted and key < _M64:
        width = min(batch, _M64 - key)
        keys = np.arange(width, dtype=np.uint64)
        keys += np.uint64(key)
        idx = record_indices(seed, keys)
        idx = idx[idx < np.uint64(n)][: wanted - done]
        if len(idx):
            yield idx
            done += len(idx)
        key += width


def shuffle_permutation(seed: int, n: int, limit: int | None = None) -> np.ndarray:
    """For each output position of the shuffle of ``n`` records with ``seed``, the index of
    the record placed there (the first ``limit`` positions, when given), in memory.

    >>> from kxtool.shuffle import shuffle_lines
    >>> lines = [b"a", b"b", b"c", b"d"]
    >>> [lines[i] for i in shuffle_permutation(5, 4)] == shuffle_lines(lines, 5)
    True
    """
    parts = list(ordered_indices(seed, n, limit))
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.uint64)


def _npy_header(count: int) -> bytes:
    """A ``.npy`` (version 1.0) header for a 1-d little-endian uint64 array of ``count``."""
    d = f"{{'descr': '<u8', 'fortran_order': False, 'shape': ({count},), }}"
    body = len(d) + 1
    pad = (-(10 + body)) % 64
    text = (d + " " * pad + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text


def _write_npy(
    outs: AtomicOutputs,
    path: str,
    count: int,
    blocks: Iterator[np.ndarray],
    progress: Progress | None = None,
) -> None:
    """Write the ``count`` indices of ``blocks`` to ``path`` (one of ``outs``) as ``.npy``."""
    f = outs.open(path, len(_npy_header(count)) + 8 * count)
    f.write(_npy_header(count))
    done = 0
    for block in blocks:
        f.write(memoryview(np.ascontiguousarray(block, dtype="<u8")).cast("B"))
        done += len(block)
        if progress is not None:
            progress("permutation", done, count)
    if done != count:
        raise KxError(f"internal error: {done} permutation entries written of {count}")


def write_permutation(
    path: str | os.PathLike[str],
    seed: int,
    n: int,
    *,
    limit: int | None = None,
    memory: int | str = "1G",
    progress: Progress | None = None,
    outputs: AtomicOutputs | None = None,
) -> int:
    """Write the permutation of the shuffle of ``n`` records with ``seed`` to ``path`` as a
    uint64 ``.npy`` array (memory-mappable): at position ``p``, the 0-based index of the record
    that the shuffle puts at ``p`` (header lines are not counted). Only the first ``limit``
    positions, when given (``-n``). Bounded memory for any ``n``; written atomically (into
    ``outputs`` when given, so that it lands with the data). Returns the positions written.

    >>> import os, tempfile, numpy as np
    >>> p = os.path.join(tempfile.mkdtemp(), "perm.npy")
    >>> write_permutation(p, 1, 6)
    6
    >>> np.load(p).tolist()
    [5, 1, 3, 0, 2, 4]
    """
    path = os.fspath(path)
    if path == STDIO:
        raise KxError("--permutation needs a file name, not '-'")
    count = n if limit is None else max(0, min(limit, n))
    own = outputs is None
    outs = AtomicOutputs() if own else outputs
    assert outs is not None
    try:
        _write_npy(outs, path, count, ordered_indices(seed, n, limit, memory), progress)
    except BaseException:
        if own:
            outs.discard()
        raise
    if own:
        outs.commit()
    return count


def count_records(
    inputs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str] = (STDIO,),
    *,
    header: int = 0,
    zero_terminated: bool = False,
) -> int:
    """The records of ``inputs`` as the shuffle counts them: a missing final terminator counts,
    the first ``header`` records of the first input do not.

    >>> import os, tempfile
    >>> src = os.path.join(tempfile.mkdtemp(), "in.txt")
    >>> _ = open(src, "w").write("h\\na\\nb\\nc")
    >>> count_records(src, header=1)
    3
    """
    if isinstance(inputs, str | os.PathLike):
        inputs = [inputs]
    paths = [os.fspath(p) for p in inputs] or [STDIO]
    sep = 0 if zero_terminated else 10
    total = 0
    buf = np.empty(1 << 22, dtype=np.uint8)
    for idx, p in enumerate(paths):
        check_readable(p)
        records = 0
        last = sep
        with open_filler(p) as fill:
            while True:
                got = fill(memoryview(buf))
                if got == 0:
                    break
                records += int(np.count_nonzero(buf[:got] == sep))
                last = int(buf[got - 1])
        if last != sep:
            records += 1
        if idx == 0:
            records = max(0, records - header)
        total += records
    return total
