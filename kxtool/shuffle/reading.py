"""Reading inputs once into numpy buffers of whole records: chunks read here, or byte ranges
of plain files that workers read themselves."""

from __future__ import annotations

import contextlib
import mmap
import os
import queue
import stat
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import KxError
from ..progress import Progress
from ..records import WHERE_BITS, count_separators, record_ends, where_of
from ..records import _native as _records_native
from ..textio import (
    STDIO,
    compression_of,
    display_name,
    format_size,
    open_filler,
    os_error,
)
from .plan import HEADROOM, MAX_BLOCK, RECORD_REST, SPARE_BUFFERS
from .runs import _pread_into


@dataclass
class _Chunk:
    """Whole records read from an input, each ending with the separator, in one buffer."""

    data: np.ndarray  # uint8
    #: records; None where the reader did not count them (see :attr:`_Reader.count_records`)
    count: int | None
    ends: np.ndarray | None = None  # where each record ends (int64), when found already
    #: for the bytes of a mapped input (see :attr:`_Reader.sources`): the position of the
    #: first byte (see :func:`~kxtool.records.gather_where`), which stays valid while the
    #: shuffle runs; None for bytes read into a buffer of their own
    origin: int | None = None

    @property
    def nbytes(self) -> int:
        return len(self.data)

    def memory(self) -> int:
        """Memory the records take while they wait (their bytes and their ends, later their
        keys and lengths)."""
        assert self.count is not None
        return self.nbytes + RECORD_REST * self.count


class _ReadAhead:
    """A daemon thread that fills the buffers it is asked to (``fill(buf)`` -> bytes read),
    one at a time, in order. It is a daemon so that an interrupted run never waits for it:
    a read from a pipe or a terminal that gets no more data would block it for good.

    Before this process forks (the shuffle's workers), every read in flight is waited for:
    a forked child must not inherit the lock of a stream this thread is reading, such as
    stdin's, which multiprocessing's children close as they start."""

    def __init__(self, fill: Callable[[np.ndarray], int]) -> None:
        self.fill = fill
        self.requests: queue.SimpleQueue[np.ndarray | None] = queue.SimpleQueue()
        self.results: queue.SimpleQueue[tuple[np.ndarray, int, BaseException | None]] = (
            queue.SimpleQueue()
        )
        self.asked = 0  # reads asked for and not taken yet
        self.stash: list[tuple[np.ndarray, int, BaseException | None]] = []
        self.thread = threading.Thread(target=self._run, daemon=True, name="kxtool-read")
        self.thread.start()
        _READING.add(self)

    def _run(self) -> None:
        while True:
            buf = self.requests.get()
            if buf is None:
                return
            try:
                self.results.put((buf, self.fill(buf), None))
            except BaseException as e:  # handed to the reader, raised there
                self.results.put((buf, 0, e))
                return

    def ask(self, buf: np.ndarray) -> None:
        """Read into ``buf`` next."""
        self.asked += 1
        self.requests.put(buf)

    def take(self) -> tuple[np.ndarray, int]:
        """The next buffer asked for, and the bytes read into it (0 at the end)."""
        buf, got, error = self.stash.pop(0) if self.stash else self.results.get()
        self.asked -= 1
        if error is not None:
            raise error
        return buf, got

    def settle(self) -> None:
        """Wait until no read is in flight (what was read is kept for :meth:`take`)."""
        while len(self.stash) < self.asked and self.thread.is_alive():
            self.stash.append(self.results.get())

    def stop(self, wait: bool) -> None:
        """Let the thread end once it is done with what it is reading; with ``wait``, wait
        for that (before its input is closed: a file's read ends soon, a pipe's may not)."""
        _READING.discard(self)
        self.requests.put(None)
        if wait:
            self.thread.join()


_READING: weakref.WeakSet[_ReadAhead] = weakref.WeakSet()


def _settle_reads() -> None:
    for ahead in list(_READING):
        ahead.settle()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_settle_reads)


#: madvise()'s MADV_POPULATE_READ (Linux 5.14 on; Python's mmap module may not name it)
_MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)


