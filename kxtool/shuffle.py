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
    Records are read once, in batches that fit the memory budget. If the whole input fits, it is
    ordered in memory and written. Otherwise each batch is *spilled* to a run file in the
    temporary directory, grouped into piles by the top bits of its keys (a counting sort), with
    each pile's keys beside its bytes. Pass 2 loads one pile at a time (its segments from every
    run), orders it by key and writes it; since piles partition the key space in order, the
    concatenation is the fully ordered output. A pile too big for memory is scattered again by
    the next key bits, which changes nothing in the output.

Memory
    Every per-record structure is counted against the budget: the bytes themselves, the Python
    object that holds them and its list slot, the key and the sort arrays
    (:data:`RECORD_OVERHEAD` bytes a record in all). Only a few files are open at any time, so
    the number of piles and runs is not limited by the open-file limit.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from operator import itemgetter
from typing import Any, BinaryIO

import numpy as np

from .errors import KxError
from .progress import Progress
from .textio import (
    STDIO,
    AtomicOutputs,
    check_readable,
    compression_for_name,
    display_name,
    format_size,
    free_space,
    input_size,
    os_error,
    parse_size,
    preallocate,
    read_blocks,
    temp_dir,
)

#: Bytes of memory a record costs beyond its own bytes: the bytes object header (33) rounded up
#: by the allocator, its list slot (8), its key (8) and the sort arrays (8 + 8 + 8).
RECORD_OVERHEAD = 96
#: Largest block read from an input at once.
MAX_BLOCK = 16 << 20
#: Lines joined and written at once.
WRITE_BATCH = 32768
#: Size of the in-memory sub-buckets that keep the final gather cache-friendly.
CACHE_BUCKET = 64 << 20
#: Memory a pass-1 batch and a pass-2 pile aim at (see :func:`_work_unit`).
WORK_UNIT = 16 << 20
#: Size of a pile relative to a pass-1 batch: smaller piles keep the pass-2 gather in cache.
PILE_SHARE = 0.5
#: Share of the budget the records may take when the whole input is ordered in memory.
IN_MEMORY_SHARE = 0.8
#: Piles when the input size is not known in advance (stdin, compressed inputs).
UNKNOWN_SIZE_PILE_BITS = 8
#: Expansion assumed for compressed inputs when planning piles.
COMPRESSION_GUESS = 5
#: Bytes of memory one (run, pile) entry of the pile index takes.
_INDEX_ENTRY = 24
#: Smallest budget accepted.
MIN_MEMORY = 4 << 10
#: Disk-space head-room asked for beyond the estimate.
DISK_SLACK = 16 << 20

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


def _gather(items: Sequence[bytes], positions: np.ndarray) -> Sequence[bytes]:
    """``[items[p] for p in positions]`` at C speed."""
    if len(positions) == 0:
        return ()
    if len(positions) == 1:
        return (items[int(positions[0])],)
    return itemgetter(*positions.tolist())(items)


# --------------------------------------------------------------------------------------------
# reading


@dataclass
class _Chunk:
    """Whole records read from an input: ``head + block[:cut]``, each ending with the separator.

    ``head`` is the start of a record begun in the previous block; ``block[cut:]`` is the start
    of the next one (kept by the reader). Keeping the block whole avoids copying it.
    """

    head: bytes
    block: bytes
    cut: int
    count: int  # records
    nbytes: int  # bytes, separators included

    def memory(self) -> int:
        """Memory the records take once split (see :data:`RECORD_OVERHEAD`)."""
        return self.nbytes + RECORD_OVERHEAD * self.count

    def records(self, sep: bytes) -> list[bytes]:
        """The records, separators removed."""
        parts = self.block.split(sep)
        parts.pop()  # what follows the last separator belongs to the next chunk
        if self.head:
            parts[0] = self.head + parts[0]
        return parts


