"""An exact uniform sample without replacement (``kxtool shuffle -n N``), in one pass.

The full shuffle writes the records in increasing order of their keys ``f_seed(i)``; its first
``N`` lines are the ``N`` records with the smallest keys, in key order. This module finds them
in one pass over the input, keeping at most about ``2 N`` candidates: the records read so far
whose key is below the ``N``-th smallest key seen (a threshold that only falls). Keys are
uniform, so past the first ``N`` records few are candidates (about ``N ln(n/N)`` in all) and
a block without one costs only its scan and its keys; for a plain file a first threshold is
guessed from its size (about ``1.25 N`` candidates), and should fewer than ``N`` keys fall
below it the file is read again without it. Memory is bounded by the sample (its bytes and
keys, twice over at most), not by the input: a sample over 30% of the budget is an error,
never a spill, except that ``N`` at least the line count of input files gives the full
shuffle (which needs no memory for them), as GNU shuf gives the whole input. The result is
byte-identical to the first ``N`` records of :func:`shuffle_files` with the same seed,
whatever the budget and the number of threads.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..errors import KxError
from ..progress import Progress
from ..records import (
    _native,
    count_separators,
    gather,
    gather_where,
    record_ends,
    starts_of,
    where_of,
)
from ..textio import (
    STDIO,
    AtomicOutputs,
    compression_of,
    display_name,
    format_size,
    input_size,
    os_error,
    stdin_as_file,
)
from .keys import _order, _round_keys, fresh_seed, record_keys
from .output import _Writer
from .permutation import _write_npy, count_records, record_indices
from .plan import default_jobs
from .reading import _Range, _RangePlan, _read_header, _Reader
from .runs import _pread_into

__all__ = ["sample_files"]

#: Buckets of keys counted between thinnings out, to lower the threshold (see _Sample._lower).
BUCKETS = 4096
#: Share of the budget the kept sample may take (its candidates and one copy while they are
#: thinned out take as much again).
SAMPLE_SHARE = 0.3
#: Bytes a kept record costs beyond its own: its key and length, and the offsets, selection
#: and order arrays while the sample is thinned out or ordered.
SAMPLE_RECORD = 48


def _long_line(max_record: int) -> KxError:
    return KxError(f"a line is longer than a quarter of the memory budget "
                   f"({format_size(max_record)}); raise --memory")


class _TooBig(KxError):
    """The sample does not fit in its share of the budget."""


_Part = tuple[np.ndarray, np.ndarray, np.ndarray]  # records (bytes), their lengths and keys


class _Sample:
    """The ``n`` records with the smallest keys among those added so far, held as the parts
    they were found in (thinning out copies only the parts that lose records)."""

    def __init__(self, n: int, limit: int, sep: int = 10) -> None:
        self.n = n
        self.sep = sep  # the records' separator byte
        self.limit = limit  # bytes of memory the kept records may take
        self.parts: list[_Part] = []
        self.held = 0  # records in parts
        self.held_memory = 0
        self.fresh = 0  # records added since the last thinning out
        # records with a key at or above the threshold are not candidates: the n-th smallest
        # key so far once n were seen, or a guess (``guessed``) that the end must confirm
        self.threshold: np.uint64 | None = None
        self.guessed = False
        #: how many kept keys lie in each of BUCKETS equal buckets of ``width`` keys from 0 (set
        #: by a thinning out: see _lower)
        self.counts: np.ndarray | None = None
        self.width = np.uint64(1)
        self.dropped = 0  # records left out by a guessed threshold
        self.seen = 0
        # after finish: the chosen records (in ``sources`` at ``where``, or in ``data``), their
        # lengths and keys, and their key order
        self.sources: list[np.ndarray] = []
        self.where: np.ndarray | None = None
        self.data = np.empty(0, dtype=np.uint8)
        self.lengths = np.empty(0, dtype=np.int64)
        self.keys = np.empty(0, dtype=np.uint64)
        self.order = np.empty(0, dtype=np.intp)

    @staticmethod
    def _memory(part: _Part) -> int:
        return len(part[0]) + SAMPLE_RECORD * len(part[1])

    def _set_parts(self, parts: list[_Part]) -> None:
        self.parts = parts
        self.held = sum(len(p[1]) for p in parts)
        self.held_memory = sum(map(self._memory, parts))

    def guess(self, records: int) -> None:
        """Leave out from now on the keys that are clearly not among the ``n`` smallest of
        about ``records`` records (keys are uniform); :meth:`confirmed` tells at the end
        whether the guess held."""
        if self.threshold is not None or records < 2 * self.n:
            return
        share = (1.25 * self.n + 10 * self.n**0.5 + 64) / records
        if share < 0.5:
            self.threshold = np.uint64(int(share * 2**64))
            self.guessed = True
            # what was taken before must be below the guess too, or a record above it could
            # be chosen while one below it, but above the guess, was left out
            self._set_parts([p for p in map(self._below, self.parts) if p is not None])

    def _below(self, part: _Part, limit: np.uint64 | None = None) -> _Part | None:
        """The records of ``part`` whose keys are below ``limit`` (default: the threshold;
        a guessed one counts the others as left out)."""
        data, lengths, keys = part
        if limit is None:
            assert self.threshold is not None
            limit = self.threshold
            counted = self.guessed
        else:
            counted = False
        below = keys < limit
        if below.all():
            return part
        chosen = np.flatnonzero(below)
        if counted:
            self.dropped += len(keys) - len(chosen)
        if len(chosen) == 0:
            return None
        starts = starts_of(np.cumsum(lengths))
        return gather(data, starts, lengths, chosen), lengths[chosen], keys[chosen]

    def confirmed(self) -> bool:
        """Whether the records chosen are the ``n`` smallest keys of all those added (after
        :meth:`finish`)."""
        return not self.dropped or len(self.order) >= self.n

    def candidates(
        self,
        data: np.ndarray,
        count: int | None,
        start: int,
        seed: int,
        max_record: int,
    ) -> tuple[_Part | None, int, int]:
        """The candidates among the records of ``data`` (whole records, the first of index
        ``start``; ``count`` of them, or None where they are still to be counted), the number
        of records and how many of them the threshold left out. Touches nothing of the sample
        but reads its threshold (a stale one only lets more records through), so threads may
        run it."""
        if self.n == 0 or count == 0:
            return None, count if count is not None else count_separators(data, self.sep), 0
        threshold, guessed = self.threshold, self.guessed
        if _native is not None:
            # the separators found, the keys made and compared in one pass of the kernel
            found = self._native_candidates(data, count, start, seed, max_record, threshold)
            if found is not None:
                return found
        ends = record_ends(data, self.sep)
        count = len(ends)
        if count == 0:
            return None, 0, 0
        starts = starts_of(ends)
        lengths = ends - starts
        if int(lengths.max()) - 1 > max_record:
            raise _long_line(max_record)
        keys = record_keys(seed, start, count)
        if threshold is None:  # every record is a candidate
            return (data.copy(), lengths, keys), count, 0
        chosen = np.flatnonzero(keys < threshold)
        left = count - len(chosen) if guessed else 0
        if len(chosen) == 0:
            return None, count, left
        part = gather(data, starts, lengths, chosen), lengths[chosen], keys[chosen]
        return part, count, left

    def _native_candidates(
        self,
        data: np.ndarray,
        count: int | None,
        start: int,
        seed: int,
        max_record: int,
        threshold: np.uint64 | None,
    ) -> tuple[_Part | None, int, int] | None:
        # room for every record when their number is known; otherwise for the candidates of
        # a record every 32 bytes (the pages not written cost nothing), and for all of them
        # (counted first) in the rare block that has more. Without a threshold every record
        # is a candidate: the kernel's bound is then the largest key, which it leaves out, so
        # a block that holds that one key (one in 2**64) is left to numpy (None).
        every = threshold is None
        limit = 2**64 - 1 if every else int(threshold)  # type: ignore[arg-type]
        room = count if count is not None else len(data) // 32 + 64
        a, b, c = _round_keys(seed)
        while True:
            starts = np.empty(room, dtype=np.int64)
            lengths = np.empty(room, dtype=np.int64)
            keys = np.empty(room, dtype=np.uint64)
            try:
                records, chosen, longest = _native.select_scan(
                    data, self.sep, start, a, b, c, limit, starts, lengths, keys
                )
                break
            except ValueError:  # more candidates than room
                if count is not None:  # pragma: no cover - the data changed under us
                    raise KxError("internal error: a block's records were miscounted") from None
                room = count = count_separators(data, self.sep)
        if count is not None and records != count:  # pragma: no cover - the data changed
            raise KxError("internal error: a block's records were miscounted")
        if longest - 1 > max_record:
            raise _long_line(max_record)
        if every:
            if chosen != records:
                return None
            if chosen == 0:
                return None, 0, 0
            # every record, in order: the block's bytes as they are
            return (data.copy(), lengths[:chosen].copy(), keys[:chosen].copy()), records, 0
        left = records - chosen if self.guessed else 0
        if chosen == 0:
            return None, records, left
        lengths = lengths[:chosen].copy()
        part = gather(data, starts[:chosen], lengths), lengths, keys[:chosen].copy()
        return part, records, left

    def take(self, part: _Part | None, count: int, left: int) -> None:
        """Add what :meth:`candidates` found in ``count`` records."""
        self.seen += count
        self.dropped += left
        if part is not None and self.threshold is not None:
            # found with an older threshold (or none) while the threshold fell
            part = self._below(part)
        if part is None:
            return
        self.parts.append(part)
        self.held += len(part[1])
        self.held_memory += self._memory(part)
        self.fresh += len(part[1])
        if self.fresh >= 2 * max(self.n, 1024) or self.held_memory > self.limit:
            self.compact()
        elif self.counts is not None:
            self._lower(part[2])

    def _lower(self, keys: np.ndarray) -> None:
        """Count ``keys`` (below the threshold) into :attr:`counts` and lower the threshold to
        the end of the first bucket by which ``n`` keys have been counted: at least ``n`` keys
        are below it, so it still keeps every record of the sample, and the candidates found
        from here on are fewer (between thinnings out the threshold would otherwise stay)."""
        assert self.counts is not None and self.threshold is not None
        self.counts += np.bincount((keys // self.width).astype(np.intp), minlength=BUCKETS)
        b = int(np.searchsorted(np.cumsum(self.counts), self.n))
        if b < BUCKETS - 1:
            self.threshold = min(self.threshold, np.uint64((b + 1) * self.width))

    def compact(self) -> None:
        """Keep only the ``n`` smallest keys."""
        self.fresh = 0
        if self.held > self.n:
            low = np.partition(np.concatenate([p[2] for p in self.parts]), self.n - 1)[: self.n]
            nth = low[-1]
            if nth == np.uint64(2**64 - 1):  # no room above it (one chance in 2**64)
                return
            self.threshold = nth + np.uint64(1)  # keys are distinct: exactly n are below
            self.guessed = False
            # the n kept keys in buckets below the threshold, for _lower
            self.width = np.uint64(int(self.threshold) // BUCKETS + 1)
            self.counts = np.bincount((low // self.width).astype(np.intp), minlength=BUCKETS)
            del low
            # each part let go of as soon as what it keeps is copied: the memory of the
            # sample and its copy never exceeds what it held by more than one part
            parts, self.parts = self.parts, []
            kept = []
            for i in range(len(parts)):
                thinned = self._below(parts[i], self.threshold)
                parts[i] = None  # type: ignore[call-overload]
                if thinned is not None:
                    kept.append(thinned)
                del thinned
            self._set_parts(kept)
        if self.held_memory > self.limit:
            raise _TooBig(
                f"a sample of {self.n} lines does not fit in the memory budget: "
                f"{min(self.n, self.seen)} lines take {format_size(self.held_memory)}, "
                f"{format_size(self.limit)} may be kept ({int(SAMPLE_SHARE * 100)}% of "
                "--memory); raise --memory, or write the full shuffle and take its head"
            )

    def finish(self) -> None:
        """Choose the ``n`` smallest keys and put them in key order (then :meth:`ordered` and
        :meth:`indices` give them). With the kernel the chosen records stay in their parts,
        which :meth:`ordered` gathers from; without it they are copied into one buffer."""
        parts, self.parts = self.parts, []
        keys = np.concatenate([p[2] for p in parts]) if parts else self.keys
        limit = None
        if len(keys) > self.n:
            limit = np.partition(keys, self.n - 1)[self.n - 1]  # exactly n up to it: distinct
        del keys
        kept: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        for data, lengths, pkeys in parts:
            starts = starts_of(np.cumsum(lengths))
            if limit is not None:
                idx = np.flatnonzero(pkeys <= limit)
                if len(idx) == 0:
                    continue
                starts, lengths, pkeys = starts[idx], lengths[idx], pkeys[idx]
            kept.append((data, starts, lengths, pkeys))
        del parts
        if kept:
            self.keys = np.concatenate([k[3] for k in kept])
            self.lengths = np.concatenate([k[2] for k in kept])
        if _native is not None:
            self.sources = [k[0] for k in kept]
            self.where = np.concatenate(
                [k[1].astype(np.uint64) | np.uint64(where_of(i, 0)) for i, k in enumerate(kept)]
            ) if kept else np.empty(0, dtype=np.uint64)
        else:  # the chosen records of every part, copied once into one buffer
            self.data = np.empty(int(self.lengths.sum()), dtype=np.uint8)
            at = 0
            for i, (data, starts, lengths, _k) in enumerate(kept):
                kept[i] = None  # type: ignore[call-overload]  # let go of each part once copied
                chunk = gather(data, starts, lengths)
                self.data[at : at + len(chunk)] = chunk
                at += len(chunk)
                del data, chunk
        del kept
        self.order = _order(self.keys, 0)
        if len(self.order) >= self.n:
            self.guessed = False

    def count(self) -> int:
        """Records chosen (after :meth:`finish`)."""
        return len(self.order)

    def nbytes(self) -> int:
        """Bytes of the records chosen (after :meth:`finish`)."""
        return int(self.lengths.sum())

    def ordered(self, step: int = 1 << 16) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The chosen records in key order, in slices of ``step`` records (after
        :meth:`finish`)."""
        if self.where is not None:
            for a in range(0, len(self.order), step):
                idx = self.order[a : a + step]
                yield gather_where(self.sources, self.where, self.lengths, idx), self.lengths[idx]
            return
        starts = starts_of(np.cumsum(self.lengths))
        for a in range(0, len(self.order), step):
            idx = self.order[a : a + step]
            yield gather(self.data, starts, self.lengths, idx), self.lengths[idx]

    def indices(self, seed: int, step: int = 1 << 20) -> Iterator[np.ndarray]:
        """The input indices of the chosen records in key order (after :meth:`finish`)."""
        for a in range(0, len(self.order), step):
            yield record_indices(seed, self.keys[self.order[a : a + step]])


