"""Pass 2: ordering piles and writing them to the outputs (one file, shards, stdout,
compressed), in this process or with threads."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

from ..errors import KxError
from ..progress import Progress
from ..records import count_separators, gather, gather_where, record_ends, starts_of
from ..textio import (
    STDIO,
    AtomicOutputs,
    PositionalWriter,
    compression_for_name,
)
from . import plan
from .keys import _order
from .plan import CACHE_BUCKET, _pile_groups, _resplit_bits, _work_memory
from .runs import _Runs, _Spiller


class _Writer:
    """Writes ordered records to one output or to shards of near-equal line counts."""

    def __init__(
        self,
        outputs: AtomicOutputs,
        output: str,
        shards: int | Any | None,  # a count of shards, or named parts (split.Parts)
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
        if hasattr(shards, "bounds"):  # named parts (--split, :class:`.split.Parts`)
            self.bounds = shards.bounds(total)
        elif shards:
            self.bounds = [total * j // shards for j in range(shards + 1)]
        else:
            self.bounds = [0, total]
        self.shard = -1
        self.file: BinaryIO | None = None
        self.done = 0  # records written
        self.paths: list[str] = []

    def _open_next(self) -> None:
        self.shard += 1
        if hasattr(self.shards, "name"):
            path = self.shards.name(self.shard)
        else:
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
        count = len(lengths) if lengths is not None else count_separators(data, self.sep[0])
        i = pos = 0
        while i < count:
            if self.done >= self.bounds[-1]:  # past the last named part: left out (--split)
                break
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
        path = self.outputs.temp_path(self.output)
        if path is None:  # a device or FIFO: written through, in order
            return None
        self.file.flush()
        return path, len(self.header)

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
    data: np.ndarray,
    keys: np.ndarray,
    shift: int,
    sep: int,
    sink: _Sink | _Writer,
    lengths: np.ndarray | None = None,
) -> None:
    """Write the records of ``data`` (of ``lengths``, when known; otherwise found from the
    separators) in increasing key order, where every key shares its top ``shift`` bits.

    A large set is first split into cache-sized buckets by the next key bits (a counting sort,
    which keeps memory access sequential); each bucket is then ordered and written.
    """
    n = len(keys)
    if n == 0:
        return
    if lengths is None:
        ends = record_ends(data, sep)
        if len(ends) != n or ends[-1] != len(data):
            raise KxError("a temporary file was truncated or changed during the run")
        starts = starts_of(ends)
        lengths = ends - starts
        del ends
    else:
        starts = np.cumsum(lengths)
        if len(lengths) != n or starts[-1] != len(data):
            raise KxError("internal error: records and their lengths disagree")
        starts -= lengths
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
    del starts
    glengths = lengths[order]
    del lengths
    gkeys = keys[order]
    del order
    a = at = 0
    for c, size in zip(counts.tolist(), sizes.tolist(), strict=True):
        if c:
            _emit_ordered(
                grouped[at : at + size], gkeys[a : a + c], shift + bits, sep, sink,
                glengths[a : a + c],
            )
            a += c
            at += size


def _emit_positions(
    sources: list[np.ndarray],
    where: np.ndarray,
    keys: np.ndarray,
    lengths: np.ndarray,
    shift: int,
    sink: _Sink | _Writer,
) -> None:
    """Write the records at ``where`` in ``sources`` (see
    :func:`~kxtool.records.gather_where`) in increasing key order, where every key shares its
    top ``shift`` bits: one copy of each record, from wherever it is to its place in the
    output (measured on the 300 MB benchmark: a fifth less time than joining the pile's
    records first and ordering the join)."""
    if len(keys) == 0:
        return
    perm = _order(keys, shift)
    out = gather_where(sources, where, lengths, perm, phase=sink.phase())
    sink.write(out, lengths[perm])


def _drain(
    runs: _Runs,
    budget: int,
    sink: _Sink | _Writer,
    groups: Iterable[tuple[int, int]] | None = None,
) -> None:
    """Pass 2: write the piles of ``runs`` in key order: all of them, or those of ``groups``
    (ranges of consecutive piles, see :func:`~kxtool.shuffle.plan._pile_groups`), in that
    order. Each range is read from every run at once."""
    counts, sizes = runs.pile_totals()
    # a worker's sink to the main process marks the end of each of its piles (not of the
    # piles of a pile split again, which go through here too)
    end_piles = groups is not None and isinstance(sink, _PipeSink)
    if groups is None:
        groups = _pile_groups(counts, sizes, budget, runs.read_slack(budget))
    ranges = iter(groups)
    for first, end in runs.each_range(lambda wait: next(ranges, None)):
        for p in range(first, end):
            if counts[p]:
                _drain_pile(runs, p, int(counts[p]), int(sizes[p]), budget, sink)
                if end_piles:
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
    out = PositionalWriter(path, writer.output, direct=total >= plan.DIRECT_MIN)
    writes = _Writes(out, writer.advance, plan.write_queue(budget))
    try:
        sink = _Queued(writes, base)
        _drain(runs, budget, sink)
        writes.finish()
    finally:
        writes.close()
        out.close()
    if sink.offset != base + total:
        raise KxError(f"internal error: wrote {sink.offset - base} bytes of {total}")
    writer.advance_done(total)


class _Collect(_Sink):
    """Keeps what is written, to be written in order later."""

    def __init__(self) -> None:
        self.parts: list[tuple[np.ndarray, np.ndarray | None]] = []

    def write(self, data: np.ndarray, lengths: np.ndarray | None = None) -> None:
        self.parts.append((data, lengths))


def _drain_threaded(runs: _Runs, budget: int, writer: _Writer, threads: int) -> None:
    """Pass 2 over runs in memory with several threads: piles are read here, in order, and
    ordered by the threads; a plain output gets each pile at its offset from writing threads
    (:class:`_Writes`), otherwise the results are written here in order."""
    from concurrent.futures import ThreadPoolExecutor

    counts, sizes = runs.pile_totals()
    piles = np.flatnonzero(counts).tolist()
    total = int(sizes.sum())
    shift = runs.shift + runs.bits
    sep = runs.sep[0]
    target = writer.direct_target()
    out = writes = None
    if target is not None:
        path, base = target
        out = PositionalWriter(path, writer.output, direct=total >= plan.DIRECT_MIN)
        offsets = (base + np.concatenate(([0], np.cumsum(sizes)[:-1]))).tolist()

    def order(p: int, segments: list, nbytes: int) -> _Collect | _Placed:
        # the pile's segments are joined here, in the thread (runs in memory allow it)
        sink = _Placed(out, offsets[p]) if out is not None else _Collect()
        found = runs.positions(segments)
        if found is not None:  # a mapped input's records, copied once: straight in order
            _emit_positions(runs.sources, *found, shift, sink)
            return sink
        data, keys, lengths = runs.read(segments, nbytes)
        _emit_ordered(data, keys, shift, sep, sink, lengths)
        return sink

    def finish(result: _Collect | _Placed) -> None:
        if isinstance(result, _Placed):
            for data, offset in result.parts:
                writes.put(data, offset)  # type: ignore[union-attr]
        else:
            for data, lengths in result.parts:
                writer.write(data, lengths)

    try:
        if out is not None:
            writes = _Writes(out, writer.advance)
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
                pending.append(ex.submit(order, p, runs.segments(p), nbytes))
                while len(pending) > 2 * threads:
                    finish(pending.pop(0).result())
            for f in pending:
                finish(f.result())
        if writes is not None:
            writes.finish()
    finally:
        if writes is not None:
            writes.close()
        if out is not None:
            out.close()
    if out is not None:
        writer.advance_done(total)


def _drain_pile(
    runs: _Runs, p: int, n: int, nbytes: int, budget: int, sink: _Sink | _Writer
) -> None:
    shift = runs.shift + runs.bits
    if _work_memory(nbytes, n) <= 0.6 * budget or shift >= 56:
        found = runs.positions(runs.segments(p)) if runs.in_memory else None
        if found is not None:
            _emit_positions(runs.sources, *found, shift, sink)
            return
        for data, keys, lengths in runs.pile_parts(p, nbytes):  # one part: the whole pile
            _emit_ordered(data, keys, shift, runs.sep[0], sink, lengths)
        return
    # too big for memory: scatter this pile again by the next key bits
    bits = _resplit_bits(nbytes, n, budget)
    sub = _Runs(runs.directory, runs.sep, shift, bits, f"{runs.name}-{p}", runs.direct)
    try:
        spiller = _Spiller(sub, budget // 2)
        for data, keys, _lengths in runs.pile_parts(p, max(1, budget // 8)):
            spiller.add(data, keys)
        spiller.flush()
        _drain(sub, budget, sink)
    finally:
        sub.remove()


class _PipeSink(_Sink):
    """Pass 2 in a worker: ordered records go to the main process."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def write(self, data: np.ndarray, lengths: np.ndarray | None = None) -> None:
        self.conn.send(("chunk",))
        self.conn.send_bytes(data)

    def end_pile(self) -> None:
        self.conn.send(("pile",))


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