class _Reader:
    """Reads every input once and hands out chunks of whole records."""

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
        sep = self.sep
        carry: list[bytes] = []  # pieces of a record that spans blocks
        carry_len = 0
        seen = 0  # records of this input so far
        for block in read_blocks(path, self.block):
            self.bytes_read += len(block)
            if self.progress is not None:
                self.progress("reading", self.bytes_read, self.total)
            cut = block.rfind(sep) + 1
            if cut == 0:
                carry.append(block)
                carry_len += len(block)
                if carry_len > self.max_record:
                    raise self._too_big(path, seen + 1)
                continue
            count = block.count(sep, 0, cut)
            # blocks are no longer than max_record, so only a record begun in an earlier block
            # can be too long
            if carry_len and carry_len + block.index(sep) > self.max_record:
                raise self._too_big(path, seen + 1)
            head = b"".join(carry) if carry else b""
            yield _Chunk(head, block, cut, count, len(head) + cut)
            seen += count
            tail = len(block) - cut
            carry = [block[cut:]] if tail else []
            carry_len = tail
            if carry_len > self.max_record:
                raise self._too_big(path, seen + 1)
        if carry_len:
            last = b"".join(carry) + sep
            yield _Chunk(b"", last, len(last), 1, len(last))

    def _take_header(self, chunk: _Chunk) -> _Chunk | None:
        """Move header records from the start of ``chunk`` to :attr:`header`."""
        sep = self.sep
        data = chunk.head + chunk.block[: chunk.cut]
        start = 0
        while len(self.header) < self.header_wanted and start < len(data):
            end = data.index(sep, start)
            self.header.append(data[start:end])
            start = end + 1
        rest = data[start:]
        if not rest:
            return None
        return _Chunk(b"", rest, len(rest), rest.count(sep), len(rest))

    def chunks(self) -> Iterator[_Chunk]:
        """Chunks of whole records over all inputs, the header records taken out."""
        for idx, path in enumerate(self.inputs):
            for chunk in self._raw_chunks(path):
                if idx == 0 and len(self.header) < self.header_wanted:
                    chunk = self._take_header(chunk)
                    if chunk is None:
                        continue
                self.records += chunk.count
                yield chunk


# --------------------------------------------------------------------------------------------
# runs and piles