#: Bytes read before the number of records of a plain file is guessed from its size.
GUESS_AFTER = 4 << 20
#: Bytes read at once (at most a sixteenth of the budget): measured on the 2 GB file, 4 MiB
#: blocks took 0.69 s against 0.86 s for 1 MiB (the work per block, not the scans, was what
#: cost), and 8 MiB no less.
SAMPLE_BLOCK = 4 << 20


def _block(budget: int) -> int:
    return min(SAMPLE_BLOCK, max(1 << 16, budget // 16))


def _scan(
    reader: _Reader,
    sample: _Sample,
    seed: int,
    sep: int,
    max_record: int,
    total: int | None,
) -> None:
    """Offer every block of ``reader`` (a stream: a pipe, a compressed file) to ``sample``.
    The reader's thread reads the blocks and counts nothing; this one finds the candidates of
    each block in one pass of the kernel, which counts the records (about 4 GB/s: well ahead
    of a pipe, or of any decompressor); one more thread takes them into the sample.
    ``total``, when given, is the input's size, for a first guess at the threshold."""
    from collections import deque
    from concurrent.futures import Future, ThreadPoolExecutor

    start = 0
    seen_bytes = 0  # of the blocks taken
    reader.keep_ends = reader.count_records = False

    def taken(part: _Part | None, n: int, left: int, nbytes: int) -> None:
        nonlocal seen_bytes
        sample.take(part, n, left)
        seen_bytes += nbytes
        if total is not None and sample.threshold is None and seen_bytes >= GUESS_AFTER:
            sample.guess(int(total * sample.seen / seen_bytes))

    with ThreadPoolExecutor(1) as collector:
        pending: deque[Future] = deque()  # type: ignore[type-arg]  # blocks being taken
        try:
            for chunk in reader.chunks():
                part, n, left = sample.candidates(chunk.data, chunk.count, start, seed,
                                                  max_record)
                if chunk.count is None:
                    reader.add_records(n)  # before the next chunk: its line numbers
                reader.recycle(chunk)  # the candidates are copies: its buffer is free
                pending.append(collector.submit(taken, part, n, left, len(chunk.data)))
                start += n
                del chunk, part
                while len(pending) > 2 or (pending and pending[0].done()):
                    pending.popleft().result()
            while pending:
                pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()
    sample.finish()


def _scan_ranges(
    paths: list[str],
    sep: bytes,
    header: int,
    sample: _Sample,
    seed: int,
    max_record: int,
    jobs: int,
    total: int,
    guess: bool,
    progress: Progress | None,
    block: int = SAMPLE_BLOCK,
) -> list[bytes]:
    """Offer every record of plain files to ``sample``, the files cut into byte ranges of
    about ``block`` bytes that ``jobs`` threads read (``pread``) and scan themselves;
    only the record counts pass through here, in order, to give each range its first index.
    Returns the header lines."""
    from collections import deque
    from concurrent.futures import Future, ThreadPoolExecutor

    head, first = _read_header(paths[0], sep, header, max_record)
    plan = _RangePlan(paths, sep, block, max_record, head, first, total, 0)
    sep_byte = sep[0]

    def read(r: _Range) -> tuple[np.ndarray, int]:
        data = np.empty(r.length + r.add_sep, dtype=np.uint8)
        try:
            fd = os.open(r.path, os.O_RDONLY)
            try:
                got = _pread_into(fd, data[: r.length], r.offset)
            finally:
                os.close(fd)
        except OSError as e:
            raise os_error(e, r.path, "cannot read") from None
        if got != r.length:
            raise KxError(f"{display_name(r.path)!r} changed while it was being read")
        if r.add_sep:
            data[-1] = sep_byte
        return data, count_separators(data, sep_byte)  # the scan finds where they end

    def scan(data: np.ndarray, count: int, start: int):  # type: ignore[no-untyped-def]
        part, _count, left = sample.candidates(data, count, start, seed, max_record)
        return part, left

    start = seen_bytes = 0
    ranges = plan.ranges()
    reading: deque[Future] = deque()  # type: ignore[type-arg]
    scanning: deque[tuple[Future, int]] = deque()  # type: ignore[type-arg]
    more = True
    with ThreadPoolExecutor(max(1, jobs)) as ex:
        try:
            while True:
                while more and len(reading) + len(scanning) < 3 * max(1, jobs):
                    r = next(ranges, None)
                    if r is None:
                        more = False
                    else:
                        reading.append(ex.submit(read, r))
                if reading and (not scanning or reading[0].done()):
                    data, records = reading.popleft().result()
                    scanning.append((ex.submit(scan, data, records, start), records))
                    start += records
                    seen_bytes += len(data)
                    if progress is not None:
                        progress("reading", seen_bytes, total)
                    del data
                elif scanning:
                    f, n = scanning.popleft()
                    part, left = f.result()
                    sample.take(part, n, left)
                    if guess and sample.threshold is None and seen_bytes >= GUESS_AFTER:
                        # records and bytes both as counted when read (sample.seen lags)
                        sample.guess(int(total * start / seen_bytes))
                elif not more:
                    break
        finally:
            for f in reading:
                f.cancel()
            for f, _n in scanning:
                f.cancel()
    sample.finish()
    return head


def sample_files(
    inputs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str] = (STDIO,),
    output: str | os.PathLike[str] = STDIO,
    count: int = 0,
    *,
    memory: int | str = "1G",
    seed: int | None = None,
    shards: Any = None,
    header: int = 0,
    zero_terminated: bool = False,
    progress: Progress | None = None,
    permutation: str | os.PathLike[str] | None = None,
    jobs: int | None = None,
) -> Any:
    """Write ``count`` records of ``inputs`` drawn uniformly without replacement, in random
    order: exactly the first ``count`` records :func:`shuffle_files` writes with the same
    ``seed`` (``header`` lines on top), in one pass over the input and memory bounded by the
    sample. ``count`` larger than the input gives the whole shuffle. A sample that does not fit
    in ``memory`` is a :class:`KxError`. ``shards`` (a count or :class:`Parts`) splits the
    sample as it would the shuffle. ``permutation`` names a ``.npy`` file for the input index
    of each line written (see :func:`write_permutation`), written with the data. ``jobs``
    threads read and scan a plain file's byte ranges (default :func:`default_jobs`; the output
    does not depend on it; a stream is scanned by one thread, faster than it is read). Returns
    a :class:`ShuffleResult` whose ``records`` are those written.

    >>> import os, tempfile
    >>> from kxtool.shuffle import shuffle_files
    >>> d = tempfile.mkdtemp()
    >>> src = os.path.join(d, "in.txt")
    >>> _ = open(src, "w").write("".join(f"line {i}\\n" for i in range(100)))
    >>> r = sample_files(src, os.path.join(d, "s.txt"), 5, seed=3)
    >>> _ = shuffle_files(src, os.path.join(d, "all.txt"), seed=3)
    >>> sample = open(os.path.join(d, "s.txt")).read().splitlines()
    >>> r.records, sample == open(os.path.join(d, "all.txt")).read().splitlines()[:5]
    (5, True)
    """
    from . import _checked_call

    if count < 0:
        raise KxError("-n/--head-count must not be negative")
    paths, output, budget = _checked_call(inputs, output, memory, header, shards)
    if seed is None:
        seed = fresh_seed()
    sep = b"\0" if zero_terminated else b"\n"
    if jobs is None:
        jobs = default_jobs()
    if jobs < 1:
        raise KxError("--jobs must be at least 1")
    with stdin_as_file() if STDIO in paths else contextlib.nullcontext() as stdin_path:
        if stdin_path is not None:
            paths = [stdin_path if p == STDIO else p for p in paths]
        return _sample_paths(paths, output, count, budget, seed, shards, header, sep, progress,
                             permutation, jobs)


def _sample_paths(
    paths: list[str],
    output: str,
    count: int,
    budget: int,
    seed: int,
    shards: Any,
    header: int,
    sep: bytes,
    progress: Progress | None,
    permutation: str | os.PathLike[str] | None,
    jobs: int,
) -> Any:
    from . import ShuffleResult, _small_pages, _tune_allocator

    sizes = [input_size(p) for p in paths]
    total = None if any(s is None for s in sizes) else sum(sizes)  # type: ignore[arg-type]
    _tune_allocator()
    with _small_pages():
        # a plain file's size tells about how many records there are: a first guess at the
        # threshold leaves out most non-candidates at once; should it prove too low (fewer than
        # ``count`` records below it), the file is read again without it
        plain = total is not None and all(compression_of(p) is None for p in paths)
        ranged = plain and all(os.path.isfile(p) for p in paths)
        guess = plain
        while True:
            sample = _Sample(count, int(SAMPLE_SHARE * budget), sep[0])
            try:
                if ranged:
                    assert total is not None
                    head = _scan_ranges(paths, sep, header, sample, seed, budget // 4, jobs,
                                        total, guess, progress, _block(budget))
                else:
                    reader = _Reader(paths, sep, header, 2 * _block(budget), budget // 4,
                                     progress, total)
                    _scan(reader, sample, seed, sep[0], budget // 4, total if guess else None)
                    head = reader.header
            except _TooBig:
                # more lines than fit: if -n asks for all of them, that is the full shuffle,
                # which does not need memory for them (files only: a stream is half read)
                if not all(os.path.isfile(p) for p in paths):
                    raise
                del sample
                if count < count_records(paths, header=header, zero_terminated=sep == b"\0"):
                    raise
                return _whole(paths, output, budget, seed, shards, header, sep, progress,
                              permutation, jobs)
            if sample.confirmed():
                break
            guess = False
    kept = sample.count()
    nbytes = sample.nbytes()
    with AtomicOutputs(make_dirs=shards is not None) as outs:
        writer = _Writer(outs, output, shards, kept, head, sep, progress, nbytes)
        for data, lengths in sample.ordered():
            writer.write(data, lengths)
        written = writer.finish()
        if permutation is not None:
            perm = os.fspath(permutation)
            _write_npy(outs, perm, kept, sample.indices(seed))
            written.append(perm)
    return ShuffleResult(seed, kept, nbytes, len(head), True, 0, 0, jobs, written)


def _whole(
    paths: list[str],
    output: str,
    budget: int,
    seed: int,
    shards: Any,
    header: int,
    sep: bytes,
    progress: Progress | None,
    permutation: str | os.PathLike[str] | None,
    jobs: int,
) -> Any:
    """``-n`` at least the line count of files too big for the sample's memory: the full
    shuffle (and its permutation)."""
    from . import shuffle_files
    from .permutation import write_permutation

    result = shuffle_files(paths, output, memory=budget, seed=seed, shards=shards,
                           header=header, zero_terminated=sep == b"\0", jobs=jobs,
                           progress=progress)
    if permutation is not None:
        write_permutation(permutation, seed, result.records, memory=budget)
        result.outputs.append(os.fspath(permutation))
    return result