class _Queued(_Sink):
    """Writes ordered records from a given offset of an output file on, by the threads of a
    :class:`_Writes` (the caller orders the next records meanwhile)."""

    def __init__(self, writes: _Writes, offset: int) -> None:
        self.writes = writes
        self.offset = offset

    def phase(self) -> int | None:
        out = self.writes.out
        return out.phase(self.offset) if out.direct_fd is not None else None

    def write(self, data: np.ndarray, lengths: np.ndarray | None = None) -> None:
        self.writes.put(data, self.offset)
        self.offset += len(data)


class _Placed(_OffsetSink):
    """Ordered records meant for an output file from a given offset on, kept to be written by
    :class:`_Writes` (their buffers start at the phase direct I/O needs)."""

    def __init__(self, out: PositionalWriter, offset: int) -> None:
        super().__init__(out, offset)
        self.parts: list[tuple[np.ndarray, int]] = []

    def write(self, data: np.ndarray, lengths: np.ndarray | None = None) -> None:
        self.parts.append((data, self.offset))
        self.offset += len(data)


class _Writes:
    """Positional writes done by threads of their own, in pieces of :data:`~.plan.WRITE_PIECE`
    bytes, so that the device always has a few to work on while the ordering threads order
    the next piles (a direct write waits for the device; measured on the 300 MB benchmark the
    writes, done by the ordering threads themselves, took longer than the ordering). At most
    ``limit`` bytes wait to be written; ``on_write`` learns of every piece written."""

    def __init__(
        self, out: PositionalWriter, on_write: Callable[[int], None], limit: int = 16 << 20
    ) -> None:
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        self.out = out
        self.on_write = on_write
        self.limit = limit
        self.pool = ThreadPoolExecutor(plan.WRITE_THREADS)
        self.pending: deque = deque()
        self.queued = 0

    def put(self, data: np.ndarray, offset: int) -> None:
        piece = plan.WRITE_PIECE
        at = 0
        while at < len(data):
            # pieces end at file offsets that are multiples of the piece size, so that each
            # keeps the alignment direct I/O needs
            end = min(len(data), (offset + at) // piece * piece + piece - offset)
            part = data[at:end]
            self.pending.append((self.pool.submit(self.out.pwrite, part, offset + at), len(part)))
            self.queued += len(part)
            at = end
        while self.queued > self.limit:
            self._wait_one()

    def _wait_one(self) -> None:
        future, size = self.pending.popleft()
        future.result()
        self.queued -= size
        self.on_write(size)

    def finish(self) -> None:
        """Wait for every write (an error in one is raised here)."""
        while self.pending:
            self._wait_one()

    def close(self) -> None:
        for future, _size in self.pending:
            future.cancel()
        self.pool.shutdown(wait=True)
        self.pending.clear()