class _Runs:
    """Runs, each holding one batch grouped into ``2**bits`` piles by key bits.

    A process appends its runs one after the other to a single temporary file (so one file is
    open however many runs and piles there are); :meth:`adopt` adds the runs other processes
    wrote, so that pass 2 can read every pile from all of them.

    Pile ``p`` of a run holds the records whose key bits ``[shift, shift+bits)`` (counting from
    the top) equal ``p``: first their keys (uint64, native order), then their bytes, each record
    followed by the separator.
    """

    def __init__(self, directory: str, sep: bytes, shift: int, bits: int, name: str) -> None:
        self.path = os.path.join(directory, f"{name}.runs")
        self.sep = sep
        self.shift = shift
        self.bits = bits
        self.piles = 1 << bits
        self.name = name
        self.directory = directory
        self.file: BinaryIO | None = None
        self.end = 0
        self.files: list[str] = [self.path]
        self.run_file: list[int] = []  # per run: its file, an index into files
        self.offsets: list[np.ndarray] = []  # per run: byte offset of each pile
        self.counts: list[np.ndarray] = []  # per run: records in each pile
        self.sizes: list[np.ndarray] = []  # per run: data bytes of each pile
        self._fds: dict[int, int] = {}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["file"] = None
        state["_fds"] = {}
        return state

    @property
    def runs(self) -> int:
        return len(self.counts)

    def pile_of(self, keys: np.ndarray) -> np.ndarray:
        x = keys << np.uint64(self.shift) if self.shift else keys
        return (x >> np.uint64(64 - self.bits)).astype(np.uint32 if self.bits > 16 else np.uint16)

    def spill(self, lines: Sequence[bytes], keys: np.ndarray, nbytes: int) -> None:
        """Append one run: ``lines`` (``nbytes`` with terminators) with their ``keys``, grouped
        by pile."""
        n = len(lines)
        piles = self.pile_of(keys)
        order = np.argsort(piles, kind="stable")
        counts = np.bincount(piles, minlength=self.piles).astype(np.int64)
        del piles
        grouped = _gather(lines, order)
        gkeys = keys[order]
        del order
        bounds = np.zeros(self.piles + 1, dtype=np.int64)
        np.cumsum(counts, out=bounds[1:])
        offsets = np.zeros(self.piles, dtype=np.int64)
        sizes = np.zeros(self.piles, dtype=np.int64)
        sep = self.sep
        try:
            if self.file is None:
                self.file = open(self.path, "w+b", buffering=1 << 20)  # noqa: SIM115
            f = self.file
            f.seek(self.end)
            preallocate(f.fileno(), 8 * n + nbytes, self.path, self.end)
            pos = self.end
            for p in np.flatnonzero(counts).tolist():
                a, b = int(bounds[p]), int(bounds[p + 1])
                offsets[p] = pos
                kb = gkeys[a:b].tobytes()
                f.write(kb)
                size = _write_records(f, grouped, sep, a, b)
                sizes[p] = size
                pos += len(kb) + size
            f.flush()
        except OSError as e:
            raise os_error(e, self.path, "cannot write temporary file") from None
        assert int(bounds[-1]) == n
        self.end = pos
        self.run_file.append(0)
        self.offsets.append(offsets)
        self.counts.append(counts)
        self.sizes.append(sizes)

    def adopt(self, other: _Runs) -> None:
        """Add the runs of ``other`` (same piles), written by another process."""
        assert other.piles == self.piles and other.shift == self.shift
        base = len(self.files)
        self.files.extend(other.files)
        self.run_file.extend(base + i for i in other.run_file)
        self.offsets.extend(other.offsets)
        self.counts.extend(other.counts)
        self.sizes.extend(other.sizes)

    def index_bytes(self) -> int:
        """Memory taken by the pile index."""
        return _INDEX_ENTRY * self.piles * self.runs

    def pile_totals(self) -> tuple[np.ndarray, np.ndarray]:
        """Records and data bytes of every pile, over all runs."""
        if not self.runs:
            z = np.zeros(self.piles, dtype=np.int64)
            return z, z
        return np.sum(self.counts, axis=0), np.sum(self.sizes, axis=0)

    def _fd(self, i: int) -> int:
        if i == 0 and self.file is not None:
            return self.file.fileno()
        fd = self._fds.get(i)
        if fd is None:
            try:
                fd = os.open(self.files[i], os.O_RDONLY)
            except OSError as e:
                raise os_error(e, self.files[i], "cannot read temporary file") from None
            self._fds[i] = fd
        return fd

    def segments(self, p: int) -> Iterator[tuple[list[bytes], np.ndarray]]:
        """The records and keys of pile ``p``, one run at a time."""
        sep = self.sep
        for r in range(self.runs):
            n = int(self.counts[r][p])
            if n == 0:
                continue
            size = int(self.sizes[r][p])
            pos = int(self.offsets[r][p])
            path = self.files[self.run_file[r]]
            lines: list[bytes] = []
            try:
                fd = self._fd(self.run_file[r])
                kb = os.pread(fd, 8 * n, pos)
                pos += len(kb)
                carry = b""
                left = size
                while left > 0:  # in blocks, so that no second copy of a segment is held
                    block = os.pread(fd, min(left, MAX_BLOCK), pos)
                    if not block:
                        break
                    left -= len(block)
                    pos += len(block)
                    parts = block.split(sep)
                    if carry:
                        parts[0] = carry + parts[0]
                    carry = parts.pop()
                    lines.extend(parts)
                    del parts, block
            except OSError as e:
                raise os_error(e, path, "cannot read temporary file") from None
            if len(kb) != 8 * n or left != 0 or carry or len(lines) != n:
                raise KxError(f"temporary file {path!r} was truncated or changed during the run")
            yield lines, np.frombuffer(kb, dtype=np.uint64)

    def close(self) -> None:
        """Close every file (the runs stay on disk)."""
        if self.file is not None:
            with contextlib.suppress(OSError):
                self.file.close()
            self.file = None
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()

    def remove(self) -> None:
        """Close and delete every file."""
        self.close()
        for path in self.files:
            with contextlib.suppress(OSError):
                os.unlink(path)


