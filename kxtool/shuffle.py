"""Uniform external-memory shuffle of byte records (lines).

The permutation
    Record ``i`` (its index over all inputs, header lines excluded) gets the 64-bit key
    ``f_seed(i)``, where ``f_seed`` is a keyed bijection of the 64-bit integers (rounds of
    "add a round key, then the murmur3 finaliser"). The output is the records in increasing key
    order. Keys are distinct, so the order is a total order that depends only on the seed and
    the number of records: not on the memory budget, the temporary directory or the number of
    piles, and two files with the same number of lines are permuted alike (parallel corpora
    stay aligned).

The passes
    Records are read once, in batches that fit the memory budget, straight into numpy buffers
    (they never become Python objects; see :mod:`kxtool.records`). Each batch is grouped into
    piles by the top bits of its keys (a counting sort) and kept as a *run*: in memory when the
    whole input fits, else appended to a run file in the temporary directory. Pass 2 loads one
    pile at a time (its segments from every run), orders it by key and writes it; since piles
    partition the key space in order, the concatenation is the fully ordered output. A pile
    too big for memory is scattered again by the next key bits, which changes nothing in the
    output.

Workers
    With ``jobs`` > 1 and an input too big for memory, worker processes share both passes.
    Plain input files are cut into byte ranges that the workers read themselves; each learns
    the index of its first record once the ranges before it are counted. Stdin and compressed
    inputs are read here and handed out through pipes. In pass 2 the workers write their piles
    straight into a single plain output file (positional writes; large outputs around the page
    cache), otherwise they send them back in order.

Memory
    Every per-record structure is counted against the budget: the bytes (twice while a batch
    or pile is reordered), and the offsets, key and sort arrays (:data:`RECORD_WORK` bytes a
    record; :data:`RECORD_REST` while a record waits in memory). Only a few files are open at
    any time, so the number of piles, runs and inputs is not limited by the open-file limit.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from operator import itemgetter
from typing import Any, BinaryIO

import numpy as np

from .errors import KxError
from .progress import Progress
from .records import gather, record_ends, starts_of
from .textio import (
    STDIO,
    AtomicOutputs,
    PositionalWriter,
    check_readable,
    compression_for_name,
    compression_of,
    display_name,
    format_size,
    free_space,
    input_size,
    open_filler,
    os_error,
    parse_size,
    preallocate,
    temp_dir,
)

#: Bytes of memory a record costs, beyond its own bytes, while a batch or a pile is being
#: worked on: its offsets, length, key, the sort arrays and the output offsets. The bytes
#: themselves count twice (the batch and its reordered copy); see :func:`_work_memory`.
RECORD_WORK = 112
#: Bytes of memory a record costs, beyond its own bytes, while it waits in memory (its key).
RECORD_REST = 16
#: Largest block read from an input at once.
MAX_BLOCK = 16 << 20
#: Size above which a pile is first split into cache-sized buckets before it is ordered.
CACHE_BUCKET = 64 << 20
#: Memory a pass-1 batch and a pass-2 pile aim at (see :func:`_work_unit`).
WORK_UNIT = 16 << 20
#: Size of a pile relative to a pass-1 batch: smaller piles keep the pass-2 gather in cache.
PILE_SHARE = 0.5
#: Bytes of input per thread when an input that fits is ordered in memory by several threads.
THREAD_MIN = 32 << 20
#: Share of the budget the records may take when the whole input is ordered in memory.
IN_MEMORY_SHARE = 0.8
#: Piles when the input size is not known in advance (stdin, compressed inputs).
UNKNOWN_SIZE_PILE_BITS = 8
#: Expansion assumed for compressed inputs when planning piles.
COMPRESSION_GUESS = 5
#: Bytes of memory one (run, pile) entry of the pile index takes (two uint32).
_INDEX_ENTRY = 8
#: Smallest budget accepted.
MIN_MEMORY = 4 << 10
#: Disk-space head-room asked for beyond the estimate.
DISK_SLACK = 16 << 20
#: Outputs at least this big are written around the page cache (see
#: :class:`~kxtool.textio.PositionalWriter`): they would only push other files out of it, and the
#: kernel's write-back would throttle the writer anyway.
DIRECT_MIN = 256 << 20
#: Bytes written or read by one system call at most (Linux caps a call at about 2 GiB).
_IO_STEP = 1 << 30

_M64 = (1 << 64) - 1


# --------------------------------------------------------------------------------------------
# keys


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


def _work_memory(nbytes: int, count: int) -> int:
    """Memory taken while ``count`` records of ``nbytes`` bytes are keyed, ordered and copied."""
    return 2 * nbytes + RECORD_WORK * count


def _pwrite_all(fd: int, data: Any, offset: int) -> None:
    """Write all of ``data`` (bytes-like) at ``offset``; OSError propagates."""
    view = memoryview(data).cast("B")
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done : done + _IO_STEP], offset + done)


def _pread_into(fd: int, buf: np.ndarray, offset: int) -> int:
    """Fill ``buf`` from ``offset``; return the bytes read (fewer only at the end of the
    file). OSError propagates."""
    view = memoryview(buf).cast("B")
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done : done + _IO_STEP]], offset + done)
        if got == 0:
            break
        done += got
    return done


# --------------------------------------------------------------------------------------------
# reading


@dataclass
class _Chunk:
    """Whole records read from an input, each ending with the separator, in one buffer."""

    data: np.ndarray  # uint8
    count: int  # records

    @property
    def nbytes(self) -> int:
        return len(self.data)

    def memory(self) -> int:
        """Memory the records take while they wait (their bytes and their keys)."""
        return self.nbytes + RECORD_REST * self.count


def _last_end(buf: np.ndarray, lo: int, hi: int, sep: int) -> int:
    """One past the last ``sep`` in ``buf[lo:hi]`` (searched backwards), or 0 if none."""
    width = 4096
    while hi > lo:
        a = max(lo, hi - width)
        found = np.flatnonzero(buf[a:hi] == sep)
        if len(found):
            return a + int(found[-1]) + 1
        hi = a
        width *= 8
    return 0


class _Reader:
    """Reads every input once, straight into buffers, and hands out chunks of whole records."""

    def __init__(
        self,
        inputs: Sequence[str],
        sep: bytes,
        header: int,
        block: int,
        max_record: int,
        progress: Progress | None,
        total: int | None,
    ) -> None:
        self.inputs = inputs
        self.sep = sep
        self.sep_byte = sep[0]
        self.header_wanted = header
        self.header: list[bytes] = []
        self.block = max(256, min(MAX_BLOCK, block, max_record))
        self.max_record = max_record
        self.progress = progress
        self.total = total
        self.bytes_read = 0
        self.records = 0

    def _too_big(self, path: str, line: int) -> KxError:
        return KxError(
            f"line {line} of {display_name(path)!r} is longer than a quarter of the memory "
            f"budget ({format_size(self.max_record)}); raise --memory"
        )

    def _raw_chunks(self, path: str) -> Iterator[_Chunk]:
        sep = self.sep_byte
        carry = np.empty(0, dtype=np.uint8)  # the start of a record that spans blocks
        seen = 0  # records of this input so far
        with open_filler(path) as fill:
            while True:
                kept = len(carry)
                buf = np.empty(kept + self.block, dtype=np.uint8)
                buf[:kept] = carry
                got = fill(memoryview(buf)[kept:])
                if got == 0:
                    break
                self.bytes_read += got
                if self.progress is not None:
                    self.progress("reading", self.bytes_read, self.total)
                size = kept + got
                cut = _last_end(buf, kept, size, sep)  # the carried part holds no separator
                if cut == 0:
                    carry = buf[:size]
                    if size > self.max_record:
                        raise self._too_big(path, seen + 1)
                    continue
                if kept and _last_end(buf, kept, min(size, self.max_record + 1), sep) == 0:
                    raise self._too_big(path, seen + 1)
                data = buf[:cut]
                count = int(np.count_nonzero(data == sep))
                yield _Chunk(data, count)
                seen += count
                carry = buf[cut:size].copy()
                del buf, data
                if len(carry) > self.max_record:
                    raise self._too_big(path, seen + 1)
        if len(carry):
            last = np.empty(len(carry) + 1, dtype=np.uint8)
            last[:-1] = carry
            last[-1] = sep
            yield _Chunk(last, 1)

    def _take_header(self, chunk: _Chunk) -> _Chunk | None:
        """Move header records from the start of ``chunk`` to :attr:`header`."""
        take = min(self.header_wanted - len(self.header), chunk.count)
        ends = record_ends(chunk.data[: _nth_end(chunk.data, self.sep_byte, take)], self.sep_byte)
        start = 0
        for end in ends.tolist():
            self.header.append(chunk.data[start : end - 1].tobytes())
            start = end
        if take == chunk.count:
            return None
        return _Chunk(chunk.data[start:], chunk.count - take)

    def chunks(self) -> Iterator[_Chunk]:
        """Chunks of whole records over all inputs, the header records taken out."""
        for idx, path in enumerate(self.inputs):
            for chunk in self._raw_chunks(path):
                if idx == 0 and len(self.header) < self.header_wanted:
                    taken = self._take_header(chunk)
                    if taken is None:
                        continue
                    chunk = taken
                self.records += chunk.count
                yield chunk


def _nth_end(data: np.ndarray, sep: int, n: int) -> int:
    """One past the ``n``-th separator of ``data`` (which has at least ``n``)."""
    if n <= 0:
        return 0
    hi = 4096
    while True:
        found = np.flatnonzero(data[:hi] == sep)
        if len(found) >= n or hi >= len(data):
            return int(found[n - 1]) + 1
        hi *= 8


# --------------------------------------------------------------------------------------------
# runs and piles


class _Runs:
    """Runs, each holding one batch of records grouped into ``2**bits`` piles by key bits.

    Pile ``p`` of a run holds the records whose key bits ``[shift, shift+bits)`` (counting from
    the top) equal ``p``. A run is stored as the keys of all its records (uint64, native
    order, grouped by pile) followed by their bytes (grouped alike, each record followed by
    the separator).

    With a ``directory`` a process appends its runs one after the other to a single temporary
    file (so one file is open however many runs and piles there are); :meth:`adopt` adds the
    runs other processes wrote, so that pass 2 can read every pile from all of them. Without
    one, runs stay in memory (an input that fits is ordered that way, in one pass).
    """

    def __init__(self, directory: str | None, sep: bytes, shift: int, bits: int, name: str) -> None:
        self.directory = directory
        self.path = os.path.join(directory, f"{name}.runs") if directory is not None else ""
        self.sep = sep
        self.shift = shift
        self.bits = bits
        self.piles = 1 << bits
        self.name = name
        self.fd: int | None = None
        self.end = 0
        self.files: list[str] = [self.path] if directory is not None else []
        # the pile index: per run, its file (an index into files), where its keys and its bytes
        # start, and the records and data bytes of each of its piles (uint32 each: a pile's
        # offsets within a run follow from the piles before it, see _positions)
        self.run_file: list[int] = []
        self.key_base: list[int] = []
        self.data_base: list[int] = []
        self._counts: list[np.ndarray] = []
        self._sizes: list[np.ndarray] = []
        self.memory: list[tuple[np.ndarray, np.ndarray]] = []  # per run in memory: keys, data
        self._fds: dict[int, int] = {}
        self._frozen: tuple[np.ndarray, np.ndarray] | None = None  # (piles, runs) arrays
        self._cursor: tuple[int, np.ndarray, np.ndarray] | None = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["fd"] = None
        state["_fds"] = {}
        state["_cursor"] = None
        return state

    @property
    def runs(self) -> int:
        return len(self.run_file)

    @property
    def in_memory(self) -> bool:
        return self.directory is None

    def pile_of(self, keys: np.ndarray) -> np.ndarray:
        x = keys << np.uint64(self.shift) if self.shift else keys
        return (x >> np.uint64(64 - self.bits)).astype(np.uint32 if self.bits > 16 else np.uint16)

    def spill(self, data: np.ndarray, keys: np.ndarray, ends: np.ndarray | None = None) -> None:
        """Add one run: the records of ``data`` (whole records, separators included; ``ends``
        when already found) with their ``keys``, grouped by pile."""
        self.store(self.group(data, keys, ends))

    def group(
        self, data: np.ndarray, keys: np.ndarray, ends: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """A batch grouped by pile, ready for :meth:`store`: its keys and bytes, and the
        records and bytes of each pile. Touches nothing shared (threads may call it)."""
        n = len(keys)
        if self.piles == 1:
            counts = np.array([n], dtype=np.int64)
            sizes = np.array([len(data)], dtype=np.int64)
            gkeys, grouped = keys, data
        else:
            if ends is None:
                ends = record_ends(data, self.sep[0])
            if len(ends) != n or (n and ends[-1] != len(data)):
                raise KxError("internal error: a batch does not hold whole records")
            starts = starts_of(ends)
            lengths = ends - starts
            del ends
            piles = self.pile_of(keys)
            order = np.argsort(piles, kind="stable")
            counts = np.bincount(piles, minlength=self.piles).astype(np.int64)
            sizes = np.bincount(piles, weights=lengths, minlength=self.piles).astype(np.int64)
            del piles
            grouped = gather(data, starts, lengths, order)
            del starts, lengths
            gkeys = keys[order]
            del order
        return gkeys, grouped, counts, sizes

    def store(self, run: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> None:
        """Add a run made by :meth:`group`: in memory, or appended to this process's file."""
        gkeys, grouped, counts, sizes = run
        n = len(gkeys)
        self._thaw()
        if self.directory is None:
            self.memory.append((gkeys, grouped))
            self.run_file.append(-1)
            self.key_base.append(0)
            self.data_base.append(0)
        else:
            base = self.end
            try:
                if self.fd is None:
                    self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
                preallocate(self.fd, 8 * n + len(grouped), self.path, base)
                _pwrite_all(self.fd, gkeys, base)
                _pwrite_all(self.fd, grouped, base + 8 * n)
            except OSError as e:
                raise os_error(e, self.path, "cannot write temporary file") from None
            self.end = base + 8 * n + len(grouped)
            self.run_file.append(0)
            self.key_base.append(base)
            self.data_base.append(base + 8 * n)
        self._counts.append(counts.astype(np.uint32))
        # uint32 unless a pile of this run holds 4 GiB or more (a giant record, a huge budget)
        self._sizes.append(sizes.astype(np.uint32 if sizes.max() < 1 << 32 else np.uint64))

    def adopt(self, other: _Runs) -> None:
        """Add the runs of ``other`` (same piles), written by another process."""
        assert other.piles == self.piles and other.shift == self.shift
        assert not self.in_memory and not other.in_memory
        self._thaw()
        other._thaw()
        base = len(self.files)
        self.files.extend(other.files)
        self.run_file.extend(base + i for i in other.run_file)
        self.key_base.extend(other.key_base)
        self.data_base.extend(other.data_base)
        self._counts.extend(other._counts)
        self._sizes.extend(other._sizes)
        self._frozen = None

    def _thaw(self) -> None:
        """Back to per-run lists, so that runs can be added again."""
        if self._frozen is not None:
            counts, sizes = self._frozen
            self._counts = [counts[:, r].copy() for r in range(counts.shape[1])]
            self._sizes = [sizes[:, r].copy() for r in range(sizes.shape[1])]
            self._frozen = None
            self._cursor = None

    def _index(self) -> tuple[np.ndarray, np.ndarray]:
        """Records and data bytes of every (pile, run), as two (piles, runs) arrays."""
        if self._frozen is None:
            if self._counts:
                counts = np.ascontiguousarray(np.stack(self._counts, axis=1))
                sizes = np.ascontiguousarray(np.stack(self._sizes, axis=1))
            else:
                counts = sizes = np.zeros((self.piles, 0), dtype=np.uint32)
            self._counts, self._sizes = [], []  # one copy of the index is enough
            self._frozen = (counts, sizes)
            self._cursor = None
        return self._frozen

    def index_bytes(self) -> int:
        """Memory taken by the pile index."""
        return _INDEX_ENTRY * self.piles * self.runs

    def pile_totals(self) -> tuple[np.ndarray, np.ndarray]:
        """Records and data bytes of every pile, over all runs."""
        counts, sizes = self._index()
        return counts.sum(axis=1, dtype=np.int64), sizes.sum(axis=1, dtype=np.int64)

    def _positions(self, p: int) -> tuple[np.ndarray, np.ndarray]:
        """Where pile ``p``'s keys and bytes start in every run: the run's start plus the
        piles before ``p``, kept as a cursor (piles are mostly visited in increasing order)."""
        counts, sizes = self._index()
        if self._cursor is None or p < self._cursor[0]:
            kpos = np.array(self.key_base, dtype=np.int64)
            dpos = np.array(self.data_base, dtype=np.int64)
            at = 0
        else:
            at, kpos, dpos = self._cursor
        if p > at:
            kpos = kpos + 8 * counts[at:p].sum(axis=0, dtype=np.int64)
            dpos = dpos + sizes[at:p].sum(axis=0, dtype=np.int64)
        self._cursor = (p, kpos, dpos)
        return kpos, dpos

    def _fd(self, i: int) -> int:
        if i == 0 and self.fd is not None:
            return self.fd
        fd = self._fds.get(i)
        if fd is None:
            try:
                fd = os.open(self.files[i], os.O_RDONLY)
            except OSError as e:
                raise os_error(e, self.files[i], "cannot read temporary file") from None
            self._fds[i] = fd
        return fd

    def pile_parts(self, p: int, limit: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The bytes and keys of pile ``p``, in parts of whole runs' segments of about
        ``limit`` bytes at most (a single segment may be larger)."""
        counts, sizes = self._index()
        kpos, dpos = self._positions(p)
        rs = np.flatnonzero(counts[p])
        segments = list(
            zip(
                rs.tolist(),
                counts[p, rs].tolist(),
                sizes[p, rs].tolist(),
                kpos[rs].tolist(),
                dpos[rs].tolist(),
                strict=True,
            )
        )
        i = 0
        while i < len(segments):
            j, size = i + 1, segments[i][2]
            while j < len(segments) and size + segments[j][2] <= limit:
                size += segments[j][2]
                j += 1
            yield self._read(segments[i:j], size)
            i = j

    def _read(
        self, segments: list[tuple[int, int, int, int, int]], size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.in_memory and len(segments) == 1:
            r, n, nbytes, k, d = segments[0]
            keys, data = self.memory[r]
            return data[d : d + nbytes], keys[k // 8 : k // 8 + n]
        data = np.empty(size, dtype=np.uint8)
        keys = np.empty(sum(seg[1] for seg in segments), dtype=np.uint64)
        at = kat = 0
        for r, n, nbytes, k, d in segments:
            if self.in_memory:
                run_keys, run_data = self.memory[r]
                keys[kat : kat + n] = run_keys[k // 8 : k // 8 + n]
                data[at : at + nbytes] = run_data[d : d + nbytes]
            else:
                path = self.files[self.run_file[r]]
                try:
                    fd = self._fd(self.run_file[r])
                    got_keys = _pread_into(fd, keys[kat : kat + n], k)
                    got = _pread_into(fd, data[at : at + nbytes], d)
                except OSError as e:
                    raise os_error(e, path, "cannot read temporary file") from None
                if got_keys != 8 * n or got != nbytes:
                    raise KxError(
                        f"temporary file {path!r} was truncated or changed during the run"
                    )
            at += nbytes
            kat += n
        return data, keys

    def close(self) -> None:
        """Close every file (the runs stay on disk)."""
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()

    def remove(self) -> None:
        """Close and delete every file (or let go of the runs in memory)."""
        self.close()
        self.memory = []
        for path in self.files:
            with contextlib.suppress(OSError):
                os.unlink(path)


# --------------------------------------------------------------------------------------------
# writing


class _Writer:
    """Writes ordered records to one output or to shards of near-equal line counts."""

    def __init__(
        self,
        outputs: AtomicOutputs,
        output: str,
        shards: int | None,
        total: int,
        header: Sequence[bytes],
        sep: bytes,
        progress: Progress | None,
        total_bytes: int | None,
    ) -> None:
        self.outputs = outputs
        self.output = output
        self.shards = shards
        self.sep = sep
        self.header = b"".join(h + sep for h in header)
        self.progress = progress
        self.total_bytes = total_bytes
        self.written_bytes = 0
        if shards:
            self.bounds = [total * j // shards for j in range(shards + 1)]
        else:
            self.bounds = [0, total]
        self.shard = -1
        self.file: BinaryIO | None = None
        self.done = 0  # records written
        self.paths: list[str] = []

    def _open_next(self) -> None:
        self.shard += 1
        path = self.output.format(self.shard) if self.shards else self.output
        lines = self.bounds[self.shard + 1] - self.bounds[self.shard]
        total_lines = self.bounds[-1]
        size = len(self.header)
        if self.total_bytes and total_lines:
            size += self.total_bytes * lines // total_lines
        self.file = self.outputs.open(path, size)
        self.paths.append(path)
        if self.header:
            self.file.write(self.header)

    def write(self, data: np.ndarray, lengths: np.ndarray | None = None) -> None:
        """Write ``data``: whole records, each with its separator (``lengths``, when given,
        are their lengths; they are found when a shard boundary falls inside)."""
        count = len(lengths) if lengths is not None else int(np.count_nonzero(data == self.sep[0]))
        i = pos = 0
        while i < count:
            while self.file is None or self.done >= self.bounds[self.shard + 1]:
                self._open_next()
            room = self.bounds[self.shard + 1] - self.done
            if count - i <= room:
                cut, took = len(data), count - i
            else:  # a shard ends inside (rare)
                if lengths is None:
                    lengths = np.diff(record_ends(data, self.sep[0]), prepend=0)
                cut, took = pos + int(lengths[i : i + room].sum()), room
            self.file.write(memoryview(data[pos:cut]))
            self.written_bytes += cut - pos
            self.done += took
            i += took
            pos = cut
        if self.progress is not None:
            self.progress("writing", self.written_bytes, self.total_bytes)

    def phase(self) -> int | None:
        return None

    def direct_target(self) -> tuple[str, int] | None:
        """For workers writing in place: the temporary file of a single plain output and the
        offset where records start, after the header (which is written here)."""
        if self.shards or self.output == STDIO or compression_for_name(self.output):
            return None
        if self.file is None:
            self._open_next()
        assert self.file is not None
        self.file.flush()
        return self.outputs.temp_path(self.output), len(self.header)

    def advance(self, nbytes: int) -> None:
        """Records were written by workers: account for them (progress)."""
        self.written_bytes += nbytes
        if self.progress is not None:
            self.progress("writing", self.written_bytes, self.total_bytes)

    def advance_done(self, nbytes: int) -> None:
        """Workers wrote every record (``nbytes`` after the header): move to the end."""
        assert self.file is not None
        self.file.seek(len(self.header) + nbytes)
        self.done = self.bounds[-1]

    def finish(self) -> list[str]:
        """Open any output not yet opened (empty shards, empty input) and return all paths."""
        target = len(self.bounds) - 1
        while self.shard + 1 < target:
            self._open_next()
        return self.paths


class _Sink:
    """Where ordered records go: :class:`_Writer`, :class:`_PipeSink` or
    :class:`_OffsetSink`."""

    def write(self, data: np.ndarray, lengths: np.ndarray | None = None) -> None: ...

    def phase(self) -> int | None:
        """Where the next data should start in memory, modulo 4096 (for direct I/O), or None."""
        return None


def _emit_ordered(
    data: np.ndarray, keys: np.ndarray, shift: int, sep: int, sink: _Sink | _Writer
) -> None:
    """Write the records of ``data`` in increasing key order, where every key shares its top
    ``shift`` bits.

    A large set is first split into cache-sized buckets by the next key bits (a counting sort,
    which keeps memory access sequential); each bucket is then ordered and written.
    """
    n = len(keys)
    if n == 0:
        return
    ends = record_ends(data, sep)
    if len(ends) != n or ends[-1] != len(data):
        raise KxError("a temporary file was truncated or changed during the run")
    starts = starts_of(ends)
    lengths = ends - starts
    del ends
    bits = 0
    if len(data) > CACHE_BUCKET and shift < 48:
        bits = min(12, max(1, math.ceil(math.log2(len(data) / CACHE_BUCKET))))
    if bits == 0:
        perm = _order(keys, shift)
        out = gather(data, starts, lengths, perm, phase=sink.phase())
        sink.write(out, lengths[perm])
        return
    x = keys << np.uint64(shift) if shift else keys
    bucket = (x >> np.uint64(64 - bits)).astype(np.uint16)
    del x
    order = np.argsort(bucket, kind="stable")
    counts = np.bincount(bucket, minlength=1 << bits)
    sizes = np.bincount(bucket, weights=lengths, minlength=1 << bits).astype(np.int64)
    del bucket
    grouped = gather(data, starts, lengths, order)
    del starts, lengths
    gkeys = keys[order]
    del order
    a = at = 0
    for c, size in zip(counts.tolist(), sizes.tolist(), strict=True):
        if c:
            _emit_ordered(grouped[at : at + size], gkeys[a : a + c], shift + bits, sep, sink)
            a += c
            at += size


# --------------------------------------------------------------------------------------------
# the public function


@dataclass
class ShuffleResult:
    """What :func:`shuffle_files` did."""

    seed: int
    records: int
    bytes: int
    header: int
    in_memory: bool
    runs: int
    piles: int
    jobs: int  # worker processes, or threads for an input ordered in memory
    outputs: list[str]


_allocator_tuned = False


def _tune_allocator() -> None:
    """Ask glibc's malloc to keep freed memory for reuse instead of returning it at once.

    The shuffle allocates and frees blocks of tens of megabytes over and over; by default each
    one is a fresh mapping whose pages the kernel must zero again, which cost as much time as
    the shuffling itself. This changes only when memory is handed back, not how much is used.
    """
    global _allocator_tuned
    if _allocator_tuned:
        return
    _allocator_tuned = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 256 << 20)
        libc.mallopt(m_trim_threshold, 512 << 20)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


@contextlib.contextmanager
def _small_pages() -> Iterator[None]:
    """Stop numpy from asking for transparent huge pages while the shuffle runs.

    numpy advises the kernel to back every large array with huge pages; the shuffle allocates
    and frees tens of megabytes over and over, and where the kernel compacts memory to find
    huge pages on demand that doubled the system time (measured: 2.6 s against 0.9 s on a
    500 MB input).
    """
    try:
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:  # pragma: no cover - numpy < 2
        try:
            from numpy.core.multiarray import _set_madvise_hugepage
        except ImportError:
            yield
            return
    previous = _set_madvise_hugepage(False)
    try:
        yield
    finally:
        _set_madvise_hugepage(previous)


def _validate_output(output: str, shards: int | None, inputs: Sequence[str]) -> None:
    if shards is None:
        return
    if shards < 1:
        raise KxError("--shards must be at least 1")
    if output == STDIO:
        raise KxError("--shards needs -o with a pattern such as 'out/part-{:05d}.txt'")
    try:
        names = {output.format(j) for j in range(min(shards, 3))} | {output.format(shards - 1)}
    except (IndexError, KeyError, ValueError) as e:
        raise KxError(f"invalid shard pattern {output!r}: {e}") from None
    if len(names) < min(shards, 3) or output.format(0) == output:
        raise KxError(
            f"shard pattern {output!r} must contain a field such as {{}} or {{:05d}} "
            "for the shard number"
        )


def _check_space(directory: str, needed: int, what: str) -> None:
    free = free_space(directory)
    if free < needed + DISK_SLACK:
        raise KxError(
            f"not enough free space in {directory!r} for {what}: about "
            f"{format_size(needed + DISK_SLACK)} needed, {format_size(free)} free "
            "(use --tmp-dir elsewhere)"
        )


def shuffle_files(
    inputs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str] = (STDIO,),
    output: str | os.PathLike[str] = STDIO,
    *,
    memory: int | str = "1G",
    seed: int | None = None,
    tmp_dir: str | os.PathLike[str] | None = None,
    shards: int | None = None,
    header: int = 0,
    zero_terminated: bool = False,
    jobs: int | None = None,
    progress: Progress | None = None,
    _pile_bits: int | None = None,
) -> ShuffleResult:
    """Shuffle the records of ``inputs`` uniformly into ``output``, in bounded memory.

    ``inputs`` are files (plain, .gz, .bz2 or .xz) or ``"-"`` for stdin, read once as one
    corpus. ``output`` is a file (written atomically; it may be one of the inputs) or ``"-"``;
    with ``shards`` it is a pattern such as ``"out/part-{:05d}.txt"`` for ``str.format``.
    ``memory`` bounds the memory for records (e.g. ``"512M"``). The same ``seed`` and input
    always give the same output, whatever ``memory`` and ``tmp_dir``. ``header`` lines of the
    first input stay on top (of every shard). Records end with a newline, or with NUL when
    ``zero_terminated``; a missing final terminator is added. Inputs that do not fit in memory
    are shuffled by ``jobs`` worker processes (default :func:`default_jobs`); the output does
    not depend on their number. Raises :class:`KxError`.
    """
    if isinstance(inputs, str | os.PathLike):
        inputs = [inputs]
    paths = [os.fspath(p) for p in inputs] or [STDIO]
    output = os.fspath(output)
    budget = parse_size(memory)
    if budget < MIN_MEMORY:
        raise KxError(f"--memory must be at least {format_size(MIN_MEMORY)}")
    if header < 0:
        raise KxError("--header must not be negative")
    if paths.count(STDIO) > 1:
        raise KxError("stdin ('-') can be read only once")
    _validate_output(output, shards, paths)
    for p in paths:
        check_readable(p)
    if seed is None:
        seed = secrets.randbits(63)
    sep = b"\0" if zero_terminated else b"\n"
    _tune_allocator()

    sizes = [input_size(p) for p in paths]
    known_total = None if any(s is None for s in sizes) else sum(sizes)  # type: ignore[arg-type]
    planning_total = known_total if known_total is not None else _planning_size(paths)
    if jobs is None:
        jobs = default_jobs()
    if jobs < 1:
        raise KxError("--jobs must be at least 1")
    unit = _work_unit(budget, planning_total, jobs)
    reader = _Reader(paths, sep, header, unit // 2, budget // 4, progress, known_total)
    in_memory_limit = int(IN_MEMORY_SHARE * budget)
    if jobs > 1:  # room for the workers' batches while the main process still holds chunks
        in_memory_limit = max(in_memory_limit // 2, in_memory_limit - 3 * jobs * unit)

    tmp_base = os.fspath(tmp_dir) if tmp_dir is not None else None
    tmp_ctx = contextlib.ExitStack()
    with _small_pages(), tmp_ctx, AtomicOutputs() as outs:
        ranges = None
        if jobs > 1 and known_total is not None:
            ranges = _RangePlan.make(paths, sep, header, reader.block, budget // 4, in_memory_limit)
        if ranges is not None:
            # plain files too big for memory: the workers read their own byte ranges
            directory = tmp_ctx.enter_context(temp_dir(tmp_base))
            assert known_total is not None
            _check_space(
                directory, known_total + 8 * ranges.records_estimate, "the temporary files"
            )
            bits = (
                _pile_bits
                if _pile_bits is not None
                else _pile_bits_for(known_total, ranges.per_byte, unit, budget, jobs)
            )
            pool = _Pool(jobs, directory, sep, bits, seed, unit, budget // 4)
            tmp_ctx.callback(pool.stop)
            runs = pool.pass1_ranges(ranges, progress, known_total)
            return _finish_on_disk(
                runs, pool, outs, output, shards, ranges.header, sep, progress, budget, seed
            )

        # read until the input ends or clearly will not fit in memory
        chunks = reader.chunks()
        held: list[_Chunk] = []
        held_memory = held_bytes = 0
        fits = True
        for chunk in chunks:
            held.append(chunk)
            held_memory += chunk.memory()
            held_bytes += chunk.nbytes
            if held_memory > in_memory_limit or (
                known_total is not None
                and known_total * held_memory / held_bytes > 1.25 * in_memory_limit
            ):
                fits = False
                break

        if fits:
            # one pass in memory: the batches are grouped into cache-sized piles as they are
            # keyed, then each pile is ordered and written
            bits = 0
            if held_bytes > unit * PILE_SHARE:
                bits = min(16, math.ceil(math.log2(held_bytes / (unit * PILE_SHARE))))
            runs = _Runs(None, sep, 0, bits, "memory")
            held.reverse()
            threads = min(jobs, 1 + held_bytes // THREAD_MIN)
            start = _group_in_memory(runs, held, seed, threads)
            writer = _Writer(outs, output, shards, start, reader.header, sep, progress, held_bytes)
            _drain_to_output(runs, budget, writer, threads)
            runs.remove()
            return ShuffleResult(
                seed,
                reader.records,
                held_bytes,
                len(reader.header),
                True,
                0,
                0,
                threads,
                writer.finish(),
            )

        # too big: pass 1 spills the records to runs, grouped into piles by key bits; pass 2
        # orders and writes one pile at a time
        directory = tmp_ctx.enter_context(temp_dir(tmp_base))
        per_byte = held_memory / max(1, held_bytes)
        if known_total is not None:
            records_est = int(known_total * sum(c.count for c in held) / max(1, held_bytes))
            _check_space(directory, known_total + 8 * records_est, "the temporary files")
        if _pile_bits is not None:
            bits = _pile_bits
        else:
            bits = _pile_bits_for(planning_total, per_byte, unit, budget, jobs)
        space = None if known_total is not None else directory
        stream = _chain(held, chunks)
        if jobs > 1:
            pool = _Pool(jobs, directory, sep, bits, seed, unit, budget // 4)
            tmp_ctx.callback(pool.stop)
            runs = pool.pass1(stream, space)
        else:
            runs = _Runs(directory, sep, 0, bits, "run")
            tmp_ctx.callback(runs.remove)
            _pass1(runs, stream, seed, unit, space)
        del held, stream
        return _finish_on_disk(
            runs,
            pool if jobs > 1 else None,
            outs,
            output,
            shards,
            reader.header,
            sep,
            progress,
            budget,
            seed,
        )


def _finish_on_disk(
    runs: _Runs,
    pool: _Pool | None,
    outs: AtomicOutputs,
    output: str,
    shards: int | None,
    header: Sequence[bytes],
    sep: bytes,
    progress: Progress | None,
    budget: int,
    seed: int,
) -> ShuffleResult:
    """Pass 2: order and write the piles, by the workers or in this process."""
    counts, data_sizes = runs.pile_totals()
    total = int(counts.sum())
    total_bytes = int(data_sizes.sum())
    writer = _Writer(outs, output, shards, total, header, sep, progress, total_bytes)
    pile_budget = max(budget // 4, budget - runs.index_bytes())
    if pool is not None:
        pool.pass2(runs, pile_budget // len(pool.workers), writer)
        jobs = len(pool.workers)
        pool.stop()
    else:
        _drain_to_output(runs, pile_budget, writer)
        jobs = 1
    runs.remove()
    return ShuffleResult(
        seed,
        total,
        total_bytes,
        len(header),
        False,
        runs.runs,
        runs.piles,
        jobs,
        writer.finish(),
    )


def default_jobs() -> int:
    """Worker processes used when none are asked for: the usable cores, at most 4."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


def _chain(held: list[_Chunk], rest: Iterator[_Chunk]) -> Iterator[_Chunk]:
    """The chunks already read, then the rest, letting go of each held one once handed out."""
    held.reverse()
    while held:
        yield held.pop()
    yield from rest


def _pass1(runs: _Runs, chunks: Iterator[_Chunk], seed: int, unit: int, space: str | None) -> None:
    """Pass 1 in this process: key the chunks' records and spill them."""
    spiller = _Spiller(runs, unit)
    start = 0
    for chunk in chunks:
        if space is not None:
            _check_space(space, chunk.nbytes + 8 * chunk.count, "the temporary files")
        spiller.add(chunk.data, record_keys(seed, start, chunk.count))
        start += chunk.count
    spiller.flush()


@dataclass
class _Range:
    """Whole records of one plain input file: ``length`` bytes from ``offset`` (plus a final
    separator when the file lacks one)."""

    index: int  # of the range, in input order
    file: int  # index of the input
    path: str
    offset: int
    length: int
    add_sep: bool


class _RangePlan:
    """Byte ranges of whole records over plain input files, for workers that read their own.

    Ranges are cut about ``block`` bytes apart, just after a separator (found by reading a
    little around each cut), so no worker needs another's bytes; the header lines are read
    here. Records are counted by the workers.
    """

    def __init__(
        self,
        paths: Sequence[str],
        sep: bytes,
        block: int,
        max_record: int,
        header: list[bytes],
        first_offset: int,
        total: int,
        records_estimate: int,
    ) -> None:
        self.paths = paths
        self.sep = sep
        self.block = block
        self.max_record = max_record
        self.header = header
        self.first_offset = first_offset
        self.total = total
        self.records_estimate = records_estimate
        self.per_byte = (total + RECORD_REST * records_estimate) / max(1, total)

    @classmethod
    def make(
        cls,
        paths: Sequence[str],
        sep: bytes,
        header: int,
        block: int,
        max_record: int,
        in_memory_limit: int,
    ) -> _RangePlan | None:
        """A plan when every input is a plain regular file and they clearly do not fit in
        memory; otherwise None."""
        if any(p == STDIO or not os.path.isfile(p) for p in paths):
            return None
        if any(compression_of(p) is not None for p in paths):
            return None
        total = sum(os.path.getsize(p) for p in paths)
        if total == 0:
            return None
        sample = b""
        with contextlib.suppress(OSError):
            for p in paths:
                with open(p, "rb") as f:
                    sample = f.read(1 << 20)
                if sample:
                    break
        per_record = len(sample) / max(1, sample.count(sep))
        records = int(total / per_record) + 1
        if total + RECORD_REST * records <= 1.25 * in_memory_limit:
            return None
        head, first = _read_header(paths[0], sep, header, max_record)
        return cls(paths, sep, block, max_record, head, first, total, records)

    def ranges(self) -> Iterator[_Range]:
        index = 0
        for i, path in enumerate(self.paths):
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError as e:
                raise os_error(e, path) from None
            try:
                size = os.fstat(fd).st_size
                pos = self.first_offset if i == 0 else 0
                while pos < size:
                    cut = pos + self.block
                    end = size if cut >= size else self._record_end(fd, path, cut - 1, pos, size)
                    add_sep = end == size and os.pread(fd, 1, size - 1) != self.sep
                    yield _Range(index, i, path, pos, end - pos, add_sep)
                    index += 1
                    pos = end
            except OSError as e:
                raise os_error(e, path, "cannot read") from None
            finally:
                os.close(fd)

    def _record_end(self, fd: int, path: str, at: int, start: int, size: int) -> int:
        """One past the first separator at or after ``at``, or ``size``."""
        origin = at
        limit = start + self.block + self.max_record + 1
        width = 1 << 16
        while at < size:
            window = os.pread(fd, min(width, limit - at), at)
            if not window:
                return size
            found = window.find(self.sep)
            if found >= 0:
                return at + found + 1
            at += len(window)
            if at >= limit:
                line = _line_containing(fd, origin, start, self.sep)
                raise KxError(
                    f"line {line} of {display_name(path)!r} is longer than a quarter of the"
                    f" memory budget ({format_size(self.max_record)}); raise --memory"
                )
            width *= 4
        return size


def _line_containing(fd: int, offset: int, start: int, sep: bytes) -> int:
    """The number (from 1) of the line of the file on ``fd`` that holds byte ``offset``, whose
    line starts at or after ``start`` (an error path: it reads the file up to there)."""
    begin = start
    before = os.pread(fd, offset - start, start)
    last = before.rfind(sep)
    if last >= 0:
        begin = start + last + 1
    lines, pos = 0, 0
    while pos < begin:
        block = os.pread(fd, min(16 << 20, begin - pos), pos)
        if not block:
            break
        lines += block.count(sep)
        pos += len(block)
    return lines + 1


def _read_header(path: str, sep: bytes, n: int, max_record: int) -> tuple[list[bytes], int]:
    """The first ``n`` records of ``path`` (separators removed) and the offset after them."""
    header: list[bytes] = []
    if n <= 0:
        return header, 0
    base = pos = 0  # buf[0] is at file offset base
    buf = b""
    try:
        with open(path, "rb") as f:
            while len(header) < n:
                end = buf.find(sep, pos)
                if end >= 0:
                    header.append(buf[pos:end])
                    pos = end + 1
                    continue
                if len(buf) - pos > max_record:
                    raise KxError(
                        f"line {len(header) + 1} of {display_name(path)!r} is longer than a"
                        f" quarter of the memory budget ({format_size(max_record)});"
                        " raise --memory"
                    )
                more = f.read(1 << 20)
                if not more:
                    if len(buf) > pos:  # a last record without its separator
                        header.append(buf[pos:])
                        pos = len(buf)
                    break
                base += pos
                buf = buf[pos:] + more
                pos = 0
    except OSError as e:
        raise os_error(e, path, "cannot read") from None
    return header, base + pos


class _Pool:
    """Worker processes that share both passes: workers read (their own byte ranges, or chunks
    the main process sends), key, spill, order and write; the main process coordinates. The
    output is the same as with one process."""

    def __init__(
        self,
        jobs: int,
        directory: str,
        sep: bytes,
        bits: int,
        seed: int,
        unit: int,
        max_record: int,
    ) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("fork")
        self.workers: list[tuple[Any, Connection]] = []
        self.sep = sep
        self.bits = bits
        self.directory = directory
        try:
            for w in range(jobs):
                parent, child = ctx.Pipe()
                proc = ctx.Process(
                    target=_worker,
                    args=(child, f"worker{w}", directory, sep, bits, seed, unit, max_record),
                    daemon=True,
                )
                proc.start()
                child.close()
                _enlarge_pipe(parent)
                self.workers.append((proc, parent))
        except BaseException:
            self.stop()
            raise

    def _failed(self, w: int) -> KxError:
        """The error a worker reported, or that it died."""
        proc, conn = self.workers[w]
        with contextlib.suppress(Exception):
            if conn.poll(1):
                msg = conn.recv()
                if msg[0] == "error":
                    return KxError(msg[1])
        proc.join(1)
        return KxError(f"a worker process died unexpectedly (exit code {proc.exitcode})")

    def _recv(self, w: int) -> tuple:
        try:
            msg = self.workers[w][1].recv()
        except (EOFError, OSError):
            raise self._failed(w) from None
        if msg[0] == "error":
            raise KxError(msg[1])
        return msg

    def _wait(self) -> list[int]:
        """Workers with a message waiting (blocks until there is one)."""
        from multiprocessing.connection import wait

        conns = {id(c): w for w, (_p, c) in enumerate(self.workers)}
        ready = wait([c for _p, c in self.workers])
        return [conns[id(c)] for c in ready]

    def pass1(self, chunks: Iterator[_Chunk], space: str | None) -> _Runs:
        """Hand each chunk to whichever worker is free; collect the runs they wrote."""
        jobs = len(self.workers)
        free = list(range(jobs))
        start = 0
        for chunk in chunks:
            if space is not None:
                _check_space(space, chunk.nbytes + 8 * chunk.count, "the temporary files")
            while not free:
                for w in self._wait():
                    self._recv(w)  # ("ready",)
                    free.append(w)
            w = free.pop(0)
            conn = self.workers[w][1]
            try:
                conn.send(("chunk", start, chunk.count, chunk.nbytes))
                conn.send_bytes(chunk.data)
            except OSError:
                raise self._failed(w) from None
            start += chunk.count
        return self._collect_runs()

    def pass1_ranges(self, plan: _RangePlan, progress: Progress | None, total: int | None) -> _Runs:
        """Hand each byte range to whichever worker is free; tell each worker the index of
        its first record once the workers before it have counted theirs."""
        jobs = len(self.workers)
        free = list(range(jobs))
        holder: dict[int, tuple[int, int]] = {}  # range index -> (worker, file)
        counted: dict[int, int] = {}  # range index -> records
        next_start = 0  # the range whose first record index is due next
        start = 0  # index of its first record
        lines_in_file: dict[int, int] = {0: len(plan.header)}
        done_bytes = 0
        sizes: dict[int, int] = {}
        ranges = plan.ranges()
        more = True
        while more or holder:
            while more and free:
                r = next(ranges, None)
                if r is None:
                    more = False
                    break
                w = free.pop(0)
                holder[r.index] = (w, r.file)
                sizes[r.index] = r.length
                msg = ("range", r.index, r.path, r.offset, r.length, r.add_sep)
                try:
                    self.workers[w][1].send(msg)
                except OSError:
                    raise self._failed(w) from None
            if not holder:
                break
            for w in self._wait():
                msg = self._recv(w)
                if msg[0] == "count":
                    counted[msg[1]] = msg[2]
                    while next_start in counted:
                        hw, f = holder[next_start]
                        base = lines_in_file.get(f, 0)
                        try:
                            self.workers[hw][1].send(("start", start, base))
                        except OSError:
                            raise self._failed(hw) from None
                        n = counted.pop(next_start)
                        start += n
                        lines_in_file[f] = base + n
                        next_start += 1
                elif msg[0] == "ready":
                    index = msg[1]
                    holder.pop(index)
                    done_bytes += sizes.pop(index)
                    free.append(w)
                    if progress is not None:
                        progress("reading", done_bytes, total)
        return self._collect_runs()

    def _collect_runs(self) -> _Runs:
        merged = _Runs(self.directory, self.sep, 0, self.bits, "merged")
        for w in range(len(self.workers)):
            try:
                self.workers[w][1].send(("end",))
            except OSError:
                raise self._failed(w) from None
        for w in range(len(self.workers)):
            while True:
                msg = self._recv(w)
                if msg[0] == "runs":
                    merged.adopt(msg[1])
                    break
        return merged

    def pass2(self, runs: _Runs, budget: int, writer: _Writer) -> None:
        """Order and write the piles: straight into a plain output file when there is one,
        otherwise through the main process, in order."""
        jobs = len(self.workers)
        counts, sizes = runs.pile_totals()
        piles = np.flatnonzero(counts).tolist()
        target = writer.direct_target()
        if target is not None:
            path, base = target
            name = writer.output
            offsets = (base + np.concatenate(([0], np.cumsum(sizes)[:-1]))).tolist()
            for w in range(jobs):
                mine = piles[w::jobs]
                msg = ("drain_to", runs, mine, [offsets[p] for p in mine], budget, path, name)
                try:
                    self.workers[w][1].send(msg)
                except OSError:
                    raise self._failed(w) from None
            busy = set(range(jobs))
            while busy:
                for w in self._wait():
                    msg = self._recv(w)
                    if msg[0] == "pile":
                        writer.advance(msg[1])
                    elif msg[0] == "done":
                        busy.discard(w)
            writer.advance_done(int(sizes.sum()))
            return
        for w in range(jobs):
            try:
                self.workers[w][1].send(("drain", runs, piles[w::jobs], budget))
            except OSError:
                raise self._failed(w) from None
        for i in range(len(piles)):
            w = i % jobs
            conn = self.workers[w][1]
            while True:
                msg = self._recv(w)
                if msg[0] == "pile":
                    break
                writer.write(np.frombuffer(conn.recv_bytes(), dtype=np.uint8))
        for w in range(jobs):
            self._recv(w)  # ("done",)

    def stop(self) -> None:
        """End every worker (politely if it is idle, by force otherwise)."""
        for _proc, conn in self.workers:
            with contextlib.suppress(Exception):
                conn.send(("exit",))
        for proc, conn in self.workers:
            proc.join(0.5)
            if proc.is_alive():
                proc.terminate()
                proc.join(2)
            with contextlib.suppress(Exception):
                conn.close()
        self.workers = []


def _planning_size(paths: Sequence[str]) -> int | None:
    """A generous guess at the size of compressed inputs, to plan piles (not to check space):
    text rarely compresses better than 5:1. ``None`` when stdin is among the inputs."""
    if STDIO in paths:
        return None
    try:
        return sum(COMPRESSION_GUESS * os.path.getsize(p) for p in paths)
    except OSError:
        return None


#: Resting memory per byte assumed before any record is seen (lines of about 100 bytes).
_PER_BYTE_GUESS = 1.16


def _work_per_byte(per_byte: float) -> float:
    """Work memory per data byte (see :func:`_work_memory`), from the resting memory per byte
    (``1 + RECORD_REST / mean record length``)."""
    return 2.0 + RECORD_WORK * max(0.0, per_byte - 1.0) / RECORD_REST


def _unit_cap(budget: int, jobs: int) -> int:
    return max(MIN_MEMORY // 4, budget // (2 * max(1, jobs)))


def _pile_plan(total: int, per_byte: float, unit: int, budget: int, jobs: int) -> tuple[int, int]:
    """Pile bits and the size of the pile index for ``total`` bytes in runs of ``unit``."""
    wpb = _work_per_byte(per_byte)
    # a pile holds about half a work unit, and its work memory stays within half a worker's
    # share of the budget (pass 2 checks 0.6 and splits a pile again beyond that)
    pile_bytes = min(unit * PILE_SHARE / per_byte, 0.5 * (budget / max(1, jobs)) / wpb)
    bits = min(16, max(1, math.ceil(math.log2(max(2.0, total / pile_bytes)))))
    run_bytes = max(unit / wpb, min(MAX_BLOCK, unit // 2))
    index = math.ceil(total / run_bytes) * (1 << bits) * _INDEX_ENTRY
    return bits, index


def _work_unit(budget: int, known_total: int | None, jobs: int = 1) -> int:
    """The memory a batch (pass 1) and a pile (pass 2) aim at.

    Small units keep the working set in cache and are markedly faster than budget-sized ones;
    they are made bigger only where the pile index (runs x piles) would otherwise take more
    than an eighth of the budget, on very large inputs, and never beyond half a worker's
    share of the budget.
    """
    cap = _unit_cap(budget, jobs)
    unit = min(WORK_UNIT, cap)
    if known_total is not None:
        while unit < cap:
            _bits, index = _pile_plan(known_total, _PER_BYTE_GUESS, unit, budget, jobs)
            if index <= budget / 8:
                break
            unit = min(cap, 2 * unit)
    return unit


def _pile_bits_for(
    known_total: int | None, per_byte: float, unit: int, budget: int, jobs: int = 1
) -> int:
    """Enough piles that each one is about half a work unit and fits in memory in pass 2
    (smaller piles measured faster here), unless the pile index would then take more than an
    eighth of the budget: then fewer, bigger piles, which pass 2 splits again."""
    if known_total is None:
        # unknown size (stdin, compressed): plan for a large input; piles that still turn out
        # too big are split again in pass 2, which changes nothing in the output
        return UNKNOWN_SIZE_PILE_BITS
    bits, index = _pile_plan(known_total, per_byte, unit, budget, jobs)
    while bits > 1 and index > budget / 8:
        bits -= 1
        index //= 2
    return bits


def _drain(
    runs: _Runs, budget: int, sink: _Sink | _Writer, piles: Iterable[int] | None = None
) -> None:
    """Pass 2: write the piles of ``runs`` (all, or ``piles``, in that order) in key order."""
    counts, sizes = runs.pile_totals()
    for p in range(runs.piles) if piles is None else piles:
        if counts[p]:
            _drain_pile(runs, p, int(counts[p]), int(sizes[p]), budget, sink)
        if isinstance(sink, _PipeSink) and piles is not None:
            sink.end_pile()


def _drain_to_output(runs: _Runs, budget: int, writer: _Writer, threads: int = 1) -> None:
    """Pass 2 in this process: straight into a single plain output file with positional writes
    (large outputs around the page cache), otherwise through the writer. Runs held in memory
    may be ordered by several ``threads`` (numpy lets go of the interpreter while it works)."""
    if threads > 1 and runs.in_memory:
        _drain_threaded(runs, budget // threads, writer, threads)
        return
    target = writer.direct_target()
    if target is None:
        _drain(runs, budget, writer)
        return
    path, base = target
    total = int(runs.pile_totals()[1].sum())
    out = PositionalWriter(path, writer.output, direct=total >= DIRECT_MIN)
    try:
        sink = _OffsetSink(out, base, writer.advance)
        _drain(runs, budget, sink)
    finally:
        out.close()
    if sink.offset != base + total:
        raise KxError(f"internal error: wrote {sink.offset - base} bytes of {total}")
    writer.advance_done(total)


def _group_in_memory(runs: _Runs, held: list[_Chunk], seed: int, threads: int) -> int:
    """Key and group the chunks of ``held`` (last first) into runs in memory, letting go of each
    chunk once grouped; with several threads, a few chunks at a time. Returns the records."""
    start = 0
    if threads <= 1:
        while held:
            chunk = held.pop()
            runs.spill(chunk.data, record_keys(seed, start, chunk.count))
            start += chunk.count
            del chunk
        return start
    from concurrent.futures import ThreadPoolExecutor

    def group(data: np.ndarray, first: int, count: int):  # type: ignore[no-untyped-def]
        return runs.group(data, record_keys(seed, first, count))

    pending = []
    with ThreadPoolExecutor(threads) as ex:
        while held or pending:
            while held and len(pending) < threads:
                chunk = held.pop()
                pending.append(ex.submit(group, chunk.data, start, chunk.count))
                start += chunk.count
                del chunk
            runs.store(pending.pop(0).result())  # in order, though the order does not matter
    return start


class _Collect(_Sink):
    """Keeps what is written, to be written in order later."""

    def __init__(self) -> None:
        self.parts: list[tuple[np.ndarray, np.ndarray | None]] = []

    def write(self, data: np.ndarray, lengths: np.ndarray | None = None) -> None:
        self.parts.append((data, lengths))


def _drain_threaded(runs: _Runs, budget: int, writer: _Writer, threads: int) -> None:
    """Pass 2 over runs in memory with several threads: piles are read here, in order, and
    ordered by the threads; they write a plain output at each pile's offset themselves,
    otherwise their results are written here in order."""
    from concurrent.futures import ThreadPoolExecutor

    counts, sizes = runs.pile_totals()
    piles = np.flatnonzero(counts).tolist()
    total = int(sizes.sum())
    shift = runs.shift + runs.bits
    sep = runs.sep[0]
    target = writer.direct_target()
    out = None
    if target is not None:
        path, base = target
        out = PositionalWriter(path, writer.output, direct=total >= DIRECT_MIN)
        offsets = (base + np.concatenate(([0], np.cumsum(sizes)[:-1]))).tolist()

    def order(p: int, data: np.ndarray, keys: np.ndarray) -> _Collect | int:
        if out is not None:
            sink = _OffsetSink(out, offsets[p])
            _emit_ordered(data, keys, shift, sep, sink)
            return sink.offset - offsets[p]
        collect = _Collect()
        _emit_ordered(data, keys, shift, sep, collect)
        return collect

    def finish(result: _Collect | int) -> None:
        if isinstance(result, int):
            writer.advance(result)
        else:
            for data, lengths in result.parts:
                writer.write(data, lengths)

    try:
        pending = []
        with ThreadPoolExecutor(threads) as ex:
            for p in piles:
                n, nbytes = int(counts[p]), int(sizes[p])
                if _work_memory(nbytes, n) > 0.6 * budget and shift < 56:
                    for f in pending:  # a pile too big for a thread: alone, in order
                        finish(f.result())
                    pending = []
                    sink: _Sink | _Writer = writer if out is None else _OffsetSink(out, offsets[p])
                    _drain_pile(runs, p, n, nbytes, budget * threads, sink)
                    if out is not None:
                        writer.advance(nbytes)
                    continue
                for data, keys in runs.pile_parts(p, nbytes):
                    pending.append(ex.submit(order, p, data, keys))
                while len(pending) > 2 * threads:
                    finish(pending.pop(0).result())
            for f in pending:
                finish(f.result())
    finally:
        if out is not None:
            out.close()
    if out is not None:
        writer.advance_done(total)


def _drain_pile(
    runs: _Runs, p: int, n: int, nbytes: int, budget: int, sink: _Sink | _Writer
) -> None:
    shift = runs.shift + runs.bits
    if _work_memory(nbytes, n) <= 0.6 * budget or shift >= 56:
        for data, keys in runs.pile_parts(p, nbytes):  # one part: the whole pile
            _emit_ordered(data, keys, shift, runs.sep[0], sink)
        return
    # too big for memory: scatter this pile again by the next key bits
    need = _work_memory(nbytes, n)
    bits = min(16, max(1, math.ceil(math.log2(need / (0.5 * budget)))))
    sub = _Runs(runs.directory, runs.sep, shift, bits, f"{runs.name}-{p}")
    try:
        spiller = _Spiller(sub, budget // 2)
        for data, keys in runs.pile_parts(p, max(1, budget // 8)):
            spiller.add(data, keys)
        spiller.flush()
        _drain(sub, budget, sink)
    finally:
        sub.remove()


class _Spiller:
    """Collects batches of records and their keys into runs of about ``unit`` bytes of work
    memory."""

    def __init__(self, runs: _Runs, unit: int) -> None:
        self.runs = runs
        self.unit = unit
        self.data: list[np.ndarray] = []
        self.keys: list[np.ndarray] = []
        self.ends: np.ndarray | None = None
        self.memory = 0

    def add(self, data: np.ndarray, keys: np.ndarray, ends: np.ndarray | None = None) -> None:
        """Add records (with their ``ends``, when they are known already)."""
        self.data.append(data)
        self.keys.append(keys)
        self.ends = ends if len(self.data) == 1 else None
        self.memory += _work_memory(len(data), len(keys))
        if self.memory >= self.unit:
            self.flush()

    def flush(self) -> None:
        data, keys, ends = self.data, self.keys, self.ends
        self.data, self.keys, self.ends, self.memory = [], [], None, 0
        if len(data) == 1:
            self.runs.spill(data[0], keys[0], ends)
        elif data:
            joined = np.concatenate(data)
            del data[:]  # let go of the pieces before the run is grouped
            self.runs.spill(joined, np.concatenate(keys))


class _PipeSink(_Sink):
    """Pass 2 in a worker: ordered records go to the main process."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def write(self, data: np.ndarray, lengths: np.ndarray | None = None) -> None:
        self.conn.send(("chunk",))
        self.conn.send_bytes(data)

    def end_pile(self) -> None:
        self.conn.send(("pile",))


# --------------------------------------------------------------------------------------------
# worker processes


def _enlarge_pipe(conn: Connection) -> None:
    """Bigger pipe buffers mean fewer wake-ups per megabyte (Linux only; best effort)."""
    with contextlib.suppress(Exception):
        import fcntl

        fcntl.fcntl(conn.fileno(), 1031, 1 << 20)  # F_SETPIPE_SZ


def _worker(
    conn: Connection,
    name: str,
    directory: str,
    sep: bytes,
    bits: int,
    seed: int,
    unit: int,
    max_record: int,
) -> None:
    """A worker process: pass 1 spills the chunks it is sent; pass 2 orders the piles it is
    given and writes them into the output or sends them back in order."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides and cleans up
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    runs = _Runs(directory, sep, 0, bits, name)
    fds: dict[str, int] = {}
    unit_max_record = max_record
    try:
        spiller = _Spiller(runs, unit)
        while True:
            msg = conn.recv()
            kind = msg[0]
            if kind == "chunk":
                _, start, count, nbytes = msg
                data = np.empty(nbytes, dtype=np.uint8)
                if conn.recv_bytes_into(data) != nbytes:
                    raise KxError("internal error: a chunk arrived incomplete")
                spiller.add(data, record_keys(seed, start, count))
                del data
                conn.send(("ready",))
            elif kind == "range":
                _, index, path, offset, length, add_sep = msg
                data = _read_range(path, offset, length, add_sep, sep, fds)
                ends = record_ends(data, sep[0])
                conn.send(("count", index, len(ends)))
                reply = conn.recv()
                if reply[0] != "start":
                    return
                _, start, line_base = reply
                _check_record_lengths(ends, path, line_base, unit_max_record)
                spiller.add(data, record_keys(seed, start, len(ends)), ends)
                del data, ends
                conn.send(("ready", index))
            elif kind == "end":
                spiller.flush()
                runs.close()
                conn.send(("runs", runs))
            elif kind == "drain":
                _, merged, piles, budget = msg
                _drain(merged, budget, _PipeSink(conn), piles)
                merged.close()
                conn.send(("done",))
            elif kind == "drain_to":
                _, merged, piles, offsets, budget, path, out_name = msg
                _drain_to_file(merged, piles, offsets, budget, path, out_name, conn)
                merged.close()
                conn.send(("done",))
            else:
                return
    except KxError as e:
        with contextlib.suppress(Exception):
            conn.send(("error", e.message))
    except BaseException as e:  # noqa: BLE001 - reported to the main process
        with contextlib.suppress(Exception):
            conn.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        runs.close()
        for fd in fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)


def _read_range(
    path: str, offset: int, length: int, add_sep: bool, sep: bytes, fds: dict[str, int]
) -> np.ndarray:
    """The bytes of a :class:`_Range`, read into a new buffer."""
    data = np.empty(length + add_sep, dtype=np.uint8)
    try:
        fd = fds.get(path)
        if fd is None:
            # ranges come in input order: keep only the current input open (any number of
            # inputs works under a low open-file limit)
            for old in fds.values():
                with contextlib.suppress(OSError):
                    os.close(old)
            fds.clear()
            fd = fds[path] = os.open(path, os.O_RDONLY)
        got = _pread_into(fd, data[:length], offset)
    except OSError as e:
        raise os_error(e, path, "cannot read") from None
    if got != length:
        raise KxError(f"{display_name(path)!r} changed while it was being read")
    if add_sep:
        data[length] = sep[0]
    return data


def _check_record_lengths(ends: np.ndarray, path: str, line_base: int, max_record: int) -> None:
    """A record longer than ``max_record`` is an error naming its line."""
    if not len(ends):
        return
    lengths = np.diff(ends, prepend=0)
    worst = int(np.argmax(lengths))
    if int(lengths[worst]) - 1 > max_record:
        raise KxError(
            f"line {line_base + worst + 1} of {display_name(path)!r} is longer than a quarter"
            f" of the memory budget ({format_size(max_record)}); raise --memory"
        )


def _drain_to_file(
    runs: _Runs,
    piles: Sequence[int],
    offsets: Sequence[int],
    budget: int,
    path: str,
    name: str,
    conn: Connection,
) -> None:
    """Pass 2 in a worker, writing each pile straight into the output at its offset."""
    counts, sizes = runs.pile_totals()
    out = PositionalWriter(path, name, direct=int(sizes.sum()) >= DIRECT_MIN)
    try:
        for p, offset in zip(piles, offsets, strict=True):
            sink = _OffsetSink(out, offset)
            _drain_pile(runs, p, int(counts[p]), int(sizes[p]), budget, sink)
            if sink.offset != offset + int(sizes[p]):
                raise KxError(f"internal error: pile {p} wrote {sink.offset - offset} bytes")
            conn.send(("pile", int(sizes[p])))
    finally:
        out.close()


class _OffsetSink(_Sink):
    """Writes ordered records from a given offset of an output file on."""

    def __init__(
        self, out: PositionalWriter, offset: int, on_write: Callable[[int], None] | None = None
    ) -> None:
        self.out = out
        self.offset = offset
        self.on_write = on_write

    def phase(self) -> int | None:
        return self.out.phase(self.offset) if self.out.direct_fd is not None else None

    def write(self, data: np.ndarray, lengths: np.ndarray | None = None) -> None:
        self.out.pwrite(data, self.offset)
        self.offset += len(data)
        if self.on_write is not None:
            self.on_write(len(data))


def shuffle_lines(lines: Sequence[bytes], seed: int) -> list[bytes]:
    """The order :func:`shuffle_files` puts ``lines`` in for ``seed`` (for small in-memory use)."""
    perm = _order(record_keys(seed, 0, len(lines)), 0)
    return list(_gather_items(lines, perm))