class _Populate:
    """A daemon thread that maps a mapped file's pages in (reading them from the disk where
    they are not cached), ``step`` bytes at a time from the start, ahead of the scan that
    finds its records: that scan would otherwise take a page fault every 16 pages (measured:
    a third of its time on the 300 MB benchmark file). Nothing depends on it: a page it has
    not reached yet is faulted in as usual."""

    def __init__(self, m: mmap.mmap, size: int, step: int) -> None:
        self.m = m
        self.size = size
        self.step = max(mmap.PAGESIZE, step - step % mmap.PAGESIZE)
        self.halt = False
        self.thread: threading.Thread | None = None
        if hasattr(m, "madvise") and os.uname().sysname == "Linux":
            self.thread = threading.Thread(target=self._run, daemon=True, name="kxtool-map")
            self.thread.start()

    def _run(self) -> None:
        for at in range(0, self.size, self.step):
            if self.halt:
                return
            try:
                self.m.madvise(_MADV_POPULATE_READ, at, min(self.step, self.size - at))
            except (OSError, ValueError):  # an old kernel, a file cut short: faults do it
                return

    def stop(self) -> None:
        """Stop, and wait for the step under way."""
        self.halt = True
        if self.thread is not None:
            self.thread.join()


def _guard_mappings(names: list[str]) -> None:
    """While ``names`` are mapped, a read of a page that one of them no longer has (another
    program truncated it) ends the process with a message that names them, instead of a bare
    SIGBUS; with no names, the default again. The compiled kernel does this; files are only
    mapped where it is there."""
    if _records_native is None:  # pragma: no cover - mapping needs the kernel
        return
    if not names:
        _records_native.guard_bus(None)
        return
    shown = repr(names[0]) if len(names) == 1 else "one of " + ", ".join(map(repr, names[:4]))
    if len(names) > 4:
        shown += ", ..."
    _records_native.guard_bus(
        f"kxtool: {shown} shrank while it was read (another program truncated or rewrote it);"
        " stopped before the output was complete (no output file was replaced)\n".encode(
            errors="replace"
        )
    )


def _expected(nbytes: int, records: int, scanned: int) -> int | None:
    """How many records ``nbytes`` more bytes hold, by the density of the ``records`` found in
    the ``scanned`` bytes before (None before any): what the ends array is sized to."""
    return nbytes * records // scanned if records else None