# --------------------------------------------------------------------------------------------
# writing


def _write_records(
    f: BinaryIO, records: Sequence[bytes], sep: bytes, start: int = 0, stop: int | None = None
) -> int:
    """Write ``records[start:stop]``, each followed by ``sep``, in bounded chunks; return the
    bytes written."""
    stop = len(records) if stop is None else stop
    written = 0
    for s in range(start, stop, WRITE_BATCH):
        data = sep.join(records[s : min(stop, s + WRITE_BATCH)])
        f.write(data)
        f.write(sep)
        written += len(data) + 1
    return written


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

    def write(self, records: Sequence[bytes]) -> None:
        sep = self.sep
        i = 0
        n = len(records)
        while i < n:
            while self.file is None or self.done >= self.bounds[self.shard + 1]:
                self._open_next()
            room = self.bounds[self.shard + 1] - self.done
            stop = min(n, i + room)
            self.written_bytes += _write_records(self.file, records, sep, i, stop)
            self.done += stop - i
            i = stop
            if self.progress is not None:
                self.progress("writing", self.written_bytes, self.total_bytes)

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

    def write_joined(self, data: bytes, count: int) -> None:
        """Write ``count`` records joined by the separator (without the final one)."""
        sep = self.sep
        while count:
            while self.file is None or self.done >= self.bounds[self.shard + 1]:
                self._open_next()
            room = self.bounds[self.shard + 1] - self.done
            if count <= room:
                self.file.write(data)
                self.file.write(sep)
                self.written_bytes += len(data) + 1
                self.done += count
                count = 0
            else:  # a shard ends inside this chunk (rare): cut after `room` records
                cut = -1
                for _ in range(room):
                    cut = data.index(sep, cut + 1)
                self.file.write(data[: cut + 1])
                self.written_bytes += cut + 1
                self.done += room
                data = data[cut + 1 :]
                count -= room
        if self.progress is not None:
            self.progress("writing", self.written_bytes, self.total_bytes)

    def finish(self) -> list[str]:
        """Open any output not yet opened (empty shards, empty input) and return all paths."""
        target = len(self.bounds) - 1
        while self.shard + 1 < target:
            self._open_next()
        return self.paths


