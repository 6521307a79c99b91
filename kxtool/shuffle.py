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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import BinaryIO

import numpy as np

from .errors import KxError
from .progress import Progress
from .textio import (
    STDIO,
    AtomicOutputs,
    check_readable,
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
#: Share of the budget the records may take when the whole input is ordered in memory.
IN_MEMORY_SHARE = 0.8
#: Piles when the input size is not known in advance (stdin, compressed inputs).
UNKNOWN_SIZE_PILE_BITS = 8
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
class _Batch:
    lines: list[bytes] = field(default_factory=list)
    nbytes: int = 0

    def memory(self) -> int:
        return self.nbytes + RECORD_OVERHEAD * len(self.lines)


class _Reader:
    """Reads every input once and hands out batches of whole records (terminators removed)."""

    def __init__(
        self,
        inputs: Sequence[str],
        sep: bytes,
        header: int,
        batch_memory: int,
        max_record: int,
        progress: Progress | None,
        total: int | None,
    ) -> None:
        self.inputs = inputs
        self.sep = sep
        self.header_wanted = header
        self.header: list[bytes] = []
        self.batch_memory = batch_memory
        self.block = max(256, min(MAX_BLOCK, batch_memory // 8))
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

    def _lines(self, path: str) -> Iterator[tuple[list[bytes], int]]:
        """Lists of whole records of ``path`` and their size with terminators."""
        sep = self.sep
        carry = b""
        seen = 0  # lines of this input so far
        for block in read_blocks(path, self.block):
            self.bytes_read += len(block)
            if self.progress is not None:
                self.progress("reading", self.bytes_read, self.total)
            parts = block.split(sep)
            old = len(carry)
            if old:
                parts[0] = carry + parts[0]
            carry = parts.pop()
            if len(carry) > self.max_record:
                raise self._too_big(path, seen + len(parts) + 1)
            if parts:
                seen += len(parts)
                yield parts, old + len(block) - len(carry)
        if carry:
            yield [carry], len(carry) + 1

    def batches(self) -> Iterator[_Batch]:
        batch = _Batch()
        for idx, path in enumerate(self.inputs):
            first_line = 1
            for parts, nbytes in self._lines(path):
                if idx == 0 and len(self.header) < self.header_wanted:
                    take = self.header_wanted - len(self.header)
                    head = parts[:take]
                    self.header.extend(head)
                    nbytes -= sum(map(len, head)) + len(head)
                    parts = parts[take:]
                    first_line += take
                if not parts:
                    continue
                biggest = max(map(len, parts)) if self.max_record < self.block else 0
                if biggest > self.max_record:
                    line = next(i for i, p in enumerate(parts) if len(p) > self.max_record)
                    raise self._too_big(path, first_line + line)
                first_line += len(parts)
                batch.lines.extend(parts)
                batch.nbytes += nbytes
                self.records += len(parts)
                if batch.memory() >= self.batch_memory:
                    yield batch
                    batch = _Batch()
        if batch.lines:
            yield batch


# --------------------------------------------------------------------------------------------
# runs and piles


class _Runs:
    """Run files that each hold one batch, grouped into ``2**bits`` piles by key bits.

    Pile ``p`` of a run holds the records whose key bits ``[shift, shift+bits)`` (counting from
    the top) equal ``p``, in input order: first their keys (uint64, little-endian), then their
    bytes, each record followed by the separator.
    """

    def __init__(self, directory: str, sep: bytes, shift: int, bits: int, name: str) -> None:
        self.directory = directory
        self.sep = sep
        self.shift = shift
        self.bits = bits
        self.piles = 1 << bits
        self.name = name
        self.paths: list[str] = []
        self.offsets: list[np.ndarray] = []  # per run: byte offset of each pile
        self.counts: list[np.ndarray] = []  # per run: records in each pile
        self.sizes: list[np.ndarray] = []  # per run: data bytes of each pile

    def pile_of(self, keys: np.ndarray) -> np.ndarray:
        x = keys << np.uint64(self.shift) if self.shift else keys
        return (x >> np.uint64(64 - self.bits)).astype(np.uint32 if self.bits > 16 else np.uint16)

    def spill(self, lines: Sequence[bytes], keys: np.ndarray, nbytes: int) -> None:
        """Write one run: ``lines`` (``nbytes`` with terminators) with their ``keys``, grouped
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
        path = os.path.join(self.directory, f"{self.name}-{len(self.paths):06d}.run")
        sep = self.sep
        pos = 0
        try:
            with open(path, "wb", buffering=1 << 20) as f:
                preallocate(f.fileno(), 8 * n + nbytes, path)
                for p in np.flatnonzero(counts).tolist():
                    a, b = int(bounds[p]), int(bounds[p + 1])
                    offsets[p] = pos
                    kb = gkeys[a:b].tobytes()
                    f.write(kb)
                    size = _write_records(f, grouped, sep, a, b)
                    sizes[p] = size
                    pos += len(kb) + size
        except OSError as e:
            raise os_error(e, path, "cannot write temporary file") from None
        assert int(bounds[-1]) == n
        self.paths.append(path)
        self.offsets.append(offsets)
        self.counts.append(counts)
        self.sizes.append(sizes)

    def index_bytes(self) -> int:
        """Memory taken by the pile index."""
        return _INDEX_ENTRY * self.piles * len(self.paths)

    def pile_totals(self) -> tuple[np.ndarray, np.ndarray]:
        """Records and data bytes of every pile, over all runs."""
        if not self.paths:
            z = np.zeros(self.piles, dtype=np.int64)
            return z, z
        return np.sum(self.counts, axis=0), np.sum(self.sizes, axis=0)

    def segments(self, p: int) -> Iterator[tuple[list[bytes], np.ndarray]]:
        """The records and keys of pile ``p``, one run at a time, in input order."""
        sep = self.sep
        for r, path in enumerate(self.paths):
            n = int(self.counts[r][p])
            if n == 0:
                continue
            size = int(self.sizes[r][p])
            lines: list[bytes] = []
            try:
                with open(path, "rb") as f:
                    f.seek(int(self.offsets[r][p]))
                    kb = f.read(8 * n)
                    carry = b""
                    left = size
                    while left > 0:  # in blocks, so that no second copy of a segment is held
                        block = f.read(min(left, MAX_BLOCK))
                        if not block:
                            break
                        left -= len(block)
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

    def remove(self) -> None:
        for path in self.paths:
            with contextlib.suppress(OSError):
                os.unlink(path)
        self.paths.clear()


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

    def finish(self) -> list[str]:
        """Open any output not yet opened (empty shards, empty input) and return all paths."""
        target = len(self.bounds) - 1
        while self.shard + 1 < target:
            self._open_next()
        return self.paths


def _emit_ordered(
    lines: Sequence[bytes], keys: np.ndarray, nbytes: int, shift: int, writer: _Writer
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
    ``zero_terminated``; a missing final terminator is added. Raises :class:`KxError`.
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
    unit = _work_unit(budget, known_total)
    reader = _Reader(paths, sep, header, unit, budget // 4, progress, known_total)
    in_memory_limit = int(IN_MEMORY_SHARE * budget)

    tmp_base = os.fspath(tmp_dir) if tmp_dir is not None else None
    tmp_ctx = contextlib.ExitStack()
    with tmp_ctx, AtomicOutputs() as outs:
        # read until the input ends or no longer fits in memory
        batches = reader.batches()
        held: list[_Batch] = []
        held_memory = 0
        fits = True
        for batch in batches:
            held.append(batch)
            held_memory += batch.memory()
            if held_memory > in_memory_limit:
                fits = False
                break

        if fits:
            lines: list[bytes] = []
            for batch in held:
                lines.extend(batch.lines)
                batch.lines = []
            total_bytes = sum(b.nbytes for b in held)
            del held
            writer = _Writer(
                outs, output, shards, len(lines), reader.header, sep, progress, total_bytes
            )
            keys = record_keys(seed, 0, len(lines))
            _emit_ordered(lines, keys, total_bytes, 0, writer)
            del lines, keys
            return ShuffleResult(
                seed,
                reader.records,
                total_bytes,
                len(reader.header),
                True,
                0,
                0,
                writer.finish(),
            )

        # too big: spill every batch to a run file, grouped into piles, then write pile by pile
        directory = tmp_ctx.enter_context(temp_dir(tmp_base))
        per_byte = held_memory / max(1, sum(b.nbytes for b in held))
        if known_total is not None:
            records_est = int(
                known_total * sum(len(b.lines) for b in held) / held_memory * per_byte
            )
            _check_space(directory, known_total + 8 * records_est, "the temporary files")
        bits = _pile_bits if _pile_bits is not None else _pile_bits_for(known_total, per_byte, unit)
        runs = _Runs(directory, sep, 0, bits, "run")
        tmp_ctx.callback(runs.remove)
        start = 0
        for batch in _chain(held, batches):
            n = len(batch.lines)
            if known_total is None:
                _check_space(directory, batch.nbytes + 8 * n, "the temporary files")
            keys = record_keys(seed, start, n)
            runs.spill(batch.lines, keys, batch.nbytes)
            start += n
            del keys
            batch.lines = []
            if runs.index_bytes() > budget // 16:
                # keep the pile index small on unexpectedly large inputs: bigger runs
                reader.batch_memory = min(max(unit, budget // 2), reader.batch_memory * 2)
        del held
        counts, data_sizes = runs.pile_totals()
        total = int(counts.sum())
        total_bytes = int(data_sizes.sum())
        writer = _Writer(outs, output, shards, total, reader.header, sep, progress, total_bytes)
        _drain(runs, max(budget // 4, budget - runs.index_bytes()), writer)
        runs.remove()
        return ShuffleResult(
            seed,
            total,
            total_bytes,
            len(reader.header),
            False,
            len(runs.offsets),
            runs.piles,
            writer.finish(),
        )


def _chain(held: list[_Batch], rest: Iterator[_Batch]) -> Iterator[_Batch]:
    """The batches already read, then the rest, letting go of each held one once handed out."""
    while held:
        yield held.pop(0)
    yield from rest


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
    """Enough piles that each one is about a work unit (each must fit in memory in pass 2)."""
    if known_total is None:
        # unknown size (stdin, compressed): plan for a large input; piles that still turn out
        # too big are split again in pass 2, which changes nothing in the output
        return UNKNOWN_SIZE_PILE_BITS
    piles = max(2, math.ceil(known_total * per_byte / unit))
    return min(16, max(1, math.ceil(math.log2(piles))))


def _drain(runs: _Runs, budget: int, writer: _Writer) -> None:
    """Pass 2: write every pile of ``runs`` in key order."""
    counts, sizes = runs.pile_totals()
    limit = 0.6 * budget
    shift = runs.shift + runs.bits
    for p in range(runs.piles):
        n = int(counts[p])
        if n == 0:
            continue
        need = int(sizes[p]) + RECORD_OVERHEAD * n
        if need <= limit or shift >= 56:
            lines: list[bytes] = []
            keys: list[np.ndarray] = []
            for seg_lines, seg_keys in runs.segments(p):
                lines.extend(seg_lines)
                keys.append(seg_keys)
            _emit_ordered(lines, np.concatenate(keys), int(sizes[p]), shift, writer)
            del lines, keys
            continue
        # too big for memory: scatter this pile again by the next key bits
        bits = min(16, max(1, math.ceil(math.log2(need / (0.5 * budget)))))
        sub = _Runs(runs.directory, runs.sep, shift, bits, f"{runs.name}-{p}")
        try:
            pending: list[bytes] = []
            pending_keys: list[np.ndarray] = []
            pending_bytes = 0
            for seg_lines, seg_keys in runs.segments(p):
                pending.extend(seg_lines)
                pending_keys.append(seg_keys)
                pending_bytes += sum(map(len, seg_lines)) + len(seg_lines)
                if pending_bytes + RECORD_OVERHEAD * len(pending) >= budget // 2:
                    sub.spill(pending, np.concatenate(pending_keys), pending_bytes)
                    pending, pending_keys, pending_bytes = [], [], 0
            if pending:
                sub.spill(pending, np.concatenate(pending_keys), pending_bytes)
            del pending, pending_keys
            _drain(sub, budget, writer)
        finally:
            sub.remove()


def shuffle_lines(lines: Sequence[bytes], seed: int) -> list[bytes]:
    """The order :func:`shuffle_files` puts ``lines`` in for ``seed`` (for small in-memory use)."""
    perm = _order(record_keys(seed, 0, len(lines)), 0)
    return list(_gather(lines, perm))