def _may_block(path: str) -> bool:
    """Whether reading ``path`` may wait for ever: stdin, a pipe, a terminal."""
    if path == STDIO:
        return True
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return True
    return not (stat.S_ISREG(mode) or stat.S_ISBLK(mode))


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
        # ``block`` is what reading may hold: two blocks of half of it, one being scanned
        # and the next being read (see _raw_chunks)
        self.block = max(256, min(MAX_BLOCK, block, max_record) // 2)
        self.max_record = max_record
        self.progress = progress
        self.total = total
        self.bytes_read = 0
        self.records = 0
        #: whether chunks carry their records' ends (found in the one scan that counts them;
        #: those who group the chunk here need them, workers that are sent it do not)
        self.keep_ends = True
        #: whether chunks carry their count (without ends): off, they come with count None and
        #: whoever takes them counts the records in its own scan and tells :meth:`add_records`
        #: before it asks for the next chunk (a stream's reading thread then scans nothing: a
        #: pipe is what everything waits for)
        self.count_records = True
        self.seen_in_input = 0  # records of the input being read so far (for line numbers)
        self._spare: list[np.ndarray] = []  # buffers of chunks done with, for later reads
        #: whether the inputs are mapped into memory instead of read (see _mapped_chunks);
        #: the shuffle sets it only for plain regular files (their size is known) that are
        #: expected to fit in memory
        self.map_files = False
        #: what the chunks of mapped inputs lie in, numbered as in their origin: each mapped
        #: file, and the last record of one that lacks its final separator (with it added)
        self.sources: list[np.ndarray] = []
        self._maps: list[mmap.mmap] = []
        self._mapped_names: list[str] = []
        self._populating: list[_Populate] = []
        self._drop_pages = False

    def add_records(self, count: int) -> None:
        """The records of a chunk that came without its count."""
        self.records += count
        self.seen_in_input += count

    def recycle(self, chunk: _Chunk) -> None:
        """Take back the buffer of a chunk that nothing refers to any more, for a later read:
        its pages are in memory already, so that read costs a copy and no fresh pages (which
        the reading thread would otherwise fault in, one by one)."""
        if chunk.origin is not None:  # a mapped file's bytes, not a buffer of ours
            return
        buf = chunk.data.base
        if isinstance(buf, np.ndarray) and buf.base is None and len(self._spare) < SPARE_BUFFERS:
            self._spare.append(buf)

    def _buffer(self, size: int) -> np.ndarray:
        """A buffer of at least ``size`` bytes: a spare one, or a new one with some room."""
        for i, buf in enumerate(self._spare):
            if len(buf) >= size:
                return self._spare.pop(i)
        return np.empty(size + min(1 << 16, self.block // 16), dtype=np.uint8)

    def _too_big(self, path: str, line: int) -> KxError:
        return KxError(
            f"line {line} of {display_name(path)!r} is longer than a quarter of the memory "
            f"budget ({format_size(self.max_record)}); raise --memory"
        )

    def _map(self, path: str) -> tuple[np.ndarray, mmap.mmap] | None:
        """``path`` (a plain file: see :attr:`map_files`) mapped into memory, read-only, as a
        uint8 array (None where it cannot be: not a regular file, empty, or a file system
        without mappings)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise os_error(e, path) from None
        try:
            st = os.fstat(fd)
            size = st.st_size
            if not stat.S_ISREG(st.st_mode) or size == 0 or size >> WHERE_BITS:
                return None
            m = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
        except (OSError, ValueError):
            return None
        finally:
            os.close(fd)
        self._maps.append(m)
        self._populating.append(_Populate(m, size, 2 * self.block))
        self._mapped_names.append(display_name(path))
        _guard_mappings(self._mapped_names)
        whole = np.frombuffer(m, dtype=np.uint8)
        self.sources.append(whole)
        return whole, m

    def _mapped_chunks(self, path: str, whole: np.ndarray, m: mmap.mmap) -> Iterator[_Chunk]:
        """The chunks of a mapped input: views of the mapping, cut after the last separator of
        each block, so that no byte is copied (but the last record when it lacks its
        separator, which is put into a buffer of its own with one)."""
        sep = self.sep_byte
        source = len(self.sources) - 1
        block = 2 * self.block
        size = len(whole)
        pos = seen = 0
        while pos < size:
            hi = min(size, pos + block)
            cut = _last_end(whole, pos, hi, sep)
            while cut == 0 and hi < size:  # a record longer than a block
                if hi - pos > self.max_record:
                    raise self._too_big(path, seen + 1)
                lo, hi = hi, min(size, hi + block)
                cut = _last_end(whole, lo, hi, sep)  # [pos, lo) holds no separator
            if cut == 0:  # the last record, without its separator
                if size - pos > self.max_record:
                    raise self._too_big(path, seen + 1)
                last = np.empty(size - pos + 1, dtype=np.uint8)
                last[:-1] = whole[pos:]
                last[-1] = sep
                self.sources.append(last)
                self.bytes_read += size - pos
                if self.progress is not None:
                    self.progress("reading", self.bytes_read, self.total)
                yield _Chunk(
                    last, 1, np.array([len(last)], dtype=np.int64),
                    where_of(len(self.sources) - 1, 0),
                )
                return
            if hi - pos > block and _last_end(
                whole, pos, min(cut, pos + self.max_record + 1), sep
            ) == 0:
                raise self._too_big(path, seen + 1)
            data = whole[pos:cut]
            self.bytes_read += cut - pos
            if self.progress is not None:
                self.progress("reading", self.bytes_read, self.total)
            if self.keep_ends:
                ends = record_ends(data, sep, _expected(cut - pos, seen, pos))
                count = len(ends)
                yield _Chunk(data, count, ends, where_of(source, pos))
                del ends
            else:
                count = count_separators(data, sep)
                yield _Chunk(data, count, None, where_of(source, pos))
            seen += count
            if self._drop_pages:
                start = pos - pos % mmap.PAGESIZE
                with contextlib.suppress(OSError, ValueError):
                    m.madvise(mmap.MADV_DONTNEED, start, cut - start)
            pos = cut
            del data

    def unmap_pages(self) -> None:
        """Drop the pages of the mapped inputs from this process, now and after each chunk
        from here on (for an input that did not fit after all: its bytes are read to be
        written to runs on disk, and must not stay in memory), and read the inputs still to
        come instead of mapping them. The bytes stay readable: a later read maps them in
        again."""
        self._drop_pages = True
        self.map_files = False  # the inputs still to come are read
        for filler in self._populating:
            filler.stop()
        for m in self._maps:
            with contextlib.suppress(OSError, ValueError):
                m.madvise(mmap.MADV_DONTNEED)

    def close_maps(self) -> None:
        """Let go of the mapped inputs (what still refers to their bytes keeps them mapped
        until it is gone; nothing may read them after this)."""
        for filler in self._populating:
            filler.stop()
        self._populating = []
        if self._maps:
            _guard_mappings([])
        self.sources = []
        self._maps = []
        self._mapped_names = []

    def _raw_chunks(self, path: str) -> Iterator[_Chunk]:
        """The chunks of one input (see :meth:`_mapped_chunks` for a mapped one). The next
        block is read (and decompressed) by a thread of its own while this one scans the
        last: into a buffer that keeps :data:`HEADROOM` bytes free in front, where the start
        of a record that spans the two blocks is put, so that a block is never copied to join
        it."""
        if self.map_files:
            mapped = self._map(path)
            if mapped is not None:
                yield from self._mapped_chunks(path, *mapped)
                return
        sep = self.sep_byte
        block = self.block
        room = min(HEADROOM, block)
        carry = np.empty(0, dtype=np.uint8)  # the start of a record that spans blocks
        self.seen_in_input = 0  # records of this input so far
        scanned = 0  # and their bytes
        with open_filler(path) as fill:
            ahead = _ReadAhead(lambda buf: fill(memoryview(buf)[room : room + block]))
            ahead.ask(self._buffer(room + block))
            try:
                while True:
                    buf, got = ahead.take()
                    if got == 0:
                        break
                    ahead.ask(self._buffer(room + block))
                    self.bytes_read += got
                    if self.progress is not None:
                        self.progress("reading", self.bytes_read, self.total)
                    kept = len(carry)
                    if kept <= room:
                        region = buf[room - kept : room + got]
                        region[:kept] = carry
                    else:  # a long record spans the blocks: joined by a copy
                        region = np.empty(kept + got, dtype=np.uint8)
                        region[:kept] = carry
                        region[kept:] = buf[room : room + got]
                    del buf
                    size = kept + got
                    cut = _last_end(region, kept, size, sep)  # the carried part has no separator
                    if cut == 0:
                        carry = region
                        if size > self.max_record:
                            raise self._too_big(path, self.seen_in_input + 1)
                        continue
                    if kept and _last_end(region, kept, min(size, self.max_record + 1), sep) == 0:
                        raise self._too_big(path, self.seen_in_input + 1)
                    data = region[:cut]
                    if self.keep_ends:
                        ends = record_ends(data, sep, _expected(cut, self.seen_in_input,
                                                                scanned))
                        count = len(ends)
                        self.seen_in_input += count
                        yield _Chunk(data, count, ends)
                        del ends
                    elif self.count_records:
                        count = count_separators(data, sep)
                        self.seen_in_input += count
                        yield _Chunk(data, count)
                    else:  # counted by the taker, before it asks for more
                        yield _Chunk(data, None)
                    scanned += cut
                    carry = region[cut:size].copy()
                    del region, data
                    if len(carry) > self.max_record:
                        raise self._too_big(path, self.seen_in_input + 1)
            finally:
                ahead.stop(wait=not _may_block(path))
        if len(carry):
            last = np.empty(len(carry) + 1, dtype=np.uint8)
            last[:-1] = carry
            last[-1] = sep
            yield _Chunk(last, 1, np.array([len(last)], dtype=np.int64))

    def _take_header(self, chunk: _Chunk) -> _Chunk | None:
        """Move header records from the start of ``chunk`` to :attr:`header`."""
        assert chunk.count is not None
        take = min(self.header_wanted - len(self.header), chunk.count)
        ends = record_ends(chunk.data[: _nth_end(chunk.data, self.sep_byte, take)], self.sep_byte)
        start = 0
        for end in ends.tolist():
            self.header.append(chunk.data[start : end - 1].tobytes())
            start = end
        if take == chunk.count:
            return None
        ends = None if chunk.ends is None else chunk.ends[take:] - start
        origin = None if chunk.origin is None else chunk.origin + start
        return _Chunk(chunk.data[start:], chunk.count - take, ends, origin)

    def chunks(self) -> Iterator[_Chunk]:
        """Chunks of whole records over all inputs, the header records taken out."""
        for idx, path in enumerate(self.inputs):
            for chunk in self._raw_chunks(path):
                if idx == 0 and len(self.header) < self.header_wanted:
                    if chunk.count is None:
                        chunk.count = count_separators(chunk.data, self.sep_byte)
                        self.seen_in_input += chunk.count
                    taken = self._take_header(chunk)
                    if taken is None:
                        continue
                    chunk = taken
                if chunk.count is not None:
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