def _emit_ordered(
    lines: Sequence[bytes], keys: np.ndarray, nbytes: int, shift: int, writer: _Writer | _PipeSink
) -> None:
    """Write ``lines`` in increasing key order, where every key shares its top ``shift`` bits.

    A large set is first split into cache-sized buckets by the next key bits (a counting sort,
    which keeps memory access sequential); each bucket is then ordered and written.
    """
    n = len(lines)
    if n == 0:
        return
    bits = 0
    if nbytes > CACHE_BUCKET and shift < 48:
        bits = min(12, max(1, math.ceil(math.log2(nbytes / CACHE_BUCKET))))
    if bits == 0:
        writer.write(_gather(lines, _order(keys, shift)))
        return
    x = keys << np.uint64(shift) if shift else keys
    bucket = (x >> np.uint64(64 - bits)).astype(np.uint16)
    del x
    order = np.argsort(bucket, kind="stable")
    counts = np.bincount(bucket, minlength=1 << bits)
    del bucket
    grouped = _gather(lines, order)
    gkeys = keys[order]
    del order
    a = 0
    for c in counts.tolist():
        if c:
            b = a + c
            part = gkeys[a:b]
            writer.write(_gather(grouped[a:b], _order(part, shift + bits)))
            a = b


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
    jobs: int
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
    unit = _work_unit(budget, planning_total)
    reader = _Reader(paths, sep, header, unit // 2, budget // 4, progress, known_total)
    in_memory_limit = int(IN_MEMORY_SHARE * budget)
    if jobs > 1:  # room for the workers' batches while the main process still holds chunks
        in_memory_limit = max(in_memory_limit // 2, in_memory_limit - 3 * jobs * unit)

    tmp_base = os.fspath(tmp_dir) if tmp_dir is not None else None
    tmp_ctx = contextlib.ExitStack()
    with tmp_ctx, AtomicOutputs() as outs:
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
            lines: list[bytes] = []
            for chunk in held:
                lines.extend(chunk.records(sep))
                chunk.block = chunk.head = b""
            del held
            writer = _Writer(
                outs, output, shards, len(lines), reader.header, sep, progress, held_bytes
            )
            keys = record_keys(seed, 0, len(lines))
            _emit_ordered(lines, keys, held_bytes, 0, writer)
            del lines, keys
            return ShuffleResult(
                seed,
                reader.records,
                held_bytes,
                len(reader.header),
                True,
                0,
                0,
                1,
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
            bits = _pile_bits_for(planning_total, per_byte, unit)
        space = None if known_total is not None else directory
        stream = _chain(held, chunks)
        if jobs > 1:
            pool = _Pool(jobs, directory, sep, bits, seed, unit)
            tmp_ctx.callback(pool.stop)
            runs = pool.pass1(stream, space)
        else:
            runs = _Runs(directory, sep, 0, bits, "run")
            tmp_ctx.callback(runs.remove)
            _pass1(runs, stream, seed, unit, sep, space)
        del held, stream
        counts, data_sizes = runs.pile_totals()
        total = int(counts.sum())
        total_bytes = int(data_sizes.sum())
        writer = _Writer(outs, output, shards, total, reader.header, sep, progress, total_bytes)
        pile_budget = max(budget // 4, budget - runs.index_bytes())
        if jobs > 1:
            pool.pass2(runs, pile_budget // jobs, writer)
            pool.stop()
        else:
            _drain(runs, pile_budget, writer)
        runs.remove()
        return ShuffleResult(
            seed,
            total,
            total_bytes,
            len(reader.header),
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


def _pass1(
    runs: _Runs, chunks: Iterator[_Chunk], seed: int, unit: int, sep: bytes, space: str | None
) -> None:
    """Pass 1 in this process: split the chunks into records, key them and spill them."""
    spiller = _Spiller(runs, unit)
    start = 0
    for chunk in chunks:
        if space is not None:
            _check_space(space, chunk.nbytes + 8 * chunk.count, "the temporary files")
        spiller.add(chunk.records(sep), record_keys(seed, start, chunk.count), chunk.nbytes)
        start += chunk.count
    spiller.flush()


class _Pool:
    """Worker processes that share both passes: the main process reads and writes, workers
    split, key, spill, order and join. The output is the same as with one process."""

    def __init__(
        self, jobs: int, directory: str, sep: bytes, bits: int, seed: int, unit: int
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
                    args=(child, f"worker{w}", directory, sep, bits, seed, unit),
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
                conn.send_bytes(chunk.head)
                conn.send_bytes(chunk.block, 0, chunk.cut)
            except OSError:
                raise self._failed(w) from None
            start += chunk.count
        merged = _Runs(self.directory, self.sep, 0, self.bits, "merged")
        for w in range(jobs):
            try:
                self.workers[w][1].send(("end",))
            except OSError:
                raise self._failed(w) from None
        for w in range(jobs):
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
            offsets = (base + np.concatenate(([0], np.cumsum(sizes)[:-1]))).tolist()
            for w in range(jobs):
                mine = piles[w::jobs]
                msg = ("drain_to", runs, mine, [offsets[p] for p in mine], budget, path)
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
                data = conn.recv_bytes()
                writer.write_joined(data, msg[1])
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


def _work_unit(budget: int, known_total: int | None) -> int:
    """The memory a batch (pass 1) and a pile (pass 2) aim at.

    Small units keep the working set in cache and are markedly faster than budget-sized ones;
    they are made bigger only where the pile index (runs x piles) would otherwise grow too
    large, on very large inputs.
    """
    unit = WORK_UNIT
    if known_total is not None:
        est = 2.0 * known_total  # memory of the records, roughly (refined after one batch)
        unit = max(unit, int(est * math.sqrt(16 * _INDEX_ENTRY / budget)))
    return max(MIN_MEMORY // 4, min(unit, budget // 2))


def _pile_bits_for(known_total: int | None, per_byte: float, unit: int) -> int:
    """Enough piles that each one is about half a work unit (it must fit in memory in pass 2;
    smaller piles measured faster here)."""
    if known_total is None:
        # unknown size (stdin, compressed): plan for a large input; piles that still turn out
        # too big are split again in pass 2, which changes nothing in the output
        return UNKNOWN_SIZE_PILE_BITS
    piles = max(2, math.ceil(known_total * per_byte / (unit * PILE_SHARE)))
    return min(16, max(1, math.ceil(math.log2(piles))))


def _drain(
    runs: _Runs, budget: int, sink: _Writer | _PipeSink, piles: Iterable[int] | None = None
) -> None:
    """Pass 2: write the piles of ``runs`` (all, or ``piles``, in that order) in key order."""
    counts, sizes = runs.pile_totals()
    for p in range(runs.piles) if piles is None else piles:
        if counts[p]:
            _drain_pile(runs, p, int(counts[p]), int(sizes[p]), budget, sink)
        if isinstance(sink, _PipeSink) and piles is not None:
            sink.end_pile()


def _drain_pile(
    runs: _Runs, p: int, n: int, nbytes: int, budget: int, sink: _Writer | _PipeSink
) -> None:
    shift = runs.shift + runs.bits
    need = nbytes + RECORD_OVERHEAD * n
    if need <= 0.6 * budget or shift >= 56:
        lines: list[bytes] = []
        keys: list[np.ndarray] = []
        for seg_lines, seg_keys in runs.segments(p):
            lines.extend(seg_lines)
            keys.append(seg_keys)
        _emit_ordered(lines, np.concatenate(keys), nbytes, shift, sink)
        return
    # too big for memory: scatter this pile again by the next key bits
    bits = min(16, max(1, math.ceil(math.log2(need / (0.5 * budget)))))
    sub = _Runs(runs.directory, runs.sep, shift, bits, f"{runs.name}-{p}")
    try:
        spiller = _Spiller(sub, budget // 2)
        for seg_lines, seg_keys in runs.segments(p):
            spiller.add(seg_lines, seg_keys, sum(map(len, seg_lines)) + len(seg_lines))
        spiller.flush()
        _drain(sub, budget, sink)
    finally:
        sub.remove()


class _Spiller:
    """Collects records and their keys into runs of about ``unit`` bytes of memory."""

    def __init__(self, runs: _Runs, unit: int) -> None:
        self.runs = runs
        self.unit = unit
        self.lines: list[bytes] = []
        self.keys: list[np.ndarray] = []
        self.nbytes = 0

    def add(self, lines: list[bytes], keys: np.ndarray, nbytes: int) -> None:
        self.lines.extend(lines)
        self.keys.append(keys)
        self.nbytes += nbytes
        if self.nbytes + RECORD_OVERHEAD * len(self.lines) >= self.unit:
            self.flush()

    def flush(self) -> None:
        if self.lines:
            keys = self.keys[0] if len(self.keys) == 1 else np.concatenate(self.keys)
            self.runs.spill(self.lines, keys, self.nbytes)
        self.lines, self.keys, self.nbytes = [], [], 0


class _PipeSink:
    """Pass 2 in a worker: ordered records go to the main process in joined chunks."""

    def __init__(self, conn: Connection, sep: bytes) -> None:
        self.conn = conn
        self.sep = sep

    def write(self, records: Sequence[bytes]) -> None:
        for s in range(0, len(records), WRITE_BATCH):
            part = records[s : s + WRITE_BATCH]
            self.conn.send(("chunk", len(part)))
            self.conn.send_bytes(self.sep.join(part))

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
    conn: Connection, name: str, directory: str, sep: bytes, bits: int, seed: int, unit: int
) -> None:
    """A worker process: pass 1 spills the chunks it is sent; pass 2 orders the piles it is
    given and sends them back in order."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides and cleans up
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    runs = _Runs(directory, sep, 0, bits, name)
    try:
        spiller = _Spiller(runs, unit)
        while True:
            msg = conn.recv()
            kind = msg[0]
            if kind == "chunk":
                _, start, count, nbytes = msg
                head = conn.recv_bytes()
                body = conn.recv_bytes()
                lines = body.split(sep)
                del body
                lines.pop()
                if head:
                    lines[0] = head + lines[0]
                spiller.add(lines, record_keys(seed, start, count), nbytes)
                del lines, head
                conn.send(("ready",))
            elif kind == "end":
                spiller.flush()
                runs.close()
                conn.send(("runs", runs))
            elif kind == "drain":
                _, merged, piles, budget = msg
                _drain(merged, budget, _PipeSink(conn, sep), piles)
                merged.close()
                conn.send(("done",))
            elif kind == "drain_to":
                _, merged, piles, offsets, budget, path = msg
                _drain_to_file(merged, piles, offsets, budget, path, sep, conn)
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


def _drain_to_file(
    runs: _Runs,
    piles: Sequence[int],
    offsets: Sequence[int],
    budget: int,
    path: str,
    sep: bytes,
    conn: Connection,
) -> None:
    """Pass 2 in a worker, writing each pile straight into the output at its offset."""
    counts, sizes = runs.pile_totals()
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError as e:
        raise os_error(e, path, "cannot write") from None
    try:
        for p, offset in zip(piles, offsets, strict=True):
            sink = _OffsetSink(fd, offset, sep, path)
            _drain_pile(runs, p, int(counts[p]), int(sizes[p]), budget, sink)
            if sink.offset != offset + int(sizes[p]):
                raise KxError(f"internal error: pile {p} wrote {sink.offset - offset} bytes")
            conn.send(("pile", int(sizes[p])))
    finally:
        os.close(fd)


class _OffsetSink:
    """Writes ordered records at a given offset of an output file (``pwrite``)."""

    def __init__(self, fd: int, offset: int, sep: bytes, name: str) -> None:
        self.fd = fd
        self.offset = offset
        self.sep = sep
        self.name = name

    def write(self, records: Sequence[bytes]) -> None:
        for s in range(0, len(records), WRITE_BATCH):
            data = self.sep.join(records[s : s + WRITE_BATCH])
            want = len(data) + 1
            try:
                done = os.pwritev(self.fd, [data, self.sep], self.offset)
                if done != want:  # a short write: finish it plainly
                    rest = (data + self.sep)[done:]
                    while rest:
                        n = os.pwrite(self.fd, rest, self.offset + want - len(rest))
                        rest = rest[n:]
            except OSError as e:
                raise os_error(e, self.name, "cannot write") from None
            self.offset += want


def shuffle_lines(lines: Sequence[bytes], seed: int) -> list[bytes]:
    """The order :func:`shuffle_files` puts ``lines`` in for ``seed`` (for small in-memory use)."""
    perm = _order(record_keys(seed, 0, len(lines)), 0)
    return list(_gather(lines, perm))
